"""The synchronous twin of the async API: the same calls, without ``await``.

    with sqlkv.connect(store, "app.db") as db:
        db.exec("CREATE TABLE t(x)")
        db.query("SELECT * FROM t").rows

SQLite runs on the calling thread; an async store's coroutines run on a
private event loop thread. A connection may be shared between threads: calls
are run one at a time.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..engine.backends import open_engine
from ..engine.common import Engine, QueryResult, RunResult
from ..errors import StoreTimeoutError
from ..storage.options import OPEN_DEFAULTS, OpenParams, options_from
from ..stores.contract import AnyKvStore
from .database import OpenDatabase, warn_unclosed
from .transaction import RowCallback, Transaction, call_for_each_row, direct_call_refused, run_call

_log = logging.getLogger("sqlkv")


def connect(
    store: AnyKvStore,
    file_name: str,
    *,
    readonly: bool = OPEN_DEFAULTS.readonly,
    lock_timeout: float = OPEN_DEFAULTS.lock_timeout,
    max_staleness: float = OPEN_DEFAULTS.max_staleness,
    **options: Any,
) -> Connection:
    """Open (creating if needed) the database ``file_name`` in ``store``, synchronously.

    ``options`` are :class:`sqlkv.SqliteVfs`'s (by name: see
    :func:`~sqlkv.storage.options.options_from`); ``readonly``, ``lock_timeout`` and
    ``max_staleness`` its ``open``'s (see :class:`~sqlkv.storage.options.OpenParams`).
    """
    settings = options_from(options)
    params = OpenParams(readonly, lock_timeout, max_staleness)
    engine = open_engine(settings, store, file_name, params)
    return Connection(engine, file_name)


class Connection(OpenDatabase):
    """An open database (sync). Made by :func:`connect`.

    Calls from several threads run one at a time. While a :meth:`transaction`
    is open it holds the connection: other threads' calls wait for it to end,
    and a direct call from the thread holding it raises
    :class:`~sqlkv.TransactionError` (it would wait on itself).
    """

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self.name = name
        self._lock = threading.Lock()
        self._closed = False
        #: The open transaction() holding the connection, and its thread.
        self._tx: Transaction | None = None
        self._tx_thread: int | None = None
        #: Set when close() gave up on a stuck store call: whoever holds the lock closes the
        #: engine as it lets go (both under ``_handoff``, so neither misses the other).
        self._close_left_behind = False
        self._handoff = threading.Lock()
        # Dropped without close(): release the lease, stop the renewer.
        self._finalizer = weakref.finalize(self, warn_unclosed, "sqlkv.Connection", name, engine.close)

    def _transaction_holder(self) -> object | None:
        return self._tx

    def _enter(self) -> None:
        """Take the connection for one call or a transaction (the caller releases it)."""
        if self._tx_thread == threading.get_ident():
            raise direct_call_refused(self.name)
        # A close() that gave up on a stuck call leaves the lock held by it: calls
        # made (or waiting) since hear that the connection is closed.
        if self._closed:
            raise self._closed_error()
        timeout = self._engine.client.timeout
        while not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            if self._closed:
                raise self._closed_error()
        if self._closed:
            self._lock.release()
            raise self._closed_error()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._enter()
        try:
            return run_call(self._engine, fn, *args)
        finally:
            self._leave()

    def _leave(self) -> None:
        """Let go of the connection; if :meth:`close` gave up on this thread's
        store call meanwhile, close the engine now that the store answered."""
        with self._handoff:
            left_behind, self._close_left_behind = self._close_left_behind, False
            if not left_behind:
                self._lock.release()
                return
        try:
            self._engine.close()
        except Exception as exc:  # nobody to hand it to: the close returned long ago
            _log.warning("closing database %r after its store answered failed: %s", self.name, exc)
        finally:
            self._lock.release()

    # -- transaction() -------------------------------------------------------------

    def transaction(self, mode: str = "deferred") -> Transaction:
        """``with conn.transaction(mode="deferred") as tx:`` a transaction across
        calls (``BEGIN DEFERRED | IMMEDIATE | EXCLUSIVE``); see
        :class:`~sqlkv.runtime.transaction.Transaction`."""
        return Transaction(self, mode)

    def _hold(self, tx: Transaction, begin: Callable[[], None]) -> None:
        """Take the connection for ``tx`` and run its ``begin``."""
        self._enter()
        try:
            begin()
        except BaseException:
            self._leave()
            raise
        self._tx, self._tx_thread = tx, threading.get_ident()

    def _holds(self, tx: Transaction) -> bool:
        return self._tx is tx

    def _let_go(self) -> None:
        self._tx = self._tx_thread = None
        self._leave()

    # -- the calls ---------------------------------------------------------------

    def exec(
        self, sql: str, callback: RowCallback | None = None, *, min_version: int | None = None
    ) -> list[QueryResult]:
        """Run every statement of ``sql``; ``callback(row, columns)`` for each result row.

        Returns one :class:`QueryResult` per statement too. ``min_version``:
        see :meth:`query`.
        """
        results = self._call(self._engine.exec, sql, min_version)
        if callback is not None:
            call_for_each_row(results, callback)
        return results

    def query(self, sql: str, params: Any = None, *, min_version: int | None = None) -> QueryResult:
        """Run one statement; its ``.rows`` (tuples) and ``.columns``.

        ``min_version``: run on at least that version (a reader waits for it up
        to 5 seconds, then raises :class:`sqlkv.StaleError`), so a client
        reads its own writes through any reader.
        """
        return self._call(self._engine.query, sql, params, min_version)

    def run(self, sql: str, params: Any = None, *, min_version: int | None = None) -> RunResult:
        """Run one statement for its effect; rows changed, last rowid inserted, and
        the database's version after it (``min_version``: see :meth:`query`)."""
        return self._call(self._engine.run, sql, params, min_version)

    @property
    def version(self) -> int:
        """The database's version as this connection knows it (see :attr:`Database.version`)."""
        return self._engine.version

    def close(self) -> None:
        """Close the connection; later calls raise :class:`ClosedError`. Waits
        for an open transaction of another thread to end.

        From another thread while a call waits on a synchronous store's call
        that outlives ``store_timeout``, it gives up: the connection is closed
        at once (the engine and the lease are released by the stuck thread
        should the store answer; the lease expires otherwise), and
        :class:`StoreTimeoutError` says so.
        """
        if self._tx_thread == threading.get_ident():
            raise direct_call_refused(self.name)
        if not self._acquire_for_close():
            return
        try:
            if self._closed:
                return
            self._closed = True
            self._finalizer.detach()
            self._engine.close()
        finally:
            self._lock.release()

    def _acquire_for_close(self) -> bool:
        """Take the connection's lock; or, should the call holding it wait on a
        store call past ``store_timeout``, give up (see :meth:`close`): ``False``
        if closed already, else :class:`StoreTimeoutError`."""
        client = self._engine.client
        while True:
            wait = client.next_check()
            if self._lock.acquire(timeout=-1 if wait is None else wait):
                return True
            overdue = client.overdue()
            if overdue is None:
                continue
            with self._handoff:  # the holder cannot let go between the two steps here
                if self._lock.acquire(blocking=False):
                    return True  # the call ended meanwhile: close as usual
                if self._closed:
                    return False
                self._closed = True
                self._finalizer.detach()
                self._close_left_behind = True  # the stuck call's thread closes the engine
            kind, seconds = overdue
            raise StoreTimeoutError(
                f"database {self.name!r}: the store's {kind} call did not answer within "
                f"store_timeout ({client.timeout:g} s; {seconds:.1f} s so far), so close() gave "
                "up waiting for it and closed the connection. A synchronous store's call cannot "
                "be stopped: the thread that made it waits on, and the database's lease is "
                "released should the store answer, else it expires"
            )

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

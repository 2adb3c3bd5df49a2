"""The async API, in the shape of RivetKit's SQLite VFS.

    vfs = SqliteVfs(kv_prefix=9, chunk_size=4096)
    db = await vfs.open("app.db", store)
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    result = await db.query("SELECT x FROM t WHERE x = ?", [1])
    await db.close()

SQLite runs on a small pool of threads shared by every database of the event
loop (worker.py), so the loop keeps running while SQLite works (and while an
async store is awaited), and many databases cost no thread each. Each
database's calls, from many coroutines at once, are queued and run one at a
time; no call leaves a transaction open, and ``db.transaction()`` spans calls
(see transaction.py).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
import weakref
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from ..engine.backends import open_engine
from ..engine.common import Engine, QueryResult, RunResult
from ..errors import ClosedError, Error, OutcomeUnknownError, StoreError, StoreTimeoutError
from ..metrics import Stats
from ..storage.options import OPEN_DEFAULTS, OpenParams, optional_seconds, options_from
from ..stores.contract import AnyKvStore, StoreClient
from .group import CommitGroup
from .pool import Worker, check_pool_size
from .transaction import (
    AsyncTransaction,
    RowCallback,
    await_for_each_row,
    direct_call_refused,
    held_here,
    run_call,
)

_log = logging.getLogger("sqlkv")


#: ``hibernate_after``'s default, in seconds.
HIBERNATE_AFTER = 60.0

#: The store calls that write: one of them left unanswered may have been applied.
WRITE_CALLS = frozenset({"put", "put_batch", "delete_batch", "write_batch"})


def check_hibernate_after(seconds: object) -> float | None:
    """``seconds`` as a float if it is ``None`` or a positive number; :class:`ConfigError` otherwise."""
    return optional_seconds("hibernate_after", seconds)



class SqliteVfs:
    """Opens databases whose files live in key-value stores.

    ``SqliteVfs(kv_prefix=9, chunk_size=4096, backend=None, *, layout=...,
    cache_bytes=..., lease_seconds=..., max_dirty_bytes=..., store_timeout=...)``: the options are
    :class:`~sqlkv.storage.options.Options`' fields, declared there once for both
    APIs (see :func:`~sqlkv.storage.options.options_from`); the first three may be
    given by position, as in the seed. Unknown names and bad values raise
    :class:`sqlkv.ConfigError` (a ``ValueError``) here.

    ``pool_size``: the threads serving every database of an event loop (see
    worker.py); ``None`` takes ``$SQLKV_POOL_SIZE``, else the core count within
    2..8. A loop has one pool, sized by its first database's opener: a
    different size while it has databases open is a :class:`sqlkv.ConfigError`.

    ``hibernate_after``: seconds a database may sit idle (no call, no open
    ``transaction()``) before it gives back its SQLite connection and its
    caches, keeping its lease; its next call opens them again (see
    :class:`Database`). ``None``: never.
    """

    def __init__(
        self,
        *positional: Any,
        pool_size: int | None = None,
        hibernate_after: float | None = HIBERNATE_AFTER,
        **options: Any,
    ) -> None:
        self.options = options_from(options, positional)
        self.pool_size = check_pool_size(pool_size)
        self.hibernate_after = check_hibernate_after(hibernate_after)

    async def open(
        self,
        file_name: str,
        store: AnyKvStore,
        *,
        readonly: bool = OPEN_DEFAULTS.readonly,
        lock_timeout: float = OPEN_DEFAULTS.lock_timeout,
        max_staleness: float = OPEN_DEFAULTS.max_staleness,
    ) -> Database:
        """Open (creating if needed) the database ``file_name`` in ``store``.

        A writer takes the database's lease: if another writer holds it, this
        waits up to ``lock_timeout`` seconds, then raises :class:`sqlkv.LockedError`.
        ``readonly=True`` takes no lease and never writes; each of its read
        transactions sees one whole committed state, checked at its start
        unless checked within the last ``max_staleness`` seconds (README,
        "Readers in other processes"); a writer refuses ``max_staleness`` (see
        :class:`~sqlkv.storage.options.OpenParams`).
        """
        params = OpenParams(readonly, lock_timeout, max_staleness)
        loop = asyncio.get_running_loop()
        client = StoreClient(store, loop=loop, timeout=self.options.store_timeout)
        worker = Worker(loop, pool_size=self.pool_size)
        opened: list[Engine] = []

        def open_it() -> Engine:
            engine = open_engine(self.options, store, file_name, params, loop=loop, client=client)
            opened.append(engine)
            return engine

        def close_unclaimed() -> None:
            for engine in opened:
                engine.close()

        try:
            engine = await _worker_answer(worker.submit(open_it), client, file_name)
        except BaseException:
            # Cancelled while the open ran, it completed: close what nobody will get.
            # Queued after the open, and run before the worker stops.
            worker.submit(close_unclaimed).add_done_callback(_ignore_outcome)
            if client.overdue() is None:
                await asyncio.shield(worker.stop())
            else:  # the open is stuck in the store: the worker stops should it ever end
                worker.abandon()
            raise
        if engine.client.is_async:
            worker.no_spin()
        if not readonly:
            worker.group = CommitGroup(engine, worker.jobs)
        return Database(engine, file_name, loop, worker, self.hibernate_after)


def _hibernate_if_idle(ref: weakref.ReferenceType[Database]) -> None:
    """A database's hibernation timer (holding it weakly, so that a database
    dropped without ``close()`` is still collected)."""
    db = ref()
    if db is not None:
        db._hibernate_if_idle()


async def _worker_answer(future: asyncio.Future, client: StoreClient, name: str) -> Any:
    """``future``'s result (a call on the worker of database ``name``, not yet a
    :class:`Database`), or :class:`StoreTimeoutError` once a synchronous store's
    call made through ``client`` outlives ``store_timeout`` (the open's watchdog)."""
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=client.next_check())
            if done:
                return future.result()
            overdue = client.overdue()
            if overdue is not None:
                kind, seconds = overdue
                raise StoreTimeoutError(
                    f"opening database {name!r}: the store's {kind} call did not answer within "
                    f"store_timeout ({client.timeout:g} s; {seconds:.1f} s so far), so sqlkv gave "
                    "up on it. A synchronous store's call cannot be stopped: its thread waits on"
                )
    finally:
        future.cancel()  # given up on, or cancelled: its answer goes to nobody


def _watch_store(ref: weakref.ReferenceType[Database]) -> None:
    """A database's watchdog timer (see :meth:`Database._watching`)."""
    db = ref()
    if db is not None:
        db._watch()


def _log_hibernation_failure(future: asyncio.Future) -> None:
    """A hibernation that failed leaves the database awake: worth a warning, no more."""
    if not future.cancelled() and future.exception() is not None:
        _log.warning("hibernating a database failed: %s", future.exception())


def _ignore_outcome(future: asyncio.Future) -> None:
    """A done callback that retrieves a future's outcome nobody awaits."""
    if not future.cancelled():
        future.exception()


def warn_unclosed(kind: str, name: str, release: Callable[[], Any]) -> None:
    """What a database dropped without ``close()`` does when it is collected:
    warn (``ResourceWarning``, as an unclosed file does) and release it, so its
    lease and its threads do not outlive it."""
    warnings.warn(
        f"{kind} {name!r} was dropped without close(); closing it now", ResourceWarning, stacklevel=2
    )
    release()


class OpenDatabase:
    """What the async :class:`Database` and the sync :class:`~sqlkv.runtime.connection.Connection`
    share: the engine behind them, its name, backend and counters."""

    _engine: Engine
    name: str
    _closed: bool

    @property
    def backend(self) -> str:
        """The engine in use: ``"pages"`` or ``"snapshot"``."""
        return self._engine.backend

    @property
    def stats(self) -> Stats:
        """Live counters of what this database cost (round trips, bytes, cache)."""
        return self._engine.stats

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_transaction(self) -> bool:
        """Whether a ``transaction()`` is open on this database (no plain call
        ever leaves one open, see transaction.py)."""
        return self._transaction_holder() is not None

    def _transaction_holder(self) -> object | None:
        raise NotImplementedError

    def _closed_error(self) -> ClosedError:
        return ClosedError(f"database {self.name!r} is closed")


class Database(OpenDatabase):
    """An open database (async). Made by :meth:`SqliteVfs.open`.

    Calls are queued and run one at a time in the order made. While a
    :meth:`transaction` is open, calls from other coroutines wait for it to
    end (still in order), and a cancelled call that has not started yet never
    runs (see the README's Cancellation).

    **Hibernation.** Idle for ``hibernate_after`` seconds (no call queued or
    running, no transaction open), the database gives back its SQLite
    connection and its caches, keeping its lease (the renewer keeps renewing
    it), its counters and its version; the next call opens them again from the
    store first (one round trip, then the chunks it reads). One timer per
    database, set again lazily: a busy database's timer fires once per
    ``hibernate_after``, a hibernating one has none.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        loop: asyncio.AbstractEventLoop,
        worker: Worker,
        hibernate_after: float | None,
    ) -> None:
        self._engine = engine
        self.name = name
        self._loop = loop
        self._worker = worker
        self._closed = False
        #: The open (or starting) transaction() that holds the database, if any.
        self._holder: AsyncTransaction | None = None
        #: Callers waiting for it to end, in order; a transaction waits as its taker.
        #: (A list: rarely more than a few, and an empty deque costs 760 bytes.)
        self._waiting: list[tuple[asyncio.Future, AsyncTransaction | None]] = []
        # Dropped without close(): close the engine on its thread and end the thread.
        self._finalizer = weakref.finalize(
            self, warn_unclosed, "sqlkv.Database", name, partial(worker.abandon, engine.close)
        )
        self._finalizer.atexit = False
        self._hibernate_after = hibernate_after
        #: Calls made and not yet answered; when the last one was answered.
        self._calls = 0
        self._idle_since = loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._set_timer(hibernate_after)
        # Giving up on a synchronous store's call that outlived store_timeout
        # (an async store's is cancelled by the transport itself): the tasks
        # waiting for the worker, the watchdog's timer, and what was given up on.
        client = engine.client
        self._watched = not client.is_async and client.timeout is not None
        self._waiters: set[asyncio.Task] = set()
        self._cancelled: set[asyncio.Task] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._gave_up: tuple[str, float] | None = None

    # -- hibernation --------------------------------------------------------------

    def _set_timer(self, delay: float | None) -> None:
        if delay is not None and not self._closed:
            self._timer = self._loop.call_later(delay, _hibernate_if_idle, weakref.ref(self))

    def _hibernate_if_idle(self) -> None:
        """On the loop, when the timer fires: hibernate if idle long enough, else look again later."""
        self._timer = None
        after = self._hibernate_after
        if self._closed or after is None:
            return
        idle = self._loop.time() - self._idle_since
        if self._calls or self._holder is not None or self._waiting or idle < after:
            self._set_timer(max(after - idle, after / 8) if not self._calls else after)
            return
        # Queued like a call, so it runs between calls, never inside one; a
        # call queued after it wakes the database again.
        self._worker.submit(self._engine.hibernate).add_done_callback(_log_hibernation_failure)

    @property
    def hibernating(self) -> bool:
        """Whether the database has given back its SQLite connection and caches
        for now (read between calls; the next call opens them again)."""
        return self._engine.asleep

    async def hibernate(self) -> bool:
        """Hibernate now, whatever ``hibernate_after`` says (queued after the calls
        already made); whether it does (not while a transaction is open)."""
        self._check_usable()
        if self._holder is not None or self._waiting:
            return False
        return bool(await self._on_worker(self._engine.hibernate))

    # -- giving up on a store that does not answer ------------------------------------

    async def _on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the worker, given up on (see :meth:`_give_up`) should
        a synchronous store's call outlive ``store_timeout`` meanwhile."""
        if not self._watched:
            return await self._worker.call(fn, *args)
        return await self._watching(self._worker.call(fn, *args))

    async def _watching(self, awaitable: Awaitable[Any]) -> Any:
        """Await ``awaitable`` (the worker's answer) while the watchdog looks at
        the store's calls in flight; raise the error of giving up, if it does."""
        task = asyncio.current_task()
        if not self._watched or task is None:
            return await awaitable
        self._waiters.add(task)
        if self._watchdog is None:
            self._arm_watchdog()
        try:
            return await awaitable
        except asyncio.CancelledError:
            if task in self._cancelled:
                self._cancelled.discard(task)
                if not task.uncancel():  # cancelled by the watchdog alone
                    raise self._give_up_error() from None
            raise
        finally:
            self._waiters.discard(task)

    def _arm_watchdog(self) -> None:
        """Set the watchdog's timer (holding the database weakly, as the
        hibernation timer does: it stays set after the calls it watched)."""
        delay = self._engine.client.next_check()
        if delay is None:  # no store_timeout: nothing to watch for
            return
        self._watchdog = self._loop.call_later(delay, _watch_store, weakref.ref(self))

    def _watch(self) -> None:
        """On the loop: give up if a store call has outlived ``store_timeout``; look
        again when the oldest call in flight could, while anyone waits."""
        self._watchdog = None
        if not self._waiters:
            return
        overdue = self._engine.client.overdue()
        if overdue is None:
            self._arm_watchdog()
            return
        self._give_up(*overdue)

    def _give_up(self, kind: str, seconds: float) -> None:
        """A synchronous store's ``kind`` call has taken ``seconds``, past
        ``store_timeout``. It cannot be stopped, so stop waiting for it: the
        database is closed, every caller waiting gets :meth:`_give_up_error`,
        and its close (engine, lease) is left queued behind the call, to run
        should the store ever answer (the lease expires otherwise)."""
        self._gave_up = (kind, seconds)
        closing = self._closed
        self._closed = True
        self._finalizer.detach()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if closing:
            self._worker.abandon()  # close() queued the engine's close already
        else:
            self._worker.abandon(self._engine.close)
        for task in self._waiters:
            task.cancel()
            self._cancelled.add(task)
        _log.warning("%s", self._give_up_message())

    def _give_up_message(self) -> str:
        assert self._gave_up is not None
        kind, seconds = self._gave_up
        timeout = self._engine.client.timeout
        return (
            f"database {self.name!r}: the store's {kind} call did not answer within "
            f"store_timeout ({timeout:g} s; {seconds:.1f} s so far), so sqlkv gave up on it "
            "and closed the database. A synchronous store's call cannot be stopped: its "
            "thread waits on, and the database's lease is released should the store "
            "answer, else it expires"
        )

    def _closed_error(self) -> ClosedError:
        if self._gave_up is not None:
            return ClosedError(self._give_up_message())
        return super()._closed_error()

    def _give_up_error(self) -> StoreError:
        """The error of a call given up on (see :meth:`_give_up`)."""
        assert self._gave_up is not None
        message = self._give_up_message()
        if self._gave_up[0] in WRITE_CALLS:
            return OutcomeUnknownError(
                message + "; the write may have been applied: look before retrying", committed=None
            )
        return StoreTimeoutError(message)

    def _transaction_holder(self) -> object | None:
        return self._holder

    def _check_usable(self) -> None:
        if self._closed:
            raise self._closed_error()
        if asyncio.get_running_loop() is not self._loop:
            raise Error(f"database {self.name!r} was opened on another event loop")

    # -- taking turns with transaction() -----------------------------------------

    async def _take_turn(self, taker: AsyncTransaction | None) -> None:
        """Return when no transaction holds the database (``taker``: then hold it).

        Calls made while one does wait in order; a call from inside the
        holding transaction would wait on itself, and is refused.
        """
        if self._holder is None and not self._waiting:
            self._holder = taker
            return
        if held_here(self._holder):
            raise direct_call_refused(self.name)
        entry = (self._loop.create_future(), taker)
        self._waiting.append(entry)
        try:
            await entry[0]
        except asyncio.CancelledError:
            if entry[0].cancelled():
                if entry in self._waiting:  # else a _let_go in the same loop turn passed it over
                    self._waiting.remove(entry)
            elif taker is not None:  # granted the database, then cancelled before using it
                self._let_go(taker)
            raise
        if self._closed:  # closed by a caller that waited before this one
            if taker is not None:
                self._let_go(taker)
            raise self._closed_error()

    def _let_go(self, taker: AsyncTransaction | None) -> None:
        """The turn of ``taker`` is over: let the waiting callers go, in order,
        up to and including the next transaction (which then holds the database)."""
        if taker is not None and self._holder is not taker:
            return
        self._holder = None
        self._idle_since = self._loop.time()
        while self._waiting and self._holder is None:
            future, next_taker = self._waiting.pop(0)
            if future.done():
                continue
            self._holder = next_taker
            future.set_result(None)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._check_usable()
        if self._holder is not None or self._waiting:
            await self._take_turn(None)
        self._calls += 1
        try:
            # The worker runs calls one at a time in the order queued: no lock needed.
            return await self._watching(self._worker.call(run_call, self._engine, fn, *args))
        finally:
            self._calls -= 1
            self._idle_since = self._loop.time()
            if self._timer is None:
                self._set_timer(self._hibernate_after)

    def transaction(self, mode: str = "deferred") -> AsyncTransaction:
        """``async with db.transaction(mode="deferred") as tx:`` a transaction
        across calls (``BEGIN DEFERRED | IMMEDIATE | EXCLUSIVE``); see
        :class:`~sqlkv.runtime.transaction.AsyncTransaction`."""
        self._check_usable()
        return AsyncTransaction(self, mode)

    # -- the calls ---------------------------------------------------------------

    async def exec(
        self, sql: str, callback: RowCallback | None = None, *, min_version: int | None = None
    ) -> list[QueryResult]:
        """Run every statement of ``sql``; ``callback(row, columns)`` for each result row.

        The callback runs on the event loop, after SQLite has finished; it may
        be a coroutine function. Returns one :class:`QueryResult` per statement too.
        ``min_version``: see :meth:`query`.
        """
        results = await self._call(self._engine.exec, sql, min_version)
        if callback is not None:
            await await_for_each_row(results, callback)
        return results

    async def query(self, sql: str, params: Any = None, *, min_version: int | None = None) -> QueryResult:
        """Run one statement; its ``.rows`` (tuples) and ``.columns``.

        ``min_version``: run on at least that version (a reader waits for it up
        to 5 seconds, then raises :class:`sqlkv.StaleError`), so a client
        reads its own writes through any reader.
        """
        return await self._call(self._engine.query, sql, params, min_version)

    async def run(self, sql: str, params: Any = None, *, min_version: int | None = None) -> RunResult:
        """Run one statement for its effect; rows changed, last rowid inserted, and
        the database's version after it (``min_version``: see :meth:`query`)."""
        return await self._call(self._engine.run, sql, params, min_version)

    @property
    def version(self) -> int:
        """The database's version as this open knows it: each commit's number,
        growing by one per commit (a writer: its last commit; a reader: the
        state its last read transaction saw; 0 before any versioned commit).
        Read between calls, from the event loop."""
        return self._engine.version

    async def close(self) -> None:
        """Close the database; later calls raise :class:`ClosedError`. Closing twice is fine.

        Waits for an open transaction to end first. Bounded: a synchronous
        store's call that outlives ``store_timeout`` is given up on (the
        database is closed all the same, and :class:`StoreTimeoutError` says
        so), and a caller that cancels the close (``asyncio.wait_for``) stops
        waiting at once while the close finishes behind it. From an event loop other
        than the one the database was opened on: if that loop still runs (in
        another thread), the close is handed to it; if it no longer runs, the
        database is closed from here all the same (engine, lease, thread and
        descriptors released).
        """
        if self._closed:
            return
        running = asyncio.get_running_loop()
        if running is not self._loop:
            await self._close_from_elsewhere()
            return
        if self._holder is not None or self._waiting:
            await self._take_turn(None)
            if self._closed:
                return
        self._closed = True
        self._finalizer.detach()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Queued after every call made before it, so those still run first;
        # shielded, so it runs even if this task is cancelled meanwhile.
        closing = self._worker.submit(self._engine.close)
        try:
            await self._watching(asyncio.shield(closing))
        except BaseException:
            if not closing.done():
                # Cancelled, or given up on: the close runs when the worker gets
                # to it, and the worker then stops, without anyone waiting.
                if self._gave_up is None:
                    self._worker.abandon()
                    raise
                raise StoreTimeoutError(self._give_up_message()) from None
            await self._worker.stop()
            raise
        await self._worker.stop()

    async def _close_from_elsewhere(self) -> None:
        own = self._loop
        if own.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.close(), own))
            return
        self._closed = True
        self._finalizer.detach()
        await self._worker.finish_elsewhere(self._engine.close)

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

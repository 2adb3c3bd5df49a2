"""Calls and transactions: no call leaves a transaction open; ``transaction()`` spans calls.

The rule for every call on a :class:`~sqlkv.runtime.database.Database` or a
:class:`~sqlkv.runtime.connection.Connection` (:func:`run_call`): when it returns or raises,
no transaction it began is left open. A call that fails rolls back what it
began (``exec("BEGIN; INSERT ...; INSERT <duplicate>; COMMIT")`` leaves
nothing); a call that would end with a transaction open (``exec("BEGIN")``)
is rolled back and raises :class:`TransactionError`. Otherwise one caller's
open transaction would swallow the next caller's writes, to be lost when it
is rolled back.

A transaction across calls is a ``transaction()``: ``with conn.transaction()
as tx`` (sync, :class:`Transaction`) or ``async with db.transaction() as tx``
(:class:`AsyncTransaction`). It begins with ``BEGIN <mode>``, commits when the
block ends, rolls back when it raises (a cancelled task included), and holds
the database meanwhile: other threads' or coroutines' calls wait until it
ends, and a direct call on the database from inside it raises
:class:`TransactionError` instead of waiting on itself.

The rule lives here, above the engines, which stay plain: the DB-API layer
drives engines directly and issues its own ``BEGIN``/``COMMIT``.
:class:`TransactionCore` is what runs on the engine's thread (the worker
thread, or the caller's for the sync API), so both flavours share it.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from ..engine.common import Engine, QueryResult, RunResult
from ..errors import ConfigError, Error, TransactionError
from .pool import Worker


class TransactionHost(Protocol):
    """What a :class:`Transaction` needs of its :class:`~sqlkv.runtime.connection.Connection`,
    declared here so that this module does not import the one that imports it."""

    @property
    def name(self) -> str: ...
    @property
    def _engine(self) -> Engine: ...
    def _hold(self, tx: Transaction, begin: Callable[[], None]) -> None: ...
    def _holds(self, tx: Transaction) -> bool: ...
    def _let_go(self) -> None: ...


class AsyncTransactionHost(Protocol):
    """What an :class:`AsyncTransaction` needs of its :class:`~sqlkv.runtime.database.Database`,
    declared here so that this module does not import the one that imports it."""

    @property
    def name(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def _engine(self) -> Engine: ...
    @property
    def _worker(self) -> Worker: ...
    def _check_usable(self) -> None: ...
    async def _take_turn(self, taker: AsyncTransaction | None) -> None: ...
    async def _on_worker(self, fn: Callable[..., Any], *args: Any) -> Any: ...
    def _let_go(self, taker: AsyncTransaction | None) -> None: ...
    def _closed_error(self) -> Error: ...
    async def _watching(self, awaitable: Awaitable[Any]) -> Any: ...


#: ``transaction(mode=...)``: SQLite's ``BEGIN DEFERRED | IMMEDIATE | EXCLUSIVE``.
MODES = ("deferred", "immediate", "exclusive")

def begin_statement(mode: object) -> str:
    """``BEGIN <MODE>`` for a mode of :data:`MODES`; :class:`ConfigError` otherwise."""
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise ConfigError(f"transaction mode must be one of {', '.join(MODES)}, not {mode!r}")
    return f"BEGIN {mode.upper()}"


def _roll_back_quietly(engine: Engine, failure: BaseException) -> None:
    """Roll back after ``failure``, which stays the error the caller sees. If the
    rollback fails too, the engine has dropped its state (the next call reopens
    the database from the store, which holds no part of the transaction)."""
    try:
        engine.rollback()
    except Exception as exc:
        failure.add_note(f"rolling back the transaction also failed: {exc}")


def run_call(engine: Engine, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)``, a call made outside any transaction, by the rule of the
    module docstring. Runs on the engine's thread."""
    try:
        result = fn(*args)
    except BaseException as exc:
        if engine.in_transaction:
            _roll_back_quietly(engine, exc)
        raise
    if engine.in_transaction:
        error = TransactionError(
            "the call left a transaction open (BEGIN or SAVEPOINT without COMMIT); it was "
            "rolled back, as a call may not end inside a transaction. For a transaction "
            "across calls, use db.transaction()"
        )
        _roll_back_quietly(engine, error)
        raise error
    return result


RowCallback = Callable[[list, list[str]], Any]


def _each_row(results: list[QueryResult]) -> Iterator[tuple[list, list[str]]]:
    """What ``exec``'s callback is given, once per row of each result: the row, the columns."""
    for result in results:
        for row in result.rows:
            yield list(row), result.columns


def call_for_each_row(results: list[QueryResult], callback: RowCallback | None) -> None:
    """``exec``'s ``callback(row, columns)`` for each row of each result (sync API)."""
    if callback is not None:
        for row, columns in _each_row(results):
            callback(row, columns)


async def await_for_each_row(results: list[QueryResult], callback: RowCallback | None) -> None:
    """``exec``'s ``callback(row, columns)`` for each row (async API), awaiting
    it when it returns an awaitable (a coroutine function's call)."""
    if callback is not None:
        for row, columns in _each_row(results):
            outcome = callback(row, columns)
            if inspect.isawaitable(outcome):
                await outcome


class TransactionCore:
    """One ``transaction()``'s steps, run on the engine's thread."""

    def __init__(self, engine: Engine, name: str, mode: str) -> None:
        self.engine = engine
        self.name = name
        self.begin_sql = begin_statement(mode)
        #: Why the transaction is not open: ``None`` while it is.
        self.ended: str | None = "it has not begun"
        #: Whether it ended by a failure (SQLite or the store rolled it back).
        self.failed = False

    def begin(self) -> None:
        self.engine.exec(self.begin_sql)
        self.ended = None

    def over(self) -> TransactionError:
        """The error for a use of the transaction after it ended."""
        return TransactionError(
            f"the transaction on database {self.name!r} is over ({self.ended}); "
            "start another with db.transaction()"
        )

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` inside the transaction; note it if the call ended it."""
        if self.ended is not None:
            raise self.over()
        try:
            result = fn(*args)
        except BaseException:
            if not self.engine.in_transaction:
                self.ended, self.failed = "rolled back after an error", True
            raise
        if not self.engine.in_transaction:
            self.ended = "ended by one of its own statements"
        return result

    def finish(self, commit: bool) -> None:
        """COMMIT (``commit``) or ROLLBACK. A COMMIT that fails rolls back."""
        if self.ended is not None:
            if commit and self.failed:
                raise TransactionError(
                    f"the transaction on database {self.name!r} was rolled back after an "
                    "error, so nothing of it was committed"
                )
            return
        self.ended = "committed" if commit else "rolled back"
        if not commit:
            self.engine.rollback()
            return
        try:
            self.engine.exec("COMMIT")
        except BaseException as exc:
            self.ended, self.failed = "its COMMIT failed", True
            if self.engine.in_transaction:
                _roll_back_quietly(self.engine, exc)
            raise

    def abandon(self) -> None:
        """Roll back whatever :meth:`begin` began (after a failed or cancelled start)."""
        if self.ended is None:
            self.ended = "rolled back"
            self.engine.rollback()


class Transaction:
    """A transaction of a sync :class:`~sqlkv.runtime.connection.Connection` (see the module docstring).

    ``with conn.transaction(mode="deferred") as tx:`` begins it; ``tx.query``,
    ``tx.run`` and ``tx.exec`` run inside it; the end of the block commits, an
    exception rolls back and is raised again; ``tx.commit()`` and
    ``tx.rollback()`` end it early. While it is open it holds the connection:
    other threads' calls wait, and the holding thread's direct calls raise
    :class:`TransactionError`.
    """

    def __init__(self, conn: TransactionHost, mode: str = "deferred") -> None:
        self._conn = conn
        self._core = TransactionCore(conn._engine, conn.name, mode)
        self._lock = threading.Lock()  # the transaction's own calls, one at a time
        self._entered = False

    def __enter__(self) -> Transaction:
        if self._entered:
            raise TransactionError("a transaction can be entered only once")
        self._entered = True
        self._conn._hold(self, self._core.begin)
        return self

    @property
    def open(self) -> bool:
        """Whether the transaction is still open (begun, and not ended by a
        statement of its own, an error, or :meth:`commit`/:meth:`rollback`)."""
        return self._conn._holds(self) and self._core.ended is None

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            return self._core.call(fn, *args)

    def query(self, sql: str, params: Any = None) -> QueryResult:
        """Run one statement inside the transaction; its rows and columns."""
        return self._call(self._core.engine.query, sql, params)

    def run(self, sql: str, params: Any = None) -> RunResult:
        """Run one statement inside the transaction for its effect."""
        return self._call(self._core.engine.run, sql, params)

    def exec(self, sql: str, callback: RowCallback | None = None) -> list[QueryResult]:
        """Run every statement of ``sql`` inside the transaction."""
        results = self._call(self._core.engine.exec, sql)
        call_for_each_row(results, callback)
        return results

    def _finish(self, commit: bool) -> None:
        with self._lock:
            if not self._conn._holds(self):
                raise self._core.over()
            try:
                self._core.finish(commit)
            finally:
                self._conn._let_go()

    def commit(self) -> None:
        """Commit now; the transaction is over."""
        self._finish(True)

    def rollback(self) -> None:
        """Roll back now; the transaction is over."""
        self._finish(False)

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        if not self._conn._holds(self):
            return
        if exc_type is None:
            self._finish(True)
            return
        try:
            self._finish(False)
        except Error:
            pass  # the block's own exception is the news; the engine dropped its state


class AsyncTransaction:
    """A transaction of an async :class:`~sqlkv.runtime.database.Database` (see the module docstring).

    ``async with db.transaction(mode="deferred") as tx:``, with awaitable
    ``tx.query``, ``tx.run``, ``tx.exec``, ``tx.commit()`` and ``tx.rollback()``.
    While it is open, other coroutines' calls on ``db`` wait in the order made;
    a direct call on ``db`` from the task holding it raises
    :class:`TransactionError`. A task started inside the block is another
    coroutine: its direct calls wait for the transaction to end (so the block
    must not wait for them). Cancelling the block rolls it back.
    Once the block has ended, its COMMIT or ROLLBACK runs even if the task is
    cancelled while waiting for it.
    """

    def __init__(self, db: AsyncTransactionHost, mode: str = "deferred") -> None:
        self._db = db
        self._core = TransactionCore(db._engine, db.name, mode)
        #: The task that entered the transaction and holds the database.
        self.task: asyncio.Task | None = None
        self._entered = False
        self._over = False

    async def __aenter__(self) -> AsyncTransaction:
        if self._entered:
            raise TransactionError("a transaction can be entered only once")
        self._entered = True
        self.task = asyncio.current_task()
        db = self._db
        db._check_usable()
        await db._take_turn(self)
        try:
            await db._on_worker(self._core.begin)
        except BaseException:
            self._over = True
            if not db.closed:  # (closed: given up on a store that does not answer)
                # Queued after BEGIN: rolls back if BEGIN ran after all.
                db._worker.submit(self._core.abandon)
            db._let_go(self)
            raise
        return self

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._over:
            raise self._core.over()
        return await self._db._on_worker(self._core.call, fn, *args)

    async def query(self, sql: str, params: Any = None) -> QueryResult:
        """Run one statement inside the transaction; its rows and columns."""
        return await self._call(self._core.engine.query, sql, params)

    async def run(self, sql: str, params: Any = None) -> RunResult:
        """Run one statement inside the transaction for its effect."""
        return await self._call(self._core.engine.run, sql, params)

    async def exec(self, sql: str, callback: RowCallback | None = None) -> list[QueryResult]:
        """Run every statement of ``sql`` inside the transaction (callback as ``db.exec``)."""
        results = await self._call(self._core.engine.exec, sql)
        await await_for_each_row(results, callback)
        return results

    async def _finish(self, commit: bool) -> None:
        if self._over:
            raise self._core.over()
        self._over = True
        if self._db.closed:  # given up on a store that does not answer: nothing runs any more
            self._db._let_go(self)
            raise self._db._closed_error()
        # Queued before the database is let go, so every call waiting for it
        # runs after the COMMIT or ROLLBACK; shielded, so it runs even if this
        # task is cancelled meanwhile.
        done = self._db._worker.submit(self._core.finish, commit)
        self._db._let_go(self)
        await self._db._watching(asyncio.shield(done))

    async def commit(self) -> None:
        """Commit now; the transaction is over."""
        await self._finish(True)

    async def rollback(self) -> None:
        """Roll back now; the transaction is over."""
        await self._finish(False)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        if self._over:
            return
        if exc_type is None:
            await self._finish(True)
            return
        try:
            await self._finish(False)
        except Error:
            pass  # the block's own exception is the news; the engine dropped its state

def held_here(holder: AsyncTransaction | None) -> bool:
    """Whether the current task holds the async transaction ``holder``."""
    return holder is not None and holder.task is asyncio.current_task()


def direct_call_refused(name: str) -> TransactionError:
    """The error for a direct call on a database from inside its own transaction."""
    return TransactionError(
        f"a transaction on database {name!r} is open here: run the call through it "
        "(tx.query, tx.run, tx.exec) or end it first; a direct call would wait for it forever"
    )

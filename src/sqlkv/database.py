"""The async API, in the shape of RivetKit's SQLite VFS.

    vfs = SqliteVfs(kv_prefix=9, chunk_size=4096)
    db = await vfs.open("app.db", store)
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    result = await db.query("SELECT x FROM t WHERE x = ?", [1])
    await db.close()

Each database runs SQLite on a worker thread of its own, so the event loop
keeps running while SQLite works (and while an async store is awaited).
Calls from many coroutines at once are queued and run one at a time.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

from .backends import open_engine
from .engine import Engine, QueryResult, RunResult
from .errors import ClosedError, Error
from .lease import DEFAULT_LEASE_SECONDS
from .metrics import Stats
from .options import DEFAULT_CACHE_BYTES, DEFAULT_MAX_DIRTY_BYTES, Options
from .store import AnyKvStore
from .worker import Worker

RowCallback = Callable[[list, list[str]], Any]


class SqliteVfs:
    """Opens databases whose files live in key-value stores.

    ``kv_prefix`` (0..255) is the first byte of every key, ``chunk_size`` the
    bytes per chunk, ``backend`` ``"pages"``, ``"snapshot"`` or ``None`` (run-time
    choice). ``lease_seconds`` is how long a writer's lease lasts unrenewed
    (``None``: writers take no lease). Bad values raise
    :class:`sqlkv.ConfigError` (a ``ValueError``) here.
    """

    def __init__(
        self,
        kv_prefix: int = 9,
        chunk_size: int = 4096,
        backend: str | None = None,
        *,
        layout: str = "seed",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        lease_seconds: float | None = DEFAULT_LEASE_SECONDS,
        max_dirty_bytes: int = DEFAULT_MAX_DIRTY_BYTES,
    ) -> None:
        self.options = Options(
            kv_prefix=kv_prefix,
            chunk_size=chunk_size,
            backend=backend,
            layout=layout,
            cache_bytes=cache_bytes,
            lease_seconds=lease_seconds,
            max_dirty_bytes=max_dirty_bytes,
        )

    async def open(
        self, file_name: str, store: AnyKvStore, *, readonly: bool = False, lock_timeout: float = 0.0
    ) -> "Database":
        """Open (creating if needed) the database ``file_name`` in ``store``.

        A writer takes the database's lease: if another writer holds it, this
        waits up to ``lock_timeout`` seconds, then raises :class:`sqlkv.LockedError`.
        ``readonly=True`` takes no lease and never writes.
        """
        loop = asyncio.get_running_loop()
        worker = Worker(loop)
        try:
            engine = await worker.submit(
                partial(
                    open_engine, self.options, store, file_name,
                    readonly=readonly, loop=loop, lock_timeout=lock_timeout,
                )
            )
        except BaseException:
            await worker.stop()
            raise
        if engine.client.is_async:
            worker.no_spin()
        return Database(engine, file_name, loop, worker)


class OpenDatabase:
    """What the async :class:`Database` and the sync :class:`~sqlkv.sync.Connection`
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


class Database(OpenDatabase):
    """An open database (async). Made by :meth:`SqliteVfs.open`."""

    def __init__(
        self, engine: Engine, name: str, loop: asyncio.AbstractEventLoop, worker: Worker
    ) -> None:
        self._engine = engine
        self.name = name
        self._loop = loop
        self._worker = worker
        self._closed = False
        # Dropped without close(): close the engine on its thread and end the thread.
        self._finalizer = weakref.finalize(self, worker.abandon, engine.close)
        self._finalizer.atexit = False

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        # The worker runs calls one at a time in the order queued: no lock needed.
        if self._closed:
            raise ClosedError(f"database {self.name!r} is closed")
        if asyncio.get_running_loop() is not self._loop:
            raise Error(f"database {self.name!r} was opened on another event loop")
        return await self._worker.call(fn, *args)

    async def exec(self, sql: str, callback: RowCallback | None = None) -> list[QueryResult]:
        """Run every statement of ``sql``; ``callback(row, columns)`` for each result row.

        The callback runs on the event loop, after SQLite has finished; it may
        be a coroutine function. Returns one :class:`QueryResult` per statement too.
        """
        results = await self._call(self._engine.exec, sql)
        if callback is not None:
            for result in results:
                for row in result.rows:
                    outcome = callback(list(row), result.columns)
                    if inspect.isawaitable(outcome):
                        await outcome
        return results

    async def query(self, sql: str, params: Any = None) -> QueryResult:
        """Run one statement; its ``.rows`` (tuples) and ``.columns``."""
        return await self._call(self._engine.query, sql, params)

    async def run(self, sql: str, params: Any = None) -> RunResult:
        """Run one statement for its effect; rows changed and last rowid inserted."""
        return await self._call(self._engine.run, sql, params)

    async def close(self) -> None:
        """Close the database; later calls raise :class:`ClosedError`. Closing twice is fine."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        # Queued after every call made before it, so those still run first.
        closing = self._worker.submit(self._engine.close)
        try:
            await closing
        finally:
            await self._worker.stop()

    async def __aenter__(self) -> "Database":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

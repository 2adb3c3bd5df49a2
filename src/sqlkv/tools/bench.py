"""The benchmark behind ``sqlkv bench``: the five workloads of docs/workloads.md.

Every system runs the same SQL strings, values inlined, on one database named
``bench.db``:

``insert-autocommit``     1000 single-row INSERTs, each its own transaction
``insert-batched-100``    100 transactions of ``BEGIN; 100 INSERTs; COMMIT;``
``point-select``          2000 SELECTs by key on a 16 MiB database, reopened first
``update-16MiB``          100 single-row UPDATEs on that open database
``cold-open-read-16MiB``  open that database, closed, and SELECT one row

A store is metered at its door (:mod:`sqlkv.stores.latency`), every call first
sleeping ``latency_ms``; the counters are reset after each workload's setup,
so only the measured ops count. The three 16 MiB workloads are one chain: a
later one picked alone runs the earlier ones first, unmeasured, so it always
starts from the state docs/workloads.md describes.

sqlkv opens ``bench.db`` without a writer lease (``lease_seconds=None``).

The baseline ``sqlite3-file`` is the standard library's ``sqlite3`` on a local
file with ``synchronous=FULL``: no store, so it has no round-trip figures.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, Error
from ..format.layout import JOURNAL, decode_file_meta, make_layout
from ..stores.contract import AnyKvStore, StoreClient
from ..stores.latency import Meter, metered

DB_NAME = "bench.db"

INSERT_AUTOCOMMIT = "insert-autocommit"
INSERT_BATCHED = "insert-batched-100"
POINT_SELECT = "point-select"
UPDATE = "update-16MiB"
COLD_OPEN = "cold-open-read-16MiB"
WORKLOADS = (INSERT_AUTOCOMMIT, INSERT_BATCHED, POINT_SELECT, UPDATE, COLD_OPEN)
#: The workloads that share the 16 MiB database, in the order they run.
CHAIN_16MIB = (POINT_SELECT, UPDATE, COLD_OPEN)

#: Measured ops of each workload.
OPS = {INSERT_AUTOCOMMIT: 1000, INSERT_BATCHED: 100, POINT_SELECT: 2000, UPDATE: 100, COLD_OPEN: 1}

BASELINE = "sqlite3-file"
SQLKV_BACKENDS = ("pages", "snapshot")
SYSTEMS = (*SQLKV_BACKENDS, BASELINE)
APIS = ("async", "sync")

CREATE_TABLE = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
ROWS_16MIB = 16000
SETUP_TX_ROWS = 500


def padded(n: int, width: int) -> str:
    """The number ``n`` left-padded with ``x`` to ``width`` characters."""
    return str(n).rjust(width, "x")


def insert_sql(row: int) -> str:
    """One row of the insert workloads: ``v`` is its row number padded to 100 characters."""
    return f"INSERT INTO t(v) VALUES ('{padded(row, 100)}')"


def batch_sql(first_row: int, rows: int = 100) -> str:
    """One transaction of ``insert-batched-100``: ``BEGIN; 100 INSERTs; COMMIT;``."""
    inserts = "; ".join(insert_sql(first_row + i) for i in range(rows))
    return f"BEGIN; {inserts}; COMMIT;"


def setup_16mib_sql() -> list[str]:
    """The point-select database: 16,000 rows of 1,000-byte text, in transactions of 500."""
    statements = [CREATE_TABLE]
    for start in range(1, ROWS_16MIB + 1, SETUP_TX_ROWS):
        values = ",".join(
            f"({k}, '{padded(k, 1000)}')" for k in range(start, start + SETUP_TX_ROWS)
        )
        statements.append(f"BEGIN; INSERT INTO t(id, v) VALUES {values}; COMMIT;")
    return statements


def point_select_key(i: int) -> int:
    return 1 + (i * 7919) % ROWS_16MIB


def update_key(i: int) -> int:
    return 1 + (i * 104729) % ROWS_16MIB


def update_sql(i: int) -> str:
    key = update_key(i)
    return f"UPDATE t SET v='{padded(key, 100)}' WHERE id={key}"


COLD_OPEN_KEY = 8000


# -- results -----------------------------------------------------------------


@dataclass
class Result:
    """One workload's figures. The round-trip fields are ``None`` for the baseline."""

    system: str
    workload: str
    latency_ms: float
    ops: int
    seconds: float
    kv_calls: int | None = None
    bytes_written: int | None = None
    bytes_read: int | None = None
    chunks_written: int | None = None
    store_seconds: float | None = None

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else float("inf")

    def per_op(self, value: float | None, digits: int = 0) -> float | int | None:
        if value is None:
            return None
        return round(value / self.ops, digits) if digits else round(value / self.ops)

    @property
    def round_trip_ms(self) -> float | None:
        """Mean wall time of one store call, the added latency included."""
        if not self.kv_calls or self.store_seconds is None:
            return None
        return self.store_seconds / self.kv_calls * 1000

    def as_dict(self) -> dict[str, Any]:
        """The fields of docs/workloads.md, in its order, then ``chunks_written_per_op`` and
        ``round_trip_ms`` (the mean measured store call)."""
        rtt = self.round_trip_ms
        return {
            "system": self.system,
            "workload": self.workload,
            "latency_ms": self.latency_ms,
            "ops": self.ops,
            "seconds": round(self.seconds, 6),
            "ops_per_s": round(self.ops_per_s, 1),
            "kv_calls": self.kv_calls,
            "kv_calls_per_op": self.per_op(self.kv_calls, 4),
            "bytes_written_per_op": self.per_op(self.bytes_written),
            "bytes_read_per_op": self.per_op(self.bytes_read),
            "chunks_written_per_op": self.per_op(self.chunks_written, 4),
            "round_trip_ms": None if rtt is None else round(rtt, 4),
        }


# -- the systems under test --------------------------------------------------


class Session:
    """One system's way of running SQL on ``bench.db``; workloads only see this."""

    system: str = ""
    latency_ms: float = 0.0

    async def open(self) -> None:
        raise NotImplementedError

    async def exec(self, sql: str) -> None:
        """Run every statement of ``sql``."""
        raise NotImplementedError

    async def query(self, sql: str) -> list[tuple]:
        """Run one statement and return its rows."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Zero the counters: what follows is measured."""

    def result(self, workload: str, ops: int, seconds: float) -> Result:
        return Result(self.system, workload, self.latency_ms, ops, seconds)

    def finish(self) -> None:
        """Release what the session holds (its store, its files)."""


class SqlkvSession(Session):
    """sqlkv on ``backend``, through the async API or its sync twin, on a metered store."""

    def __init__(
        self, backend: str, store_url: str, latency_ms: float, api: str,
        cache_bytes: int | None = None,
    ) -> None:
        if backend not in SQLKV_BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(SYSTEMS)}, not {backend!r}")
        if api not in APIS:
            raise ConfigError(f"api must be one of {', '.join(APIS)}, not {api!r}")
        self.backend = backend
        self.api = api
        # One writer, like the systems compared: no writer lease, which on a
        # store with write_batch adds a round trip to an open and one to a close.
        self.options: dict[str, Any] = {"backend": backend, "lease_seconds": None}
        if cache_bytes is not None:
            self.options["cache_bytes"] = cache_bytes
        self.latency_ms = latency_ms
        scheme = store_url.split("://", 1)[0]
        self.system = f"sqlkv-{backend}{'-sync' if api == 'sync' else ''}/{scheme}"
        layout = make_layout("seed", 9, DB_NAME)
        chunk_prefix = layout.chunk_prefix(DB_NAME)
        inner, self._cleanup = fresh_store(store_url)
        self.store = metered(inner, latency_ms, chunk_prefix)
        self.db: Any = None

    @property
    def meter(self) -> Meter:
        return self.store.meter

    async def open(self) -> None:
        from ..runtime.connection import connect
        from ..runtime.database import SqliteVfs

        if self.api == "async":
            self.db = await SqliteVfs(**self.options).open(DB_NAME, self.store)
        else:
            self.db = connect(self.store, DB_NAME, **self.options)

    async def exec(self, sql: str) -> None:
        if self.api == "async":
            await self.db.exec(sql)
        else:
            self.db.exec(sql)

    async def query(self, sql: str) -> list[tuple]:
        if self.api == "async":
            return (await self.db.query(sql)).rows
        return self.db.query(sql).rows

    async def close(self) -> None:
        if self.db is not None:
            db, self.db = self.db, None
            if self.api == "async":
                await db.close()
            else:
                db.close()

    def reset(self) -> None:
        self.meter.reset()

    def result(self, workload: str, ops: int, seconds: float) -> Result:
        m = self.meter
        return Result(
            self.system, workload, self.latency_ms, ops, seconds,
            kv_calls=m.round_trips, bytes_written=m.bytes_written, bytes_read=m.bytes_read,
            chunks_written=m.chunks_written, store_seconds=m.store_seconds,
        )

    def finish(self) -> None:
        self.store.close()
        self._cleanup()


class Sqlite3FileSession(Session):
    """The baseline: stdlib ``sqlite3`` on a local file, ``synchronous=FULL``, autocommit."""

    system = f"{BASELINE}(synchronous=FULL)"

    def __init__(self, directory: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="sqlkv-bench-", dir=directory)
        self.path = os.path.join(self.dir, DB_NAME)
        self.conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA synchronous=FULL")

    def _conn(self) -> sqlite3.Connection:
        if self.conn is None:
            raise RuntimeError("the baseline's file is not open")
        return self.conn

    async def exec(self, sql: str) -> None:
        self._conn().executescript(sql)

    async def query(self, sql: str) -> list[tuple]:
        return self._conn().execute(sql).fetchall()

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def finish(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def fresh_store(url: str) -> tuple[AnyKvStore, Callable[[], None]]:
    """A store from ``url`` holding no ``bench.db``, and what to call when done with it.

    ``memory://`` is a new store; ``lmdb://DIR`` a new LMDB environment in a
    temporary folder inside DIR (the system's temporary folder when DIR is
    empty), removed afterwards; any other URL is opened as it is and an old
    ``bench.db`` in it is deleted first.
    """
    from ..stores.urls import open_store

    scheme, _, rest = url.partition("://")
    if scheme == "lmdb":
        if rest:
            os.makedirs(rest, exist_ok=True)
        path = tempfile.mkdtemp(prefix="sqlkv-bench-", dir=rest or None)
        return open_store(f"lmdb://{path}"), lambda: shutil.rmtree(path, ignore_errors=True)
    store = open_store(url)
    if scheme != "memory":
        _delete_database(store)
    return store, lambda: None


def _delete_database(store: AnyKvStore) -> None:
    """Delete ``bench.db`` (and a journal beside it) from ``store``."""
    layout = make_layout("seed", 9, DB_NAME)
    client = StoreClient(store)
    try:
        for name in (DB_NAME, DB_NAME + JOURNAL):
            meta = client.get(layout.meta_key(name))
            if meta is None:
                continue
            chunks = -(-decode_file_meta(meta, 4096, layout.meta_key(name)) // 4096)
            keys = layout.chunk_keys(name, range(chunks)) + [layout.meta_key(name)]
            client.write((), keys)
    finally:
        client.close()


# -- the workloads -------------------------------------------------------------

Progress = Callable[[int], None]


def _no_progress(n: int) -> None:
    pass


async def _timed(
    session: Session, workload: str, statements: Sequence[str], progress: Progress,
    check: Callable[[int, list[tuple]], None] | None = None,
) -> Result:
    """Run ``statements`` (``exec``, or ``query`` with ``check`` of each one's rows), timed."""
    session.reset()
    step = max(1, len(statements) // 20)
    start = time.perf_counter()
    if check is None:
        for i, sql in enumerate(statements):
            await session.exec(sql)
            if i % step == step - 1:
                progress(step)
    else:
        for i, sql in enumerate(statements):
            check(i, await session.query(sql))
            if i % step == step - 1:
                progress(step)
    seconds = time.perf_counter() - start
    progress(len(statements) % step)
    return session.result(workload, len(statements), seconds)


def _check_point_select(i: int, rows: list[tuple]) -> None:
    key = point_select_key(i)
    if rows != [(padded(key, 1000),)]:
        raise Error(f"point-select {i}: row {key} did not arrive intact")


async def run_insert_autocommit(session: Session, progress: Progress = _no_progress) -> Result:
    await session.open()
    try:
        await session.exec(CREATE_TABLE)
        statements = [insert_sql(row) for row in range(1, OPS[INSERT_AUTOCOMMIT] + 1)]
        return await _timed(session, INSERT_AUTOCOMMIT, statements, progress)
    finally:
        await session.close()


async def run_insert_batched(session: Session, progress: Progress = _no_progress) -> Result:
    await session.open()
    try:
        await session.exec(CREATE_TABLE)
        statements = [batch_sql(1 + 100 * tx) for tx in range(OPS[INSERT_BATCHED])]
        return await _timed(session, INSERT_BATCHED, statements, progress)
    finally:
        await session.close()


async def run_chain_16mib(
    session: Session, wanted: Iterable[str], progress: Progress = _no_progress
) -> AsyncIterator[Result]:
    """The 16 MiB workloads in ``wanted``, and the earlier ones they start from, unmeasured."""
    wanted = set(wanted)
    last = max(CHAIN_16MIB.index(w) for w in wanted)
    silent = _no_progress
    await session.open()
    try:
        for sql in setup_16mib_sql():
            await session.exec(sql)
        await session.close()
        await session.open()
        statements = [
            f"SELECT v FROM t WHERE id={point_select_key(i)}" for i in range(OPS[POINT_SELECT])
        ]
        on = POINT_SELECT in wanted
        result = await _timed(
            session, POINT_SELECT, statements, progress if on else silent, _check_point_select
        )
        if on:
            yield result
        if last >= 1:
            statements = [update_sql(i) for i in range(OPS[UPDATE])]
            on = UPDATE in wanted
            result = await _timed(session, UPDATE, statements, progress if on else silent)
            if on:
                yield result
    finally:
        await session.close()
    if last >= 2:
        session.reset()
        start = time.perf_counter()
        await session.open()
        try:
            rows = await session.query(f"SELECT v FROM t WHERE id={COLD_OPEN_KEY}")
            seconds = time.perf_counter() - start
        finally:
            await session.close()
        if rows != [(padded(COLD_OPEN_KEY, 1000),)]:
            raise Error(f"cold-open-read: row {COLD_OPEN_KEY} did not arrive intact")
        progress(1)
        yield session.result(COLD_OPEN, 1, seconds)


@dataclass(frozen=True)
class Plan:
    """What one ``sqlkv bench`` run measures."""

    systems: tuple[str, ...] = ("pages",)
    store_url: str = "memory://"
    latency_ms: float = 0.0
    workloads: tuple[str, ...] = WORKLOADS
    api: str = "async"
    #: The chunk cache per database; ``None``: sqlkv's default.
    cache_bytes: int | None = None

    def __post_init__(self) -> None:
        for system in self.systems:
            if system not in SYSTEMS:
                raise ConfigError(f"backend must be one of {', '.join(SYSTEMS)}, not {system!r}")
        for workload in self.workloads:
            if workload not in WORKLOADS:
                raise ConfigError(
                    f"workload must be one of {', '.join(WORKLOADS)}, not {workload!r}"
                )
        if self.latency_ms < 0:
            raise ConfigError(f"latency_ms must not be negative, not {self.latency_ms}")
        if self.api not in APIS:
            raise ConfigError(f"api must be one of {', '.join(APIS)}, not {self.api!r}")

    @property
    def total_ops(self) -> int:
        return len(self.systems) * sum(OPS[w] for w in self.workloads)

    def session(self, system: str) -> Session:
        if system == BASELINE:
            return Sqlite3FileSession()
        return SqlkvSession(system, self.store_url, self.latency_ms, self.api, self.cache_bytes)


async def run(plan: Plan, progress: Progress = _no_progress) -> AsyncIterator[Result]:
    """Run ``plan``, yielding each workload's :class:`Result` as soon as it is measured."""
    chain = [w for w in plan.workloads if w in CHAIN_16MIB]
    for system in plan.systems:
        for workload, runner in ((INSERT_AUTOCOMMIT, run_insert_autocommit),
                                 (INSERT_BATCHED, run_insert_batched)):
            if workload in plan.workloads:
                session = plan.session(system)
                try:
                    yield await runner(session, progress)
                finally:
                    session.finish()
        if chain:
            session = plan.session(system)
            try:
                async for result in run_chain_16mib(session, chain, progress):
                    yield result
            finally:
                session.finish()


def run_sync(plan: Plan, progress: Progress = _no_progress) -> list[Result]:
    """:func:`run` from synchronous code: every result, in order."""

    async def collect() -> list[Result]:
        return [result async for result in run(plan, progress)]

    return asyncio.run(collect())

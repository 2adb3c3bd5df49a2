"""The synchronous twin of the async API: the same calls, without ``await``.

    with sqlkv.connect(store, "app.db") as db:
        db.exec("CREATE TABLE t(x)")
        db.query("SELECT * FROM t").rows

SQLite runs on the calling thread; an async store's coroutines run on a
private event loop thread. A connection may be shared between threads: calls
are run one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .backends import open_engine
from .database import OpenDatabase
from .engine import Engine, QueryResult, RunResult
from .errors import ClosedError
from .lease import DEFAULT_LEASE_SECONDS
from .options import DEFAULT_CACHE_BYTES, DEFAULT_MAX_DIRTY_BYTES, Options
from .store import AnyKvStore


def connect(
    store: AnyKvStore,
    file_name: str,
    *,
    kv_prefix: int = 9,
    chunk_size: int = 4096,
    backend: str | None = None,
    layout: str = "seed",
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    max_dirty_bytes: int = DEFAULT_MAX_DIRTY_BYTES,
    readonly: bool = False,
    lease_seconds: float | None = DEFAULT_LEASE_SECONDS,
    lock_timeout: float = 0.0,
) -> "Connection":
    """Open (creating if needed) the database ``file_name`` in ``store``, synchronously.

    The options are :class:`sqlkv.SqliteVfs`'s and its ``open``'s.
    """
    options = Options(
        kv_prefix=kv_prefix,
        chunk_size=chunk_size,
        backend=backend,
        layout=layout,
        cache_bytes=cache_bytes,
        lease_seconds=lease_seconds,
        max_dirty_bytes=max_dirty_bytes,
    )
    engine = open_engine(options, store, file_name, readonly=readonly, lock_timeout=lock_timeout)
    return Connection(engine, file_name)


class Connection(OpenDatabase):
    """An open database (sync). Made by :func:`connect`."""

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self.name = name
        self._lock = threading.Lock()
        self._closed = False

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            if self._closed:
                raise ClosedError(f"database {self.name!r} is closed")
            return fn(*args)

    def exec(
        self, sql: str, callback: Callable[[list, list[str]], Any] | None = None
    ) -> list[QueryResult]:
        """Run every statement of ``sql``; ``callback(row, columns)`` for each result row.

        Returns one :class:`QueryResult` per statement too.
        """
        results = self._call(self._engine.exec, sql)
        if callback is not None:
            for result in results:
                for row in result.rows:
                    callback(list(row), result.columns)
        return results

    def query(self, sql: str, params: Any = None) -> QueryResult:
        """Run one statement; its ``.rows`` (tuples) and ``.columns``."""
        return self._call(self._engine.query, sql, params)

    def run(self, sql: str, params: Any = None) -> RunResult:
        """Run one statement for its effect; rows changed and last rowid inserted."""
        return self._call(self._engine.run, sql, params)

    def close(self) -> None:
        """Close the connection; later calls raise :class:`ClosedError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._engine.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

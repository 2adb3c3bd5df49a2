"""Test helpers: stores that count or await, the 16 MiB workload database."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
from collections import Counter

import sqlkv
from sqlkv.stores.wrapper import AsyncStoreWrapper, StoreWrapper, call_parts
from sqlkv.tools.bench import setup_16mib_sql


class CountingStore(StoreWrapper):
    """Wraps a store, exposing only the five seed calls (and ``write_batch`` when
    asked to), and counts every call."""

    def __init__(
        self, inner=None, limits: sqlkv.StoreLimits | None = None, write_batch: bool = False
    ) -> None:
        super().__init__(
            inner if inner is not None else sqlkv.MemoryStore(),
            limits=limits if limits is not None else sqlkv.StoreLimits(),
            write_batch=write_batch,
        )
        self.calls: Counter[str] = Counter()
        self.keys_written: list[bytes] = []

    def _call(self, kind, *args):
        self.calls[kind] += 1
        self.keys_written.extend(k for k, _ in call_parts(kind, args).puts)
        return super()._call(kind, *args)

    def reset(self) -> None:
        self.calls.clear()
        self.keys_written.clear()

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class AsyncMemoryStore(AsyncStoreWrapper):
    """A MemoryStore behind ``async def`` calls that really yield to the loop."""

    def __init__(self, inner=None) -> None:
        super().__init__(inner if inner is not None else sqlkv.MemoryStore())

    async def _call(self, kind, *args):
        await asyncio.sleep(0)
        return await super()._call(kind, *args)


async def stored_keys(store) -> list[bytes]:
    """Every key a store holds, through its ``scan`` (sync or async)."""
    keys = store.scan(b"")
    if inspect.isawaitable(keys):
        keys = await keys
    return list(keys)


def integrity(db_conn) -> list:
    return db_conn.query("PRAGMA integrity_check").rows


def make_16mib(store, name: str = "bench.db", backend: str = "pages") -> None:
    """The docs/workloads.md point-select database: 16,000 rows of 1,000-byte text."""
    with sqlkv.connect(store, name, backend=backend) as db:
        for sql in setup_16mib_sql():
            db.exec(sql)


def copy_store(store: sqlkv.MemoryStore) -> sqlkv.MemoryStore:
    clone = sqlkv.MemoryStore()
    clone._data = dict(store._data)
    return clone


_namespaces = itertools.count(1)


def unique_namespace() -> str:
    """A Redis namespace no other store of this test run uses."""
    return f"t{os.getpid()}-{next(_namespaces)}"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class FiveCallStore(StoreWrapper):
    """A MemoryStore (``inner``, or a new one) seen through the seed's five
    calls only (no write_batch)."""

    def __init__(self, inner: sqlkv.MemoryStore | None = None) -> None:
        super().__init__(inner if inner is not None else sqlkv.MemoryStore())


class SqliteFileStore:
    """A store in a local SQLite file (stdlib): its data stays on disk, not in
    this process's memory, which makes it the store to measure memory against."""

    def __init__(self, path, limits: sqlkv.StoreLimits | None = None) -> None:
        import sqlite3
        import threading

        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;"
            "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID;"
        )
        self._lock = threading.Lock()
        if limits is not None:
            self.limits = limits

    def get(self, key):
        return self.get_batch([key])[0]

    def get_batch(self, keys):
        with self._lock:
            found = {}
            for key in keys:
                row = self._conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
                found[key] = row[0] if row else None
            return [found[k] for k in keys]

    def put(self, key, value):
        self.put_batch([(key, value)])

    def put_batch(self, entries):
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", entries)
            self._conn.execute("COMMIT")

    def delete_batch(self, keys):
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany("DELETE FROM kv WHERE k = ?", [(k,) for k in keys])
            self._conn.execute("COMMIT")

    def close(self):
        self._conn.close()


def stored_chunks(store: sqlkv.MemoryStore, name: str, prefix: int = 9) -> list[int]:
    """The chunk indices of file ``name`` (layout seed) that hold a value in ``store``."""
    head = bytes([prefix, 1]) + name.encode() + b"\x00"
    return sorted(int.from_bytes(k[len(head):], "big") for k in store._data if k.startswith(head))


def stored_size(store: sqlkv.MemoryStore, name: str, prefix: int = 9) -> int:
    """The file size that the FileMeta of ``name`` (layout seed) holds."""
    return int.from_bytes(store._data[bytes([prefix, 0]) + name.encode()][2:], "little")


def content(db) -> dict:
    """Everything a database holds, comparable across backends: its schema and every table's rows."""
    schema = db.query(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name"
    ).rows
    tables = [name for kind, name, _, _ in schema if kind == "table" and not name.startswith("sqlite_")]
    out = {"schema": schema, "user_version": db.query("PRAGMA user_version").rows}
    for table in tables:
        out[table] = sorted(db.query(f'SELECT * FROM "{table}"').rows, key=repr)
    return out


def is_version_key(key: bytes) -> bool:
    """Whether ``key`` is one of sqlkv's version keys (layout seed): the version
    record or a version-log entry, which stay beside a database (storage/versions.py)."""
    if len(key) < 4 or key[1] != 0x02:
        return False
    end = key.find(b"\x00", 2)
    return end > 2 and key[end + 1 : end + 2] in (b"v", b"g")


def staging_keys(keys) -> list[bytes]:
    """The keys of sqlkv's own beside app.db (prefix 9, layout seed) other than
    its version keys: staging and lease keys, which must not be left behind."""
    return [k for k in keys if k.startswith(b"\x09\x02") and not is_version_key(k)]


class AsyncWritesIgnored:
    """An async store whose writes do nothing: a subclass answers ``get`` and ``get_batch``."""

    async def put(self, key: bytes, value: bytes) -> None:
        pass

    async def put_batch(self, entries: list[tuple[bytes, bytes]]) -> None:
        pass

    async def delete_batch(self, keys: list[bytes]) -> None:
        pass


def staging_kind(key: bytes) -> bytes | None:
    """The kind byte of one of sqlkv's own keys beside app.db (prefix 9, layout
    seed): ``b"c"`` commit record, ``b"m"`` manifest piece, ``b"d"`` staged
    chunk, ...; ``None`` for any other key."""
    head = b"\x09\x02app.db\x00"
    return key[len(head) : len(head) + 1] if key.startswith(head) else None


def mangled(value: bytes, mode: str) -> bytes:
    """``value`` answered ``"short"`` (its first half) or ``"garbled"`` (one byte flipped)."""
    if mode == "short":
        return value[: len(value) // 2]
    flipped = bytearray(value)
    flipped[len(value) // 2] ^= 0x5A
    return bytes(flipped)


class MangledAnswers(StoreWrapper):
    """A store (``inner``, declaring ``limits``) whose reads answer the values of
    sqlkv's staging keys of the ``kinds`` given short or garbled (``mode``), as a
    store or network that damages data may; what is stored stays intact.

    ``at``: only the read (``get`` or ``get_batch``) of that number, counted
    from 1 over reads that return such a value (``None``: every one), once
    ``armed``. ``after_key``: arm at the first write of that key (else armed
    from the start). ``hits`` counts the reads that returned such a value.
    """

    def __init__(
        self,
        inner,
        limits: sqlkv.StoreLimits | None = None,
        *,
        kinds: bytes = b"d",
        mode: str = "short",
        at: int | None = None,
        after_key: bytes | None = None,
        write_batch: bool = True,
    ) -> None:
        super().__init__(inner, limits=limits, write_batch=write_batch, scan=True)
        self.kinds = kinds
        self.mode = mode
        self.at = at
        self.after_key = after_key
        self.armed = after_key is None
        self.hits = 0
        self.mangled = 0

    def _call(self, kind, *args):
        parts = call_parts(kind, args)
        if not self.armed and any(k == self.after_key for k, _ in parts.puts):
            result = super()._call(kind, *args)
            self.armed = True
            return result
        result = super()._call(kind, *args)
        if not self.armed or kind not in ("get", "get_batch"):
            return result
        values = [result] if kind == "get" else list(result)
        chosen = [i for i, k in enumerate(parts.reads) if values[i] and (staging_kind(k) or b"?") in self.kinds]
        if not chosen:
            return result
        self.hits += 1
        if self.at is not None and self.hits != self.at:
            return result
        for i in chosen:
            values[i] = mangled(values[i], self.mode)
        self.mangled += 1
        return values[0] if kind == "get" else values

"""Test helpers: stores that count or await, the 16 MiB workload database."""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import sqlkv
from sqlkv.bench import setup_16mib_sql


class CountingStore:
    """Wraps a store, exposing only the five seed calls, and counts every call."""

    def __init__(self, inner=None, limits: sqlkv.StoreLimits | None = None) -> None:
        self.inner = inner if inner is not None else sqlkv.MemoryStore()
        self.calls: Counter[str] = Counter()
        self.keys_written: list[bytes] = []
        if limits is not None:
            self.limits = limits

    def get(self, key):
        self.calls["get"] += 1
        return self.inner.get(key)

    def get_batch(self, keys):
        self.calls["get_batch"] += 1
        return self.inner.get_batch(keys)

    def put(self, key, value):
        self.calls["put"] += 1
        self.keys_written.append(key)
        return self.inner.put(key, value)

    def put_batch(self, entries):
        self.calls["put_batch"] += 1
        self.keys_written.extend(k for k, _ in entries)
        return self.inner.put_batch(entries)

    def delete_batch(self, keys):
        self.calls["delete_batch"] += 1
        return self.inner.delete_batch(keys)

    def reset(self) -> None:
        self.calls.clear()
        self.keys_written.clear()

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class AsyncMemoryStore:
    """A MemoryStore behind ``async def`` calls that really yield to the loop."""

    def __init__(self, inner=None) -> None:
        self.inner = inner if inner is not None else sqlkv.MemoryStore()

    async def get(self, key):
        await asyncio.sleep(0)
        return self.inner.get(key)

    async def get_batch(self, keys):
        await asyncio.sleep(0)
        return self.inner.get_batch(keys)

    async def put(self, key, value):
        await asyncio.sleep(0)
        self.inner.put(key, value)

    async def put_batch(self, entries):
        await asyncio.sleep(0)
        self.inner.put_batch(entries)

    async def delete_batch(self, keys):
        await asyncio.sleep(0)
        self.inner.delete_batch(keys)


def integrity(db_conn) -> list:
    return db_conn.query("PRAGMA integrity_check").rows


def make_16mib(store, name: str = "bench.db", backend: str = "pages") -> None:
    """The WORKLOADS.md point-select database: 16,000 rows of 1,000-byte text."""
    with sqlkv.connect(store, name, backend=backend) as db:
        for sql in setup_16mib_sql():
            db.exec(sql)


def copy_store(store: sqlkv.MemoryStore) -> sqlkv.MemoryStore:
    clone = sqlkv.MemoryStore()
    clone._data = dict(store._data)
    return clone


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")

"""Many databases in one process: the figures of issue 12's targets.

    python benchmarks/many_databases.py [--databases 10000] [--idle-seconds 9]

Opens ``--databases`` databases at once on one event loop (async API,
backend ``pages``, one MemoryStore, each writer with its lease,
``lease_seconds=6``), each created with one table and one row, and prints
one JSON object: threads and file descriptors added, opens per second (open +
CREATE + INSERT), the time of one query on every database at once
(``asyncio.gather``), resident memory per open database beyond the store's
bytes, and the store calls spent keeping the leases alive over
``--idle-seconds`` idle seconds (then every database writes once, proving its
lease still held).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import threading
import time
from collections import Counter

import sqlkv
from sqlkv.wrapper import StoreWrapper


class CountedMemoryStore(StoreWrapper):
    """A MemoryStore (with ``write_batch``, so writers take leases) counting its calls."""

    def __init__(self) -> None:
        super().__init__(sqlkv.MemoryStore(), write_batch=True)
        self.calls: Counter[str] = Counter()

    def _call(self, kind, *args):
        self.calls[kind] += 1
        return super()._call(kind, *args)

    def stored_bytes(self) -> int:
        data = self.inner._data
        return sum(len(k) + len(v) for k, v in data.items())


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def measure(count: int, idle_seconds: float) -> dict:
    store = CountedMemoryStore()
    vfs = sqlkv.SqliteVfs(backend="pages", lease_seconds=6)
    gc.collect()
    threads0, fds0, rss0 = threading.active_count(), _fds(), _rss_bytes()

    async def open_one(i: int) -> sqlkv.Database:
        db = await vfs.open(f"db{i}.db", store)
        await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        return db

    start = time.perf_counter()
    dbs = await asyncio.gather(*(open_one(i) for i in range(count)))
    open_seconds = time.perf_counter() - start
    start = time.perf_counter()
    results = await asyncio.gather(*(db.query("SELECT x FROM t") for db in dbs))
    gather_seconds = time.perf_counter() - start
    assert all(r.rows == [(1,)] for r in results)
    gc.collect()
    rss_per_db = (_rss_bytes() - rss0 - store.stored_bytes()) / count
    threads, fds = threading.active_count() - threads0, _fds() - fds0
    store.calls.clear()
    await asyncio.sleep(idle_seconds)
    upkeep = sum(store.calls.values())
    await asyncio.gather(*(db.run("INSERT INTO t VALUES (2)") for db in dbs))
    await asyncio.gather(*(db.close() for db in dbs))
    return {
        "databases": count,
        "cores": os.cpu_count(),
        "threads_added": threads,
        "fds_added": fds,
        "opens_per_s": round(count / open_seconds, 1),
        "gather_query_s": round(gather_seconds, 3),
        "rss_kb_per_active_db": round(rss_per_db / 1024, 1),
        "lease_upkeep_calls": upkeep,
        "idle_seconds": idle_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=9.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.databases, args.idle_seconds))))


if __name__ == "__main__":
    main()

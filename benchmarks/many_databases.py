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
import subprocess
import sys
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
    hibernated_per_db = hibernated_in_a_fresh_process(count)
    return {
        "databases": count,
        "cores": os.cpu_count(),
        "threads_added": threads,
        "fds_added": fds,
        "opens_per_s": round(count / open_seconds, 1),
        "gather_query_s": round(gather_seconds, 3),
        "rss_kb_per_active_db": round(rss_per_db / 1024, 1),
        "rss_kb_per_hibernated_db": round(hibernated_per_db / 1024, 1),
        "lease_upkeep_calls": upkeep,
        "idle_seconds": idle_seconds,
    }


def hibernated_in_a_fresh_process(count: int) -> float:
    """:func:`measure_hibernated` in a process of its own (memory this one gave
    back would otherwise serve the databases measured, and hide their cost)."""
    out = subprocess.run(
        [sys.executable, __file__, "--hibernated-only", "--databases", str(count)],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(json.loads(out)["rss_bytes_per_hibernated_db"])


async def measure_hibernated(count: int) -> float:
    """Resident memory per hibernated database beyond the store's bytes: ``count``
    more databases, opened (created with one table and one row) and hibernated
    20 at a time, so that memory one batch gives back serves the next."""
    store = CountedMemoryStore()
    vfs = sqlkv.SqliteVfs(backend="pages", lease_seconds=6)
    gc.collect()
    rss0, stored0 = _rss_bytes(), store.stored_bytes()
    dbs: list[sqlkv.Database] = []
    for first in range(0, count, 20):
        batch = await asyncio.gather(*(vfs.open(f"h{i}.db", store) for i in range(first, min(first + 20, count))))
        await asyncio.gather(*(db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)") for db in batch))
        assert all(await asyncio.gather(*(db.hibernate() for db in batch)))
        dbs.extend(batch)
    gc.collect()
    per_db = (_rss_bytes() - rss0 - (store.stored_bytes() - stored0)) / count
    # Each still works: it wakes at its next call.
    results = await asyncio.gather(*(db.query("SELECT x FROM t") for db in dbs))
    assert all(r.rows == [(1,)] for r in results)
    await asyncio.gather(*(db.close() for db in dbs))
    return per_db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=9.0)
    parser.add_argument("--hibernated-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hibernated_only:
        print(json.dumps({"rss_bytes_per_hibernated_db": asyncio.run(measure_hibernated(args.databases))}))
        return
    print(json.dumps(asyncio.run(measure(args.databases, args.idle_seconds))))


if __name__ == "__main__":
    main()

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
lease still held). Also, for the opens: SQLite's own memory per database
(``apsw.status``), the voluntary context switches and system time per open
(``getrusage``), Python's full garbage collections and the time they took;
and, each in a process of its own, the memory per hibernated database and the
opens per second of the sync API (``sqlkv.connect`` in a loop).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter

import apsw

import sqlkv
from sqlkv.stores.wrapper import StoreWrapper


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
    # First, while this process is still small (a large one beside it slows it down).
    sync = in_a_fresh_process("--sync-only", count)
    store = CountedMemoryStore()
    vfs = sqlkv.SqliteVfs(backend="pages", lease_seconds=6)
    gc.collect()
    threads0, fds0, rss0 = threading.active_count(), _fds(), _rss_bytes()

    async def open_one(i: int) -> sqlkv.Database:
        db = await vfs.open(f"db{i}.db", store)
        await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        return db

    collections = FullCollections()
    sqlite0 = apsw.status(apsw.SQLITE_STATUS_MEMORY_USED)[0]
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    with collections:
        dbs = await asyncio.gather(*(open_one(i) for i in range(count)))
    open_seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    sqlite_per_db = (apsw.status(apsw.SQLITE_STATUS_MEMORY_USED)[0] - sqlite0) / count
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
    hibernated_per_db = float(in_a_fresh_process("--hibernated-only", count)["rss_bytes_per_hibernated_db"])
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
        "sqlite_kb_per_active_db": round(sqlite_per_db / 1024, 1),
        "voluntary_switches_per_open": round((usage.ru_nvcsw - usage0.ru_nvcsw) / count, 1),
        "system_us_per_open": round((usage.ru_stime - usage0.ru_stime) / count * 1e6),
        "full_collections_during_opens": collections.count,
        "full_collection_seconds": round(collections.seconds, 2),
        **sync,
    }


class FullCollections:
    """Counts Python's full (generation 2) garbage collections while in use, and their time."""

    def __init__(self) -> None:
        self.count, self.seconds, self._start = 0, 0.0, 0.0

    def _note(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.count += 1
            self.seconds += time.perf_counter() - self._start

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._note)


def in_a_fresh_process(mode: str, count: int) -> dict:
    """This script's ``mode`` (``--hibernated-only``, ``--sync-only``) in a process
    of its own (memory this one gave back would otherwise serve the databases
    measured, and hide their cost); its JSON answer."""
    out = subprocess.run(
        [sys.executable, __file__, mode, "--databases", str(count)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def measure_sync_opens(count: int) -> dict:
    """Opens per second through the sync API, ``count`` databases opened and
    created one after another (same store, options and statements), with the
    voluntary context switches and system time per open."""
    store = CountedMemoryStore()
    conns = []
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for i in range(count):
        conn = sqlkv.connect(store, f"db{i}.db", backend="pages", lease_seconds=6)
        conn.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        conns.append(conn)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    for conn in conns:
        conn.close()
    return {
        "sync_opens_per_s": round(count / seconds, 1),
        "sync_voluntary_switches_per_open": round((usage.ru_nvcsw - usage0.ru_nvcsw) / count, 1),
        "sync_system_us_per_open": round((usage.ru_stime - usage0.ru_stime) / count * 1e6),
    }


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
    parser.add_argument("--sync-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hibernated_only:
        print(json.dumps({"rss_bytes_per_hibernated_db": asyncio.run(measure_hibernated(args.databases))}))
        return
    if args.sync_only:
        print(json.dumps(measure_sync_opens(args.databases)))
        return
    print(json.dumps(asyncio.run(measure(args.databases, args.idle_seconds))))


if __name__ == "__main__":
    main()

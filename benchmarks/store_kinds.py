"""Point queries through the async API over a sync store and over an async store.

    python benchmarks/store_kinds.py [--queries 3000] [--rounds 5]

One database (backend ``pages``) of 20,000 rows of 200 bytes (about 5 MB),
opened as a writer (so reads make no version check) through ``sqlkv.SqliteVfs``, over a MemoryStore (sync: the pool's
thread calls it directly) and over the same MemoryStore behind
``AsyncStoreWrapper`` (async: each store call is a coroutine the pool's thread
hands to the event loop and waits for). Two cases each: ``cached``, point
queries on rows SQLite's page cache holds (no store call); ``store``, point
queries spread over the whole database with a 64 KiB chunk cache, so most
reach the store (one ``get_batch`` each). Prints one JSON line per case and
store: the median round's queries per second, the store calls per query, and
for the async store its rate as a share of the sync store's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time

import sqlkv
from sqlkv.stores.contract import AnyKvStore
from sqlkv.stores.wrapper import AsyncStoreWrapper

ROWS = 20_000


def fill(store: sqlkv.MemoryStore) -> None:
    with sqlkv.connect(store, "bench.db", backend="pages", lease_seconds=None) as db:
        db.exec(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
            f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})"
            " INSERT INTO t SELECT i, printf('%.200c', 'x') FROM n"
        )


async def one_round(store: AnyKvStore, case: str, queries: int) -> tuple[float, float]:
    cache = 64 * 1024 if case == "store" else 16 * 1024 * 1024
    vfs = sqlkv.SqliteVfs(backend="pages", cache_bytes=cache, lease_seconds=None)
    db = await vfs.open("bench.db", store)  # a writer: no version check per read
    rng = random.Random(7)
    ids = [rng.randrange(1, ROWS + 1) if case == "store" else 1 + i % 50 for i in range(queries)]
    for i in ids[:100]:  # warm up (and, cached, load the 50 rows' pages)
        await db.query("SELECT v FROM t WHERE id = ?", [i])
    db.stats.reset()
    start = time.perf_counter()
    for i in ids:
        await db.query("SELECT v FROM t WHERE id = ?", [i])
    seconds = time.perf_counter() - start
    calls = db.stats.round_trips / queries
    await db.close()
    return queries / seconds, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    memory = sqlkv.MemoryStore()
    fill(memory)
    stores: dict[str, AnyKvStore] = {"sync": memory, "async": AsyncStoreWrapper(memory, write_batch=True)}
    for case in ("cached", "store"):
        rates: dict[str, list[float]] = {kind: [] for kind in stores}
        calls: dict[str, float] = {}
        for _ in range(args.rounds):  # alternate, so drift on a shared machine hits both alike
            for kind, store in stores.items():
                rate, calls[kind] = asyncio.run(one_round(store, case, args.queries))
                rates[kind].append(rate)
        medians = {kind: statistics.median(r) for kind, r in rates.items()}
        for kind in stores:
            print(json.dumps({
                "case": case,
                "store": kind,
                "queries_per_s": round(medians[kind]),
                "store_calls_per_query": round(calls[kind], 2),
                "share_of_sync": round(medians[kind] / medians["sync"], 2),
            }))

if __name__ == "__main__":
    main()

"""What the async API adds per call over its sync twin, in microseconds.

    python benchmarks/async_overhead.py [--calls 2000] [--rounds 7]

Both run the same statement on the same kind of database (backend ``pages``,
MemoryStore): ``SELECT 1`` (no store work at all) and one single-row INSERT
(one store round trip). Rounds alternate sync and async so that drift on a
shared machine hits both alike; the figure is the median round's per-call
time. The async API runs SQLite on a worker thread of its own, so the gap is
the cost of handing a call to that thread and its answer back to the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import sqlkv

STATEMENTS = {
    "select-1": lambda i: "SELECT 1",
    "insert": lambda i: f"INSERT INTO t(v) VALUES ('{str(i).rjust(100, 'x')}')",
}
SETUP = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"


def sync_round(make_sql, calls: int) -> float:
    with sqlkv.connect(sqlkv.MemoryStore(), "bench.db", backend="pages") as db:
        db.exec(SETUP)
        statements = [make_sql(i) for i in range(calls)]
        start = time.perf_counter()
        for sql in statements:
            db.exec(sql)
        return (time.perf_counter() - start) / calls


async def async_round(make_sql, calls: int) -> float:
    vfs = sqlkv.SqliteVfs(backend="pages")
    async with await vfs.open("bench.db", sqlkv.MemoryStore()) as db:
        await db.exec(SETUP)
        statements = [make_sql(i) for i in range(calls)]
        start = time.perf_counter()
        for sql in statements:
            await db.exec(sql)
        return (time.perf_counter() - start) / calls


def measure(calls: int, rounds: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, make_sql in STATEMENTS.items():
        sync_times, async_times = [], []
        for _ in range(rounds):
            sync_times.append(sync_round(make_sql, calls))
            async_times.append(asyncio.run(async_round(make_sql, calls)))
        sync_us = statistics.median(sync_times) * 1e6
        async_us = statistics.median(async_times) * 1e6
        out[name] = {
            "sync_us": round(sync_us, 1),
            "async_us": round(async_us, 1),
            "overhead_us": round(async_us - sync_us, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each API")
    args = parser.parse_args()
    for name, figures in measure(args.calls, args.rounds).items():
        print(json.dumps({"statement": name, **figures}))


if __name__ == "__main__":
    main()

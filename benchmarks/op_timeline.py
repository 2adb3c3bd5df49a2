"""Where one async INSERT's time goes: hand-offs, SQLite's work, the store call.

    python benchmarks/op_timeline.py [--latency-ms 1] [--ops 1000]

Runs the insert-autocommit statements through the async API on a MemoryStore
whose write_batch first sleeps ``--latency-ms``, and stamps each op at five
points: the call made on the loop, the engine starting on the worker thread,
the store call starting and ending, the engine returning, the await
returning. Prints the median and mean of each span in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import sqlkv
from sqlkv.tools.bench import CREATE_TABLE, insert_sql

SPANS = ("loop to worker", "SQLite before the commit", "store call", "after the store call",
         "worker to loop", "whole op")


class SleepyStore(sqlkv.MemoryStore):
    """A MemoryStore whose commits sleep first, stamping when the call starts and ends."""

    def __init__(self, latency_ms: float, marks: dict[str, float]) -> None:
        super().__init__()
        self.latency = latency_ms / 1000
        self.marks = marks

    def write_batch(self, puts, deletes, expect=None):
        self.marks["store start"] = time.perf_counter()
        if self.latency:
            time.sleep(self.latency)
        applied = super().write_batch(puts, deletes, expect)
        self.marks["store end"] = time.perf_counter()
        return applied


async def timeline(latency_ms: float, ops: int) -> list[tuple[float, ...]]:
    marks: dict[str, float] = {}
    db = await sqlkv.SqliteVfs(backend="pages").open("bench.db", SleepyStore(latency_ms, marks))
    try:
        await db.exec(CREATE_TABLE)
        engine_exec = db._engine.exec

        def stamped_exec(sql: str):
            marks["engine start"] = time.perf_counter()
            try:
                return engine_exec(sql)
            finally:
                marks["engine end"] = time.perf_counter()

        db._engine.exec = stamped_exec
        spans = []
        for row in range(1, ops + 1):
            start = time.perf_counter()
            await db.exec(insert_sql(row))
            end = time.perf_counter()
            m = marks
            spans.append((
                m["engine start"] - start, m["store start"] - m["engine start"],
                m["store end"] - m["store start"], m["engine end"] - m["store end"],
                end - m["engine end"], end - start,
            ))
        return spans
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=1.0)
    parser.add_argument("--ops", type=int, default=1000)
    args = parser.parse_args()
    spans = asyncio.run(timeline(args.latency_ms, args.ops))
    print(f"{'span':<26}{'median µs':>11}{'mean µs':>10}")
    for i, name in enumerate(SPANS):
        values = [s[i] * 1e6 for s in spans]
        print(f"{name:<26}{statistics.median(values):>11.1f}{statistics.mean(values):>10.1f}")


if __name__ == "__main__":
    main()

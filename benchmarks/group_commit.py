"""Group commit: many writers on one database, and a lone one (issue 13's targets).

    python benchmarks/group_commit.py [--rounds 5] [--async-store]

Three cases, each on one database (async API, MemoryStore behind
:func:`sqlkv.stores.latency.metered`, which sleeps ``latency`` ms in every store call,
writer with its lease), each round a new database:

- ``many``: 64 coroutines each doing 40 autocommit single-row INSERTs at 1 ms;
- ``lone-1ms``: one coroutine doing 300 INSERTs at 1 ms;
- ``lone-0ms``: one coroutine doing 3,000 INSERTs at 0 ms.

Prints one JSON line per case per backend: the median round's commits per
second (transactions acknowledged per second) and the database's store round
trips per transaction (``db.stats``, counted over the timed part only).
``--async-store`` runs the same over an async store. Run it on main before a
change and on the change to compare (same machine, nothing else running).

    python benchmarks/group_commit.py --sweep [--plot benchmarks/group_commit.png]

Backend ``pages``: 1, 2, 4, ..., 256 coroutines writing at once (2,560
INSERTs in all, at least 10 each) at 0 and 1 ms: one JSON line per point,
and with ``--plot`` a plot of commits per second against writers beside the
1/RTT line (one commit per round trip, what a database reaches without groups).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import sqlkv
from sqlkv.stores.contract import AnyKvStore
from sqlkv.stores.latency import metered
from sqlkv.stores.wrapper import AsyncStoreWrapper

CASES = {"many": (64, 40, 1.0), "lone-1ms": (1, 300, 1.0), "lone-0ms": (1, 3000, 0.0)}


def make_store(latency_ms: float, async_store: bool) -> AnyKvStore:
    inner: AnyKvStore = sqlkv.MemoryStore()
    if async_store:
        inner = AsyncStoreWrapper(inner, write_batch=True)
    return metered(inner, latency_ms)


async def one_round(backend: str, callers: int, per_caller: int, latency_ms: float, async_store: bool) -> tuple[float, float]:
    db = await sqlkv.SqliteVfs(backend=backend).open("bench.db", make_store(latency_ms, async_store))
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, caller INT, v TEXT)")
    db.stats.reset()

    async def caller(c: int) -> None:
        for i in range(per_caller):
            await db.run("INSERT INTO t(caller, v) VALUES (?, ?)", [c, str(i).rjust(100, "x")])

    start = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    seconds = time.perf_counter() - start
    transactions = callers * per_caller
    round_trips = db.stats.round_trips / transactions
    await db.close()
    return transactions / seconds, round_trips


SWEEP_WRITERS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
SWEEP_TRANSACTIONS = 2560


def sweep(rounds: int, plot: str | None) -> None:
    points: dict[float, list[tuple[int, float, float]]] = {}
    for latency_ms in (0.0, 1.0):
        for writers in SWEEP_WRITERS:
            per_caller = max(10, SWEEP_TRANSACTIONS // writers)
            runs = [asyncio.run(one_round("pages", writers, per_caller, latency_ms, False)) for _ in range(rounds)]
            rate = statistics.median(r for r, _ in runs)
            trips = statistics.median(t for _, t in runs)
            points.setdefault(latency_ms, []).append((writers, rate, trips))
            print(json.dumps({
                "backend": "pages", "writers": writers, "latency_ms": latency_ms,
                "commits_per_s": round(rate), "round_trips_per_commit": round(trips, 3),
            }), flush=True)
    if plot:
        draw(points, plot)


def draw(points: dict[float, list[tuple[int, float, float]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rates, trips) = plt.subplots(1, 2, figsize=(11, 4.2))
    for latency_ms, series in points.items():
        writers = [w for w, _, _ in series]
        rates.plot(writers, [r for _, r, _ in series], marker="o", label=f"{latency_ms:g} ms per store call")
        trips.plot(writers, [t for _, _, t in series], marker="o", label=f"{latency_ms:g} ms")
    rates.axhline(1000.0, color="grey", linestyle="--", label="1/RTT at 1 ms (one commit per round trip)")
    for axes in (rates, trips):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("coroutines writing to one database")
        axes.legend()
    rates.set_ylabel("commits per second (all writers)")
    trips.set_ylabel("store round trips per commit")
    trips.set_yscale("log")
    figure.suptitle("Group commit: sqlkv, backend pages, MemoryStore (benchmarks/group_commit.py --sweep)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--async-store", action="store_true")
    parser.add_argument("--backend", action="append", choices=["pages", "snapshot"])
    parser.add_argument("--sweep", action="store_true", help="writers from 1 to 256, at 0 and 1 ms")
    parser.add_argument("--plot", help="with --sweep: where to draw the plot (PNG)")
    args = parser.parse_args()
    if args.sweep:
        sweep(args.rounds, args.plot)
        return
    for backend in args.backend or ["pages", "snapshot"]:
        for case, (callers, per_caller, latency_ms) in CASES.items():
            rounds = [
                asyncio.run(one_round(backend, callers, per_caller, latency_ms, args.async_store))
                for _ in range(args.rounds)
            ]
            rates = [rate for rate, _ in rounds]
            print(json.dumps({
                "backend": backend,
                "case": case,
                "async_store": args.async_store,
                "callers": callers,
                "latency_ms": latency_ms,
                "commits_per_s": round(statistics.median(rates)),
                "round_trips_per_commit": round(max(rt for _, rt in rounds), 3),
            }))


if __name__ == "__main__":
    main()

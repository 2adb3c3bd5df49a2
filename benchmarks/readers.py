"""What a reader in another process costs while a writer commits at a steady rate.

    python benchmarks/readers.py [--rate 200] [--queries 2000] [--staleness 0 --staleness 0.05]

Builds WORKLOADS.md's 16 MiB database in an LMDB directory of its own, starts
a writer process that runs single-row UPDATEs (``update-16MiB``'s statement)
at ``--rate`` commits per second, and, in this process, a reader
(``readonly=True``) that runs ``point-select``'s 2,000 queries, once per
``--staleness``. Prints one JSON line per run: round trips, chunks and bytes
read per query, versions the reader moved through, queries per second.
Counts are what matter; times vary on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import sqlkv
from sqlkv.tools.bench import ROWS_16MIB, point_select_key, setup_16mib_sql


def write_steadily(url: str, rate: float, stop: multiprocessing.synchronize.Event) -> None:
    """Single-row UPDATEs at ``rate`` commits per second until ``stop`` is set."""
    store = sqlkv.open_store(url)
    with sqlkv.connect(store, "bench.db", lock_timeout=10) as db:
        i = 0
        start = time.monotonic()
        while not stop.is_set():
            k = 1 + (i * 104729) % ROWS_16MIB
            db.run("UPDATE t SET v = ? WHERE id = ?", ["u" * 100, k])
            i += 1
            pause = start + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    store.close()


def read(url: str, queries: int, staleness: float) -> dict:
    store = sqlkv.open_store(url)
    with sqlkv.connect(store, "bench.db", readonly=True, max_staleness=staleness) as db:
        for i in range(200):  # warm the cache as point-select's setup does not
            db.query("SELECT v FROM t WHERE id = ?", [point_select_key(i)])
        first = db.version
        db.stats.reset()
        start = time.monotonic()
        for i in range(queries):
            rows = db.query("SELECT v FROM t WHERE id = ?", [point_select_key(i)]).rows
            assert len(rows) == 1
        seconds = time.monotonic() - start
        stats = db.stats
        result = {
            "reader": "pages",
            "max_staleness": staleness,
            "queries": queries,
            "round_trips_per_query": round(stats.round_trips / queries, 3),
            "chunks_read_per_query": round(stats.cache_misses / queries, 3),
            "bytes_read_per_query": round(stats.bytes_read / queries),
            "versions_moved": db.version - first,
            "queries_per_s": round(queries / seconds),
        }
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--staleness", type=float, action="append")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = f"lmdb://{Path(directory) / 'lmdb'}?create=1"
        store = sqlkv.open_store(url)
        with sqlkv.connect(store, "bench.db") as db:
            for sql in setup_16mib_sql():
                db.exec(sql)
        store.close()
        stop = multiprocessing.Event()
        writer = multiprocessing.Process(target=write_steadily, args=(url, args.rate, stop))
        writer.start()
        try:
            time.sleep(0.5)
            for staleness in args.staleness or [0.0, 0.05]:
                result = read(url, args.queries, staleness)
                result["writer_commits_per_s"] = args.rate
                print(json.dumps(result), flush=True)
        finally:
            stop.set()
            writer.join(timeout=30)


if __name__ == "__main__":
    main()

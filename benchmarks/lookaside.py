"""SQLite's lookaside on and off: what sqlkv's turning it off costs in speed and saves in memory.

    python benchmarks/lookaside.py [--rounds 3]

sqlkv turns SQLite's lookaside off for the process when it opens the
process's first APSW connection (engine_pages.py), unless
``SQLKV_SQLITE_LOOKASIDE=1``. Each round runs the same work twice, each in a
process of its own: as sqlkv sets it (off), and with ``SQLKV_SQLITE_LOOKASIDE=1``
(on, SQLite's default). The work, on one database
(sync API, MemoryStore, backend ``pages``): 20,000 inserts in transactions of
100, 50,000 point queries, 200 aggregates over the table; and 100 more small
databases opened, for SQLite's memory per connection. Prints one JSON line
per setting: the median seconds of each part and KB per connection.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def work() -> dict:
    import apsw

    import sqlkv

    store = sqlkv.MemoryStore()
    seconds = {}
    with sqlkv.connect(store, "bench.db", backend="pages") as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, n INTEGER)")
        start = time.perf_counter()
        for batch in range(200):
            with db.transaction() as tx:
                for i in range(batch * 100, batch * 100 + 100):
                    tx.run("INSERT INTO t VALUES (?, ?, ?)", [i, f"row {i}", i * 7])
        seconds["inserts"] = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(50_000):
            db.query("SELECT name, n FROM t WHERE id = ?", [(i * 7919) % 20_000])
        seconds["point_queries"] = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(200):
            db.query("SELECT n % 10, count(*), sum(n) FROM t WHERE name LIKE ? GROUP BY 1", [f"row {i % 10}%"])
        seconds["aggregates"] = time.perf_counter() - start
    before = apsw.status(apsw.SQLITE_STATUS_MEMORY_USED)[0]
    conns = [sqlkv.connect(store, f"small{i}.db", backend="pages") for i in range(100)]
    for conn in conns:
        conn.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    kb = (apsw.status(apsw.SQLITE_STATUS_MEMORY_USED)[0] - before) / 100 / 1024
    for conn in conns:
        conn.close()
    return {"seconds": seconds, "kb_per_connection": kb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=("off", "on"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(work()))
        return
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for setting in runs:
            env = {**os.environ, "SQLKV_SQLITE_LOOKASIDE": "1" if setting == "on" else "0"}
            out = subprocess.run(
                [sys.executable, __file__, "--child", setting], check=True, capture_output=True, text=True, env=env
            ).stdout
            runs[setting].append(json.loads(out))
    for setting, results in runs.items():
        parts = {part: round(statistics.median(r["seconds"][part] for r in results), 3) for part in results[0]["seconds"]}
        kb = round(statistics.median(r["kb_per_connection"] for r in results), 1)
        print(json.dumps({"lookaside": setting, "seconds": parts, "sqlite_kb_per_connection": kb}))


if __name__ == "__main__":
    main()

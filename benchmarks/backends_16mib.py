"""What each backend costs on the 16 MiB database of docs/workloads.md.

    python3 benchmarks/backends_16mib.py [--backend pages|snapshot ...]

For each backend: build ``bench.db`` (16,000 rows of 1,000-byte text, in
transactions of 500) in a MemoryStore, close it, then measure

- ``cold-open-read-16MiB``: open it and run one ``SELECT v FROM t WHERE id=8000``;
- ``update-16MiB``: on that open database, 100 single-row
  ``UPDATE t SET v=<100 chars> WHERE id=K``, K = ``1 + (i*104729) % 16000``.

One JSON object per workload and backend, as docs/workloads.md prints them, with
``chunks_written_per_op`` added (chunk values put, FileMeta not counted).
Only the measured ops are counted (the store's counters are reset after setup).
Counts are deterministic; seconds are this machine's.
"""

from __future__ import annotations

import argparse
import json
import time

import sqlkv

ROWS, ROW_BYTES, SETUP_TX_ROWS = 16000, 1000, 500
UPDATES = 100


def build(store: sqlkv.MemoryStore, backend: str) -> None:
    with sqlkv.connect(store, "bench.db", backend=backend) as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        for first in range(1, ROWS + 1, SETUP_TX_ROWS):
            rows = ",".join(
                f"({k}, '{str(k).rjust(ROW_BYTES, 'x')}')" for k in range(first, first + SETUP_TX_ROWS)
            )
            db.exec(f"BEGIN; INSERT INTO t(id, v) VALUES {rows}; COMMIT;")


def report(backend: str, workload: str, ops: int, seconds: float, stats: sqlkv.Stats) -> dict:
    return {
        "system": f"sqlkv-{backend}",
        "workload": workload,
        "latency_ms": 0,
        "ops": ops,
        "seconds": round(seconds, 4),
        "ops_per_s": round(ops / seconds, 1),
        "kv_calls": stats.round_trips,
        "kv_calls_per_op": stats.round_trips / ops,
        "bytes_written_per_op": stats.bytes_written // ops,
        "bytes_read_per_op": stats.bytes_read // ops,
        "chunks_written_per_op": (stats.keys_written - stats.commits) / ops,
    }


def measure(backend: str) -> list[dict]:
    store = sqlkv.MemoryStore()
    build(store, backend)
    start = time.perf_counter()
    db = sqlkv.connect(store, "bench.db", backend=backend)
    (row,) = db.query("SELECT v FROM t WHERE id = 8000").rows
    assert row[0] == "8000".rjust(ROW_BYTES, "x")
    results = [report(backend, "cold-open-read-16MiB", 1, time.perf_counter() - start, db.stats)]
    db.stats.reset()
    start = time.perf_counter()
    for i in range(UPDATES):
        k = 1 + (i * 104729) % ROWS
        assert db.run(f"UPDATE t SET v = '{'u' * 100}' WHERE id = {k}").changes == 1
    results.append(report(backend, "update-16MiB", UPDATES, time.perf_counter() - start, db.stats))
    db.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=("pages", "snapshot"))
    args = parser.parse_args()
    for backend in args.backend or ["pages", "snapshot"]:
        for result in measure(backend):
            print(json.dumps(result))


if __name__ == "__main__":
    main()

"""sqlkv.dbapi2 beside the standard library's sqlite3: the same DB-API calls, timed.

    python benchmarks/dbapi.py [--rows 100000] [--rounds 3] [--backend pages,snapshot]

Two operations, each on a fresh database, one JSON line per system and
operation, then a table of the ratios (sqlkv's time / sqlite3's):

- ``executemany``: ``executemany`` of ``--rows`` rows ``(id, text, float)``
  into one table, then ``commit()`` (one transaction, as sqlite3's implicit
  BEGIN makes it).
- ``fetchall``: ``SELECT * FROM`` that table, ``fetchall()`` of its rows.

sqlite3 works on a file in a temporary directory (``synchronous=FULL``, its
default journal); sqlkv on an LMDB store in a temporary directory (durable at
each commit, as a file with FULL sync is). The figure is the median round.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlkv import dbapi2

CREATE = "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL)"
INSERT = "INSERT INTO t VALUES (?, ?, ?)"


def _rows(count: int) -> list[tuple[int, str, float]]:
    return [(i, f"name {i}".ljust(40, "x"), i * 0.5) for i in range(count)]


def _time(conn: Any, rows: list[tuple]) -> tuple[float, float]:
    """Seconds for executemany + commit, and for SELECT + fetchall, on ``conn``."""
    conn.execute(CREATE)
    conn.commit()
    start = time.perf_counter()
    conn.executemany(INSERT, rows)
    conn.commit()
    written = time.perf_counter() - start
    start = time.perf_counter()
    fetched = conn.execute("SELECT * FROM t").fetchall()
    read = time.perf_counter() - start
    assert len(fetched) == len(rows)
    conn.close()
    return written, read


def _sqlite3(directory: Path, rows: list[tuple]) -> tuple[float, float]:
    return _time(sqlite3.connect(str(directory / "bench.db")), rows)


def _sqlkv(backend: str) -> Callable[[Path, list[tuple]], tuple[float, float]]:
    def run(directory: Path, rows: list[tuple]) -> tuple[float, float]:
        return _time(dbapi2.connect("bench.db", store=f"lmdb://{directory / 'kv'}", backend=backend), rows)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="pages,snapshot")
    args = parser.parse_args()
    rows = _rows(args.rows)
    systems: dict[str, Callable[[Path, list[tuple]], tuple[float, float]]] = {"sqlite3-file": _sqlite3}
    for backend in [b.strip() for b in args.backend.split(",") if b.strip()]:
        systems[f"sqlkv-{backend}-lmdb"] = _sqlkv(backend)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in systems}
    for _ in range(args.rounds):  # rounds alternate systems, so drift hits all alike
        for name, run in systems.items():
            with tempfile.TemporaryDirectory() as directory:
                times[name].append(run(Path(directory), rows))
    medians = {
        name: (statistics.median(t[0] for t in got), statistics.median(t[1] for t in got))
        for name, got in times.items()
    }
    for name, (written, read) in medians.items():
        for op, seconds in (("executemany", written), ("fetchall", read)):
            print(json.dumps({"system": name, "op": op, "rows": args.rows, "seconds": round(seconds, 4),
                              "rows_per_s": round(args.rows / seconds)}))
    base_write, base_read = medians["sqlite3-file"]
    print(f"\n{'system':<22} {'executemany s':>14} {'ratio':>6} {'fetchall s':>11} {'ratio':>6}")
    for name, (written, read) in medians.items():
        print(f"{name:<22} {written:>14.3f} {written / base_write:>6.2f} {read:>11.3f} {read / base_read:>6.2f}")


if __name__ == "__main__":
    main()

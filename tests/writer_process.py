"""A separate process that opens a database, for tests of several writers.

    python writer_process.py serve STORE_URL NAME LEASE_SECONDS
        Reads one JSON command per line on stdin and answers one JSON line:
        {"op": "open", "lock_timeout": 0}  {"op": "exec", "sql": "..."}
        {"op": "close"}  {"op": "exit"}. An answer is {"ok": true, "rows": [...]}
        or {"ok": false, "error": "LockedError", "message": "..."}.

    python writer_process.py load STORE_URL NAME LEASE_SECONDS SECONDS MAX_COMMITS WRITER SESSION
        Commits rows (WRITER, i) one transaction each, for at most SECONDS and
        MAX_COMMITS commits, then prints one JSON line: the rows acknowledged,
        commits, store round trips, seconds. With SESSION > 0 the database is
        closed and opened again (waiting for the lease) every SESSION commits,
        as writers taking turns do.
"""

from __future__ import annotations

import json
import sys
import time

import sqlkv

TABLE = "CREATE TABLE IF NOT EXISTS t(writer TEXT, i INTEGER, PRIMARY KEY (writer, i))"


def serve(url: str, name: str, lease_seconds: float) -> None:
    store = sqlkv.open_store(url)
    db = None
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        try:
            rows: list = []
            if op == "open":
                db = sqlkv.connect(
                    store, name, lease_seconds=lease_seconds,
                    lock_timeout=command.get("lock_timeout", 0),
                )
            elif op == "exec":
                rows = [list(r) for result in db.exec(command["sql"]) for r in result.rows]
            elif op == "close":
                db.close()
            elif op == "exit":
                break
            answer = {"ok": True, "rows": rows}
        except sqlkv.Error as exc:
            answer = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        print(json.dumps(answer), flush=True)
    store.close()


def load(
    url: str, name: str, lease_seconds: float, seconds: float, max_commits: int, writer: str,
    session: int,
) -> None:
    store = sqlkv.open_store(url)
    acked: list[int] = []
    round_trips = commits = 0
    start = time.monotonic()
    deadline = start + seconds
    errors: list[str] = []
    while len(acked) < max_commits and time.monotonic() < deadline:
        try:
            db = sqlkv.connect(store, name, lease_seconds=lease_seconds, lock_timeout=30)
        except sqlkv.LockedError as exc:
            errors.append(str(exc))
            continue
        try:
            db.exec(TABLE)
            db.stats.reset()
            for _ in range(session or max_commits):
                if len(acked) >= max_commits or time.monotonic() >= deadline:
                    break
                i = len(acked) + 1
                db.run("INSERT INTO t(writer, i) VALUES (?, ?)", [writer, i])
                acked.append(i)
            round_trips += db.stats.round_trips
            commits += db.stats.commits
        finally:
            db.close()
    elapsed = time.monotonic() - start
    store.close()
    print(json.dumps({
        "writer": writer, "acked": acked, "commits": commits, "round_trips": round_trips,
        "seconds": elapsed, "lock_errors": errors,
    }), flush=True)


if __name__ == "__main__":
    mode, url, name, lease = sys.argv[1:5]
    if mode == "serve":
        serve(url, name, float(lease))
    else:
        seconds, max_commits, writer, session = sys.argv[5:9]
        load(url, name, float(lease), float(seconds), int(max_commits), writer, int(session))

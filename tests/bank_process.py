"""A writer or a reader process of the bank scenario (tests/test_readers.py).

    python bank_process.py writer URL NAME BACKEND SECONDS MAX_COMMITS SEED
        Moves money between random accounts, one transaction per transfer
        (every committed state sums to 0), for at most SECONDS and MAX_COMMITS
        commits; prints one JSON line: commits, the last version.

    python bank_process.py reader URL NAME BACKEND SECONDS MAX_READS MODE
        Sums the balances, for at most SECONDS after its first read and
        MAX_READS reads; MODE
        ``reopen`` opens the database read-only for every read, ``long`` keeps
        one open. Prints ``{"ready": true}`` after its first read, then, at the
        end, one JSON line: reads, torn reads (sum not 0), the versions seen,
        whether they only grew, and the last integrity_check.
"""

from __future__ import annotations

import json
import random
import sys
import time

import sqlkv

SUM = "SELECT sum(balance), count(*) FROM accounts"


def writer(url: str, name: str, backend: str, seconds: float, max_commits: int, seed: int) -> None:
    store = sqlkv.open_store(url)
    rng = random.Random(seed)
    commits = 0
    deadline = time.monotonic() + seconds
    with sqlkv.connect(store, name, backend=backend, lock_timeout=10) as db:
        accounts = db.query("SELECT count(*) FROM accounts").rows[0][0]
        while commits < max_commits and time.monotonic() < deadline:
            a, b = rng.randrange(accounts), rng.randrange(accounts)
            amount = rng.randrange(1, 100)
            db.exec(
                f"BEGIN; UPDATE accounts SET balance = balance - {amount} WHERE id = {a};"
                f"UPDATE accounts SET balance = balance + {amount} WHERE id = {b}; COMMIT"
            )
            commits += 1
        version = db.version
    store.close()
    print(json.dumps({"commits": commits, "version": version}), flush=True)


def reader(url: str, name: str, backend: str, seconds: float, max_reads: int, mode: str) -> None:
    store = sqlkv.open_store(url)
    reads = torn = 0
    versions: list[int] = []
    deadline = time.monotonic() + seconds
    db = sqlkv.connect(store, name, backend=backend, readonly=True) if mode == "long" else None
    integrity = None
    while reads < max_reads and time.monotonic() < deadline:
        conn = db if db is not None else sqlkv.connect(store, name, backend=backend, readonly=True)
        total, count = conn.query(SUM).rows[0]
        if total != 0:
            torn += 1
        reads += 1
        versions.append(conn.version)
        if reads == 1:
            print(json.dumps({"ready": True}), flush=True)  # the test starts the writer now
            deadline = time.monotonic() + seconds  # the whole time left for the writer's commits
        if reads % 25 == 0:
            integrity = conn.query("PRAGMA integrity_check").rows
        if db is None:
            conn.close()
            # Thousands of reopens a second churn a cluster client's connections
            # (refused under that load); a reader reopening is what is tested.
            time.sleep(0.003)
    conn = db if db is not None else sqlkv.connect(store, name, backend=backend, readonly=True)
    integrity = conn.query("PRAGMA integrity_check").rows
    conn.close()
    store.close()
    grew = all(a <= b for a, b in zip(versions, versions[1:]))
    print(
        json.dumps(
            {
                "reads": reads,
                "torn": torn,
                "versions": sorted(set(versions)),
                "only_grew": grew if mode == "long" else True,
                "integrity": integrity,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    role, url, name, backend, seconds, most = sys.argv[1:7]
    if role == "writer":
        writer(url, name, backend, float(seconds), int(most), int(sys.argv[7]))
    else:
        reader(url, name, backend, float(seconds), int(most), sys.argv[7])

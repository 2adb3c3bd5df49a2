"""Load on one Redis server: 8 processes each writing a database of its own,
plus 4 processes taking turns on one database through its lease.

No database may be corrupt and no acknowledged commit may be missing. The
full run takes 30 s (``pytest -m slow``); CI runs a short slice of the same.
Figures are printed (``-s`` shows them): commits per second, store round
trips per commit as each database counts them, and commands per commit as
the server counts them (leases, opens and waits for a lease included).
"""

from __future__ import annotations

import pytest
from helpers import integrity, unique_namespace
from processes import load_report, run_load
from redis_servers import RedisServer

import sqlkv

OWN_WRITERS = 8
CONTENDERS = 4


#: Commands the store sends only from inside its write script in this workload
#: (the engine makes no single get/put calls); Redis counts them one by one.
SCRIPT_COMMANDS = ("cmdstat_get", "cmdstat_set", "cmdstat_del")


def server_requests(server: RedisServer) -> int:
    """Commands clients sent the server (a script counts once), INFO calls included."""
    stats = server.command("INFO", "commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in SCRIPT_COMMANDS)


def stored_rows(store, name: str) -> list[tuple[str, int]]:
    with sqlkv.connect(store, name, readonly=True) as db:
        assert integrity(db) == [("ok",)], f"{name} is corrupt"
        return db.query("SELECT writer, i FROM t ORDER BY writer, i").rows


def run(tmp_path, seconds: float, max_commits: int, contended_commits: int) -> None:
    server = RedisServer(tmp_path / "redis", persistence="none").start()
    url = f"{server.url}?namespace={unique_namespace()}"
    try:
        requests_before = server_requests(server)
        processes = [
            run_load(url, f"own-{n}.db", f"w{n}", seconds=seconds, max_commits=max_commits)
            for n in range(OWN_WRITERS)
        ] + [
            run_load(url, "shared.db", f"c{n}", seconds=seconds, max_commits=contended_commits,
                     session=5)
            for n in range(CONTENDERS)
        ]
        reports = [load_report(p, timeout=seconds + 120) for p in processes]
        requests = server_requests(server) - requests_before - 1

        with sqlkv.open_store(url) as store:
            for n, report in enumerate(reports[:OWN_WRITERS]):
                assert stored_rows(store, f"own-{n}.db") == [(f"w{n}", i) for i in report["acked"]]
            expected = sorted((r["writer"], i) for r in reports[OWN_WRITERS:] for i in r["acked"])
            assert stored_rows(store, "shared.db") == expected

        commits = sum(r["commits"] for r in reports)
        acked = sum(len(r["acked"]) for r in reports)
        assert commits == acked
        own = reports[:OWN_WRITERS]
        own_commits = sum(r["commits"] for r in own)
        own_trips = sum(r["round_trips"] for r in own)
        wall = max(r["seconds"] for r in reports)
        print(
            f"\nload: {len(reports)} processes, {commits} commits in {wall:.1f} s = "
            f"{commits / wall:.0f} commits/s ({own_commits / wall:.0f}/s on own databases); "
            f"{own_trips / own_commits:.3f} round trips per commit (own databases, database "
            f"stats); {requests / commits:.3f} requests per commit as the server counts them "
            f"(leases, opens, waits for a lease included); contended sessions: "
            f"{sum(-(-len(r['acked']) // 5) for r in reports[OWN_WRITERS:])}"
        )
        # A commit is one round trip; inserts past the cached pages read none.
        assert own_trips <= own_commits * 1.02
        assert all(len(r["acked"]) > 0 for r in reports)
    finally:
        server.stop()


def test_load_slice(tmp_path):
    """The CI slice: a few seconds, bounded in commits."""
    run(tmp_path, seconds=20, max_commits=150, contended_commits=15)


@pytest.mark.slow
def test_load_30_seconds(tmp_path):
    run(tmp_path, seconds=30, max_commits=10**7, contended_commits=10**7)

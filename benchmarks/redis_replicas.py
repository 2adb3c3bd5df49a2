"""Commit rate on Redis with and without ``replicas=1`` (every commit waits for a replica).

    python benchmarks/redis_replicas.py [--repeat 3]

Starts a primary and a replica (``redis-server`` on free loopback ports, no
persistence, the test suite's helpers in tests/redis_servers.py) and runs
``sqlkv bench``'s write workloads (backend ``pages``, async API, no added
latency) on the primary, once with the plain URL and once with
``?replicas=1&replica_timeout=1``, ``--repeat`` times each, alternating.
Prints a Markdown table: the median ops/s of each, the round trips per op
(the store calls the database makes: WAIT rides in the same request as the
commit's script, so it adds none), and the rate with replicas as a share of
the rate without.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_servers import ReplicatedRedis

from sqlkv.tools.bench import Plan, Result, run_sync

WORKLOADS = ("insert-autocommit", "insert-batched-100", "update-16MiB")
SETTINGS = {"none": "", "replicas=1": "&replicas=1&replica_timeout=1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[Result]] = {}
    with tempfile.TemporaryDirectory() as directory:
        servers = ReplicatedRedis(Path(directory)).start()
        try:
            for _ in range(args.repeat):
                for setting, query in SETTINGS.items():
                    url = f"{servers.url}?namespace=bench{query}"
                    for result in run_sync(Plan(store_url=url, workloads=WORKLOADS)):
                        results.setdefault((setting, result.workload), []).append(result)
        finally:
            servers.stop()
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| workload | replicas | ops/s | round trips/op | ops/s with replicas=1 as a share |")
    print("| --- | --- | --- | --- | --- |")
    for workload in WORKLOADS:
        rates = {s: statistics.median(r.ops_per_s for r in results[(s, workload)]) for s in SETTINGS}
        for setting in SETTINGS:
            one = results[(setting, workload)][0]
            share = f"{rates[setting] / rates['none']:.0%}" if setting != "none" else ""
            print(
                f"| {workload} | {setting} | {rates[setting]:,.0f} | "
                f"{one.per_op(one.kv_calls, 3):.3f} | {share} |"
            )


if __name__ == "__main__":
    main()

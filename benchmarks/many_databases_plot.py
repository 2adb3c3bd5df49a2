"""How the figures of benchmarks/many_databases.py grow from 100 to 10,000 databases.

    python benchmarks/many_databases_plot.py [--counts 100,300,1000,3000,10000] [--plot benchmarks/many_databases.png]

Runs ``many_databases.py --databases N`` for each count, each in a process of
its own, prints its JSON line, and draws one panel per figure against the
number of databases (with the issue's target as a dashed line).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("many_databases.py")

#: The figures drawn: (key in the JSON, label, target or None).
PANELS = [
    ("opens_per_s", "opens per second (open + CREATE + INSERT)", 2000.0),
    ("gather_query_s", "one query on every database at once (s)", 1.5),
    ("rss_kb_per_active_db", "KB per active database", 100.0),
    ("rss_kb_per_hibernated_db", "KB per hibernated database", 12.0),
    ("threads_added", "threads added", None),
    ("lease_upkeep_calls", "store calls for leases in 9 idle s", 20.0),
]


def run(count: int, idle_seconds: float) -> dict:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--databases", str(count), "--idle-seconds", str(idle_seconds)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def draw(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(13, 7))
    counts = [r["databases"] for r in results]
    for ax, (key, label, target) in zip(axes.flat, PANELS):
        ax.plot(counts, [r[key] for r in results], marker="o")
        if target is not None:
            ax.axhline(target, color="grey", linestyle="--", label=f"target {target:g}")
            ax.legend()
        ax.set_xscale("log")
        ax.set_xlabel("databases open at once")
        ax.set_title(label, fontsize=10)
        ax.set_ylim(bottom=0)
    figure.suptitle("Many databases in one process (benchmarks/many_databases_plot.py)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="100,300,1000,3000,10000")
    parser.add_argument("--idle-seconds", type=float, default=9.0)
    parser.add_argument("--plot", help="where to draw the plot (PNG)")
    args = parser.parse_args()
    results = []
    for count in (int(c) for c in args.counts.split(",")):
        result = run(count, args.idle_seconds)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.plot:
        draw(results, args.plot)


if __name__ == "__main__":
    main()

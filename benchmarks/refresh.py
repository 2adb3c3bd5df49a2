"""Regenerate the figures of BENCHMARKS.md: results.jsonl, plot.png and its tables.

    pip install -e '.[bench]'
    python benchmarks/refresh.py [--repeat 3] [--latency 0 --latency 1]

Runs ``sqlkv bench`` (in process, the same code) for every sqlkv backend that
imports and for the ``sqlite3-file`` baseline, at each latency; every run is
repeated and, per system, workload and latency, the run with the median ops/s
is kept (counts do not vary between runs, times do on a shared machine). The
baseline has no store, so it runs at 0 ms only and is drawn in every panel.
Writes benchmarks/results.jsonl and benchmarks/plot.png, and rewrites the part
of BENCHMARKS.md between its ``results`` markers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
from pathlib import Path

import apsw

import sqlkv
from sqlkv.tools import bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.jsonl"
PLOT = HERE / "plot.png"
DOC = ROOT / "BENCHMARKS.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def backends() -> tuple[str, ...]:
    found = ["pages"]
    if importlib.util.find_spec("sqlkv.engine.snapshot") is not None:
        found.append("snapshot")
    return tuple(found)


def measure(latencies: list[float], repeat: int) -> list[dict]:
    """Every (system, latency) run ``repeat`` times; the median run of each workload."""
    plans = [bench.Plan(systems=backends(), latency_ms=ms) for ms in latencies]
    plans.append(bench.Plan(systems=(bench.BASELINE,)))
    kept = []
    for plan in plans:
        runs = [bench.run_sync(plan) for _ in range(repeat)]
        for i in range(len(runs[0])):
            same = sorted((run[i] for run in runs), key=lambda r: r.ops_per_s)
            kept.append(same[len(same) // 2].as_dict())
    return kept


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, SQLite {apsw.sqlite_lib_version()} (APSW "
        f"{apsw.apsw_version()}), stdlib sqlite3 on SQLite {__import__('sqlite3').sqlite_version}; "
        f"sqlkv {sqlkv.__version__}; load average at the start {load}"
    )


def cell(value: object, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown_table(rows: list[dict]) -> str:
    head = ("| system | workload | latency ms | ops/s | round trips/op | bytes written/op "
            "| bytes read/op | chunks written/op |")
    lines = [head, "|" + " --- |" * 8]
    for d in rows:
        lines.append(
            f"| {d['system']} | {d['workload']} | {d['latency_ms']:g} | {cell(d['ops_per_s'], ',.0f')} "
            f"| {cell(d['kv_calls_per_op'], '.3f')} | {cell(d['bytes_written_per_op'], ',d')} "
            f"| {cell(d['bytes_read_per_op'], ',d')} | {cell(d['chunks_written_per_op'], '.2f')} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], latencies: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(dict.fromkeys(d["system"] for d in rows))
    workloads = list(bench.WORKLOADS)
    fig, axes = plt.subplots(2, len(latencies), figsize=(6.5 * len(latencies), 8), squeeze=False)
    width = 0.8 / len(systems)
    for col, ms in enumerate(latencies):
        for row, (field, label, log) in enumerate(
            (("ops_per_s", "ops/s (log)", True), ("kv_calls_per_op", "round trips per op", False))
        ):
            ax = axes[row][col]
            for k, system in enumerate(systems):
                by_workload = {
                    d["workload"]: d[field] for d in rows
                    if d["system"] == system and (d["latency_ms"] == ms or system.startswith(bench.BASELINE))
                }
                values = [by_workload.get(w) for w in workloads]
                if all(v is None for v in values):
                    continue
                xs = [i + (k - (len(systems) - 1) / 2) * width for i in range(len(workloads))]
                bars = ax.bar(xs, [v or 0 for v in values], width, label=system)
                ax.bar_label(bars, labels=[cell(v, ",.0f" if log else ".2f") for v in values],
                             fontsize=6, rotation=90, padding=2)
            ax.set_xticks(range(len(workloads)), workloads, rotation=20, fontsize=8)
            ax.set_ylabel(label)
            if log:
                ax.set_yscale("log")
            ax.margins(y=0.25)
            ax.set_title(f"{label.split(' (')[0]} at {ms:g} ms store latency", fontsize=10)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.suptitle("sqlkv bench (MemoryStore; the baseline is a local file, no store)", fontsize=11)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def rewrite_doc(rows: list[dict], about: str, command: str) -> None:
    text = DOC.read_text()
    block = (
        f"{START}\nMachine: {about}.\n\nCommand: `{command}`\n\n{markdown_table(rows)}\n\n"
        f"![ops/s and round trips per op by workload](benchmarks/plot.png)\n{END}"
    )
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC} has no {START} ... {END} markers")
    DOC.write_text(pattern.sub(lambda _: block, text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each plan (median kept)")
    parser.add_argument("--latency", type=float, action="append", help="ms; default 0 and 1")
    args = parser.parse_args()
    latencies = args.latency or [0.0, 1.0]
    about = machine()
    rows = measure(latencies, args.repeat)
    RESULTS.write_text("".join(json.dumps(d) + "\n" for d in rows))
    plot(rows, latencies)
    command = "python benchmarks/refresh.py " + " ".join(
        [f"--repeat {args.repeat}"] + [f"--latency {ms:g}" for ms in latencies]
    )
    rewrite_doc(rows, about, command)
    print(markdown_table(rows))
    print(f"median of {args.repeat} runs each; wrote {RESULTS.name}, {PLOT.name}, {DOC.name}")


if __name__ == "__main__":
    main()

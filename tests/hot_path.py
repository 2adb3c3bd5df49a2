"""The work each operation of the five workloads does, counted (the CI gate of issue 22).

    python tests/hot_path.py            # print the counts beside the baseline
    python tests/hot_path.py --update   # rewrite benchmarks/baseline_counts.json (median of 5 runs)

Speed depends on the machine; these counts do not. For each workload of
docs/workloads.md (backend ``pages``, MemoryStore), through the sync and the
async API, over the measured operations only (setup left out), per operation:

- ``sqlkv_calls``: Python function calls into sqlkv's own code, in every
  thread (the caller's, the event loop's and the pool's), counted with
  ``sys.setprofile`` / ``threading.setprofile`` (comprehensions left out:
  Python 3.12 runs them inline);
- ``python_calls``: every Python function call, the standard library's
  (asyncio, threading, contextlib) included. It depends on the Python
  version, so it is checked only on the minor version the baseline was
  taken on;
- ``store_calls``, ``bytes_written``, ``bytes_read``: the store's round
  trips and bytes, metered at its door.

The async API is counted with ``SQLKV_ASYNC_SPIN_US=0``: the loop's wait
without sleeping is a loop over the clock whose turns depend on timing, not
work. ``tests/test_hot_path.py`` fails when a count moves past
:data:`TOLERANCE` from the baseline, either way: more work on the hot path
must be accepted on purpose, and less must be locked in, by rerunning this
with ``--update`` and committing the baseline with the change that moved it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import threading
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import sqlkv
from sqlkv.tools import bench

BASELINE = Path(__file__).resolve().parent.parent / "benchmarks" / "baseline_counts.json"
#: How far a per-op count may move from the baseline: this fraction, plus :data:`SLACK`.
TOLERANCE = 0.03
#: Absolute slack per op (a thread parking once more or less, a pool starting).
SLACK = 2.0
FIGURES = ("sqlkv_calls", "python_calls", "store_calls", "bytes_written", "bytes_read")
#: The figures that depend on the Python version (checked only on the baseline's).
VERSIONED = ("python_calls",)
APIS = ("sync", "async")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(sqlkv.__file__)) + os.sep
#: Comprehensions, which Python 3.12 runs inline (no call): not counted on any
#: version, so that sqlkv's own count is the same on every one.
_INLINED = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>"})


class CallCounter:
    """Counts Python function calls (``call`` events) in every thread while on."""

    def __init__(self) -> None:
        self.on = False
        # Keyed by thread: each thread adds to its own entries only.
        self.total: Counter[int] = Counter()
        self.own: Counter[int] = Counter()

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and self.on:
            code = frame.f_code
            if code.co_name in _INLINED:
                return
            ident = threading.get_ident()
            self.total[ident] += 1
            if code.co_filename.startswith(_PACKAGE_DIR):
                self.own[ident] += 1

    def install(self) -> None:
        threading.setprofile(self._profile)
        sys.setprofile(self._profile)

    def uninstall(self) -> None:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]

    def take(self) -> tuple[int, int]:
        """The calls counted since the last take (all, sqlkv's own), and zero them."""
        total, own = sum(self.total.values()), sum(self.own.values())
        self.total.clear()
        self.own.clear()
        return total, own


class CountingSession(bench.SqlkvSession):
    """A bench session that counts the calls of each measured section."""

    def __init__(self, counter: CallCounter, api: str) -> None:
        super().__init__("pages", "memory://", 0.0, api)
        self.counter = counter
        self.figures: dict[str, dict[str, float]] = {}

    def reset(self) -> None:
        super().reset()
        # Garbage left by whatever ran before in this process (other tests' databases,
        # whose finalizers make calls) is collected now, not inside the measured ops.
        gc.collect()
        self.counter.take()
        self.counter.on = True

    def result(self, workload: str, ops: int, seconds: float) -> bench.Result:
        self.counter.on = False
        total, own = self.counter.take()
        m = self.meter
        self.figures[workload] = {
            "sqlkv_calls": own / ops,
            "python_calls": total / ops,
            "store_calls": m.round_trips / ops,
            "bytes_written": m.bytes_written / ops,
            "bytes_read": m.bytes_read / ops,
        }
        return super().result(workload, ops, seconds)


async def _run_all(counter: CallCounter, api: str) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    for runner in (bench.run_insert_autocommit, bench.run_insert_batched):
        session = CountingSession(counter, api)
        try:
            await runner(session)
        finally:
            session.finish()
        figures.update(session.figures)
    session = CountingSession(counter, api)
    try:
        async for _ in bench.run_chain_16mib(session, bench.CHAIN_16MIB):
            pass
    finally:
        session.finish()
    figures.update(session.figures)
    return figures


def measure() -> dict[str, Any]:
    """Every workload's per-op counts through both APIs: ``{api: {workload: {figure: n}}}``."""
    counter = CallCounter()
    saved = os.environ.get("SQLKV_ASYNC_SPIN_US")
    os.environ["SQLKV_ASYNC_SPIN_US"] = "0"
    counter.install()
    try:
        counts = {api: asyncio.run(_run_all(counter, api)) for api in APIS}
    finally:
        counter.uninstall()
        if saved is None:
            del os.environ["SQLKV_ASYNC_SPIN_US"]
        else:
            os.environ["SQLKV_ASYNC_SPIN_US"] = saved
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "counts": {api: {w: {f: round(v, 3) for f, v in figs.items()} for w, figs in by.items()}
                   for api, by in counts.items()},
    }


#: Runs whose median ``--update`` writes: the async API's counts move by a few calls
#: from run to run (how often a thread parks), and one low run would make a baseline
#: that the next run fails by more than the tolerance.
UPDATE_RUNS = 5


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The measurements ``runs`` (of :func:`measure`) as one: each figure's median."""
    first = runs[0]
    return {
        "python": first["python"],
        "counts": {
            api: {
                workload: {
                    figure: round(statistics.median(run["counts"][api][workload][figure] for run in runs), 3)
                    for figure in figures
                }
                for workload, figures in by_workload.items()
            }
            for api, by_workload in first["counts"].items()
        },
    }


def load_baseline() -> dict[str, Any]:
    return json.loads(BASELINE.read_text())


def departures(measured: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """Each count that moved past the tolerance from the baseline, as a line of text."""
    lines = []
    same_python = measured["python"] == baseline["python"]
    for api, by_workload in baseline["counts"].items():
        for workload, figures in by_workload.items():
            for figure, expected in figures.items():
                if figure in VERSIONED and not same_python:
                    continue
                got = measured["counts"].get(api, {}).get(workload, {}).get(figure)
                if got is None:
                    lines.append(f"{api} {workload} {figure}: not measured (baseline {expected})")
                    continue
                if abs(got - expected) > expected * TOLERANCE + SLACK:
                    way = "more" if got > expected else "fewer"
                    lines.append(
                        f"{api} {workload} {figure}: {got:,.1f} per op, baseline {expected:,.1f} ({way})"
                    )
    return lines


UPDATE_HINT = (
    "If the change means it (more work accepted on purpose, or less to lock in), run "
    "`python tests/hot_path.py --update` and commit benchmarks/baseline_counts.json with it, "
    "saying why in the commit message."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help=f"rewrite {BASELINE.name}")
    args = parser.parse_args()
    if args.update:
        measured = median_of([measure() for _ in range(UPDATE_RUNS)])
        BASELINE.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
        print(f"wrote {BASELINE} (each figure the median of {UPDATE_RUNS} runs)")
        return
    measured = measure()
    print(json.dumps(measured, indent=1, sort_keys=True))
    if BASELINE.exists():
        moved = departures(measured, load_baseline())
        print("\n".join(moved) if moved else "within the baseline's tolerance")


if __name__ == "__main__":
    main()

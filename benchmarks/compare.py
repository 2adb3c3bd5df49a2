"""Two revisions of sqlkv side by side, in one run: each figure's median ratio HEAD/BASE.

    python benchmarks/compare.py BASE [HEAD] [--rounds 5] [--store memory,lmdb]
                                 [--api async,sync] [--figures workloads,group,many,overhead]
                                 [--small]

BASE and HEAD are anything ``git rev-parse`` takes (``6761dd9``, ``main``);
without HEAD the working tree is compared (uncommitted changes included). Each
given revision gets a ``git worktree`` of its own in a temporary folder,
removed at the end, so this runs from a clean checkout.

The same workload code runs on both sides: this file and the five workloads
of docs/workloads.md (``src/sqlkv/tools/bench.py`` of HEAD, or of the working tree)
are loaded against each revision's library, in a fresh subprocess per round
with ``PYTHONPATH`` set to that revision's ``src``. Rounds alternate
(BASE, HEAD, then HEAD, BASE, ...), so drift on a loaded machine hits both
sides alike; each ratio pairs a round of HEAD with the round of BASE run next
to it, and a figure's ratio is the median of those pairs, with their spread
(lowest..highest). Higher is better for every figure (a rate), so a ratio
above 1 means HEAD is faster.

Figures:

- ``workloads``: ops/s of the five workloads (backend pages) for each
  ``--store`` (``memory``, ``lmdb``) and ``--api`` (``async``, ``sync``);
  their round trips per op are printed too and must match on both sides.
- ``group``: group commit, 64 coroutines each writing single-row INSERTs on
  one database at 1 ms per store call (commits/s, async API).
- ``many``: many databases on one event loop: opens/s (open + CREATE +
  INSERT) and the gather of one query on each (queries/s).
- ``overhead``: per-call µs of ``SELECT 1`` through the async and the sync
  API on a memory store, and the async API's overhead over the sync one
  (the issue's ≤ 25 µs target); printed as calls/s in the ratio table and as
  µs below it.

``--small`` runs the group and many figures at a smaller scale (and fewer
calls for the overhead), for a quick look.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
FIGURE_KINDS = ("workloads", "group", "many", "overhead")
STORES = ("memory", "lmdb")
APIS = ("async", "sync")


# -- the parent: worktrees, alternating rounds, ratios ------------------------------


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@contextmanager
def worktrees(repo: Path, revisions: list[str]) -> Iterator[list[Path]]:
    """A detached worktree of each revision in a temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="sqlkv-compare-"))
    made: list[Path] = []
    try:
        for i, rev in enumerate(revisions):
            path = folder / f"rev{i}"
            git(repo, "worktree", "add", "--detach", "--quiet", str(path), rev)
            made.append(path)
        yield made
    finally:
        for path in made:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)],
                           capture_output=True)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def run_child(src: Path, bench_py: Path, job: dict[str, Any]) -> list[dict[str, Any]]:
    """One round of ``job`` in a fresh interpreter on the library in ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", json.dumps(job), "--bench-py", str(bench_py)],
        env=env, capture_output=True, text=True, timeout=1800,
    )
    if proc.returncode != 0:
        raise SystemExit(f"a round failed ({src}, {job}):\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def jobs_for(args: argparse.Namespace) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    kinds = args.figures.split(",")
    if "workloads" in kinds:
        for store in args.store.split(","):
            for api in args.api.split(","):
                jobs.append({"kind": "workloads", "store": store, "api": api})
    for kind in ("group", "many", "overhead"):
        if kind in kinds:
            jobs.append({"kind": kind, "small": args.small})
    return jobs


def compare(args: argparse.Namespace) -> None:
    repo = Path(git(HERE.parent, "rev-parse", "--show-toplevel"))
    revisions = [args.base] + ([args.head] if args.head else [])
    names = [git(repo, "rev-parse", "--short", rev) for rev in revisions]
    head_name = names[1] if args.head else "working tree"
    print(f"BASE {args.base} ({names[0]}), HEAD {args.head or '(working tree)'} ({head_name}); "
          f"{args.rounds} rounds each, alternating; load average at the start "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    samples: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
    counts: dict[str, dict[str, float]] = {"base": {}, "head": {}}
    order: list[str] = []
    with worktrees(repo, revisions) as trees:
        head_root = trees[1] if args.head else repo
        bench_py = bench_file(head_root / "src")
        sides = {"base": trees[0] / "src", "head": head_root / "src"}
        start = time.monotonic()
        for round_no in range(args.rounds):
            for job in jobs_for(args):
                pair = ("base", "head") if round_no % 2 == 0 else ("head", "base")
                for side in pair:
                    for fig in run_child(sides[side], bench_py, job):
                        name = fig["figure"]
                        if name not in order:
                            order.append(name)
                        samples[side].setdefault(name, []).append(fig["rate"])
                        if "round_trips_per_op" in fig:
                            counts[side][name] = fig["round_trips_per_op"]
            print(f"round {round_no + 1}/{args.rounds} done ({time.monotonic() - start:.0f} s)",
                  file=sys.stderr, flush=True)
    print(f"load average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report(order, samples, counts)


def report(order: list[str], samples: dict[str, dict[str, list[float]]],
           counts: dict[str, dict[str, float]]) -> None:
    print()
    print("| figure | BASE median | HEAD median | HEAD/BASE median | spread (pairs) | round trips/op B → H |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in order:
        base, head = samples["base"].get(name, []), samples["head"].get(name, [])
        ratios = [h / b for b, h in zip(base, head) if b > 0]
        if not ratios:
            continue
        trips = ""
        if name in counts["base"] or name in counts["head"]:
            trips = f"{counts['base'].get(name, '—')} → {counts['head'].get(name, '—')}"
        print(f"| {name} | {statistics.median(base):,.1f} | {statistics.median(head):,.1f} | "
              f"{statistics.median(ratios):.2f} | {min(ratios):.2f}..{max(ratios):.2f} | {trips} |")
    # The per-call figures in µs, and the async API's overhead over the sync one.
    rows = []
    for side in ("base", "head"):
        got = samples[side]
        if "select-1 async (calls/s)" in got and "select-1 sync (calls/s)" in got:
            over = [1e6 / a - 1e6 / s for a, s in zip(got["select-1 async (calls/s)"],
                                                     got["select-1 sync (calls/s)"])]
            rows.append(f"{side.upper()}: sync {1e6 / statistics.median(got['select-1 sync (calls/s)']):.1f} µs, "
                        f"async {1e6 / statistics.median(got['select-1 async (calls/s)']):.1f} µs per call; "
                        f"async overhead median {statistics.median(over):.1f} µs "
                        f"({min(over):.1f}..{max(over):.1f})")
    if rows:
        print()
        print("SELECT 1 per call (median of rounds):")
        for row in rows:
            print(f"- {row}")


# -- the child: one round of one job, on whatever sqlkv PYTHONPATH gives ------------


# Where issue 23 moved the modules this file and the workloads import (new name: old
# name), so HEAD's bench.py runs on a library of either layout, before or after the move.
MOVED = {
    "sqlkv.stores.latency": "sqlkv.latency",
    "sqlkv.stores.contract": "sqlkv.store",
    "sqlkv.stores.urls": "sqlkv.urls",
    "sqlkv.format.layout": "sqlkv.layout",
    "sqlkv.runtime.database": "sqlkv.database",
    "sqlkv.runtime.connection": "sqlkv.sync",
}


def bench_file(src: Path) -> Path:
    """The workloads' module in the tree ``src``: ``tools/bench.py``, or before the move ``bench.py``."""
    moved = src / "sqlkv" / "tools" / "bench.py"
    return moved if moved.is_file() else src / "sqlkv" / "bench.py"


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its package is missing
        return False


def alias_moved_modules() -> None:
    """Make each module of ``MOVED`` importable by both names, whichever the library has."""
    for new, old in MOVED.items():
        have_new, have_old = _importable(new), _importable(old)
        if have_new != have_old:
            present, missing = (new, old) if have_new else (old, new)
            sys.modules[missing] = importlib.import_module(present)


def load_bench(bench_py: Path) -> Any:
    """HEAD's ``bench.py`` as the workloads' module of the library on the path, so both
    revisions run the same workload code. A name it imports only for its type
    hints, which the first releases lacked, is supplied as ``object``; the layout
    names issue 23 gave one home (``JOURNAL``, ``Layout.chunk_prefix``) are supplied
    to a library older than them, as what they stand for."""
    alias_moved_modules()
    contract = importlib.import_module("sqlkv.stores.contract")
    if not hasattr(contract, "AnyKvStore"):
        contract.AnyKvStore = object
    layout = importlib.import_module("sqlkv.format.layout")
    if not hasattr(layout, "JOURNAL"):
        layout.JOURNAL = "-journal"
    for kind in (layout.SeedLayout, layout.RivetV2Layout):
        if not hasattr(kind, "chunk_prefix"):
            kind.chunk_prefix = lambda self, name: self.chunk_key(name, 0)[:-4]
    name = "sqlkv.tools.bench" if bench_py.parent.name == "tools" else "sqlkv.bench"
    spec = importlib.util.spec_from_file_location(name, bench_py)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def emit(figure: str, rate: float, **extra: Any) -> None:
    print(json.dumps({"figure": figure, "rate": rate, **extra}), flush=True)


def child_workloads(bench: Any, store: str, api: str) -> None:
    url = {"memory": "memory://", "lmdb": "lmdb://"}[store]
    plan = bench.Plan(systems=("pages",), store_url=url, api=api)
    for result in bench.run_sync(plan):
        d = result.as_dict()
        emit(f"{d['workload']} {api} {store}", d["ops_per_s"], round_trips_per_op=d["kv_calls_per_op"])


def child_group(small: bool) -> None:
    import asyncio

    import sqlkv
    from sqlkv.stores.latency import metered

    writers, each = (64, 10) if small else (64, 40)

    async def one() -> float:
        db = await sqlkv.SqliteVfs(backend="pages").open("g.db", metered(sqlkv.MemoryStore(), 1.0))
        await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, caller INT, v TEXT)")

        async def caller(c: int) -> None:
            for i in range(each):
                await db.run("INSERT INTO t(caller, v) VALUES (?, ?)", [c, str(i).rjust(100, "x")])

        start = time.perf_counter()
        await asyncio.gather(*(caller(c) for c in range(writers)))
        seconds = time.perf_counter() - start
        await db.close()
        return writers * each / seconds

    emit("group commit 64 writers 1 ms (commits/s)", asyncio.run(one()))


def child_many(small: bool) -> None:
    import asyncio

    import sqlkv

    count = 200 if small else 1000

    async def many() -> tuple[float, float]:
        store = sqlkv.MemoryStore()
        vfs = sqlkv.SqliteVfs(backend="pages")

        async def open_one(i: int) -> Any:
            db = await vfs.open(f"db{i}.db", store)
            await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
            return db

        start = time.perf_counter()
        dbs = [await open_one(i) for i in range(count)]
        opened = time.perf_counter() - start
        start = time.perf_counter()
        await asyncio.gather(*(db.query("SELECT x FROM t") for db in dbs))
        gathered = time.perf_counter() - start
        for db in dbs:
            await db.close()
        return count / opened, count / gathered

    opens, queries = asyncio.run(many())
    emit(f"many databases ({count}): opens/s", opens)
    emit(f"many databases ({count}): gathered queries/s", queries)


def child_overhead(small: bool) -> None:
    import asyncio

    import sqlkv

    calls = 1000 if small else 3000

    def sync_rate() -> float:
        with sqlkv.connect(sqlkv.MemoryStore(), "o.db", backend="pages") as db:
            db.exec("SELECT 1")
            start = time.perf_counter()
            for _ in range(calls):
                db.exec("SELECT 1")
            return calls / (time.perf_counter() - start)

    async def async_rate() -> float:
        db = await sqlkv.SqliteVfs(backend="pages").open("o.db", sqlkv.MemoryStore())
        await db.exec("SELECT 1")
        start = time.perf_counter()
        for _ in range(calls):
            await db.exec("SELECT 1")
        rate = calls / (time.perf_counter() - start)
        await db.close()
        return rate

    # Twice each, alternating, keeping the better: the figure is the cost, not the noise.
    sync_rates, async_rates = [], []
    for _ in range(2):
        sync_rates.append(sync_rate())
        async_rates.append(asyncio.run(async_rate()))
    emit("select-1 sync (calls/s)", max(sync_rates))
    emit("select-1 async (calls/s)", max(async_rates))


def child(job: dict[str, Any], bench_py: Path) -> None:
    alias_moved_modules()
    kind = job["kind"]
    if kind == "workloads":
        child_workloads(load_bench(bench_py), job["store"], job["api"])
    elif kind == "group":
        child_group(job["small"])
    elif kind == "many":
        child_many(job["small"])
    elif kind == "overhead":
        child_overhead(job["small"])
    else:
        raise SystemExit(f"unknown job kind {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", nargs="?", help="the base revision (e.g. 6761dd9)")
    parser.add_argument("head", nargs="?", help="the revision to compare (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each side (default 5)")
    parser.add_argument("--store", default="memory", help="memory, lmdb or both: memory,lmdb")
    parser.add_argument("--api", default="async", help="async, sync or both: async,sync")
    parser.add_argument("--figures", default=",".join(FIGURE_KINDS),
                        help=f"which of {','.join(FIGURE_KINDS)} (default all)")
    parser.add_argument("--small", action="store_true", help="group, many and overhead at a smaller scale")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--bench-py", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child), Path(args.bench_py))
        return
    if not args.base:
        parser.error("give the BASE revision")
    for value, allowed, flag in ((args.store, STORES, "--store"), (args.api, APIS, "--api"),
                                 (args.figures, FIGURE_KINDS, "--figures")):
        bad = [v for v in value.split(",") if v not in allowed]
        if bad:
            parser.error(f"{flag}: {', '.join(bad)} not among {', '.join(allowed)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        compare(args)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip().splitlines()
        raise SystemExit(f"compare.py: git {' '.join(exc.cmd[3:])} failed: {detail[-1] if detail else exc}") from None


if __name__ == "__main__":
    main()

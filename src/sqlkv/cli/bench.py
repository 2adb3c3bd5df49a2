"""``sqlkv bench``: the workloads of docs/workloads.md from the command line.

Needs rich (a dependency of the ``sqlkv`` package; the rest of the command
line works without it).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def _split(values: list[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """Options given several times or comma-separated, in order, without repeats."""
    if not values:
        return default
    out: list[str] = []
    for value in values:
        out.extend(v.strip() for v in value.split(",") if v.strip() and v.strip() not in out)
    return tuple(out)


def _fmt(value: float | int | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def results_table(results: list) -> Table:
    """The bench results as a rich table: one row per system and workload."""
    from rich.table import Table

    table = Table(show_edge=True, header_style="bold")
    for name in ("system", "workload", "latency ms", "ops", "ops/s", "round trips/op",
                 "B written/op", "B read/op", "chunks written/op"):
        table.add_column(name, justify="left" if name in ("system", "workload") else "right")
    for r in results:
        d = r.as_dict()
        table.add_row(
            d["system"], d["workload"], _fmt(d["latency_ms"], "g"), str(d["ops"]),
            _fmt(d["ops_per_s"], ",.0f"), _fmt(d["kv_calls_per_op"], ".3f"),
            _fmt(d["bytes_written_per_op"], ",d"), _fmt(d["bytes_read_per_op"], ",d"),
            _fmt(d["chunks_written_per_op"], ".2f"),
        )
    return table


@contextmanager
def progress_bar(console: Console, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` ops; yields the function that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:
        task = progress.add_task("bench", total=total)
        yield lambda n: progress.advance(task, n)


def cmd_bench(args: argparse.Namespace) -> int:
    """``sqlkv bench``: run the workloads, print JSON lines or a table."""
    try:
        from rich.console import Console
    except ImportError as exc:
        raise ConfigError("sqlkv bench needs rich (pip install rich)") from exc
    out = Console(highlight=False)
    import asyncio

    from ..tools import bench

    plan = bench.Plan(
        systems=_split(args.backend, ("pages",)),
        store_url=args.store,
        latency_ms=args.latency_ms,
        workloads=_split(args.workload, bench.WORKLOADS),
        api=args.api,
        cache_bytes=None if args.cache_mib is None else int(args.cache_mib * 1024 * 1024),
    )

    async def go() -> list[bench.Result]:
        results = []
        if args.format == "table":
            with progress_bar(Console(stderr=True), plan.total_ops) as advance:
                async for result in bench.run(plan, advance):
                    results.append(result)
            # A pipe or file gets the whole table, not one cut to 80 columns.
            wide = out if out.is_terminal else Console(width=160)
            wide.print(results_table(results))
        else:
            async for result in bench.run(plan):
                results.append(result)
                print(json.dumps(result.as_dict()), flush=True)
        return results

    asyncio.run(go())
    return 0


def add_bench_parser(sub: Any, cmd_bench: Callable[[argparse.Namespace], int]) -> None:
    """Add ``bench`` and its options to the command line's subcommands."""
    from ..tools.bench import APIS, SYSTEMS, WORKLOADS

    p_bench = sub.add_parser(
        "bench",
        help="run the benchmark workloads",
        description="Run the workloads of docs/workloads.md and print one JSON object per "
        "workload (or a table). Counters cover the measured ops only.",
    )
    p_bench.add_argument(
        "--backend", action="append", metavar="NAME",
        help=f"system to run: {', '.join(SYSTEMS)} (repeat or comma-separate; default pages)",
    )
    p_bench.add_argument(
        "--store", default="memory://",
        help="store URL (default memory://; lmdb://DIR makes a fresh environment inside DIR)",
    )
    p_bench.add_argument(
        "--latency-ms", type=float, default=0.0, metavar="N",
        help="sleep N ms before every store round trip (default 0)",
    )
    p_bench.add_argument(
        "--workload", action="append", metavar="NAME",
        help=f"workload to run: {', '.join(WORKLOADS)} (repeat or comma-separate; default all)",
    )
    p_bench.add_argument("--format", choices=("json", "table"), default="json")
    p_bench.add_argument(
        "--api", choices=APIS, default="async",
        help="sqlkv API the ops go through (default async)",
    )
    p_bench.add_argument(
        "--cache-mib", type=float, metavar="N",
        help="chunk cache per database in MiB (default: sqlkv's default)",
    )
    p_bench.set_defaults(func=cmd_bench)

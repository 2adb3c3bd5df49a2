"""The ``sqlkv`` command.

    sqlkv exec [--store URL] DB "SQL"    run SQL, print result rows as tables
    sqlkv bench [--backend B] [--store URL] [--latency-ms N] [--workload W] [--format F]
                                         the workloads of docs/workloads.md, one JSON line each
    sqlkv --version                      version, and the backend in use

The default store is LMDB under ``./sqlkv-data`` (``$SQLKV_STORE`` overrides).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import __version__
from .backends import resolve_backend
from .errors import Error
from .sync import connect
from .urls import open_store

DEFAULT_STORE = "lmdb://./sqlkv-data"
#: Longer than a writer's lease (10 s), so a command never fails on the lease
#: of one that was killed.
DEFAULT_LOCK_TIMEOUT = 15.0


def _store_url(args: argparse.Namespace) -> str:
    return args.store or os.environ.get("SQLKV_STORE") or DEFAULT_STORE


def _cell(value: object) -> Text:
    """A result value as literal text: data is never read as rich markup."""
    if value is None:
        return Text("NULL")
    if isinstance(value, bytes):
        return Text("x'" + value.hex() + "'")
    return Text(str(value))


def cmd_exec(args: argparse.Namespace, out: Console) -> int:
    store = open_store(_store_url(args))
    try:
        with connect(store, args.db, backend=args.backend, lock_timeout=args.lock_timeout) as db:
            results = db.exec(args.sql)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    for result in results:
        if not result.columns:
            continue
        table = Table(show_edge=True, header_style="bold")
        for column in result.columns:
            table.add_column(Text(column))
        for row in result.rows:
            table.add_row(*(_cell(v) for v in row))
        out.print(table)
        out.print(f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}", style="dim")
    return 0


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
    with Progress(
        TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:
        task = progress.add_task("bench", total=total)
        yield lambda n: progress.advance(task, n)


def cmd_bench(args: argparse.Namespace, out: Console) -> int:
    import asyncio

    from . import bench

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sqlkv", description="SQLite databases whose files live in a key-value store."
    )
    parser.add_argument(
        "--version", action="store_true", help="print the version and the backend in use"
    )
    sub = parser.add_subparsers(dest="command")

    p_exec = sub.add_parser("exec", help="run SQL and print the result rows")
    p_exec.add_argument("db", help="database name inside the store, e.g. app.db")
    p_exec.add_argument("sql", help="one or more SQL statements")
    p_exec.add_argument("--store", help=f"store URL (default {DEFAULT_STORE}, or $SQLKV_STORE)")
    p_exec.add_argument("--backend", choices=("pages", "snapshot"), help="engine to use")
    p_exec.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULT_LOCK_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for another writer's lease (default %(default)s: a lease "
        "left by a command that was killed expires by then)",
    )
    p_exec.set_defaults(func=cmd_exec)

    from .bench import APIS, SYSTEMS, WORKLOADS

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Console()
    err = Console(stderr=True)
    if args.version:
        try:
            backend = resolve_backend()
        except Error as exc:
            backend = f"none ({exc})"
        out.print(Text(f"sqlkv {__version__} (backend: {backend})"))
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args, out)
    except Error as exc:
        # Messages quote SQL, names and store errors: print them as literal text.
        err.print(Text.assemble(("error:", "bold red"), f" {exc}"))
        if exc.__cause__ is not None:
            err.print(Text(f"  caused by: {type(exc.__cause__).__name__}: {exc.__cause__}"))
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``sqlkv`` command.

    sqlkv exec [--store URL] DB "SQL"    run SQL, print result rows as tables
    sqlkv --version                      version, and the backend in use

The default store is LMDB under ``./sqlkv-data`` (``$SQLKV_STORE`` overrides).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from . import __version__
from .backends import resolve_backend
from .errors import Error
from .sync import connect
from .urls import open_store

DEFAULT_STORE = "lmdb://./sqlkv-data"


def _store_url(args: argparse.Namespace) -> str:
    return args.store or os.environ.get("SQLKV_STORE") or DEFAULT_STORE


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return "x'" + value.hex() + "'"
    return str(value)


def cmd_exec(args: argparse.Namespace, out: Console) -> int:
    store = open_store(_store_url(args))
    try:
        with connect(store, args.db, backend=args.backend) as db:
            results = db.exec(args.sql)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    for result in results:
        if not result.columns:
            continue
        table = Table(*result.columns, show_edge=True, header_style="bold")
        for row in result.rows:
            table.add_row(*(_cell(v) for v in row))
        out.print(table)
        out.print(f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}", style="dim")
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
    p_exec.set_defaults(func=cmd_exec)
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
        out.print(f"sqlkv {__version__} (backend: {backend})")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args, out)
    except Error as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        if exc.__cause__ is not None:
            err.print(f"  caused by: {type(exc.__cause__).__name__}: {exc.__cause__}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``sqlkv`` command: SQLite databases in a key-value store, from a shell.

    sqlkv shell DB                      interactive SQL, like sqlite3
    sqlkv exec DB SQL|-|--file F        run SQL, print the rows
    sqlkv import FILE.db DB             a SQLite file into the store (atomic)
    sqlkv export DB FILE.db             a database out as a SQLite file
    sqlkv copy --from URL --to URL DB [NEW_NAME]
    sqlkv ls                            the databases in a store
    sqlkv check DB [--repair]           integrity and layout audit
    sqlkv rm DB [--yes]                 remove a database
    sqlkv bench ...                     the workloads of docs/workloads.md
    sqlkv --version                     version, and the backend in use

Every command takes ``--store URL`` (default ``$SQLKV_STORE``, else
``lmdb://./sqlkv-data``). The commands only call sqlkv's public functions.

Exit statuses (:data:`EXIT_STATUSES`): 0 success, 1 SQL error or refused
operation, 2 usage error, 3 store unreachable or store error, 4 locked by
another writer, 5 corrupt (or ``check`` found a problem), 130 interrupted.
Every error is one line on stderr, and nothing that comes from data, SQL or
a store is ever read as markup. Needs nothing beyond sqlkv's own
dependencies; without rich, tables are plain text and progress a line of
text (``bench`` alone needs rich).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .. import environment
from ..engine.backends import resolve_backend
from ..errors import (
    ConfigError,
    CorruptError,
    Error,
    ExistsError,
    FencedError,
    LockedError,
    StoreError,
    TransactionError,
)
from ..runtime.connection import Connection, connect
from ..storage.files import Progress
from ..stores.contract import AnyKvStore
from ..stores.urls import lmdb_store_path, open_store
from ..tools.inventory import check_database, lease_info, list_databases, remove_database
from ..tools.transfer import copy_database, export_database, import_database
from ..version import __version__
from .output import FORMATS, Printer, rich_console
from .shell import Shell, StatementError

#: Longer than a writer's lease (10 s), so a command never fails on the lease
#: of one that was killed.
DEFAULT_LOCK_TIMEOUT = 15.0

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_LOCKED = 4
EXIT_CORRUPT = 5
EXIT_INTERRUPTED = 130
EXIT_STATUSES = {
    EXIT_OK: "success",
    EXIT_ERROR: "SQL error, or the operation was refused (database missing, or there already; "
    "a file to import that is not a whole SQLite database)",
    EXIT_USAGE: "usage error (bad arguments, options or store URL)",
    EXIT_STORE: "the store is unreachable or failed",
    EXIT_LOCKED: "another writer holds the database's lease",
    EXIT_CORRUPT: "stored data is corrupt, or check found a problem",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


class UsageError(Error):
    """The command line asks for something that cannot be done as asked."""


def exit_status(exc: BaseException) -> int:
    """The exit status for an error (see :data:`EXIT_STATUSES`)."""
    error = exc.error if isinstance(exc, StatementError) else exc
    if isinstance(error, (ConfigError, UsageError)):
        return EXIT_USAGE
    if isinstance(error, StoreError):
        return EXIT_STORE
    if isinstance(error, (LockedError, FencedError)):
        return EXIT_LOCKED
    if isinstance(error, CorruptError):
        return EXIT_CORRUPT
    return EXIT_ERROR


def error_line(exc: BaseException, lock_hint: str = "") -> str:
    """One line saying what went wrong, the store's own message included."""
    message = str(exc)
    if isinstance(exc, LockedError):
        # The library's advice names its Python arguments; the command line has flags.
        message = exc.reason + (f"; {lock_hint}" if lock_hint else "")
    if isinstance(exc, ExistsError):
        message += "; pass --replace to replace it"
    cause = exc.__cause__
    if cause is not None and not isinstance(exc, StatementError) and str(cause) not in message:
        message += f" ({type(cause).__name__}: {cause})"
    return " ".join(message.split())


def say(text: str) -> None:
    """A line on stderr (status and errors), never read as markup."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _store_url(url: str | None) -> str:
    return url or environment.store_url()


def _read_only_directory(url: str) -> bool:
    """Whether ``url`` is an LMDB store in a directory this process cannot write."""
    path = lmdb_store_path(url)
    if path is None or not os.path.isdir(path):
        return False
    lock = os.path.join(path, "lock.mdb")
    return not os.access(path, os.W_OK) or (os.path.exists(lock) and not os.access(lock, os.W_OK))


@contextmanager
def opened_store(url: str | None, create: bool = False) -> Iterator[tuple[AnyKvStore, bool]]:
    """The store a URL names, and whether it could only be opened read-only
    (an LMDB directory this process cannot write: reads still work). Closed after."""
    url = _store_url(url)
    readonly = _read_only_directory(url)
    if readonly:
        url += ("&" if "?" in url else "?") + "readonly=1"
        say("sqlkv: the store's directory is read-only: opened for reading only")
    store = open_store(url, create=create)
    try:
        yield store, readonly
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def announce_wait(store: AnyKvStore, name: str, lock_timeout: float) -> None:
    """Say on stderr that a writer will wait for another's lease, and for how long."""
    if lock_timeout <= 0:
        return
    try:
        lease = lease_info(store, name)
    except Error:
        return  # the open that follows reports it
    if lease is not None and lease.held:
        say(
            f"sqlkv: waiting up to {lock_timeout:g} s for the writer's lease on {name} "
            f"({lease.describe()}; --lock-timeout changes the wait)"
        )


@contextmanager
def progress_reporter(label: str) -> Iterator[Progress | None]:
    """A progress bar on stderr when it is a terminal (rich's, or a line of text), else none."""
    if not sys.stderr.isatty():
        yield None
        return
    console = rich_console(sys.stderr)
    if console is not None:
        from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        with Bar(TextColumn(label), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                 console=console, transient=True) as bar:
            task = bar.add_task(label, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return

    def line(done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        sys.stderr.write(f"\r{label} {percent:3d}% {done / 1e6:.1f}/{total / 1e6:.1f} MB")
        sys.stderr.flush()

    try:
        yield line
    finally:
        sys.stderr.write("\n")


def _printer(fmt: str | None) -> Printer:
    terminal = sys.stdout.isatty()
    return Printer(sys.stdout, fmt or ("table" if terminal else "csv"), terminal=terminal)


def _connect(args: argparse.Namespace, store: AnyKvStore, readonly: bool) -> Connection:
    if not readonly:
        announce_wait(store, args.db, args.lock_timeout)
    return connect(store, args.db, backend=args.backend, readonly=readonly, lock_timeout=args.lock_timeout)


# -- the commands ---------------------------------------------------------------------


def cmd_exec(args: argparse.Namespace) -> int:
    """``sqlkv exec``: run SQL given, from a file, or from standard input (``-``)."""
    if args.file is not None and args.sql is not None:
        raise UsageError("give the SQL either as an argument or with --file, not both")
    source = args.file if args.file is not None else args.sql
    if source is None:
        raise UsageError("no SQL given: pass it as an argument, - for standard input, or --file FILE")
    if args.file is not None or source == "-":
        sql = _read_text(source)
    else:
        sql = source
    with opened_store(args.store, args.create) as (store, store_readonly):
        with _connect(args, store, args.readonly or store_readonly) as db:
            from .shell import Script

            script = Script(db, _printer(args.format))
            try:
                script.run(sql)
            finally:
                left_open = script.close()
            if left_open:
                raise TransactionError(
                    "the SQL left a transaction open (BEGIN without COMMIT); it was rolled back"
                )
    return EXIT_OK


def _read_text(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        with open(source, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from exc


def cmd_shell(args: argparse.Namespace) -> int:
    """``sqlkv shell``: interactive SQL (or statements from standard input)."""
    with opened_store(args.store, args.create) as (store, store_readonly):
        with _connect(args, store, args.readonly or store_readonly) as db:
            shell = Shell(
                db, sys.stdout, sys.stderr, interactive=sys.stdin.isatty(), terminal_out=sys.stdout.isatty()
            )
            if args.format:
                shell.printer.format = args.format
            shell.run()
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    """``sqlkv import``: a SQLite file into the store, atomically."""
    with opened_store(args.store, args.create) as (store, _):
        announce_wait(store, args.db, args.lock_timeout)
        with progress_reporter(f"import {args.db}") as progress:
            result = import_database(
                args.file, store, args.db, replace=args.replace, progress=progress, lock_timeout=args.lock_timeout
            )
    say(f"imported {args.file} as {result.name} ({result.size:,} bytes)")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """``sqlkv export``: a database out as a SQLite file."""
    with opened_store(args.store) as (store, store_readonly):
        readonly = args.readonly or store_readonly
        if not readonly:
            announce_wait(store, args.db, args.lock_timeout)
        with progress_reporter(f"export {args.db}") as progress:
            result = export_database(
                store, args.db, args.file, replace=args.replace, readonly=readonly,
                progress=progress, lock_timeout=args.lock_timeout,
            )
    say(f"exported {args.db} to {result.name} ({result.size:,} bytes)")
    return EXIT_OK


def cmd_copy(args: argparse.Namespace) -> int:
    """``sqlkv copy``: a database from one store to another."""
    new_name = args.new_name or args.db
    with opened_store(args.source) as (source, source_readonly), opened_store(args.target, args.create) as (target, _):
        announce_wait(target, new_name, args.lock_timeout)
        with progress_reporter(f"copy {args.db}") as progress:
            result = copy_database(
                source, target, args.db, new_name, replace=args.replace,
                readonly=args.readonly or source_readonly, progress=progress, lock_timeout=args.lock_timeout,
            )
    say(f"copied {args.db} to {result.name} ({result.size:,} bytes)")
    return EXIT_OK


def _size(value: int | None) -> str:
    return "?" if value is None else f"{value:,}" if sys.stdout.isatty() else str(value)


def cmd_ls(args: argparse.Namespace) -> int:
    """``sqlkv ls``: the databases in a store."""
    with opened_store(args.store) as (store, _):
        found = list_databases(store)
    rows = []
    for info in found:
        lease = "" if info.lease is None else info.lease.describe()
        size = info.size if args.format in ("json", "jsonl") else _size(info.size)
        rows.append((info.name, size, info.chunks, info.problem or lease))
    printer = _printer(args.format)
    printer.rows(["name", "bytes", "chunks", "lease / problem"], rows)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """``sqlkv check``: audit a database; exit 0 only when it is sound."""
    out = sys.stdout

    def announce(plan: list[str]) -> None:
        # What the repair will do, before it does any of it.
        for line in plan:
            out.write(f"repairing: {line}\n")
        out.flush()

    with opened_store(args.store) as (store, _):
        if args.repair:
            announce_wait(store, args.db, args.lock_timeout)
        report = check_database(
            store, args.db, repair=args.repair, lock_timeout=args.lock_timeout, on_plan=announce
        )
    for note in report.notes:
        out.write(f"note: {note}\n")
    for repaired in report.repaired:
        out.write(f"repaired: {repaired}\n")
    for problem in report.problems:
        would = f" (--repair: {problem.action})" if problem.repairable and not args.repair else ""
        out.write(f"problem: {problem.message}{would}\n")
    out.write(f"{args.db}: {'sound' if report.sound else 'NOT sound'}\n")
    return EXIT_OK if report.sound else EXIT_CORRUPT


def cmd_rm(args: argparse.Namespace) -> int:
    """``sqlkv rm``: remove a database, after asking on a terminal (unless --yes)."""
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"not removing {args.db} without confirmation: pass --yes")
        answer = input(f"remove database {args.db} and every key of it? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            say("sqlkv: nothing removed")
            return EXIT_ERROR
    with opened_store(args.store) as (store, _):
        announce_wait(store, args.db, args.lock_timeout)
        removed = remove_database(store, args.db, lock_timeout=args.lock_timeout)
    say(f"removed {args.db} ({removed} keys)")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import cmd_bench as run

    return run(args)


# -- arguments --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sqlkv",
        description="SQLite databases whose files live in a key-value store.",
        epilog="exit statuses: " + "; ".join(f"{k} {v}" for k, v in EXIT_STATUSES.items()),
    )
    parser.add_argument("--version", action="store_true", help="print the version and the backend in use")
    sub = parser.add_subparsers(dest="command")

    def store_options(p: argparse.ArgumentParser, create: bool = True) -> None:
        p.add_argument("--store", help=f"store URL (default $SQLKV_STORE, else {environment.DEFAULT_STORE})")
        if create:
            p.add_argument(
                "--create", action="store_true",
                help="make an lmdb:// store's directory even if its parent directories are missing",
            )

    def lock_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT, metavar="SECONDS",
            help="how long to wait for another writer's lease (default %(default)g: a lease "
            "left by a command that was killed expires by then)",
        )

    def sql_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("db", help="database name inside the store, e.g. app.db")
        store_options(p)
        lock_option(p)
        p.add_argument("--backend", choices=("pages", "snapshot"), help="engine to use")
        p.add_argument("--readonly", action="store_true", help="only read: take no lease, never write")
        p.add_argument(
            "--format", choices=FORMATS,
            help="output format (default: table on a terminal, else csv)",
        )

    p = sub.add_parser("exec", help="run SQL and print the result rows")
    sql_options(p)
    p.add_argument("sql", nargs="?", help="SQL statements, or - to read them from standard input")
    p.add_argument("-f", "--file", help="read the SQL from this file")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("shell", help="interactive SQL, like the sqlite3 shell")
    sql_options(p)
    p.set_defaults(func=cmd_shell)

    p = sub.add_parser("import", help="bring a SQLite file into the store (atomically)")
    p.add_argument("file", help="the SQLite file")
    p.add_argument("db", help="database name inside the store")
    store_options(p)
    lock_option(p)
    p.add_argument("--replace", action="store_true", help="replace a database of that name")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="write a database out as a SQLite file")
    p.add_argument("db", help="database name inside the store")
    p.add_argument("file", help="the SQLite file to write")
    store_options(p, create=False)
    lock_option(p)
    p.add_argument("--replace", action="store_true", help="replace FILE if it exists")
    p.add_argument(
        "--readonly", action="store_true",
        help="read without the writer's lease (consistent only while nobody writes)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("copy", help="copy a database between stores (atomically at the target)")
    p.add_argument("db", help="database name in the source store")
    p.add_argument("new_name", nargs="?", help="name in the target store (default: the same)")
    p.add_argument("--from", dest="source", required=True, metavar="URL", help="source store URL")
    p.add_argument("--to", dest="target", required=True, metavar="URL", help="target store URL")
    p.add_argument(
        "--create", action="store_true", help="make the target lmdb:// directory with its parents"
    )
    lock_option(p)
    p.add_argument("--replace", action="store_true", help="replace a database of that name at the target")
    p.add_argument("--readonly", action="store_true", help="read the source without its writer's lease")
    p.set_defaults(func=cmd_copy)

    p = sub.add_parser("ls", help="list the databases in a store")
    store_options(p, create=False)
    p.add_argument("--format", choices=("table", "csv", "json", "jsonl"))
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("check", help="integrity check and layout audit (exit 0 only when sound)")
    p.add_argument("db", help="database name inside the store")
    store_options(p, create=False)
    lock_option(p)
    p.add_argument(
        "--repair", action="store_true",
        help="under the lease, remove what provably belongs to nothing and rebuild a FileMeta "
        "the SQLite header and chunks agree on; says what it will do first",
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("rm", help="remove a database and every key of it")
    p.add_argument("db", help="database name inside the store")
    store_options(p, create=False)
    lock_option(p)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_rm)

    from .bench import add_bench_parser

    add_bench_parser(sub, cmd_bench)
    return parser


_LOCK_HINTS = {
    "exec": "use --readonly to read without it, or --lock-timeout SECONDS to wait longer",
    "shell": "use --readonly to read without it, or --lock-timeout SECONDS to wait longer",
    "export": "use --readonly to read without it, or --lock-timeout SECONDS to wait longer",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (see :data:`EXIT_STATUSES`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse takes ``exec DB --format json "SQL"`` to leave SQL over: it is the SQL.
        if getattr(args, "command", None) == "exec" and args.sql is None and len(extra) == 1 and not extra[0].startswith("-"):
            args.sql = extra[0]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version:
        try:
            backend = resolve_backend()
        except Error as exc:
            backend = f"none ({exc})"
        sys.stdout.write(f"sqlkv {__version__} (backend: {backend})\n")
        return EXIT_OK
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        say("sqlkv: interrupted")
        return EXIT_INTERRUPTED
    except Error as exc:
        hint = _LOCK_HINTS.get(args.command, "use --lock-timeout SECONDS to wait longer")
        say(f"sqlkv: error: {error_line(exc, hint)}")
        return exit_status(exc)
    except BrokenPipeError:
        # The reader of our output went away (sqlkv ... | head): not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""Running SQL for the command line: statements one by one, and the interactive shell.

:class:`Script` runs a string of SQL one statement at a time, printing each
one's rows, so that when one fails it can say which, and how many ran before
it. :class:`Shell` is ``sqlkv shell``: statements end at ``;`` (as
``sqlite3.complete_statement`` says) and may span lines, dot commands as in
the ``sqlite3`` shell, history in ``~/.sqlkv_history`` (``$SQLKV_HISTORY``)
through the standard library's ``readline``. When its input is not a
terminal it prints no prompts and stops at the first error.
"""

from __future__ import annotations

import csv
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from .. import environment
from ..engine.common import QueryResult, split_statements
from ..errors import Error, SqlError
from ..runtime.connection import Connection
from ..runtime.transaction import Transaction
from .output import FORMATS, Printer

_LEADING_COMMENTS = re.compile(r"\s*(?:--[^\n]*(?:\n|$)\s*|/\*.*?\*/\s*)*", re.S)
_WORD = re.compile(r"\w+")


class StatementError(Error):
    """A statement of a script failed; the message says which, and what ran before it.

    ``error`` is the original error (also the ``__cause__``).
    """

    def __init__(self, message: str, error: Error) -> None:
        super().__init__(message)
        self.error = error


def _without_comments(statement: str) -> str:
    """``statement`` from its first token on (split_statements keeps comments before it)."""
    return statement[_LEADING_COMMENTS.match(statement).end() :]  # type: ignore[union-attr]


def _first_word(statement: str) -> str:
    match = _WORD.match(_without_comments(statement))
    return match.group(0).upper() if match else ""


def _one_line(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _named_pragma_column(statement: str, columns: list[str], rows: list[tuple]) -> list[str]:
    """A PRAGMA answered by sqlkv (``PRAGMA sqlkv_stats``) comes back from SQLite
    with its value as the column's name; name the column after the pragma instead."""
    if len(columns) == 1 and len(rows) == 1 and rows[0] and columns[0] == str(rows[0][0]):
        match = re.match(r"\s*PRAGMA\s+(\w+)", statement, re.I)
        if match:
            return [match.group(1)]
    return columns


#: What runs statements: the connection, or the transaction a script began on it.
Session = Connection | Transaction

_BEGIN = re.compile(r"\s*BEGIN(?:\s+(DEFERRED|IMMEDIATE|EXCLUSIVE))?(?:\s+TRANSACTION)?\s*;?\s*$", re.I)


class Script:
    """Runs SQL text on ``db`` statement by statement, printing rows with ``printer``.

    ``BEGIN`` (or a ``SAVEPOINT`` outside a transaction) opens a
    :meth:`~sqlkv.Connection.transaction` that the following statements, of
    this text and of later ones, run in until one of them ends it (``COMMIT``,
    ``END``, ``ROLLBACK``, ``RELEASE`` of the outermost savepoint), as in the
    ``sqlite3`` shell. :meth:`close` rolls back one still open.
    """

    def __init__(self, db: Connection, printer: Printer) -> None:
        self.db = db
        self.printer = printer
        self.tx: Transaction | None = None

    @property
    def session(self) -> Session:
        """Where statements run now: the open transaction, else the connection."""
        return self.tx if self.tx is not None else self.db

    def run(self, sql: str) -> None:
        """Run every statement of ``sql``; a failure is a :class:`StatementError`
        naming the statement and what ran before it (a failed statement's
        transaction is SQLite's to end: autocommit statements before it stay)."""
        statements = split_statements(sql)
        for number, statement in enumerate(statements, 1):
            in_transaction = self.tx is not None
            try:
                results = self._run_one(statement)
            except Error as exc:
                raise StatementError(self._failure(exc, number, len(statements), statement, in_transaction), exc) from exc
            for result in results:
                columns = _named_pragma_column(statement, result.columns, result.rows)
                self.printer.rows(columns, result.rows)

    def _run_one(self, statement: str) -> list[QueryResult]:
        if self.tx is None:
            begin = _BEGIN.match(_without_comments(statement))
            if begin is not None:
                self.tx = self.db.transaction((begin.group(1) or "deferred").lower())
                self.tx.__enter__()
                return []
            if _first_word(statement) != "SAVEPOINT":
                return self.db.exec(statement)
            self.tx = self.db.transaction()
            self.tx.__enter__()
        try:
            return self.tx.exec(statement)
        finally:
            if not self.tx.open:
                tx, self.tx = self.tx, None
                tx.__exit__(None, None, None)

    def close(self) -> bool:
        """Roll back a transaction left open; whether there was one."""
        if self.tx is None:
            return False
        tx, self.tx = self.tx, None
        tx.rollback()
        return True

    @staticmethod
    def _failure(exc: Error, number: int, total: int, statement: str, in_transaction: bool) -> str:
        message = str(exc)
        if total == 1:
            return message
        where = f"statement {number} of {total} ({_one_line(statement)})"
        if number == 1:
            return f"{message} [in {where}; nothing before it ran]"
        ran = "statement 1" if number == 2 else f"statements 1-{number - 1}"
        kept = (
            "inside a transaction still open, which is not committed"
            if in_transaction
            else "and what they changed is committed"
        )
        return f"{message} [in {where}; {ran} ran before it, {kept}]"


def dump(db: Session) -> Iterator[str]:
    """The database as SQL text, statement by statement, as ``sqlite3``'s ``.dump``
    and ``Connection.iterdump`` write it: schema, rows as INSERTs, then indexes,
    triggers and views, in one transaction."""
    yield "BEGIN TRANSACTION;"
    tables = db.query(
        "SELECT name, type, sql FROM sqlite_master WHERE sql NOT NULL AND type == 'table' ORDER BY name"
    ).rows
    for name, _type, sql in tables:
        if name == "sqlite_sequence":
            yield "DELETE FROM \"sqlite_sequence\";"
        elif name == "sqlite_stat1":
            yield "ANALYZE \"sqlite_master\";"
        elif name.startswith("sqlite_"):
            continue
        elif sql.startswith("CREATE VIRTUAL TABLE"):
            continue
        else:
            yield f"{sql};"
        quoted = name.replace('"', '""')
        columns = [row[1] for row in db.query(f'PRAGMA table_info("{quoted}")').rows]
        values = "||','||".join(f"quote(\"{c.replace(chr(34), chr(34) * 2)}\")" for c in columns)
        query = f"SELECT 'INSERT INTO \"{quoted.replace(chr(39), chr(39) * 2)}\" VALUES(' || {values} || ')' FROM \"{quoted}\""
        for (line,) in db.query(query).rows:
            yield f"{line};"
    others = db.query(
        "SELECT name, type, sql FROM sqlite_master WHERE sql NOT NULL AND "
        "type IN ('index', 'trigger', 'view') ORDER BY name"
    ).rows
    for _name, _type, sql in others:
        yield f"{sql};"
    yield "COMMIT;"


HELP = """\
.dump                  the database as SQL
.headers on|off        column names in table and csv output
.help                  this text
.import FILE TABLE     rows of the CSV file FILE into TABLE (made from the header row if missing)
.mode MODE             output: table, csv, json, jsonl or line
.quit / .exit          leave the shell
.read FILE             run the SQL (and dot commands) in FILE
.schema [TABLE]        the CREATE statements (of TABLE)
.stats                 what this database cost the store so far (PRAGMA sqlkv_stats)
.tables                the tables and views
Statements end with ';' and may span lines. Ctrl-C drops the statement being typed; Ctrl-D leaves."""


class ShellExit(Exception):
    """``.quit``: leave the shell."""


def history_path() -> Path:
    """Where the shell keeps its history: ``$SQLKV_HISTORY``, else ``~/.sqlkv_history``."""
    return environment.history_path()


class Shell:
    """``sqlkv shell``: see the module docstring.

    ``interactive``: a person types (prompts, errors shown and the shell goes
    on); otherwise the first error ends :meth:`run` by raising it.
    """

    def __init__(
        self, db: Connection, out: IO[str], err: IO[str], *, interactive: bool, terminal_out: bool
    ) -> None:
        self.db = db
        self.out = out
        self.err = err
        self.interactive = interactive
        self.printer = Printer(out, "table" if terminal_out else "csv", terminal=terminal_out)
        self.script = Script(db, self.printer)
        #: The statement typed so far, not yet complete.
        self.buffer = ""

    # -- input ------------------------------------------------------------------------

    def run(self, lines: Iterable[str] | None = None) -> None:
        """Read and run until the input ends or ``.quit`` (``lines``: instead of standard input)."""
        if lines is None:
            lines = self._typed() if self.interactive else _stdin_lines()
        try:
            self.feed(lines)
        except ShellExit:
            pass
        finally:
            if self.script.close():
                self.err.write("sqlkv: the transaction left open was rolled back\n")

    def feed(self, lines: Iterable[str]) -> None:
        """Run the statements and dot commands of ``lines`` (one line each)."""
        for line in lines:
            if isinstance(line, _Cancel):
                self.buffer = ""
                continue
            if not self.buffer and line.lstrip().startswith("."):
                self._guarded(self.dot, line.strip())
                continue
            if not self.buffer and not line.strip():
                continue
            self.buffer += line + "\n"
            if sqlite3.complete_statement(self.buffer):
                sql, self.buffer = self.buffer, ""
                self._guarded(self.script.run, sql)
        sql, self.buffer = self.buffer, ""
        if sql.strip():
            self._guarded(self.script.run, sql)

    def _guarded(self, action: Callable[[str], None], text: str) -> None:
        try:
            action(text)
        except Error as exc:
            if not self.interactive:
                raise
            self.err.write(f"Error: {exc}\n")
            self.err.flush()

    def _typed(self) -> Iterator[str]:
        """Lines a person types, with prompts and history (readline)."""
        try:
            import readline
        except ImportError:  # not on every platform: no history then
            readline = None  # type: ignore[assignment]
        path = history_path()
        if readline is not None:
            try:
                readline.read_history_file(path)
            except OSError:
                pass
            readline.set_history_length(1000)
        self.err.write('sqlkv shell: statements end with ";", .help for help, .quit to leave\n')
        try:
            while True:
                try:
                    line = input("   ...> " if self.buffer else "sqlkv> ")
                except KeyboardInterrupt:
                    self.out.write("^C\n")
                    yield _Cancel()
                    continue
                except EOFError:
                    self.out.write("\n")
                    return
                yield line
        finally:
            if readline is not None:
                try:
                    readline.write_history_file(path)
                except OSError as exc:
                    self.err.write(f"sqlkv: cannot save the history to {path}: {exc.strerror or exc}\n")

    # -- dot commands -----------------------------------------------------------------

    def dot(self, line: str) -> None:
        """Run one dot command (see :data:`HELP`)."""
        parts = line.split()
        command, args = parts[0].lower(), parts[1:]
        if command in (".quit", ".exit", ".q"):
            raise ShellExit
        if command == ".help":
            self.out.write(HELP + "\n")
        elif command == ".tables":
            names = self.script.session.query(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            ).rows
            self.out.write("".join(f"{name}\n" for (name,) in names))
        elif command == ".schema":
            sql = "SELECT sql FROM sqlite_master WHERE sql NOT NULL AND name NOT LIKE 'sqlite_%'"
            if args:
                rows = self.script.session.query(sql + " AND tbl_name = ? ORDER BY rowid", [args[0]]).rows
            else:
                rows = self.script.session.query(sql + " ORDER BY rowid").rows
            self.out.write("".join(f"{text};\n" for (text,) in rows))
        elif command == ".mode":
            if len(args) != 1 or args[0] not in FORMATS:
                raise Error(f".mode takes one of {', '.join(FORMATS)}")
            self.printer.format = args[0]
        elif command == ".headers":
            if len(args) != 1 or args[0].lower() not in ("on", "off"):
                raise Error(".headers takes on or off")
            self.printer.headers = args[0].lower() == "on"
        elif command == ".import":
            if len(args) != 2:
                raise Error(".import takes FILE TABLE")
            count = import_csv(self.script.session, Path(args[0]), args[1])
            if self.interactive:
                self.err.write(f"{count} row{'' if count == 1 else 's'} imported into {args[1]}\n")
        elif command == ".dump":
            for statement in dump(self.script.session):
                self.out.write(statement + "\n")
        elif command == ".read":
            if len(args) != 1:
                raise Error(".read takes FILE")
            try:
                text = Path(args[0]).read_text(encoding="utf-8")
            except OSError as exc:
                raise Error(f"cannot read {args[0]}: {exc.strerror or exc}") from exc
            reader = Shell(self.db, self.out, self.err, interactive=False, terminal_out=self.printer.terminal)
            reader.script, reader.printer = self.script, self.printer  # one session: a transaction open here goes on there
            reader.feed(text.splitlines())
        elif command == ".stats":
            self.out.write(self.db.stats.to_json() + "\n")
        else:
            raise Error(f"unknown command {parts[0]!r}; .help lists the commands")
        self.out.flush()


class _Cancel(str):
    """Ctrl-C while typing: drop the statement typed so far."""


def _stdin_lines() -> Iterator[str]:
    import sys

    for line in sys.stdin:
        yield line.rstrip("\n")


def import_csv(db: Session, path: Path, table: str) -> int:
    """Insert the rows of the CSV file ``path`` into ``table``, all or none (in a
    transaction of its own, or a savepoint of the one open); a missing table is
    made from the header row (columns of no type). Returns the rows inserted."""
    if isinstance(db, Connection):
        with db.transaction() as tx:
            return _insert_csv(tx, path, table)
    db.exec("SAVEPOINT sqlkv_import")
    try:
        count = _insert_csv(db, path, table)
    except BaseException:
        db.exec("ROLLBACK TO sqlkv_import; RELEASE sqlkv_import")
        raise
    db.exec("RELEASE sqlkv_import")
    return count


def _insert_csv(tx: Transaction, path: Path, table: str) -> int:
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise Error(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        rows = csv.reader(handle)
        quoted = '"' + table.replace('"', '""') + '"'
        exists = tx.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).rows
        if not exists:
            header = next(rows, None)
            if not header:
                raise Error(f"{path} is empty: no header row to make table {table!r} from")
            columns = ", ".join('"' + c.replace('"', '""') + '"' for c in header)
            tx.exec(f"CREATE TABLE {quoted}({columns})")
        width = len(tx.query(f"PRAGMA table_info({quoted})").rows)
        insert = f"INSERT INTO {quoted} VALUES ({', '.join('?' * width)})"
        count = 0
        for line_number, row in enumerate(rows, 2 if not exists else 1):
            if len(row) != width:
                raise SqlError(f"{path} line {line_number}: {len(row)} values, table {table!r} has {width} columns")
            tx.run(insert, row)
            count += 1
    return count

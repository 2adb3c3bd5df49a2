"""What both engines share: result types, the pinned settings, statement checks.

An engine runs SQL synchronously on one open database; the async
:class:`~sqlkv.database.Database` and the sync
:class:`~sqlkv.sync.Connection` run it on a worker thread or the caller's.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ConfigError, Error, PinnedSettingError, SqlError
from .kvfile import KvFile
from .lease import LeaseRequest, release_and_close
from .metrics import Stats
from .options import Options
from .storage import Storage
from .store import StoreClient


@dataclass
class QueryResult:
    """The rows of one statement, and its column names."""

    columns: list[str]
    rows: list[tuple] = field(default_factory=list)


@dataclass(frozen=True)
class RunResult:
    """What a statement without rows did: rows changed, and the last rowid inserted."""

    changes: int
    last_insert_rowid: int


class Engine(Protocol):
    """An open database with a backend behind it (``pages`` or ``snapshot``)."""

    backend: str
    stats: Stats

    def query(self, sql: str, params: Any = None) -> QueryResult: ...
    def run(self, sql: str, params: Any = None) -> RunResult: ...
    def exec(self, sql: str) -> list[QueryResult]: ...
    def close(self) -> None: ...


#: What every connection is set to at open, before a user's statement runs.
SETUP_PRAGMAS = ("locking_mode=EXCLUSIVE", "journal_mode=MEMORY", "temp_store=MEMORY")

#: Settings the commit protocol depends on, and the only value each may take.
PINNED_PRAGMAS = {
    "journal_mode": ("memory",),
    "locking_mode": ("exclusive",),
    # OFF would skip the sync that commits a transaction.
    "synchronous": ("1", "2", "3", "normal", "full", "extra"),
}


def check_pragma(name: str, value: str | None) -> None:
    """Refuse a PRAGMA that would change a pinned setting (reading one is fine)."""
    allowed = PINNED_PRAGMAS.get(name.lower())
    if allowed is None or value is None:
        return
    if value.strip().strip("'\"").lower() not in allowed:
        raise PinnedSettingError(
            f"PRAGMA {name}={value} is not allowed: sqlkv commits through the store and "
            f"needs {name} to stay {allowed[0].upper()}"
        )


_BLANK_SQL = re.compile(r"(?:\s+|;|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.S)


def is_blank_sql(text: str) -> bool:
    """Whether ``text`` holds no statement (only white space, comments and semicolons)."""
    return _BLANK_SQL.fullmatch(text) is not None


# Quoted text and comments (skipped whole, unterminated ones too), or a semicolon.
_SQL_TOKENS = re.compile(
    r"""'[^']*'?|"[^"]*"?|`[^`]*`?|\[[^\]]*\]?|--[^\n]*|/\*.*?(?:\*/|$)|;""", re.S
)


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql``, in order, each with its own text; blank ones left out.

    A semicolon outside quotes and comments ends a statement when SQLite says
    the text up to it is complete (``sqlite3.complete_statement``), so the
    semicolons inside a trigger body do not.
    """
    statements = []
    start = 0
    for token in _SQL_TOKENS.finditer(sql):
        if token.group() != ";":
            continue
        piece = sql[start : token.end()]
        if sqlite3.complete_statement(piece):
            if not is_blank_sql(piece):
                statements.append(piece)
            start = token.end()
    rest = sql[start:]
    if not is_blank_sql(rest):
        statements.append(rest)
    return statements


def check_sql(sql: object) -> str:
    if not isinstance(sql, str):
        raise Error(f"sql must be a str, not {type(sql).__name__}")
    return sql


def more_than_one_statement(call: str) -> Error:
    return Error(
        f"{call}() runs exactly one statement; use exec() for several statements"
    )


def cannot_bind(reason: object) -> SqlError:
    """The error for parameters SQLite cannot take (wrong type, out of range, missing)."""
    return SqlError(f"cannot run statement: {reason}")


def attach_refused(file_name: str, main_name: str) -> ConfigError:
    """The error for opening a second database file beside the one opened."""
    return ConfigError(
        f"cannot open {file_name!r} beside {main_name!r}: ATTACH of another file is not "
        "supported (each database is opened on its own)"
    )


def stats_pragma(stats: Stats, value: str | None) -> str:
    """What ``PRAGMA sqlkv_stats`` returns: the counters as JSON (``=reset`` zeroes them first)."""
    if value is not None and value.strip().strip("'\"").lower() == "reset":
        stats.reset()
    return stats.to_json()


class EngineBase:
    """What both engines share: the database's storage, reopening after a store
    failure, the three calls and close.

    A subclass opens SQLite over the storage (:meth:`_open`), lets go of it
    (:meth:`_discard`), runs statements (:meth:`_execute`) and tells what the
    last statement changed (:meth:`_last_run`). After a store failure the state
    in memory may be ahead of the store; the failure is kept in ``_broken`` and
    the next call reopens the database from the store first.
    """

    backend = ""

    def __init__(
        self,
        client: StoreClient,
        options: Options,
        name: str,
        readonly: bool,
        lease: LeaseRequest | None = None,
    ) -> None:
        self.client = client
        self._lease_request = lease
        self.stats = client.stats
        self.options = options
        self.name = name
        self.readonly = readonly
        self._broken: BaseException | None = None
        self._open()

    def _open_storage(self) -> KvFile:
        """Open the database's :class:`Storage` (one round trip) and return its main file."""
        options = self.options
        self.storage = Storage(
            self.client,
            options.make_layout(self.name),
            self.name,
            options.chunk_size,
            options.cache_bytes,
            readonly=self.readonly,
            max_dirty_bytes=options.max_dirty_bytes,
        )
        main = self.storage.open(self._lease_request)
        if self.readonly and not main.exists:
            raise Error(f"database {self.name!r} does not exist (opened read-only)")
        return main

    def _open(self) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError

    def _execute(self, sql: str, params: Any, single: str | None) -> list[QueryResult]:
        """Run ``sql``; one :class:`QueryResult` per statement. ``single``: the
        public call's name when only one statement is allowed."""
        raise NotImplementedError

    def _last_run(self) -> RunResult:
        raise NotImplementedError

    def _ready(self) -> None:
        """Reopen the database if an earlier store failure made its state unknown."""
        if self._broken is None:
            return
        self._discard()
        self._open()
        self._broken = None

    def _statements(self, sql: str, params: Any, single: str | None) -> list[QueryResult]:
        check_sql(sql)
        self._ready()
        return self._execute(sql, params, single)

    def query(self, sql: str, params: Any = None) -> QueryResult:
        results = self._statements(sql, params, "query")
        return results[0] if results else QueryResult([])

    def run(self, sql: str, params: Any = None) -> RunResult:
        self._statements(sql, params, "run")
        return self._last_run()

    def exec(self, sql: str) -> list[QueryResult]:
        return self._statements(sql, None, None)

    def close(self) -> None:
        try:
            self._discard()
        finally:
            release_and_close(self._lease_request, self.client)

"""What both engines share: result types, the pinned settings, statement checks.

An engine runs SQL synchronously on one open database; the async
:class:`~sqlkv.database.Database` and the sync
:class:`~sqlkv.sync.Connection` run it on a worker thread or the caller's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import Error, PinnedSettingError
from .metrics import Stats


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


def check_sql(sql: object) -> str:
    if not isinstance(sql, str):
        raise Error(f"sql must be a str, not {type(sql).__name__}")
    return sql


def more_than_one_statement(call: str) -> Error:
    return Error(
        f"{call}() runs exactly one statement; use exec() for several statements"
    )

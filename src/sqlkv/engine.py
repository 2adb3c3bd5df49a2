"""What both engines share: result types, the pinned settings, statement checks.

An engine runs SQL synchronously on one open database; the async
:class:`~sqlkv.database.Database` and the sync
:class:`~sqlkv.sync.Connection` run it on a worker thread or the caller's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ConfigError, Error, PinnedSettingError, SqlError
from .kvfile import KvFile
from .lease import LeaseRequest, release_and_close
from .metrics import Stats
from .options import Options
from .statements import check_sql, split_statements
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

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (begun and not yet committed or rolled back)."""
        ...

    def rollback(self) -> None:
        """Roll back the open transaction, if any; afterwards none is open."""
        ...


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
        """Run ``sql``, one statement at a time; one :class:`QueryResult` per statement.

        ``single``: the public call's name when only one statement is allowed
        (refused before anything runs).
        """
        statements = split_statements(sql)
        if single is not None and len(statements) > 1:
            raise more_than_one_statement(single)
        results = []
        for statement in statements:
            try:
                results.append(self._run_one(statement, params, single is not None))
            finally:
                self._after_statement()
        return results

    def _one_statement(self, sql: str, call: str) -> str | None:
        """The one statement of ``sql`` (``None`` if blank), the database ready to run it."""
        check_sql(sql)
        self._ready()
        statements = split_statements(sql)
        if len(statements) > 1:
            raise more_than_one_statement(call)
        return statements[0] if statements else None

    def _run_one(self, statement: str, params: Any, repeated: bool) -> QueryResult:
        """Run one statement. ``repeated``: likely to be run again with other
        parameters (``query``/``run``), so worth a statement cache."""
        raise NotImplementedError

    def _after_statement(self) -> None:
        """Called after each statement, whether it succeeded or not."""

    def _last_run(self) -> RunResult:
        raise NotImplementedError

    def _ready(self) -> None:
        """Reopen the database if an earlier store failure made its state unknown."""
        if self._broken is None:
            return
        self._discard()
        self._open()
        self._broken = None
        self._restore_functions()

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

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open. Not after a store failure: the next
        call reopens the database from the store, which holds no part of it."""
        return self._broken is None and self._conn_in_transaction()

    def _conn_in_transaction(self) -> bool:
        raise NotImplementedError

    def rollback(self) -> None:
        """Roll back the open transaction, if any. Should that fail, the state
        in memory is dropped (the next call reopens the database from the
        store, which holds only committed transactions) and the error raised."""
        if not self.in_transaction:
            return
        try:
            self._execute("ROLLBACK", None, None)
        except BaseException as exc:
            if self._broken is None:
                self._broken = exc
            raise

    def close(self) -> None:
        try:
            self._discard()
        finally:
            release_and_close(self._lease_request, self.client)

    # -- for the DB-API (dbapi2.py) ------------------------------------------------

    def last_run(self) -> RunResult:
        """Rows changed by the last statement, and the last rowid inserted."""
        return self._last_run()

    # -- SQL functions of the caller's (for the DB-API's create_function) -------

    def create_function(
        self, name: str, num_params: int, func: Callable[..., Any] | None, deterministic: bool = False
    ) -> None:
        """Define (or with ``func=None`` remove) an SQL function, as ``sqlite3`` does.

        Kept, and defined again when the database is reopened after a store failure.
        """
        self._functions = getattr(self, "_functions", {})
        self._functions[(name, num_params)] = (func, deterministic)
        self._functions_conn = None
        self._restore_functions()

    def _restore_functions(self) -> None:
        """Define the caller's functions on SQLite's connection, if it is a new one."""
        functions = getattr(self, "_functions", None)
        conn = getattr(self, "conn", None)
        if not functions or self._functions_conn is conn:
            return
        for (name, num_params), (func, deterministic) in functions.items():
            self._define_function(name, num_params, func, deterministic)
        self._functions_conn = conn

    def _define_function(
        self, name: str, num_params: int, func: Callable[..., Any] | None, deterministic: bool
    ) -> None:
        raise NotImplementedError

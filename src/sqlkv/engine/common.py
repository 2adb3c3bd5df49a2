"""What both engines share: result types, the pinned settings, statement checks.

An engine runs SQL synchronously on one open database; the async
:class:`~sqlkv.runtime.database.Database` and the sync
:class:`~sqlkv.runtime.connection.Connection` run it on a worker thread or the caller's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ConfigError, ConflictError, Error, PinnedSettingError, SqlError, StaleError
from ..metrics import Stats
from ..storage.kvfile import KvFile
from ..storage.lease import LeaseRequest, release_and_close
from ..storage.options import OpenParams, Options
from ..storage.storage import Storage
from ..stores.contract import StoreClient
from .statements import check_sql, split_statements


@dataclass
class QueryResult:
    """The rows of one statement, and its column names."""

    columns: list[str]
    rows: list[tuple] = field(default_factory=list)


@dataclass(frozen=True)
class RunResult:
    """What a statement without rows did: rows changed, the last rowid inserted,
    and the database's version after it (the version of the commit it made,
    if it made one; see versions.py)."""

    changes: int
    last_insert_rowid: int
    #: Not compared: it tells of the database, not of what the statement did.
    version: int | None = field(default=None, compare=False)


class Engine(Protocol):
    """An open database with a backend behind it (``pages`` or ``snapshot``)."""

    backend: str
    stats: Stats
    #: The transport to its store (whose calls in flight a waiter may watch).
    client: StoreClient

    def query(self, sql: str, params: Any = None, min_version: int | None = None) -> QueryResult: ...
    def run(self, sql: str, params: Any = None, min_version: int | None = None) -> RunResult: ...
    def exec(self, sql: str, min_version: int | None = None) -> list[QueryResult]: ...
    def close(self) -> None: ...

    @property
    def version(self) -> int:
        """The database's version as this open knows it (see versions.py)."""
        ...

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (begun and not yet committed or rolled back)."""
        ...

    def rollback(self) -> None:
        """Roll back the open transaction, if any; afterwards none is open."""
        ...

    defer_commits: Callable[[], bool] | None

    @property
    def deferred(self) -> bool:
        """Whether committed transactions wait in memory for :meth:`commit_deferred`."""
        ...

    @property
    def failure(self) -> BaseException | None:
        """The store failure that made the state in memory unknown, if any."""
        ...

    def commit_deferred(self) -> None:
        """Commit every deferred transaction in one commit (never a part of one still open)."""
        ...

    @property
    def asleep(self) -> bool:
        """Whether the database hibernates (no SQLite connection, no caches)."""
        ...

    def hibernate(self) -> bool:
        """Give back the SQLite connection and caches, keeping the lease."""
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
#: A reader on backend pages takes SQLite's shared lock per read transaction,
#: where it checks the version (see vfs.py): its locking_mode is NORMAL.
READER_LOCKING = "locking_mode=NORMAL"
READER_PINNED_PRAGMAS = {**PINNED_PRAGMAS, "locking_mode": ("normal",)}
#: How often a single statement of a reader is run again after a ConflictError.
CONFLICT_RETRIES = 32
#: How long ``min_version=`` waits by default, and its first pause between checks.
MIN_VERSION_TIMEOUT = 5.0
_MIN_VERSION_PAUSE = 0.005


def check_pragma(name: str, value: str | None, pinned: dict[str, tuple[str, ...]] = PINNED_PRAGMAS) -> None:
    """Refuse a PRAGMA that would change a pinned setting (reading one is fine)."""
    allowed = pinned.get(name.lower())
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


def attach_refused(file_name: str, main_name: str | None = None) -> ConfigError:
    """The error for opening a second database file beside the one opened (``main_name``, where known).

    ``file_name`` equal to ``main_name`` is a database opened once already (by
    this connection or another one, through its path): not "beside" itself.
    """
    if main_name == file_name:
        where = " a second time (it is open already)"
    else:
        where = f" beside {main_name!r}" if main_name is not None else ""
    return ConfigError(
        f"cannot open {file_name!r}{where}: ATTACH of another file is not "
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
        params: OpenParams,
        lease: LeaseRequest | None = None,
    ) -> None:
        self.client = client
        self.params = params
        self._lease_request = lease
        self.stats = client.stats
        self.options = options
        self.name = name
        self.readonly = params.readonly
        self._broken: BaseException | None = None
        #: Hibernating (see :meth:`hibernate`): no SQLite connection, no caches;
        #: the next call opens them again.
        self._asleep = False
        self._asleep_version = 0
        #: Whether a commit may be left to a later one (group commit, see group.py):
        #: asked at each commit; ``None`` (the default, and the sync API): never.
        self.defer_commits: Callable[[], bool] | None = None
        #: While a script's statements run, whether more follow the current one
        #: (their commits are left to the script's end, see :meth:`_execute`).
        self._script_goes_on = False
        #: Whether a commit may have been deferred since :meth:`commit_deferred` last
        #: found none: a call's end asks the file only then (three calls fewer per call).
        self._may_hold_deferred = False
        conflicts = 0
        while True:
            try:
                self._open()
                return
            except ConflictError:
                # A reader's open read across a commit it could not prove: open again.
                conflicts += 1
                if conflicts > CONFLICT_RETRIES:
                    raise

    def _open_storage(self) -> KvFile:
        """Open the database's :class:`Storage` (one round trip) and return its main file."""
        options = self.options
        self.storage = Storage(
            self.client,
            options.make_layout(self.name),
            self.name,
            options.chunk_size,
            options.cache_bytes,
            self.params,
            max_dirty_bytes=options.max_dirty_bytes,
        )
        main = self.storage.open(self._lease_request)
        if self.readonly and not main.exists:
            raise Error(f"database {self.name!r} does not exist (opened read-only)")
        if not self.readonly:
            main.defer = self._may_defer
        return main

    def _may_defer(self) -> bool:
        defer = self.defer_commits
        if self._script_goes_on or (defer is not None and defer()):
            self._may_hold_deferred = True
            return True
        return False

    # -- group commit (see group.py) ----------------------------------------------

    @property
    def deferred(self) -> bool:
        """Whether committed transactions wait in memory for :meth:`commit_deferred`."""
        main = getattr(self, "storage", None) and self.storage.main
        return main is not None and main.deferred and self._broken is None

    @property
    def failure(self) -> BaseException | None:
        """The store failure that made the database's state in memory unknown, if any
        (the next call reopens it from the store)."""
        if self._broken is not None:
            return self._broken
        main = getattr(self, "storage", None) and self.storage.main
        return main.failed if main is not None else None

    def commit_deferred(self) -> None:
        """Commit every deferred transaction in one commit. Should that fail, the
        state in memory is dropped (the next call reopens the database from the
        store) and the error raised.

        Only what SQLite committed goes: what a transaction still open wrote to
        the file (pages spilled from SQLite's cache) stays in memory, to be
        committed with it or rolled back (see ``KvFile.commit_deferred``). So
        callers need not roll back first: a script's end, a group, ``close``.
        """
        if not self.deferred:
            self._may_hold_deferred = False
            return
        try:
            self.storage.main.commit_deferred()  # type: ignore[union-attr]
        except BaseException as exc:
            if self._broken is None:
                self._broken = exc
            raise
        self._may_hold_deferred = False

    def _open(self) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError

    def _execute(self, sql: str, params: Any, single: str | None) -> list[QueryResult]:
        """Run ``sql``, one statement at a time; one :class:`QueryResult` per statement.

        The transactions of a script's statements share one commit: each is
        deferred while statements follow it (nothing is answered before the
        script ends), and they land together when it ends, also when a
        statement fails (the ones before it stay committed, as SQLite ran
        them). One round trip for a whole script of writes. A transaction
        the script left open is not part of it (the caller rolls it back).

        ``single``: the public call's name when only one statement is allowed
        (refused before anything runs).
        """
        statements = split_statements(sql)
        if single is not None and len(statements) > 1:
            raise more_than_one_statement(single)
        results = []
        last = len(statements) - 1
        try:
            for index, statement in enumerate(statements):
                self._script_goes_on = index < last
                try:
                    results.append(self._run_one(statement, params, single is not None))
                finally:
                    if self._runs_after_statement:
                        self._after_statement()
        finally:
            self._script_goes_on = False
            if self.defer_commits is None and self._may_hold_deferred:  # no group commit to land them
                self.commit_deferred()
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
        """Called after each statement, whether it succeeded or not, by an engine
        whose :attr:`_runs_after_statement` says so."""

    #: Whether :meth:`_after_statement` does anything (a call per statement otherwise saved).
    _runs_after_statement = False

    def _last_run(self) -> RunResult:
        raise NotImplementedError

    def _ready(self) -> None:
        """Reopen the database if it hibernates, or if an earlier store failure made
        its state unknown."""
        if self._asleep:
            self._open()  # should it fail, the database sleeps on, and the next call tries again
            self._asleep = False
            self._restore_functions()
            return
        if self._broken is None:
            return
        self._discard()
        self._open()
        self._broken = None
        self._restore_functions()

    def _statements(
        self, sql: str, params: Any, single: str | None, min_version: int | None = None
    ) -> list[QueryResult]:
        # check_sql and _ready called only when they have something to do (their
        # first tests, without two calls per call otherwise).
        if type(sql) is not str or "\x00" in sql:
            check_sql(sql)
        if self._asleep or self._broken is not None:
            self._ready()
        if min_version is not None:
            self.wait_for_version(min_version)
        return self._execute(sql, params, single)

    def query(self, sql: str, params: Any = None, min_version: int | None = None) -> QueryResult:
        results = self._statements(sql, params, "query", min_version)
        return results[0] if results else QueryResult([])

    def run(self, sql: str, params: Any = None, min_version: int | None = None) -> RunResult:
        self._statements(sql, params, "run", min_version)
        return self._last_run()

    def exec(self, sql: str, min_version: int | None = None) -> list[QueryResult]:
        return self._statements(sql, None, None, min_version)

    # -- versions (see versions.py) -----------------------------------------------

    @property
    def version(self) -> int:
        """The database's version as this open knows it: a writer's last commit,
        a reader's pinned state (0: no versioned commit yet)."""
        if self._asleep:
            return self._asleep_version
        main = self.storage.main
        if main is not None and main.pin is not None:
            return main.pin.version or 0
        versions = self.storage.committer.versions
        if versions is None:
            return 0
        # Deferred transactions land together as the next version.
        return versions.version + (1 if main is not None and main.deferred else 0)

    def wait_for_version(self, min_version: object, timeout: float | None = None) -> None:
        """Return once this open shows at least ``min_version``; a reader checks
        the store again, pausing between checks, for up to ``timeout`` seconds,
        then raises :class:`StaleError`. A writer's version is the latest there
        is: below ``min_version`` it raises at once. ``timeout``: ``None`` for
        :data:`MIN_VERSION_TIMEOUT`."""
        if not isinstance(min_version, int) or isinstance(min_version, bool) or min_version < 0:
            raise ConfigError(f"min_version must be a non-negative int, not {min_version!r}")
        if self.version >= min_version:
            return
        main = self.storage.main
        if main is None or main.pin is None or self._conn_in_transaction():
            raise StaleError(
                f"database {self.name!r} is at version {self.version}, below min_version "
                f"{min_version}, and this open cannot move to a later one"
            )
        if timeout is None:
            timeout = MIN_VERSION_TIMEOUT
        deadline = time.monotonic() + timeout
        pause = _MIN_VERSION_PAUSE
        while True:
            if main.begin_read(force=True):
                self._state_moved()
            main.pin.skip_next_check()
            if self.version >= min_version:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise StaleError(
                    f"database {self.name!r} did not reach version {min_version} within "
                    f"{timeout} s (it is at version {self.version})"
                )
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.2)

    def _state_moved(self) -> None:
        """A reader's pinned state moved outside a read transaction (backend snapshot
        takes the new image here; backend pages needs nothing: SQLite sees the
        state counter move at its next read transaction)."""

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open. Not after a store failure: the next
        call reopens the database from the store, which holds no part of it."""
        return self._broken is None and not self._asleep and self._conn_in_transaction()

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
            self.commit_deferred()  # the group lands these first (group.py); never dropped
            if not self._asleep:
                self._discard()
        finally:
            release_and_close(self._lease_request, self.client)

    # -- hibernation (see database.py) ---------------------------------------------

    @property
    def asleep(self) -> bool:
        """Whether the database hibernates (see :meth:`hibernate`)."""
        return self._asleep

    def hibernate(self) -> bool:
        """Give back the SQLite connection and every cache, keeping the lease (and
        the counters, the caller's SQL functions, the version); the next call
        opens them again. Not inside a transaction, nor after a store failure
        (the next call reopens the database anyway). Whether it now hibernates."""
        if self._asleep:
            return True
        if self._broken is not None or self._conn_in_transaction():
            return False
        self.commit_deferred()
        self._asleep_version = self.version
        self._discard()
        self._let_go()
        del self.storage  # made again by the next open
        self._asleep = True
        return True

    def _let_go(self) -> None:
        """After :meth:`_discard`, for :meth:`hibernate`: drop what holds memory."""

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

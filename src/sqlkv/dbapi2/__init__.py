"""A PEP 249 (DB-API 2.0) module modelled on the standard library's ``sqlite3``.

Code written for ``sqlite3`` runs unchanged apart from ``connect``::

    from sqlkv import dbapi2

    conn = dbapi2.connect("app.db", store="lmdb://./sqlkv-data")
    with conn:
        conn.execute("INSERT INTO t VALUES (?)", (1,))
    rows = conn.execute("SELECT * FROM t").fetchall()

A connection drives one engine (backend ``pages`` or ``snapshot``) directly
and manages transactions itself, as ``sqlite3`` does: by default a ``BEGIN``
is issued before an INSERT, UPDATE, DELETE or REPLACE when no transaction is
open (``isolation_level``), and ``commit()`` ends it; ``autocommit`` has the
meaning of Python 3.12's ``sqlite3``. Rows stream from a cursor: each row is
stepped out of SQLite only when fetched.

Errors are the PEP's classes, each also a :class:`sqlkv.Error`. SQLite's
errors map to them by result code exactly as ``sqlite3`` maps them, and carry
``sqlite_errorcode`` and ``sqlite_errorname``. sqlkv's own errors (a held
lease, a failing store, ...) are raised as a class that is both the PEP class
(``OperationalError`` for most) and the sqlkv class, so ``except
dbapi2.OperationalError`` and ``except sqlkv.LockedError`` both catch them.
"""

from __future__ import annotations

import datetime
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from .. import environment
from .. import errors as _sqlkv_errors
from ..engine.backends import apsw_available, open_engine
from ..engine.common import Engine, split_statements
from ..storage.options import OPEN_DEFAULTS, OpenParams, options_from, unknown_options
from ..stores.contract import AnyKvStore
from ..stores.urls import open_store

apilevel = "2.0"
#: Threads may share the module, but not connections: one connection must be
#: used by one thread at a time (it may move between threads, as a pool does).
threadsafety = 1
#: ``?`` placeholders; ``:name`` parameters (with a mapping) work too.
paramstyle = "qmark"

#: ``autocommit``'s default: transactions as ``isolation_level`` says (Python 3.12's name).
LEGACY_TRANSACTION_CONTROL = -1


def _sqlite_version() -> str:
    # The SQLite that backend pages runs (APSW's) when APSW imports, else Python's.
    if apsw_available():
        import apsw

        return apsw.sqlite_lib_version()
    return sqlite3.sqlite_version


#: The version of the SQLite library the default backend runs.
sqlite_version = _sqlite_version()
sqlite_version_info = tuple(int(part) for part in sqlite_version.split("."))


# -- exceptions ------------------------------------------------------------------


class Warning(_sqlkv_errors.Error):
    """PEP 249's Warning (also a :class:`sqlkv.Error`)."""


class Error(_sqlkv_errors.Error):
    """Base of the PEP's error classes (also a :class:`sqlkv.Error`).

    ``sqlite_errorcode`` and ``sqlite_errorname`` are SQLite's extended result
    code and its name when SQLite raised the error, else ``None``.
    """

    sqlite_errorcode: int | None = None
    sqlite_errorname: str | None = None


class InterfaceError(Error):
    """The interface was misused."""


class DatabaseError(Error):
    """An error of the database."""


class DataError(DatabaseError):
    """A value could not be processed (too large, out of range)."""


class OperationalError(DatabaseError):
    """The database could not do it: a missing table, a held lock, a failing store."""


class IntegrityError(DatabaseError):
    """A constraint failed (UNIQUE, NOT NULL, FOREIGN KEY, CHECK)."""


class InternalError(DatabaseError):
    """SQLite reported an internal error."""


class ProgrammingError(DatabaseError):
    """The call was wrong: bad parameters, several statements, a closed connection."""


class NotSupportedError(DatabaseError):
    """Something sqlkv does not support (changing a setting its commits rely on)."""


#: SQLite's primary result code -> the class ``sqlite3`` raises for it.
_BY_RESULT_CODE: dict[int, type[Error]] = {
    2: InternalError,  # SQLITE_INTERNAL
    12: InternalError,  # SQLITE_NOTFOUND
    18: DataError,  # SQLITE_TOOBIG
    19: IntegrityError,  # SQLITE_CONSTRAINT
    20: IntegrityError,  # SQLITE_MISMATCH
    21: InterfaceError,  # SQLITE_MISUSE
    25: InterfaceError,  # SQLITE_RANGE
    11: DatabaseError,  # SQLITE_CORRUPT
}
for _code in (1, 3, 4, 5, 6, 8, 9, 10, 13, 14, 15, 16, 17):
    # ERROR PERM ABORT BUSY LOCKED READONLY INTERRUPT IOERR FULL CANTOPEN PROTOCOL EMPTY SCHEMA
    _BY_RESULT_CODE[_code] = OperationalError

#: sqlkv's own errors -> the PEP class they are raised as (with their own class too).
_BY_SQLKV_CLASS: tuple[tuple[type[Exception], type[Error]], ...] = (
    (_sqlkv_errors.PinnedSettingError, NotSupportedError),
    (_sqlkv_errors.ConfigError, ProgrammingError),
    (_sqlkv_errors.ClosedError, ProgrammingError),
    (_sqlkv_errors.CorruptError, DatabaseError),
    (_sqlkv_errors.LockedError, OperationalError),
    (_sqlkv_errors.FencedError, OperationalError),
    (_sqlkv_errors.StoreError, OperationalError),  # OutcomeUnknownError too, its .committed kept
    (_sqlkv_errors.ConcurrentCommitError, OperationalError),
    (_sqlkv_errors.UnusableError, OperationalError),
    (_sqlkv_errors.NotFoundError, OperationalError),
    (_sqlkv_errors.ExistsError, OperationalError),
)

_combined_classes: dict[tuple[type, type], type[Error]] = {}


def _combined(pep_class: type[Error], other: type[Exception]) -> type[Error]:
    """A class that is both ``pep_class`` and ``other`` (made once per pair)."""
    key = (pep_class, other)
    made = _combined_classes.get(key)
    if made is None:
        made = type(other.__name__, (pep_class, other), {"__module__": __name__})
        _combined_classes[key] = made
    return made


def _error_name(code: int, cause: BaseException | None) -> str | None:
    name = getattr(cause, "sqlite_errorname", None)
    if name is not None:
        return name
    try:
        import apsw
    except ImportError:
        return None
    name = apsw.mapping_extended_result_codes.get(code) or apsw.mapping_result_codes.get(code & 0xFF)
    return name if isinstance(name, str) else None


def _translate(exc: BaseException, fallback: type[Error] = ProgrammingError) -> BaseException:
    """The DB-API exception for an exception from the engine (see the module docstring).

    ``fallback`` is the class of a plain :class:`sqlkv.Error`: a call sqlkv
    refuses (several statements to execute()) is a ``ProgrammingError``; a
    database that cannot be opened (a read-only open of one that does not
    exist) an ``OperationalError``, as ``sqlite3``'s "unable to open".
    """
    if isinstance(exc, Error):
        return exc
    if type(exc) is _sqlkv_errors.SqlError:
        cause = exc.__cause__
        if exc.code is not None:
            made = _BY_RESULT_CODE.get(exc.code & 0xFF, DatabaseError)(str(exc))
            made.sqlite_errorcode = exc.code
            made.sqlite_errorname = _error_name(exc.code, cause)
            return made
        if isinstance(cause, OverflowError):
            # sqlite3 raises a bare OverflowError for an integer SQLite cannot hold.
            return _combined(DataError, OverflowError)(str(exc))
        if isinstance(cause, MemoryError):
            return cause
        # Parameters SQLite cannot take: wrong count, missing name, unsupported type.
        return ProgrammingError(str(exc))
    if isinstance(exc, _sqlkv_errors.Error):
        for sqlkv_class, pep_class in _BY_SQLKV_CLASS:
            if isinstance(exc, sqlkv_class):
                # Made without calling __init__ (whose signature is the sqlkv
                # class's own): the same args and attributes as the original.
                made = BaseException.__new__(_combined(pep_class, type(exc)), *exc.args)
                made.__dict__.update(exc.__dict__)
                return made
        return fallback(str(exc))
    return exc


@contextmanager
def _translated(fallback: type[Error] = ProgrammingError) -> Iterator[None]:
    try:
        yield
    except _sqlkv_errors.Error as exc:
        made = _translate(exc, fallback)
        if made is exc:
            raise
        raise made from (exc.__cause__ if exc.__cause__ is not None else exc)


# -- types ---------------------------------------------------------------------------

Binary = memoryview
Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime


def DateFromTicks(ticks: float) -> datetime.date:
    """The local date of a POSIX timestamp."""
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:
    """The local time of day of a POSIX timestamp."""
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:
    """The local date and time of a POSIX timestamp."""
    return Timestamp(*time.localtime(ticks)[:6])


class DBAPITypeObject:
    """A PEP 249 type object: equal to each of the declared type names it covers.

    SQLite's columns have no fixed type, and cursors describe none (as in
    ``sqlite3``); these compare with declared type names such as ``"TEXT"``.
    """

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.upper() in self.names

    def __hash__(self) -> int:
        return hash(self.names)


STRING = DBAPITypeObject("TEXT", "CHAR", "VARCHAR", "CLOB", "STRING")
BINARY = DBAPITypeObject("BLOB", "BINARY", "VARBINARY")
NUMBER = DBAPITypeObject("INTEGER", "INT", "REAL", "FLOAT", "DOUBLE", "NUMERIC", "DECIMAL")
DATETIME = DBAPITypeObject("DATE", "TIME", "DATETIME", "TIMESTAMP")
ROWID = DBAPITypeObject("ROWID", "INTEGER")

_PLAIN = frozenset({type(None), int, float, str, bytes})


def _adapt_value(value: Any) -> Any:
    # sqlite3's default adapters (ISO 8601 text), and the buffers SQLite stores as blobs.
    if isinstance(value, datetime.datetime):
        return value.isoformat(" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def _adapt(params: Any) -> Any:
    """``params`` with dates, datetimes and buffers made into what SQLite stores."""
    if params is None:
        return None
    if isinstance(params, Mapping):
        if _PLAIN.issuperset(map(type, params.values())):
            return params
        return {k: _adapt_value(v) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        if _PLAIN.issuperset(map(type, params)):
            return params
        return tuple(_adapt_value(v) for v in params)
    return params  # not a sequence: the engine refuses it


class Row:
    """A result row reachable by index and by column name (case-insensitive),
    like ``sqlite3.Row``. Use it as ``connection.row_factory = dbapi2.Row``."""

    __slots__ = ("_names", "_values")

    def __init__(self, cursor: Cursor, values: tuple) -> None:
        self._names = tuple(d[0] for d in cursor.description or ())
        self._values = tuple(values)

    def keys(self) -> list[str]:
        return list(self._names)

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            wanted = key.upper()
            for name, value in zip(self._names, self._values):
                if name.upper() == wanted:
                    return value
            raise IndexError("No item with that key")
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        return self._names == other._names and self._values == other._values

    def __hash__(self) -> int:
        return hash((self._names, self._values))

    def __repr__(self) -> str:
        return f"<Row {dict(zip(self._names, self._values))!r}>"


# -- statements -----------------------------------------------------------------------

_DML_WORDS = ("insert", "update", "delete", "replace")


def _leading_word(sql: str) -> str:
    """The first word of ``sql`` after white space and comments, lower-cased."""
    i, n = 0, len(sql)
    while i < n:
        if sql[i].isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            break
    return sql[i : i + 7].lower()


def _is_dml(sql: str) -> bool:
    """Whether ``sql`` starts with INSERT, UPDATE, DELETE or REPLACE (as ``sqlite3`` tells)."""
    return _leading_word(sql).startswith(_DML_WORDS)


# -- connections ---------------------------------------------------------------------

_ISOLATION_LEVELS = ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")


def _check_isolation_level(level: str | None) -> str | None:
    if level is None:
        return None
    if not isinstance(level, str):
        raise TypeError(f"isolation_level must be str or None, not {type(level).__name__}")
    if level.upper() not in _ISOLATION_LEVELS:
        raise ValueError(
            "isolation_level string must be '', 'DEFERRED', 'IMMEDIATE', or 'EXCLUSIVE'"
        )
    return level


def _check_autocommit(value: object) -> bool | int:
    if value is True or value is False or value == LEGACY_TRANSACTION_CONTROL:
        return value
    raise ValueError("autocommit must be True, False, or sqlkv.dbapi2.LEGACY_TRANSACTION_CONTROL")


def connect(
    database: str,
    store: AnyKvStore | str | None = None,
    *,
    isolation_level: str | None = "",
    autocommit: bool | int = LEGACY_TRANSACTION_CONTROL,
    readonly: bool = OPEN_DEFAULTS.readonly,
    lock_timeout: float = OPEN_DEFAULTS.lock_timeout,
    max_staleness: float = OPEN_DEFAULTS.max_staleness,
    factory: type[Connection] | None = None,
    **options: Any,
) -> Connection:
    """Open (creating if needed) the database ``database`` in ``store``.

    ``store`` is a store object or a store URL (``lmdb://DIR``, ``redis://...``);
    by default ``$SQLKV_STORE``, else ``lmdb://./sqlkv-data``. A store opened here
    from a URL is closed with the connection. ``readonly``, ``lock_timeout``,
    ``max_staleness`` and ``options`` (``kv_prefix``, ``chunk_size``, ``backend``, ``layout``,
    ``cache_bytes``, ``max_dirty_bytes``, ``lease_seconds``) are
    :func:`sqlkv.connect`'s; ``isolation_level`` and ``autocommit`` are ``sqlite3``'s.
    """
    isolation_level = _check_isolation_level(isolation_level)
    autocommit = _check_autocommit(autocommit)
    unknown = unknown_options(options)
    if unknown:
        raise ProgrammingError(f"unknown connect() option(s): {', '.join(unknown)}")
    if store is None:
        store = environment.store_url()
    with _translated(OperationalError):
        settings = options_from(options)
        params = OpenParams(readonly, lock_timeout, max_staleness)
        owned = open_store(store) if isinstance(store, str) else None
        try:
            target: AnyKvStore = owned if owned is not None else store  # type: ignore[assignment]
            engine = open_engine(settings, target, database, params)
        except BaseException:
            _close_store(owned)
            raise
    return (factory or Connection)(engine, database, owned, isolation_level, autocommit)


def _close_store(store: AnyKvStore | None) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()


class Connection:
    """A connection to one database (see the module docstring). Made by :func:`connect`."""

    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def __init__(
        self,
        engine: Engine,
        name: str,
        owned_store: AnyKvStore | None = None,
        isolation_level: str | None = "",
        autocommit: bool | int = LEGACY_TRANSACTION_CONTROL,
    ) -> None:
        self._engine: Any = engine
        self.name = name
        self._owned_store = owned_store
        self._isolation_level = _check_isolation_level(isolation_level)
        self._autocommit = _check_autocommit(autocommit)
        self._closed = False
        #: Called as ``row_factory(cursor, row)`` for each row of cursors made afterwards.
        self.row_factory: Callable[[Cursor, tuple], Any] | None = None
        if self._autocommit is False:
            self._begin()

    # -- state -----------------------------------------------------------------------

    def _check_open(self) -> Any:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed database.")
        return self._engine

    @property
    def backend(self) -> str:
        """The engine the database runs on: ``pages`` or ``snapshot``."""
        return self._engine.backend

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open."""
        engine = self._check_open()
        return engine.in_transaction

    @property
    def isolation_level(self) -> str | None:
        """The ``BEGIN`` issued before DML (``""``: plain ``BEGIN``); ``None``: none."""
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, level: str | None) -> None:
        level = _check_isolation_level(level)
        if level is None and self._autocommit == LEGACY_TRANSACTION_CONTROL and self.in_transaction:
            self._run("COMMIT")
        self._isolation_level = level

    @property
    def autocommit(self) -> bool | int:
        """Python 3.12's ``sqlite3`` ``autocommit``: ``True`` (SQLite's own autocommit,
        ``commit()`` and ``rollback()`` do nothing), ``False`` (a transaction is
        always open) or :data:`LEGACY_TRANSACTION_CONTROL` (``isolation_level`` rules)."""
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool | int) -> None:
        value = _check_autocommit(value)
        self._check_open()
        if value is True and self.in_transaction:
            self._run("COMMIT")
        elif value is False and not self.in_transaction:
            self._begin()
        self._autocommit = value

    # -- transactions ------------------------------------------------------------------

    def _run(self, sql: str) -> None:
        engine = self._check_open()
        with _translated():
            for _ in engine.iterate(sql)[1]:
                pass

    def _begin(self) -> None:
        self._run("BEGIN")

    def _implicit_begin(self, sql: str) -> None:
        """``sqlite3``'s rule: ``BEGIN <isolation_level>`` before DML outside a transaction."""
        if (
            self._autocommit == LEGACY_TRANSACTION_CONTROL
            and self._isolation_level is not None
            and _is_dml(sql)
            and not self._engine.in_transaction
        ):
            self._run(f"BEGIN {self._isolation_level}")

    def commit(self) -> None:
        """Commit the open transaction (and, with ``autocommit=False``, open the next)."""
        self._check_open()
        if self._autocommit is True:
            return
        if self.in_transaction:
            self._run("COMMIT")
        if self._autocommit is False:
            self._begin()

    def rollback(self) -> None:
        """Roll the open transaction back (and, with ``autocommit=False``, open the next)."""
        self._check_open()
        if self._autocommit is True:
            return
        if self.in_transaction:
            self._run("ROLLBACK")
        if self._autocommit is False:
            self._begin()

    def close(self) -> None:
        """Close; an uncommitted transaction is rolled back. The store is closed
        too if :func:`connect` opened it from a URL."""
        if self._closed:
            return
        self._closed = True
        try:
            with _translated():
                self._engine.close()
        finally:
            _close_store(self._owned_store)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> Literal[False]:
        """Commit if the block succeeded, else roll back; the connection stays open."""
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.rollback()
                raise
        else:
            self.rollback()
        return False

    # -- statements --------------------------------------------------------------------

    def cursor(self, factory: type[Cursor] | None = None) -> Cursor:
        """A new cursor."""
        self._check_open()
        return (factory or Cursor)(self)

    def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        """A new cursor's :meth:`Cursor.execute`."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Cursor:
        """A new cursor's :meth:`Cursor.executemany`."""
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str) -> Cursor:
        """A new cursor's :meth:`Cursor.executescript`."""
        return self.cursor().executescript(sql_script)

    def create_function(
        self, name: str, narg: int, func: Callable[..., Any] | None, *, deterministic: bool = False
    ) -> None:
        """Define an SQL function ``name`` of ``narg`` arguments (``-1``: any) as ``func``."""
        engine = self._check_open()
        with _translated():
            engine.create_function(name, narg, func, deterministic)


# -- cursors --------------------------------------------------------------------------


class Cursor:
    """Runs statements and fetches their rows, which stream from SQLite as fetched."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self.row_factory = connection.row_factory
        self.description: tuple[tuple, ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: Iterator[tuple] | None = None
        self._dml = False
        self._closed = False

    # -- running -----------------------------------------------------------------------

    def _engine(self) -> Any:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        return self.connection._check_open()

    def _end_rows(self) -> None:
        rows, self._rows = self._rows, None
        if rows is not None:
            close = getattr(rows, "close", None)
            if close is not None:
                with _translated():
                    close()

    def _start(self, sql: object) -> Any:
        engine = self._engine()
        if not isinstance(sql, str):
            raise TypeError(f"sql must be str, not {type(sql).__name__}")
        self._end_rows()
        self.description = None
        self.rowcount = -1
        return engine

    def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        """Run one statement with ``parameters`` (a sequence for ``?``, a mapping for ``:name``).

        A statement without result columns runs to its end here; the rows of
        one with columns are stepped as they are fetched.
        """
        engine = self._start(sql)
        self.connection._implicit_begin(sql)
        with _translated():
            columns, rows = engine.iterate(sql, None if parameters == () else _adapt(parameters))
        self._dml = _is_dml(sql)
        if columns:
            self.description = tuple((name, None, None, None, None, None, None) for name in columns)
            self._rows = rows
            if self._dml:
                self.rowcount = 0  # until its rows are all read, as in sqlite3
        else:
            with _translated():
                for _ in rows:
                    pass
            self._statement_done(engine)
        self.lastrowid = engine.last_run().last_insert_rowid
        return self

    def _statement_done(self, engine: Any) -> None:
        if self._dml:
            self.rowcount = engine.last_run().changes

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Cursor:
        """Run one DML statement once per set of parameters; ``rowcount`` is the sum."""
        engine = self._start(sql)
        if not _is_dml(sql) and _is_query(sql):
            raise ProgrammingError("executemany() can only execute DML statements.")
        self.connection._implicit_begin(sql)
        with _translated():
            changes = engine.run_many(sql, (_adapt(params) for params in seq_of_parameters))
        if _is_dml(sql):
            self.rowcount = changes
        return self

    def executescript(self, sql_script: str) -> Cursor:
        """Run every statement of ``sql_script``. With the legacy transaction
        control, an open transaction is committed first (as ``sqlite3`` does)."""
        engine = self._start(sql_script)
        if self.connection._autocommit == LEGACY_TRANSACTION_CONTROL and engine.in_transaction:
            self.connection._run("COMMIT")
        with _translated():
            engine.exec(sql_script)
        return self

    def close(self) -> None:
        """Close the cursor; its pending rows are let go."""
        if not self._closed:
            self._end_rows()
            self._closed = True

    def setinputsizes(self, sizes: Any) -> None:
        """Accepted and ignored, as the PEP allows."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """Accepted and ignored, as the PEP allows."""

    # -- fetching ----------------------------------------------------------------------

    def _take(self, count: int | None) -> list[Any]:
        """Up to ``count`` more rows (all of them for ``None``), stepped out of SQLite now."""
        self._engine()
        rows = self._rows
        if rows is None:
            return []
        with _translated():
            out = list(rows if count is None else itertools.islice(rows, count))
        if count is None or len(out) < count:
            self._rows = None
            self._statement_done(self.connection._engine)
        factory = self.row_factory
        if factory is not None:
            out = [factory(self, row) for row in out]
        return out

    def fetchone(self) -> Any:
        """The next row, or ``None`` when there is none."""
        got = self._take(1)
        return got[0] if got else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` (default :attr:`arraysize`) more rows."""
        return self._take(self.arraysize if size is None else max(size, 0))

    def fetchall(self) -> list[Any]:
        """Every remaining row."""
        return self._take(None)

    def __iter__(self) -> Cursor:
        return self

    def __next__(self) -> Any:
        got = self._take(1)
        if not got:
            raise StopIteration
        return got[0]

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_query(sql: str) -> bool:
    """Whether the statement executemany() was given reads only (it is not run to find out)."""
    statements = split_statements(sql)
    return bool(statements) and _leading_word(statements[0]).startswith(("select", "values", "with", "pragma"))


__all__ = [
    "BINARY",
    "Binary",
    "Connection",
    "Cursor",
    "DATETIME",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "LEGACY_TRANSACTION_CONTROL",
    "NUMBER",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "ROWID",
    "Row",
    "STRING",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "Warning",
    "apilevel",
    "connect",
    "paramstyle",
    "sqlite_version",
    "sqlite_version_info",
    "threadsafety",
]

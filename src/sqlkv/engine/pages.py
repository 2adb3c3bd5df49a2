"""Backend ``pages``: SQLite through APSW, on a VFS of ours (the default).

SQLite asks for pages; the VFS answers from the chunk cache or the store and
commits each transaction in one round trip (see vfs.py and kvfile.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import apsw

from .. import environment
from ..errors import ConflictError, Error, SqlError, StoreError, UnusableError
from .common import (
    CONFLICT_RETRIES,
    PINNED_PRAGMAS,
    READER_LOCKING,
    READER_PINNED_PRAGMAS,
    SETUP_PRAGMAS,
    EngineBase,
    QueryResult,
    RunResult,
    cannot_bind,
    check_pragma,
    stats_pragma,
)
from .vfs import VFS_NAME, KvVfs

_vfs: KvVfs | None = None
_vfs_lock = threading.Lock()


def shared_vfs() -> KvVfs:
    """The process's VFS, registered at the first open.

    Before that, when no APSW connection is open yet, SQLite's lookaside is
    turned off (unless ``$SQLKV_SQLITE_LOOKASIDE=1``): it is a buffer of 42 KB
    that every connection allocates at once to speed up small allocations, a
    third of what an open database costs, for 1 to 4% of speed
    (benchmarks/lookaside.py). SQLite takes this setting only while it is
    shut down, hence the check.
    """
    global _vfs
    with _vfs_lock:
        if _vfs is None:
            if not environment.sqlite_lookaside() and not apsw.connections():
                # Shutting down forgets the heap limits: a caller's are kept.
                soft, hard = apsw.soft_heap_limit(-1), apsw.hard_heap_limit(-1)
                apsw.shutdown()
                apsw.config(apsw.SQLITE_CONFIG_LOOKASIDE, 0, 0)
                apsw.initialize()
                apsw.soft_heap_limit(soft)
                apsw.hard_heap_limit(hard)
            _vfs = KvVfs()
        return _vfs

_SETUP = "".join(f"PRAGMA {pragma};" for pragma in SETUP_PRAGMAS)
#: A reader's setup: its locking_mode NORMAL (see vfs.py), the rest the same.
_READER_SETUP = "".join(
    f"PRAGMA {READER_LOCKING if pragma.startswith('locking_mode') else pragma};" for pragma in SETUP_PRAGMAS
)


class PagesEngine(EngineBase):
    """One open database on backend ``pages``."""

    backend = "pages"
    _columns: list[str]

    # -- opening, and reopening after a store failure ---------------------------

    def _open(self) -> None:
        self._open_storage()
        vfs = shared_vfs()
        self._path = vfs.mount(self.storage, self._on_pragma)
        flags = apsw.SQLITE_OPEN_READONLY if self.readonly else (
            apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        )
        self._pinned = False
        try:
            self.conn = apsw.Connection(self._path, flags=flags, vfs=VFS_NAME)
            try:
                self.conn.execute(_READER_SETUP if self.readonly else _SETUP).fetchall()
            except apsw.Error as exc:
                self.conn.close()
                raise SqlError(f"cannot open {self.name!r}: {exc}") from exc
        except BaseException:
            vfs.unmount(self._path)
            raise
        self._pinned = True
        # One cursor for every statement (its exec trace notes their columns).
        self._cursor = self.conn.cursor()
        self._cursor.exec_trace = self._note_columns

    def _discard(self) -> None:
        try:
            self.conn.close(True)
        except Exception:
            pass
        shared_vfs().unmount(self._path)
        self.storage.close()

    def _let_go(self) -> None:
        del self._cursor, self.conn

    def _on_pragma(self, pragma: apsw.VFSFcntlPragma) -> bool:
        if self._pinned:
            check_pragma(pragma.name, pragma.value, READER_PINNED_PRAGMAS if self.readonly else PINNED_PRAGMAS)
        if pragma.name.lower() == "sqlkv_stats":
            pragma.result = stats_pragma(self.stats, pragma.value)
            return True
        return False

    # -- running statements -----------------------------------------------------

    def _note_columns(self, cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        """APSW's exec trace: the columns of the statement about to run."""
        try:
            self._columns = [d[0] for d in cursor.get_description()]
        except apsw.ExecutionCompleteError:
            pass
        return True

    def _run_one(self, statement: str, params: Any, repeated: bool) -> QueryResult:
        self._columns = []
        # query/run: often the same text again with new params: worth APSW's
        # statement cache. exec: a script, whose statements caching would cost
        # more than it saves (10.8 us against 3.3 us per statement, measured
        # on 100-statement scripts).
        conflicts = 0
        while True:
            try:
                # The hot path: _translated_errors' rule without a context manager's calls.
                try:
                    rows = list(self._cursor.execute(statement, params, can_cache=repeated))
                except Exception as exc:
                    translated = self._translated(exc)
                    if translated is None:
                        raise
                    raise translated[0] from translated[1]
                return QueryResult(self._columns, rows)
            except ConflictError:
                # A single statement's rows are not handed out yet: run it again
                # on the state now committed. Inside BEGIN ... COMMIT: the caller's.
                conflicts += 1
                if self.conn.in_transaction or conflicts > CONFLICT_RETRIES:
                    raise

    def _conn_in_transaction(self) -> bool:
        return self.conn.in_transaction

    def _last_run(self) -> RunResult:
        return RunResult(self.conn.changes(), self.conn.last_insert_rowid(), self.version)

    # -- streaming, for the DB-API (dbapi2.py) ---------------------------------

    def iterate(self, sql: str, params: Any = None) -> tuple[list[str], Iterator[tuple]]:
        """Run one statement and return its column names and an iterator of its rows.

        The statement has run to its first row (so errors such as a UNIQUE
        violation are raised here); each further row is stepped only when the
        iterator is asked for it, so a large result is never held whole.
        Closing the iterator (or dropping it) ends the statement.
        """
        statement = self._one_statement(sql, "iterate") or ""
        columns: list[str] = []
        cursor = self.conn.cursor()
        cursor.exec_trace = _describing(columns)
        try:
            with self._translated_errors():
                cursor.execute(statement, params, can_cache=True)
        except BaseException:
            cursor.close(True)
            raise
        rows = self._rows_of(cursor)
        next(rows)
        return columns, rows

    def _rows_of(self, cursor: apsw.Cursor) -> Iterator[tuple]:
        try:
            yield ()  # primed by iterate(), so that close() always runs the finally
            with self._translated_errors():
                yield from cursor
        finally:
            cursor.close(True)

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """What a failing statement raises, as ``sqlkv`` errors (see :meth:`_translated`)."""
        try:
            yield
        except Exception as exc:
            translated = self._translated(exc)
            if translated is None:
                raise
            raise translated[0] from translated[1]

    def _translated(self, exc: Exception) -> tuple[BaseException, BaseException | None] | None:
        """What a statement that raised ``exc`` raises instead, and its cause;
        ``None``: ``exc`` itself, as it is."""
        if isinstance(exc, (StoreError, UnusableError)):
            self._broken = exc
            if isinstance(exc, UnusableError) and isinstance(exc.__cause__, Error):
                # SQLite touched the file again after a failed commit: the
                # failure itself (a StoreError, a FencedError) is the news.
                return exc.__cause__, exc.__cause__.__cause__
            return None
        if isinstance(exc, Error):
            if self.storage.main is not None and self.storage.main.failed is not None:
                self._broken = self.storage.main.failed
            return None
        if isinstance(exc, apsw.Error):
            return SqlError(str(exc), getattr(exc, "extendedresult", None)), exc
        if isinstance(exc, KeyError):  # a mapping of parameters lacks a named one
            return cannot_bind(f"no value supplied for parameter {exc.args[0]!r}"), exc
        if isinstance(exc, (TypeError, ValueError, OverflowError)):
            return cannot_bind(exc), exc
        return None

    def run_many(self, sql: str, seq_of_params: Iterable[Any]) -> int:
        """Run one statement once per set of parameters; the rows it changed in all
        (the sum of ``changes()`` after each, so rows changed by triggers do not count).

        Rows the statement returns are discarded.
        """
        statement = self._one_statement(sql, "run_many")
        if statement is None:
            return 0
        runs = [0, 0]  # executions seen, rows they changed (as sqlite3_changes counts: no trigger's)

        def trace(cursor: apsw.Cursor, traced: str, bindings: Any) -> bool:
            if runs[0]:
                runs[1] += self.conn.changes()  # the execution before this one
            runs[0] += 1
            return True

        cursor = self.conn.cursor()
        cursor.exec_trace = trace
        try:
            with self._translated_errors():
                for _ in cursor.executemany(statement, seq_of_params, can_cache=True):
                    pass
        finally:
            cursor.close(True)
        return runs[1] + (self.conn.changes() if runs[0] else 0)

    def _define_function(
        self, name: str, num_params: int, func: Callable[..., Any] | None, deterministic: bool
    ) -> None:
        self.conn.create_scalar_function(name, func, num_params, deterministic=deterministic)


def _describing(columns: list[str]) -> Callable[[apsw.Cursor, str, Any], bool]:
    """An APSW exec trace that puts the column names of the statement about to run in ``columns``."""

    def trace(cursor: apsw.Cursor, statement: str, bindings: Any) -> bool:
        if not columns:
            try:
                columns.extend(d[0] for d in cursor.get_description())
            except apsw.ExecutionCompleteError:
                pass
        return True

    return trace

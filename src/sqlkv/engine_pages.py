"""Backend ``pages``: SQLite through APSW, on a VFS of ours (the default).

SQLite asks for pages; the VFS answers from the chunk cache or the store and
commits each transaction in one round trip (see vfs.py and kvfile.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import apsw

from .engine import (
    SETUP_PRAGMAS,
    EngineBase,
    QueryResult,
    RunResult,
    cannot_bind,
    check_pragma,
    check_sql,
    is_blank_sql,
    more_than_one_statement,
    stats_pragma,
)
from .errors import Error, SqlError, StoreError, UnusableError
from .vfs import KvVfs, sqlite_path

_vfs_ids = itertools.count(1)

_SETUP = "".join(f"PRAGMA {pragma};" for pragma in SETUP_PRAGMAS)


class _OneStatementOnly(Exception):
    pass


class PagesEngine(EngineBase):
    """One open database on backend ``pages``."""

    backend = "pages"

    # -- opening, and reopening after a store failure ---------------------------

    def _open(self) -> None:
        self._open_storage()
        storage = self.storage
        self._vfs_name = f"sqlkv-{next(_vfs_ids)}"
        self._vfs = KvVfs(self._vfs_name, storage, self._on_pragma)
        flags = apsw.SQLITE_OPEN_READONLY if self.readonly else (
            apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        )
        self._pinned = False
        try:
            self.conn = apsw.Connection(sqlite_path(self.name), flags=flags, vfs=self._vfs_name)
            try:
                self.conn.execute(_SETUP).fetchall()
            except apsw.Error as exc:
                self.conn.close()
                raise SqlError(f"cannot open {self.name!r}: {exc}") from exc
        except BaseException:
            self._vfs.unregister()
            raise
        self._pinned = True

    def _discard(self) -> None:
        try:
            self.conn.close(True)
        except Exception:
            pass
        self._vfs.unregister()
        self.storage.close()

    def _on_pragma(self, pragma: apsw.VFSFcntlPragma) -> bool:
        if self._pinned:
            check_pragma(pragma.name, pragma.value)
        if pragma.name.lower() == "sqlkv_stats":
            pragma.result = stats_pragma(self.stats, pragma.value)
            return True
        return False

    # -- running statements -----------------------------------------------------

    def _execute(self, sql: str, params: Any, single: str | None) -> list[QueryResult]:
        results: list[QueryResult] = []

        def trace(cursor: apsw.Cursor, statement: str, bindings: Any) -> bool:
            if is_blank_sql(statement):
                return True  # APSW traces SQL with no statement at all; it has no result
            if single is not None and not results:
                at = sql.find(statement)
                if at >= 0 and not is_blank_sql(sql[at + len(statement):]):
                    raise _OneStatementOnly()
            try:
                columns = [d[0] for d in cursor.get_description()]
            except apsw.ExecutionCompleteError:
                columns = []
            results.append(QueryResult(columns))
            return True

        cursor = self.conn.cursor()
        cursor.exec_trace = trace
        # query/run: one statement, often the same text again with new params:
        # worth APSW's statement cache. exec: a script, where caching each of
        # its statements (keyed by the text that remains) cost 10.8 us against
        # 3.3 us per statement for 100-statement scripts.
        can_cache = single is not None
        try:
            for row in cursor.execute(sql, params, can_cache=can_cache):
                results[-1].rows.append(row)
        except _OneStatementOnly:
            raise more_than_one_statement(single) from None
        except (StoreError, UnusableError) as exc:
            self._broken = exc
            if isinstance(exc, UnusableError) and isinstance(exc.__cause__, Error):
                # SQLite touched the file again after a failed commit: the
                # failure itself (a StoreError, a FencedError) is the news.
                raise exc.__cause__ from exc.__cause__.__cause__
            raise
        except Error:
            if self.storage.main is not None and self.storage.main.failed is not None:
                self._broken = self.storage.main.failed
            raise
        except apsw.Error as exc:
            raise SqlError(str(exc), getattr(exc, "extendedresult", None)) from exc
        except KeyError as exc:  # a mapping of parameters lacks a named one
            raise cannot_bind(f"no value supplied for parameter {exc.args[0]!r}") from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise cannot_bind(exc) from exc
        finally:
            cursor.close(True)
        return results

    def _last_run(self) -> RunResult:
        return RunResult(self.conn.changes(), self.conn.last_insert_rowid())

    # -- streaming, for the DB-API (dbapi2.py) ---------------------------------

    def iterate(self, sql: str, params: Any = None) -> tuple[list[str], Iterator[tuple]]:
        """Run one statement and return its column names and an iterator of its rows.

        The statement has run to its first row (so errors such as a UNIQUE
        violation are raised here); each further row is stepped only when the
        iterator is asked for it, so a large result is never held whole.
        Closing the iterator (or dropping it) ends the statement.
        """
        check_sql(sql)
        self._ready()
        self._restore_functions()
        columns: list[str] = []
        cursor = self.conn.cursor()
        cursor.exec_trace = _one_statement_trace(sql, columns)
        try:
            with self._translated_errors("iterate"):
                cursor.execute(sql, params, can_cache=True)
        except BaseException:
            cursor.close(True)
            raise
        rows = self._rows_of(cursor)
        next(rows)
        return columns, rows

    def _rows_of(self, cursor: apsw.Cursor) -> Iterator[tuple]:
        try:
            yield ()  # primed by iterate(), so that close() always runs the finally
            with self._translated_errors("iterate"):
                yield from cursor
        finally:
            cursor.close(True)

    @contextmanager
    def _translated_errors(self, call: str) -> Iterator[None]:
        """What a failing statement raises, as ``sqlkv`` errors (see :meth:`_execute`)."""
        try:
            yield
        except _OneStatementOnly:
            raise more_than_one_statement(call) from None
        except (StoreError, UnusableError) as exc:
            self._broken = exc
            if isinstance(exc, UnusableError) and isinstance(exc.__cause__, Error):
                raise exc.__cause__ from exc.__cause__.__cause__
            raise
        except Error:
            if self.storage.main is not None and self.storage.main.failed is not None:
                self._broken = self.storage.main.failed
            raise
        except apsw.Error as exc:
            raise SqlError(str(exc), getattr(exc, "extendedresult", None)) from exc
        except KeyError as exc:
            raise cannot_bind(f"no value supplied for parameter {exc.args[0]!r}") from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise cannot_bind(exc) from exc

    def run_many(self, sql: str, seq_of_params: Iterable[Any]) -> int:
        """Run one statement once per set of parameters; the rows it changed in all
        (the sum of ``changes()`` after each, so rows changed by triggers do not count).

        Rows the statement returns are discarded.
        """
        check_sql(sql)
        self._ready()
        self._restore_functions()
        checked = _one_statement_trace(sql, [])
        runs = [0, 0]  # executions seen, rows they changed (as sqlite3_changes counts: no trigger's)
        last: list[Any] = [None, True]  # the last statement text traced, and whether it is blank

        def trace(cursor: apsw.Cursor, statement: str, bindings: Any) -> bool:
            if statement is not last[0]:
                last[0], last[1] = statement, is_blank_sql(statement)
            if not last[1]:
                if runs[0]:
                    runs[1] += self.conn.changes()  # the execution before this one
                runs[0] += 1
            return checked(cursor, statement, bindings)

        cursor = self.conn.cursor()
        cursor.exec_trace = trace
        try:
            with self._translated_errors("run_many"):
                for _ in cursor.executemany(sql, seq_of_params, can_cache=True):
                    pass
        finally:
            cursor.close(True)
        return runs[1] + (self.conn.changes() if runs[0] else 0)

    def _define_function(
        self, name: str, num_params: int, func: Callable[..., Any] | None, deterministic: bool
    ) -> None:
        self.conn.create_scalar_function(name, func, num_params, deterministic=deterministic)


def _one_statement_trace(sql: str, columns: list[str]) -> Callable[[apsw.Cursor, str, Any], bool]:
    """An APSW exec trace that refuses ``sql`` when it holds more than one
    statement (before any runs) and puts the first one's column names in ``columns``."""
    seen: list[str] = []

    def trace(cursor: apsw.Cursor, statement: str, bindings: Any) -> bool:
        if seen or is_blank_sql(statement):
            return True  # seen: executemany runs the one statement again
        at = sql.find(statement)
        if at >= 0 and not is_blank_sql(sql[at + len(statement):]):
            raise _OneStatementOnly()
        seen.append(statement)
        try:
            columns.extend(d[0] for d in cursor.get_description())
        except apsw.ExecutionCompleteError:
            pass
        return True

    return trace

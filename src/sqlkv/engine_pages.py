"""Backend ``pages``: SQLite through APSW, on a VFS of ours (the default).

SQLite asks for pages; the VFS answers from the chunk cache or the store and
commits each transaction in one round trip (see vfs.py and kvfile.py).
"""

from __future__ import annotations

import itertools
from typing import Any

import apsw

from .engine import (
    QueryResult,
    RunResult,
    check_pragma,
    check_sql,
    is_blank_sql,
    more_than_one_statement,
)
from .errors import Error, SqlError, StoreError, UnusableError
from .options import Options
from .storage import Storage
from .store import StoreClient
from .vfs import KvVfs, sqlite_path

_vfs_ids = itertools.count(1)

_SETUP = (
    "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=MEMORY; PRAGMA temp_store=MEMORY;"
)


class _OneStatementOnly(Exception):
    pass


class PagesEngine:
    """One open database on backend ``pages``."""

    backend = "pages"

    def __init__(self, client: StoreClient, options: Options, name: str, readonly: bool) -> None:
        self.client = client
        self.stats = client.stats
        self.options = options
        self.name = name
        self.readonly = readonly
        self._broken: BaseException | None = None
        self._open()

    # -- opening, and reopening after a store failure ---------------------------

    def _open(self) -> None:
        options = self.options
        self.storage = storage = Storage(
            self.client,
            options.make_layout(self.name),
            self.name,
            options.chunk_size,
            options.cache_bytes,
            readonly=self.readonly,
        )
        main = storage.open()
        if self.readonly and not main.exists:
            raise Error(f"database {self.name!r} does not exist (opened read-only)")
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

    def _ready(self) -> None:
        """Reopen the database if an earlier store failure made its state unknown."""
        if self._broken is None:
            return
        self._discard()
        self._open()
        self._broken = None

    def _on_pragma(self, pragma: apsw.VFSFcntlPragma) -> bool:
        if self._pinned:
            check_pragma(pragma.name, pragma.value)
        if pragma.name.lower() == "sqlkv_stats":
            if pragma.value is not None and pragma.value.lower() == "reset":
                self.stats.reset()
            pragma.result = self.stats.to_json()
            return True
        return False

    # -- running statements -----------------------------------------------------

    def _execute(self, sql: str, params: Any, single: str | None) -> list[QueryResult]:
        """Run ``sql``; one :class:`QueryResult` per statement. ``single``: the
        public call's name when only one statement is allowed."""
        check_sql(sql)
        self._ready()
        results: list[QueryResult] = []

        def trace(cursor: apsw.Cursor, statement: str, bindings: Any) -> bool:
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
            raise
        except Error:
            if self.storage.main is not None and self.storage.main.failed is not None:
                self._broken = self.storage.main.failed
            raise
        except apsw.Error as exc:
            raise SqlError(str(exc), getattr(exc, "extendedresult", None)) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise SqlError(f"cannot run statement: {exc}") from exc
        finally:
            cursor.close(True)
        return results

    def query(self, sql: str, params: Any = None) -> QueryResult:
        results = self._execute(sql, params, "query")
        return results[0] if results else QueryResult([])

    def run(self, sql: str, params: Any = None) -> RunResult:
        self._execute(sql, params, "run")
        return RunResult(self.conn.changes(), self.conn.last_insert_rowid())

    def exec(self, sql: str) -> list[QueryResult]:
        return self._execute(sql, None, None)

    def close(self) -> None:
        try:
            self._discard()
        finally:
            self.client.close()

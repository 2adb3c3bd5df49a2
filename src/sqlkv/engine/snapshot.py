"""Backend ``snapshot``: Python's own ``sqlite3`` on the whole database image in memory.

The zero-dependency fallback, for platforms where APSW is not installed.

Opening reads the database's FileMeta and first chunks (one round trip), then
every other chunk in as few ``get_batch`` calls as the store's limits allow,
and hands the image to SQLite (``Connection.deserialize``). From then on
SQLite works on that image in memory, by design: SQLite's own page cache and
sqlkv's chunk cache do not apply, reads cost no round trip, and the database
must fit in memory (and within SQLite's in-memory file limit, 1 GiB by default).

After each statement that may have changed the database and left no
transaction open, the engine takes the new image (``Connection.serialize``),
compares it chunk by chunk with the last committed one and hands only the
changed chunks to the database's :class:`~sqlkv.storage.kvfile.KvFile`, whose
``sync`` commits them with the new FileMeta (and the deletion of chunks past a
shrunken end): one atomic round trip when the store allows, exactly as backend
``pages`` commits, in the same layout. A transaction the user opens with
``BEGIN`` commits when it ends, however many engine calls it spans (the
public API spans calls only through ``transaction()``, see transaction.py).

Statements that cannot have changed the database take no image at all: an
authorizer notes, while SQLite prepares each statement, every action that is
not a read, and SQLite's count of changed rows covers INSERT, UPDATE and
DELETE. So SELECTs cost nothing but SQLite's own work, and a rolled-back
transaction writes nothing.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import ConfigError, ConflictError, Error, SqlError
from .common import (
    CONFLICT_RETRIES,
    SETUP_PRAGMAS,
    EngineBase,
    QueryResult,
    RunResult,
    attach_refused,
    cannot_bind,
    check_pragma,
    stats_pragma,
)

#: Actions that read, or only begin and end transactions. INSERT, UPDATE and
#: DELETE are not noted either: SQLite's count of changed rows covers them.
_QUIET_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_SELECT,
        sqlite3.SQLITE_READ,
        sqlite3.SQLITE_FUNCTION,
        sqlite3.SQLITE_RECURSIVE,
        sqlite3.SQLITE_TRANSACTION,
        sqlite3.SQLITE_SAVEPOINT,
        sqlite3.SQLITE_INSERT,
        sqlite3.SQLITE_UPDATE,
        sqlite3.SQLITE_DELETE,
    }
)

#: PRAGMAs that only read, though they take an argument.
_READING_PRAGMAS = frozenset(
    {
        "foreign_key_check",
        "foreign_key_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "integrity_check",
        "quick_check",
        "table_info",
        "table_xinfo",
    }
)
#: PRAGMAs that change the database without taking a value.
_WRITING_PRAGMAS = frozenset({"incremental_vacuum", "optimize"})

#: Files ATTACH may open: a new temporary or in-memory database, never a file.
_ATTACHABLE = ("", ":memory:")

#: The largest image SQLite holds as an in-memory database by default
#: (SQLITE_MEMDB_DEFAULT_MAXSIZE): the most backend snapshot opens.
MAX_IMAGE_BYTES = 1 << 30

#: Chunks compared at once before comparing them one by one.
_BLOCK_CHUNKS = 256

_NO_REQUEST = object()

_CONNECT_OPTIONS: dict[str, Any] = {
    "uri": True,
    "isolation_level": None,  # statements autocommit unless the user says BEGIN
    "check_same_thread": False,  # the engine is called from one thread at a time, not always the same
    # Every statement is prepared anew, so the authorizer sees each of them.
    "cached_statements": 0,
}

#: Where SQLite's build default differs from backend pages' (Debian builds
#: with SECURE_DELETE on), the setting pages has, so both write the same pages.
_PARITY_PRAGMAS = ("secure_delete=OFF",)


def changed_chunks(old: bytes, new: bytes, chunk_size: int) -> list[int]:
    """The indices of the chunks of ``new`` that differ from the same chunks of ``old``.

    A chunk differs in its bytes or in its length (the last chunk of an image
    that grew or shrank). Whole blocks of chunks are compared first, so an
    image with a few changed chunks costs a few hundred comparisons, none of
    which copies bytes.
    """
    size = len(new)
    view = memoryview(new)
    block = chunk_size * _BLOCK_CHUNKS
    changed = []
    for start in range(0, size, block):
        if old.startswith(view[start : start + block], start):
            continue
        for offset in range(start, min(start + block, size), chunk_size):
            if not old.startswith(view[offset : offset + chunk_size], offset):
                changed.append(offset // chunk_size)
    last = (size - 1) // chunk_size
    if size % chunk_size and len(old) > size and last not in changed[-1:]:
        changed.append(last)  # the same bytes, but the old chunk went on past them
    return changed


def _read_only_connection(image: bytes) -> sqlite3.Connection:
    """A connection on ``image`` that SQLite itself keeps from writing the database.

    ``deserialize`` cannot be asked for a read-only image from Python, so the
    image is copied into a named in-memory database and opened again with
    ``mode=ro``: writes fail as on a read-only file, temporary tables still work.
    """
    uri = f"file:/sqlkv-{uuid.uuid4().hex}?vfs=memdb"
    holder = sqlite3.connect(uri, uri=True)
    try:
        if image:
            loader = sqlite3.connect(":memory:")
            try:
                loader.deserialize(image)
                loader.backup(holder)
            finally:
                loader.close()
        return sqlite3.connect(uri + "&mode=ro", **_CONNECT_OPTIONS)
    finally:
        holder.close()


class SnapshotEngine(EngineBase):
    """One open database on backend ``snapshot`` (see the module docstring)."""

    backend = "snapshot"

    #: Images taken to look for changes (for tests: reads must take none).
    images_taken = 0

    # -- opening, and reopening after a store failure ---------------------------

    def _open(self) -> None:
        self._main = main = self._open_storage()
        if main.size > MAX_IMAGE_BYTES:
            main.check_end()  # a FileMeta the chunks do not bear out is damage, not size
            raise ConfigError(
                f"database {self.name!r} is {main.size} bytes; backend snapshot holds at most "
                f"{MAX_IMAGE_BYTES} bytes in memory: open it with backend='pages'"
            )
        image = main.read_all()
        self.conn = self._connect(image)
        self._image = image
        self._image_whole = True
        self._maybe_changed = False
        self._changes_seen = self.conn.total_changes
        self._refusal: Error | None = None
        self._stats_request: object = _NO_REQUEST

    def _connect(self, image: bytes) -> sqlite3.Connection:
        """A connection on ``image``, set up (a reader's is read-only)."""
        conn = None
        try:
            if self.readonly:
                conn = _read_only_connection(image)
            else:
                conn = sqlite3.connect("file:sqlkv?vfs=memdb", **_CONNECT_OPTIONS)
                if image:
                    conn.deserialize(image)
            for pragma in SETUP_PRAGMAS + _PARITY_PRAGMAS:
                conn.execute(f"PRAGMA {pragma}").fetchall()
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise SqlError(
                    f"cannot open {self.name!r}: {exc}", getattr(exc, "sqlite_errorcode", None)
                ) from exc
            raise
        # Installed after the setup, whose pragmas set the pinned values.
        conn.set_authorizer(self._authorize)
        return conn

    # -- a reader's read transactions (see versions.py) ---------------------------

    def _refresh(self) -> None:
        """Before a reader's statement outside a transaction: move to the state
        committed now, fetching only the chunks changed since the image's."""
        if not self.readonly or self.conn.in_transaction:
            return
        conflicts = 0
        while True:
            try:
                if self._main.begin_read(force=conflicts > 0) or not self._image_whole:
                    self._state_moved()
                return
            except ConflictError:
                conflicts += 1
                if conflicts > CONFLICT_RETRIES:
                    raise

    def _state_moved(self) -> None:
        """Take the image of the reader's new pinned state: the chunks dropped
        are fetched again (all of them when the log did not say which)."""
        main = self._main
        # After a failed attempt the image is older than the last refresh says: take it whole.
        dropped = main.last_dropped if self._image_whole else None
        self._image_whole = False  # until the new image is complete
        size = main.size
        if dropped is None or len(self._image) == 0:
            image = main.read_all()
        else:
            cs = main.chunk_size
            count = -(-size // cs)
            wanted = sorted(i for i in dropped if i < count)
            fresh = main.read_chunks(wanted)
            buffer = bytearray(self._image[:size].ljust(size, b"\0"))
            for i in wanted:
                chunk = fresh.get(i, b"")[: min(cs, size - i * cs)]
                buffer[i * cs : i * cs + len(chunk)] = chunk
            image = bytes(buffer)
        if image != self._image:
            old = self.conn
            self.conn = self._connect(image)
            old.close()
            self._image = image
            self._restore_functions()
        self._image_whole = True

    def _discard(self) -> None:
        conn = self.__dict__.pop("conn", None)
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self.storage.close()

    def _let_go(self) -> None:
        del self._main
        self._image = b""
        self._image_whole = False

    # -- what SQLite is about to do ---------------------------------------------

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, schema: str | None, source: str | None
    ) -> int:
        """SQLite's authorizer: note possible writes, refuse what would break the commit protocol."""
        if action in _QUIET_ACTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and arg1 is not None:
            return self._authorize_pragma(arg1, arg2, schema)
        if action == sqlite3.SQLITE_ATTACH and arg1 not in _ATTACHABLE:
            return self._refuse(attach_refused(str(arg1), self.name))
        self._maybe_changed = True
        return sqlite3.SQLITE_OK

    def _authorize_pragma(self, name: str, value: str | None, schema: str | None) -> int:
        lowered = name.lower()
        if schema in (None, "main"):
            if lowered == "sqlkv_stats":
                self._stats_request = value
                return sqlite3.SQLITE_OK
            try:
                check_pragma(name, value)
            except Error as exc:
                return self._refuse(exc)
        if lowered in _WRITING_PRAGMAS or (value is not None and lowered not in _READING_PRAGMAS):
            self._maybe_changed = True
        return sqlite3.SQLITE_OK

    def _refuse(self, error: Error) -> int:
        self._refusal = error
        return sqlite3.SQLITE_DENY

    # -- running statements -----------------------------------------------------

    def _run_one(self, statement: str, params: Any, repeated: bool) -> QueryResult:
        self._refresh()
        self._refusal = None
        self._stats_request = _NO_REQUEST
        cursor = self.conn.cursor()
        try:
            if params is None:
                cursor.execute(statement)
            else:
                cursor.execute(statement, params)
            rows = cursor.fetchall()
            description = cursor.description
        except (sqlite3.Error, sqlite3.Warning) as exc:
            if self._refusal is not None:
                raise self._refusal from None
            raise SqlError(str(exc), getattr(exc, "sqlite_errorcode", None)) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise cannot_bind(exc) from exc
        finally:
            cursor.close()
        if self._stats_request is not _NO_REQUEST:
            # As SQLite answers a PRAGMA a VFS handles (backend pages): one row,
            # one column, named by its own text.
            text = stats_pragma(self.stats, self._stats_request)  # type: ignore[arg-type]
            return QueryResult([text], [(text,)])
        return QueryResult([d[0] for d in description] if description else [], rows)

    def _last_run(self) -> RunResult:
        changes, rowid = self.conn.execute("SELECT changes(), last_insert_rowid()").fetchone()
        return RunResult(changes, rowid, self.version)

    # -- committing ---------------------------------------------------------------

    def _conn_in_transaction(self) -> bool:
        return self.conn.in_transaction

    _runs_after_statement = True

    def _after_statement(self) -> None:
        self._commit_if_done()

    def _commit_if_done(self) -> None:
        """Commit what the last statement changed, once no transaction is open."""
        conn = self.conn
        if conn.in_transaction or self.readonly:
            return
        changes = conn.total_changes
        if not self._maybe_changed and changes == self._changes_seen:
            return
        self._maybe_changed = False
        self._changes_seen = changes
        try:
            self.images_taken += 1
            self._commit(self._serialize())
        except BaseException as exc:
            self._broken = exc
            raise

    def _serialize(self) -> bytes:
        """The database's image as it is now (``b""`` while it has no page at all)."""
        try:
            return self.conn.serialize()
        except sqlite3.OperationalError:
            # SQLite cannot serialize an empty database (a zero-byte allocation fails).
            if self.conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                return b""
            raise

    def _commit(self, image: bytes) -> None:
        """Make ``image`` the committed state, writing only the chunks that changed."""
        old = self._image
        if image == old:
            return
        main = self._main
        cs = main.chunk_size
        size = len(image)
        changed = changed_chunks(old, image, cs)
        if size < main.size:
            # To a chunk boundary: a shortened last chunk is among the changed
            # ones and is written whole, with no need to read the old one.
            main.truncate(size - size % cs)
        for i in changed:
            main.write(image[i * cs : (i + 1) * cs], i * cs)
        main.sync()
        self._image = image

    # -- streaming, for the DB-API (dbapi2.py) ---------------------------------

    def iterate(self, sql: str, params: Any = None) -> tuple[list[str], Iterator[tuple]]:
        """Run one statement and return its column names and an iterator of its rows.

        As backend ``pages`` does: the statement has run to its first row, and
        each further row is stepped when asked for. What the statement changed
        is committed once it has ended (its rows all read, or the iterator
        closed) and no transaction is open.
        """
        statement = self._one_statement(sql, "iterate")
        if statement is None:
            return [], iter(())
        self._refresh()
        self._refusal = None
        self._stats_request = _NO_REQUEST
        cursor = self.conn.cursor()
        try:
            with self._translated_errors():
                cursor.execute(statement, () if params is None else params)
        except BaseException:
            cursor.close()
            self._commit_if_done()
            raise
        if self._stats_request is not _NO_REQUEST:
            cursor.close()
            text = stats_pragma(self.stats, self._stats_request)  # type: ignore[arg-type]
            return [text], iter([(text,)])
        description = cursor.description
        rows = self._rows_of(cursor)
        next(rows)
        return [d[0] for d in description] if description else [], rows

    def _rows_of(self, cursor: sqlite3.Cursor) -> Iterator[tuple]:
        try:
            yield ()  # primed by iterate(), so that close() always runs the finally
            with self._translated_errors():
                yield from cursor
        finally:
            cursor.close()
            self._commit_if_done()

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """What a failing statement raises, as ``sqlkv`` errors (see :meth:`_run_one`)."""
        try:
            yield
        except (sqlite3.Error, sqlite3.Warning) as exc:
            if self._refusal is not None:
                raise self._refusal from None
            raise SqlError(str(exc), getattr(exc, "sqlite_errorcode", None)) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise cannot_bind(exc) from exc

    def run_many(self, sql: str, seq_of_params: Iterable[Any]) -> int:
        """Run one statement once per set of parameters; the rows it changed in all
        (the sum of ``changes()`` after each, so rows changed by triggers do not count)."""
        statement = self._one_statement(sql, "run_many")
        if statement is None:
            return 0
        self._refusal = None
        cursor = self.conn.cursor()
        try:
            with self._translated_errors():
                cursor.executemany(statement, seq_of_params)
            return max(cursor.rowcount, 0)  # sqlite3's sum of changes() after each
        finally:
            cursor.close()
            self._commit_if_done()

    def _define_function(
        self, name: str, num_params: int, func: Callable[..., Any] | None, deterministic: bool
    ) -> None:
        self.conn.create_function(name, num_params, func, deterministic=deterministic)

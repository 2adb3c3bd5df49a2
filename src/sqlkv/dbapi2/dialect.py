"""SQLAlchemy 2 dialects: ``sqlkv://`` (on :mod:`sqlkv.dbapi2`) and ``sqlkv+aio://``.

Both subclass SQLAlchemy's own ``sqlite+pysqlite`` dialect, so SQL
compilation, types and reflection are SQLite's; only the driver differs.
Registered by entry point (pyproject.toml), so ``create_engine`` finds them::

    create_engine("sqlkv:///app.db?store=lmdb%3A%2F%2F.%2Fsqlkv-data")
    create_engine("sqlkv:///app.db?store=redis%3A%2F%2F10.0.0.5%3A6379%2F0&readonly=true")
    create_async_engine("sqlkv+aio:///app.db?store=...")

The URL's database is the database's name in the store (not a path); the
query string carries the store URL (URL-quoted) and :func:`sqlkv.dbapi2.connect`'s
options. One writer per database: a writer's engine pools one connection
(:class:`WriterPool`: a second checkout waits for it, as a second writer
waits for the lease); ``readonly=true`` engines pool as SQLAlchemy's default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import pool
from sqlalchemy.connectors.asyncio import (
    AsyncAdapt_dbapi_connection,
    AsyncAdapt_dbapi_cursor,
    AsyncAdapt_dbapi_module,
    AsyncAdapt_dbapi_ss_cursor,
)
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteExecutionContext_aiosqlite
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine.url import URL
from sqlalchemy.util.concurrency import await_

from .. import dbapi2
from ..runtime.pool import Worker
from ..storage.options import OpenParams, Options

#: URL query options -> how their text becomes the value dbapi2.connect takes.
_BOOL_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _bool(name: str, text: str) -> bool:
    try:
        return _BOOL_TEXT[text.lower()]
    except KeyError:
        raise sa_exc.ArgumentError(f"URL option {name} must be true or false, not {text!r}") from None


def _optional_float(name: str, text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _text(name: str, text: str) -> str:
    return text


#: How a URL's text becomes a value of each type an option or open parameter is declared with.
_FROM_TEXT: dict[str, Callable[[str, str], Any]] = {
    "bool": _bool,
    "int": lambda name, text: int(text),
    "float": lambda name, text: float(text),
    "float | None": _optional_float,
    "str": _text,
    "str | None": _text,
}

#: The URL's query options: the store, and every option and open parameter, from their
#: one declaration (a new one of a type not above fails here, at import).
_URL_OPTIONS: dict[str, Callable[[str, str], Any]] = {
    "store": _text,
    **{field.name: _FROM_TEXT[str(field.type)] for field in (*fields(Options), *fields(OpenParams))},
}


def connect_args(url: URL) -> dict[str, Any]:
    """:func:`sqlkv.dbapi2.connect`'s keywords from an ``sqlkv://`` URL's query.

    An unknown option, or a value of the wrong form, is an ``ArgumentError`` naming it.
    """
    if url.username or url.password or url.host or url.port:
        raise sa_exc.ArgumentError(
            f"invalid sqlkv URL {url.render_as_string()!r}: the form is "
            "sqlkv:///NAME?store=STORE_URL (no host; the store URL, quoted, says where)"
        )
    if not url.database:
        raise sa_exc.ArgumentError("an sqlkv URL needs a database name: sqlkv:///app.db")
    out: dict[str, Any] = {}
    for name, value in url.query.items():
        convert = _URL_OPTIONS.get(name)
        if convert is None:
            raise sa_exc.ArgumentError(
                f"unknown sqlkv URL option {name!r}; known: {', '.join(sorted(_URL_OPTIONS))}"
            )
        if isinstance(value, tuple):
            raise sa_exc.ArgumentError(f"sqlkv URL option {name!r} is given more than once")
        try:
            out[name] = convert(name, value)
        except ValueError:
            raise sa_exc.ArgumentError(f"sqlkv URL option {name}={value!r} is not valid") from None
    return out


class SQLKVDialect(SQLiteDialect_pysqlite):
    """``sqlkv://``: SQLite's dialect over :mod:`sqlkv.dbapi2`."""

    driver = "sqlkv"
    name = "sqlite"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        return dbapi2

    def create_connect_args(self, url: URL) -> tuple[list[Any], dict[str, Any]]:
        return [url.database], connect_args(url)

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.QueuePool if _is_reader(url) else WriterPool

    def retrieve_dbapi_version(self, dbapi: Any) -> Any:
        from sqlalchemy import util

        from ..version import __version__

        return util.parse_version_string(__version__)

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        return isinstance(e, dbapi2.ProgrammingError) and "Cannot operate on a closed database." in str(e)


def _is_reader(url: URL) -> bool:
    readonly = url.query.get("readonly")
    return isinstance(readonly, str) and _BOOL_TEXT.get(readonly.lower()) is True


class WriterPool(pool.QueuePool):
    """SQLAlchemy's QueuePool holding one connection by default: one writer per database.

    A second checkout waits (``pool_timeout``) for the first to come back, as a
    second writer waits for the lease; ``pool_size``/``max_overflow`` still override.
    """

    def __init__(self, creator: Any, pool_size: int = 1, max_overflow: int = 0, **kw: Any) -> None:
        super().__init__(creator, pool_size=pool_size, max_overflow=max_overflow, **kw)


class AsyncWriterPool(pool.AsyncAdaptedQueuePool):
    """:class:`WriterPool` for ``sqlkv+aio``."""

    def __init__(self, creator: Any, pool_size: int = 1, max_overflow: int = 0, **kw: Any) -> None:
        super().__init__(creator, pool_size=pool_size, max_overflow=max_overflow, **kw)


# -- async: sqlkv+aio:// -----------------------------------------------------------


class AsyncConnection:
    """A :class:`sqlkv.dbapi2.Connection` whose calls run in order on the loop's
    thread pool (sqlkv's :class:`~sqlkv.runtime.pool.Worker`, as the async API uses), awaited on the loop."""

    def __init__(self, worker: Worker, connection: dbapi2.Connection) -> None:
        self._worker = worker
        self._connection = connection

    @classmethod
    async def open(cls, *args: Any, **kwargs: Any) -> AsyncConnection:
        worker = Worker(asyncio.get_running_loop())
        try:
            connection = await worker.call(lambda: dbapi2.connect(*args, **kwargs))
        except BaseException:
            await worker.stop()
            raise
        return cls(worker, connection)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._worker.call(fn, *args)

    def cursor(self) -> AsyncCursor:
        return AsyncCursor(self)

    async def commit(self) -> None:
        await self.call(self._connection.commit)

    async def rollback(self) -> None:
        await self.call(self._connection.rollback)

    async def close(self) -> None:
        try:
            await self.call(self._connection.close)
        finally:
            await self._worker.stop()

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level


class AsyncCursor:
    """A :class:`sqlkv.dbapi2.Cursor` with awaitable calls, run on its connection's worker."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._cursor: dbapi2.Cursor | None = None

    async def __aenter__(self) -> AsyncCursor:
        self._cursor = await self._connection.call(self._connection._connection.cursor)
        return self

    def _sync(self) -> dbapi2.Cursor:
        assert self._cursor is not None
        return self._cursor

    @property
    def description(self) -> Any:
        return self._sync().description

    @property
    def rowcount(self) -> int:
        return self._sync().rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._sync().lastrowid

    @property
    def arraysize(self) -> int:
        return self._sync().arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._sync().arraysize = value

    async def execute(self, operation: str, parameters: Any = ()) -> Any:
        return await self._connection.call(self._sync().execute, operation, parameters)

    async def executemany(self, operation: str, seq_of_parameters: Any) -> Any:
        return await self._connection.call(self._sync().executemany, operation, seq_of_parameters)

    async def fetchone(self) -> Any:
        return await self._connection.call(self._sync().fetchone)

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return await self._connection.call(self._sync().fetchmany, size)

    async def fetchall(self) -> list[Any]:
        return await self._connection.call(self._sync().fetchall)

    async def close(self) -> None:
        if self._cursor is not None:
            await self._connection.call(self._cursor.close)

    async def setinputsizes(self, *sizes: Any) -> None:
        return None

    async def nextset(self) -> None:
        return None

    def __aiter__(self) -> AsyncCursor:
        return self

    async def __anext__(self) -> Any:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


class AsyncAdapt_sqlkv_cursor(AsyncAdapt_dbapi_cursor):
    __slots__ = ()


class AsyncAdapt_sqlkv_ss_cursor(AsyncAdapt_dbapi_ss_cursor):
    __slots__ = ()


class AsyncAdapt_sqlkv_connection(AsyncAdapt_dbapi_connection):
    """What SQLAlchemy's pool holds for ``sqlkv+aio``: sync calls, each awaited with ``await_``."""

    __slots__ = ()

    _cursor_cls = AsyncAdapt_sqlkv_cursor
    _ss_cursor_cls = AsyncAdapt_sqlkv_ss_cursor

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        inner = self._connection._connection
        try:
            await_(self._connection.call(setattr, inner, "isolation_level", value))
        except Exception as error:
            self._handle_exception(error)

    def create_function(self, *args: Any, **kw: Any) -> None:
        inner = self._connection._connection
        try:
            await_(self._connection.call(lambda: inner.create_function(*args, **kw)))
        except Exception as error:
            self._handle_exception(error)

    def close(self) -> None:
        try:
            await_(self._connection.close())
        except Exception as error:
            self._handle_exception(error)


class AsyncAdapt_sqlkv_dbapi(AsyncAdapt_dbapi_module):
    """The module SQLAlchemy sees for ``sqlkv+aio``: dbapi2's names, an awaited connect."""

    def __init__(self) -> None:
        super().__init__(dbapi2, dbapi_module=dbapi2)
        self.paramstyle = dbapi2.paramstyle
        for name in (
            "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
            "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
            "sqlite_version", "sqlite_version_info", "Binary",
        ):
            setattr(self, name, getattr(dbapi2, name))

    def connect(self, *args: Any, **kwargs: Any) -> AsyncAdapt_sqlkv_connection:
        connection = await_(AsyncConnection.open(*args, **kwargs))
        return AsyncAdapt_sqlkv_connection(self, connection)  # type: ignore[arg-type]


class SQLKVDialect_aio(SQLKVDialect):
    """``sqlkv+aio://``: the same dialect for ``create_async_engine``."""

    driver = "sqlkv_aio"
    is_async = True
    supports_statement_cache = True
    supports_server_side_cursors = True
    execution_ctx_cls = SQLiteExecutionContext_aiosqlite

    @classmethod
    def import_dbapi(cls) -> Any:
        return AsyncAdapt_sqlkv_dbapi()

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool if _is_reader(url) else AsyncWriterPool

    def get_driver_connection(self, connection: Any) -> Any:
        return connection._connection

"""A store that stops answering does not hang sqlkv (issue 20, item 13).

Every store call is bounded by ``store_timeout``: an ``async`` store's call is
cancelled; a synchronous store's call cannot be, so whoever waits for it gives
up (the async API's database, a sync connection's ``close()`` from another
thread) and the database is closed; Redis bounds its own calls with the URL's
``timeout``. The hanging stores here wait on an event that is set at teardown,
and every wait of the tests' own is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading

import pytest
from redis_servers import RedisServer

import sqlkv
from sqlkv.stores.wrapper import AsyncStoreWrapper, StoreWrapper

#: The tests' own bound on anything that must not hang (seconds); far above store_timeout.
BOUND = 10.0
TIMEOUT = 0.3


class HangingStore(StoreWrapper):
    """A MemoryStore (with ``write_batch``, so writers take leases) whose calls,
    once ``hang`` is set, wait until :meth:`release`."""

    def __init__(self) -> None:
        super().__init__(sqlkv.MemoryStore(), write_batch=True)
        self.hang = False
        self._released = threading.Event()
        self.stuck = threading.Event()  # set when a call starts to hang

    def _call(self, kind, *args):
        if self.hang:
            self.stuck.set()
            self._released.wait()
        return super()._call(kind, *args)

    def release(self) -> None:
        self.hang = False
        self._released.set()


class AsyncHangingStore(AsyncStoreWrapper):
    """The same with ``async`` calls: once ``hang`` is set they await an event
    (on the loop they run on) that :meth:`release` sets."""

    def __init__(self) -> None:
        super().__init__(sqlkv.MemoryStore(), write_batch=True)
        self.hang = False
        self.cancelled = 0
        self._events: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def _call(self, kind, *args):
        if self.hang:
            event = asyncio.Event()
            self._events.append((asyncio.get_running_loop(), event))
            try:
                await event.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return await super()._call(kind, *args)

    def release(self) -> None:
        self.hang = False
        for loop, event in self._events:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)


@pytest.fixture
def hanging():
    stores: list = []

    def make(kind: str):
        stores.append(HangingStore() if kind == "sync" else AsyncHangingStore())
        return stores[-1]

    yield make
    for store in stores:
        store.release()


def test_store_timeout_is_an_option_of_both_apis_checked_at_once():
    from sqlkv.storage.options import DEFAULT_STORE_TIMEOUT

    assert sqlkv.SqliteVfs().options.store_timeout == DEFAULT_STORE_TIMEOUT
    assert sqlkv.SqliteVfs(store_timeout=None).options.store_timeout is None
    assert sqlkv.SqliteVfs(store_timeout=2).options.store_timeout == 2
    for bad in (0, -1, "5", True, float("inf")):
        with pytest.raises(sqlkv.ConfigError, match="store_timeout must be a positive number"):
            sqlkv.SqliteVfs(store_timeout=bad)
        with pytest.raises(sqlkv.ConfigError, match="store_timeout"):
            sqlkv.connect(sqlkv.MemoryStore(), "a.db", store_timeout=bad)


async def _writer_and_reader(store, store_timeout=TIMEOUT):
    vfs = sqlkv.SqliteVfs(store_timeout=store_timeout, hibernate_after=None)
    writer = await vfs.open("a.db", store)
    await writer.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    reader = await vfs.open("a.db", store, readonly=True)
    assert (await reader.query("SELECT x FROM t")).rows == [(1,)]
    return writer, reader


async def test_async_api_on_an_async_store_that_hangs_cancels_the_call(hanging, caplog):
    store = hanging("async")
    writer, reader = await _writer_and_reader(store)
    store.hang = True
    # A reader checks the version at each read transaction: a store read.
    with pytest.raises(sqlkv.StoreTimeoutError, match=r"store get(_batch)? failed.*did not answer within 0\.3 s"):
        await asyncio.wait_for(reader.query("SELECT x FROM t"), BOUND)
    with pytest.raises(sqlkv.OutcomeUnknownError) as unknown:
        await asyncio.wait_for(writer.run("INSERT INTO t VALUES (2)"), BOUND)
    assert unknown.value.committed is None
    assert store.cancelled >= 2  # the store's coroutines were cancelled, not left waiting
    caplog.set_level(logging.WARNING, logger="sqlkv")
    await asyncio.wait_for(writer.close(), BOUND)  # its lease's release times out: a warning
    await asyncio.wait_for(reader.close(), BOUND)
    assert "releasing the lease of database 'a.db' failed" in caplog.text
    assert writer.closed and reader.closed


async def test_async_api_on_a_sync_store_that_hangs_gives_up_and_closes_the_database(hanging, caplog):
    caplog.set_level(logging.WARNING, logger="sqlkv")
    store = hanging("sync")
    writer, reader = await _writer_and_reader(store)
    store.hang = True
    with pytest.raises(sqlkv.StoreTimeoutError, match="did not answer within store_timeout"):
        await asyncio.wait_for(reader.query("SELECT x FROM t"), BOUND)
    assert reader.closed
    with pytest.raises(sqlkv.ClosedError, match="gave up"):
        await reader.query("SELECT 1")
    with pytest.raises(sqlkv.OutcomeUnknownError, match="write may have been applied") as unknown:
        await asyncio.wait_for(writer.run("INSERT INTO t VALUES (2)"), BOUND)
    assert unknown.value.committed is None and writer.closed
    await asyncio.wait_for(writer.close(), BOUND)  # closed already: nothing to wait for
    assert "sqlkv gave up on it and closed the database" in caplog.text
    store.release()
    # The closes left behind run once the store answers: the lease is released.
    reopened = await asyncio.wait_for(sqlkv.SqliteVfs().open("a.db", store, lock_timeout=BOUND), BOUND)
    assert (await reopened.query("SELECT count(*) FROM t")).rows[0][0] in (1, 2)
    await reopened.close()


@pytest.mark.parametrize("where", ["at its commit", "inside the block"])
async def test_a_transaction_on_a_sync_store_that_hangs_is_given_up_on_too(hanging, where):
    store = hanging("sync")
    # A small max_dirty_bytes: a large change inside the block spills to the store.
    vfs = sqlkv.SqliteVfs(store_timeout=TIMEOUT, max_dirty_bytes=8192, hibernate_after=None)
    writer = await vfs.open("a.db", store)
    await writer.exec("CREATE TABLE t(x)")
    waiting = None

    async def transact() -> None:
        nonlocal waiting
        async with writer.transaction() as tx:
            await tx.run("INSERT INTO t VALUES (1)")
            # Another caller waits for the transaction to end.
            waiting = asyncio.ensure_future(writer.query("SELECT count(*) FROM t"))
            store.hang = True
            if where == "inside the block":
                await tx.run(
                    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000) "
                    "INSERT INTO t SELECT randomblob(4000) FROM c"  # past SQLite's page cache: spilled
                )

    with pytest.raises(sqlkv.StoreError, match="gave up on it"):
        await asyncio.wait_for(transact(), BOUND)
    assert writer.closed
    # Let in as the transaction ended, or closed meanwhile: it hears the same.
    with pytest.raises((sqlkv.StoreError, sqlkv.ClosedError), match="gave up"):
        await asyncio.wait_for(waiting, BOUND)
    with pytest.raises(sqlkv.ClosedError, match="gave up"):
        writer.transaction()


async def test_a_renewal_stuck_in_the_store_does_not_hold_up_another_databases_close(hanging):
    store = hanging("sync")
    vfs = sqlkv.SqliteVfs(store_timeout=TIMEOUT, lease_seconds=0.6, hibernate_after=None)
    first = await vfs.open("a.db", store)  # the renewer renews through its transport
    second = await vfs.open("b.db", store)
    store.hang = True
    # No database call is made: the call that hangs is the renewer's next round (0.2 s away).
    assert await asyncio.to_thread(store.stuck.wait, BOUND)
    # b.db's close waits for the stuck round only store_timeout long, then for
    # its own lease's release, which it gives up on.
    with pytest.raises(sqlkv.StoreTimeoutError, match="'b.db'.*gave up on it"):
        await asyncio.wait_for(second.close(), BOUND)
    store.release()
    await asyncio.wait_for(first.close(), BOUND)


async def test_async_close_on_a_sync_store_that_hangs_is_bounded(hanging):
    store = hanging("sync")
    writer, reader = await _writer_and_reader(store)
    await reader.close()
    store.hang = True
    with pytest.raises(sqlkv.StoreTimeoutError, match="'a.db'.*gave up on it"):
        await asyncio.wait_for(writer.close(), BOUND)  # the lease's release hangs
    assert writer.closed


async def test_async_open_on_a_sync_store_that_hangs_is_bounded(hanging):
    store = hanging("sync")
    vfs = sqlkv.SqliteVfs(store_timeout=TIMEOUT)
    store.hang = True
    with pytest.raises(sqlkv.StoreTimeoutError, match="opening database 'a.db'.*get_batch"):
        await asyncio.wait_for(vfs.open("a.db", store), BOUND)
    store.release()
    # The open completed once the store answered, and was closed: its lease is free.
    db = await asyncio.wait_for(vfs.open("a.db", store, lock_timeout=BOUND), BOUND)
    await db.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_close_given_up_by_its_caller_returns(hanging, kind):
    # The case: asyncio.wait_for(db.close(), 2) was still pending after
    # 5 s. Well before store_timeout (30 s by default), the caller's own bound holds.
    store = hanging(kind)
    db = await sqlkv.SqliteVfs().open("a.db", store)
    await db.exec("CREATE TABLE t(x)")
    store.hang = True
    closing = asyncio.ensure_future(asyncio.wait_for(db.close(), 0.2))
    done, _ = await asyncio.wait({closing}, timeout=BOUND)
    assert done, "wait_for(db.close(), 0.2) did not return"
    with pytest.raises(TimeoutError):
        closing.result()
    assert db.closed
    with pytest.raises(sqlkv.ClosedError):
        await db.query("SELECT 1")


def test_sync_api_on_an_async_store_that_hangs_cancels_the_call(hanging, caplog):
    store = hanging("async")
    writer = sqlkv.connect(store, "a.db", store_timeout=TIMEOUT)
    writer.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    reader = sqlkv.connect(store, "a.db", readonly=True, store_timeout=TIMEOUT)
    assert reader.query("SELECT x FROM t").rows == [(1,)]
    store.hang = True
    with pytest.raises(sqlkv.StoreTimeoutError, match="did not answer within 0.3 s"):
        reader.query("SELECT x FROM t")
    with pytest.raises(sqlkv.OutcomeUnknownError):
        writer.run("INSERT INTO t VALUES (2)")
    caplog.set_level(logging.WARNING, logger="sqlkv")
    writer.close()
    reader.close()
    assert store.cancelled >= 3  # the read, the commit, the lease's release
    assert "releasing the lease of database 'a.db' failed" in caplog.text


def test_sync_api_close_from_another_thread_gives_up_on_a_sync_store_that_hangs(hanging):
    store = hanging("sync")
    reader_store = store
    conn = sqlkv.connect(store, "a.db", store_timeout=TIMEOUT)
    conn.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    store.hang = True
    outcome: list[BaseException] = []

    def write() -> None:
        try:
            conn.run("INSERT INTO t VALUES (2)")
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    stuck = threading.Thread(target=write)
    stuck.start()
    assert store.stuck.wait(BOUND)
    with pytest.raises(sqlkv.StoreTimeoutError, match="close\\(\\) gave up waiting for it"):
        conn.close()
    assert conn.closed
    with pytest.raises(sqlkv.ClosedError):
        conn.query("SELECT 1")
    conn.close()  # closing twice is fine
    store.release()
    stuck.join(BOUND)
    assert not stuck.is_alive() and outcome == []  # the store answered: the write committed
    # The stuck thread closed the engine once it was free: the lease is released.
    with sqlkv.connect(reader_store, "a.db", lock_timeout=0) as again:
        assert again.query("SELECT count(*) FROM t").rows == [(2,)]


@pytest.fixture
def stoppable_redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    stopped = []

    def stop() -> None:
        os.kill(server.process.pid, signal.SIGSTOP)
        stopped.append(True)

    yield server, stop
    if stopped:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def test_redis_that_stops_answering_times_out_by_the_urls_timeout(stoppable_redis, caplog):
    pytest.importorskip("redis")
    server, stop = stoppable_redis
    store = sqlkv.open_store(server.url + "?timeout=0.3")
    try:
        writer = sqlkv.connect(store, "a.db")
        writer.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        reader = sqlkv.connect(store, "a.db", readonly=True)
        assert reader.query("SELECT x FROM t").rows == [(1,)]
        stop()  # SIGSTOP: the server holds its connections and answers nothing
        with pytest.raises(sqlkv.StoreError, match="Timeout") as failed:
            reader.query("SELECT x FROM t")
        assert type(failed.value.__cause__).__name__ == "TimeoutError"
        with pytest.raises(sqlkv.OutcomeUnknownError):
            writer.run("INSERT INTO t VALUES (2)")
        caplog.set_level(logging.WARNING, logger="sqlkv")
        writer.close()
        reader.close()
        assert "releasing the lease of database 'a.db' failed" in caplog.text
    finally:
        store.close()


def test_redis_url_timeout_sets_both_socket_timeouts_and_is_checked():
    pytest.importorskip("redis")
    from sqlkv.stores.redis_store import parse_redis_url

    target = parse_redis_url("redis://127.0.0.1:1/0?timeout=2.5")
    assert "socket_timeout=2.5" in target.client_url and "socket_connect_timeout=2.5" in target.client_url
    own = parse_redis_url("redis://127.0.0.1:1/0?timeout=2.5&socket_connect_timeout=1")
    assert "socket_connect_timeout=1" in own.client_url and "socket_connect_timeout=2.5" not in own.client_url
    for bad in ("0", "-1", "x", ""):
        with pytest.raises(sqlkv.ConfigError, match="timeout"):
            parse_redis_url(f"redis://127.0.0.1:1/0?timeout={bad}")


async def test_redis_that_stops_answering_under_the_async_api_is_bounded(stoppable_redis, caplog):
    pytest.importorskip("redis")
    server, stop = stoppable_redis
    store = sqlkv.open_store(server.url + "?timeout=0.3")
    try:
        # Redis's own timeout acts, well before sqlkv's (30 s by default).
        writer, reader = await _writer_and_reader(store, store_timeout=sqlkv.SqliteVfs().options.store_timeout)
        stop()
        with pytest.raises(sqlkv.StoreError, match="Timeout"):
            await asyncio.wait_for(reader.query("SELECT x FROM t"), BOUND)
        with pytest.raises(sqlkv.OutcomeUnknownError):
            await asyncio.wait_for(writer.run("INSERT INTO t VALUES (2)"), BOUND)
        caplog.set_level(logging.WARNING, logger="sqlkv")
        await asyncio.wait_for(writer.close(), BOUND)
        await asyncio.wait_for(reader.close(), BOUND)
        assert "releasing the lease of database 'a.db' failed" in caplog.text
    finally:
        store.close()


def test_sqlalchemy_urls_take_store_timeout():
    pytest.importorskip("sqlalchemy")
    from sqlalchemy.engine import make_url

    from sqlkv.dbapi2.dialect import connect_args

    assert connect_args(make_url("sqlkv:///a.db?store=memory://&store_timeout=2"))["store_timeout"] == 2.0
    assert connect_args(make_url("sqlkv:///a.db?store=memory://&store_timeout=none"))["store_timeout"] is None


def test_the_maintenance_tools_bound_their_store_calls_too(hanging):
    """``lease_info``, ``check_database`` and the export's open take ``store_timeout``
    and give up on an ``async`` store that stops answering, as the APIs do."""
    store = hanging("async")
    with sqlkv.connect(store, "a.db") as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    store.hang = True
    done = threading.Event()
    outcomes: list[BaseException] = []

    def tools() -> None:
        for call in (
            lambda: sqlkv.lease_info(store, "a.db", store_timeout=TIMEOUT),
            lambda: sqlkv.check_database(store, "a.db", store_timeout=TIMEOUT),
        ):
            try:
                call()
            except BaseException as exc:
                outcomes.append(exc)
        done.set()

    thread = threading.Thread(target=tools, daemon=True)
    thread.start()
    assert done.wait(BOUND), "a maintenance tool waited past its store_timeout"
    assert [type(exc) for exc in outcomes] == [sqlkv.StoreTimeoutError] * 2

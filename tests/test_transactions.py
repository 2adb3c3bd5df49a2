"""Calls, transactions, cancellation and unclosed databases: issue 9 items 2, 3, 8, 10.

Every test runs on both backends (the ``backend`` fixture). Waits are bounded:
every ``Event.wait`` and ``asyncio.wait_for`` has a timeout.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import warnings

import pytest

import sqlkv

WAIT = 10  # seconds any single wait in these tests may take at most


def _count(db_or_tx) -> int:
    return db_or_tx.query("SELECT count(*) FROM t").rows[0][0]


async def _acount(db_or_tx) -> int:
    return (await db_or_tx.query("SELECT count(*) FROM t")).rows[0][0]


# -- item 2: no call leaves a transaction open -----------------------------------


async def test_a_failed_exec_rolls_back_and_other_callers_writes_survive(open_db, new_store):
    """Reproduction (issue 9 item 2): ``exec("BEGIN; INSERT ...(2); INSERT ...(1, dup);
    COMMIT")`` raised on the duplicate and never reached COMMIT; a later
    ``run("INSERT ...")`` from any coroutine returned ``changes=1`` and was
    rolled back at close."""
    store = new_store()
    db = await open_db(store)
    await db.exec("CREATE TABLE t(x UNIQUE); INSERT INTO t VALUES (1)")
    with pytest.raises(sqlkv.SqlError, match="UNIQUE"):
        await db.exec("BEGIN; INSERT INTO t VALUES (2); INSERT INTO t VALUES (1); COMMIT")
    assert not db.in_transaction

    async def other_coroutine() -> sqlkv.RunResult:
        return await db.run("INSERT INTO t VALUES (3)")

    assert (await asyncio.create_task(other_coroutine())).changes == 1
    await db.close()
    db = await open_db(store)
    assert (await db.query("SELECT x FROM t ORDER BY x")).rows == [(1,), (3,)]


@pytest.mark.parametrize("sql", ["BEGIN", "BEGIN IMMEDIATE; INSERT INTO t VALUES (5)", "SAVEPOINT a"])
def test_a_call_may_not_end_with_a_transaction_open(connect_db, sql):
    """``exec("BEGIN")`` used to leave a transaction open that swallowed every
    later call's writes; now it is an error, and rolled back."""
    store = sqlkv.MemoryStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x)")
    with pytest.raises(sqlkv.TransactionError, match="left a transaction open.*rolled back"):
        db.exec(sql)
    assert not db.in_transaction and _count(db) == 0
    db.run("INSERT INTO t VALUES (1)")
    db.close()
    assert _count(connect_db(store)) == 1


def test_sync_transaction_commits_at_the_end_and_rolls_back_on_an_exception(connect_db):
    store = sqlkv.MemoryStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x)")
    with db.transaction() as tx:
        assert db.in_transaction
        tx.run("INSERT INTO t VALUES (1)")
        tx.exec("INSERT INTO t VALUES (2); INSERT INTO t VALUES (3)")
        seen: list = []
        tx.exec("SELECT x FROM t WHERE x > 1 ORDER BY x", lambda row, columns: seen.append((row, columns)))
        assert seen == [([2], ["x"]), ([3], ["x"])]
    assert not db.in_transaction and _count(db) == 3
    with pytest.raises(KeyError):
        with db.transaction(mode="immediate") as tx:
            tx.run("DELETE FROM t")
            raise KeyError("boom")
    assert not db.in_transaction and _count(db) == 3
    db.close()
    assert _count(connect_db(store)) == 3


def test_sync_transaction_ends_early_and_refuses_calls_after(connect_db):
    db = connect_db()
    db.exec("CREATE TABLE t(x)")
    with db.transaction(mode="exclusive") as tx:
        tx.run("INSERT INTO t VALUES (1)")
        tx.rollback()
        assert not db.in_transaction
        assert _count(db) == 0  # the connection is free again
        with pytest.raises(sqlkv.TransactionError, match="is over \\(rolled back\\)"):
            tx.run("INSERT INTO t VALUES (2)")
        with pytest.raises(sqlkv.TransactionError, match="is over"):
            tx.commit()
    with db.transaction() as tx:
        tx.run("INSERT INTO t VALUES (3)")
        tx.commit()
    assert _count(db) == 1
    with pytest.raises(sqlkv.ConfigError, match="mode must be one of deferred, immediate, exclusive"):
        db.transaction(mode="later")


def test_sync_direct_call_from_the_holding_thread_is_refused(connect_db):
    db = connect_db()
    db.exec("CREATE TABLE t(x)")
    with db.transaction() as tx:
        tx.run("INSERT INTO t VALUES (1)")
        for call in (lambda: db.query("SELECT 1"), lambda: db.transaction().__enter__(), db.close):
            with pytest.raises(sqlkv.TransactionError, match="run the call through it"):
                call()
    assert _count(db) == 1


def test_sync_other_threads_wait_for_the_transaction(connect_db):
    db = connect_db()
    db.exec("CREATE TABLE t(x)")
    seen: list[int] = []
    started = threading.Event()

    def other_thread() -> None:
        started.set()
        db.run("INSERT INTO t VALUES (99)")
        seen.append(_count(db))

    with db.transaction() as tx:
        tx.run("INSERT INTO t VALUES (1)")
        thread = threading.Thread(target=other_thread)
        thread.start()
        assert started.wait(WAIT)
        thread.join(0.2)
        assert thread.is_alive()  # waiting for the transaction, not inside it
        assert tx.query("SELECT x FROM t").rows == [(1,)]
        tx.run("INSERT INTO t VALUES (2)")
    thread.join(WAIT)
    assert not thread.is_alive() and seen == [3]


def test_a_transaction_sqlite_rolled_back_cannot_commit(connect_db):
    db = connect_db()
    db.exec(
        "CREATE TABLE t(x); CREATE TABLE guard(x);"
        "CREATE TRIGGER g BEFORE INSERT ON guard BEGIN SELECT RAISE(ROLLBACK, 'refused'); END"
    )
    with pytest.raises(sqlkv.TransactionError, match="rolled back after an error"):
        with db.transaction() as tx:
            tx.run("INSERT INTO t VALUES (1)")
            with pytest.raises(sqlkv.SqlError, match="refused"):
                tx.run("INSERT INTO guard VALUES (1)")
            with pytest.raises(sqlkv.TransactionError, match="rolled back after an error"):
                tx.run("INSERT INTO t VALUES (2)")
    assert not db.in_transaction and _count(db) == 0


def test_a_commit_that_fails_rolls_back(connect_db):
    db = connect_db()
    db.exec(
        "PRAGMA foreign_keys = ON; CREATE TABLE p(id INTEGER PRIMARY KEY);"
        "CREATE TABLE c(p REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(sqlkv.SqlError, match="FOREIGN KEY"):
        with db.transaction() as tx:
            tx.run("INSERT INTO c VALUES (7)")
    assert not db.in_transaction
    assert db.query("SELECT count(*) FROM c").rows == [(0,)]


async def test_async_transaction_holds_the_database_for_its_task(open_db, new_store):
    store = new_store()
    db = await open_db(store)
    await db.exec("CREATE TABLE t(x)")
    order: list[str] = []

    async def other(value: int) -> None:
        await db.run("INSERT INTO t VALUES (?)", [value])
        order.append(f"other {value}")

    async with db.transaction() as tx:
        assert db.in_transaction
        await tx.run("INSERT INTO t VALUES (1)")
        others = [asyncio.create_task(other(v)) for v in (10, 11, 12)]
        await asyncio.sleep(0.05)
        assert order == [] and (await tx.query("SELECT x FROM t")).rows == [(1,)]
        for call in (lambda: db.query("SELECT 1"), db.close, lambda: db.transaction().__aenter__()):
            with pytest.raises(sqlkv.TransactionError, match="run the call through it"):
                await call()
        seen: list = []

        async def note(row: list, columns: list[str]) -> None:
            seen.append((row, columns))

        await tx.exec("INSERT INTO t VALUES (2); SELECT x FROM t ORDER BY x", note)
        assert seen == [([1], ["x"]), ([2], ["x"])]
        order.append("commit")
    await asyncio.wait_for(asyncio.gather(*others), WAIT)
    # They ran after the commit, in the order made (rowid order).
    assert order[0] == "commit" and sorted(order[1:]) == ["other 10", "other 11", "other 12"]
    assert (await db.query("SELECT x FROM t ORDER BY rowid")).rows == [(1,), (2,), (10,), (11,), (12,)]
    async with db.transaction("immediate") as tx:
        await tx.run("DELETE FROM t")
        await tx.rollback()
        with pytest.raises(sqlkv.TransactionError, match="is over"):
            await tx.run("DELETE FROM t")
    with pytest.raises(ValueError, match="boom"):
        async with db.transaction() as tx:
            await tx.run("DELETE FROM t")
            raise ValueError("boom")
    assert not db.in_transaction
    await db.close()
    db = await open_db(store)
    assert await _acount(db) == 5


async def test_transactions_queued_behind_each_other_run_one_after_another(open_db):
    db = await open_db()
    await db.exec("CREATE TABLE t(x)")

    async def add(value: int) -> None:
        async with db.transaction() as tx:
            before = await _acount(tx)
            await asyncio.sleep(0.001)
            await tx.run("INSERT INTO t VALUES (?)", [before])

    await asyncio.wait_for(asyncio.gather(*(add(i) for i in range(20)), db.run("INSERT INTO t VALUES (-1)")), WAIT)
    values = [row[0] for row in (await db.query("SELECT x FROM t WHERE x >= 0 ORDER BY x")).rows]
    assert len(values) == 20 and len(set(values)) == 20  # no two saw the same count


async def test_close_waits_for_the_transaction_and_refuses_the_calls_behind_it(open_db):
    db = await open_db()
    await db.exec("CREATE TABLE t(x)")
    async with db.transaction() as tx:
        await tx.run("INSERT INTO t VALUES (1)")
        closing = asyncio.create_task(db.close())
        later_call = asyncio.create_task(db.run("INSERT INTO t VALUES (2)"))
        later_tx = asyncio.create_task(db.transaction().__aenter__())
        await asyncio.sleep(0.01)
        assert not db.closed
    await asyncio.wait_for(closing, WAIT)
    for task in (later_call, later_tx):
        with pytest.raises(sqlkv.ClosedError):
            await asyncio.wait_for(task, WAIT)
    assert db.closed and db._worker._released


# -- item 3: cancellation --------------------------------------------------------


async def test_a_call_cancelled_while_queued_never_runs(open_db):
    """Reproduction (issue 9 item 3): a call cancelled while still queued ran
    anyway and committed; the caller got ``CancelledError`` and a retry
    duplicated it."""
    db = await open_db()
    await db.exec("CREATE TABLE t(x)")
    release = threading.Event()
    busy = db._worker.submit(release.wait, WAIT)  # holds the worker thread
    insert = asyncio.create_task(db.run("INSERT INTO t VALUES (1)"))
    await asyncio.sleep(0.01)
    insert.cancel()
    with pytest.raises(asyncio.CancelledError):
        await insert
    release.set()
    await busy
    assert await _acount(db) == 0
    # Queued behind a transaction of another task: the same.
    async with db.transaction() as tx:
        insert = asyncio.create_task(db.run("INSERT INTO t VALUES (2)"))
        await asyncio.sleep(0.01)
        insert.cancel()
        with pytest.raises(asyncio.CancelledError):
            await insert
        await tx.run("INSERT INTO t VALUES (3)")
    assert (await db.query("SELECT x FROM t")).rows == [(3,)]


class _BlockingStore(sqlkv.MemoryStore):
    """A MemoryStore whose writes wait for ``release`` once ``block`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.block = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def _wait(self) -> None:
        if self.block:
            self.entered.set()
            assert self.release.wait(WAIT)

    def put_batch(self, entries):
        self._wait()
        return super().put_batch(entries)

    def write_batch(self, puts, deletes, expect):
        self._wait()
        return super().write_batch(puts, deletes, expect)


async def test_a_call_cancelled_while_running_completes_whole(open_db):
    store = _BlockingStore()
    db = await open_db(store, lease_seconds=None)
    await db.exec("CREATE TABLE t(x)")
    store.block = True
    insert = asyncio.create_task(db.exec("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"))
    assert await asyncio.to_thread(store.entered.wait, WAIT)  # committing the first INSERT
    insert.cancel()
    with pytest.raises(asyncio.CancelledError):
        await insert
    store.release.set()
    assert (await db.query("SELECT x FROM t ORDER BY x")).rows == [(1,), (2,)]


async def test_an_open_cancelled_while_running_closes_what_it_opened(backend):
    store = _BlockingStore()
    store.block = True  # the lease-taking write waits
    vfs = sqlkv.SqliteVfs(backend=backend)
    opening = asyncio.create_task(vfs.open("app.db", store))
    assert await asyncio.to_thread(store.entered.wait, WAIT)
    opening.cancel()
    store.release.set()
    with pytest.raises(asyncio.CancelledError):
        await opening
    store.block = False
    # The open completed on the worker, and was closed there: its lease is free.
    db = await vfs.open("app.db", store)
    await db.close()


async def test_cancelling_the_body_of_a_transaction_rolls_it_back(open_db):
    db = await open_db()
    await db.exec("CREATE TABLE t(x)")
    inside = asyncio.Event()

    async def body() -> None:
        async with db.transaction() as tx:
            await tx.run("INSERT INTO t VALUES (1)")
            inside.set()
            await asyncio.sleep(WAIT * 10)

    task = asyncio.create_task(body())
    waiting = asyncio.create_task(db.run("INSERT INTO t VALUES (2)"))
    await asyncio.wait_for(inside.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(waiting, WAIT)
    assert not db.in_transaction
    assert (await db.query("SELECT x FROM t")).rows == [(2,)]


async def test_a_call_cancelled_behind_a_transaction_ending_in_the_same_turn(open_db):
    """Issue 20 item 11: a call cancelled while it waits behind a transaction()
    that ends in the same loop turn raised ``ValueError: list.remove(x)``: the
    end of the transaction had already passed over its place in line."""
    db = await open_db()
    await db.exec("CREATE TABLE t(x)")
    async with db.transaction() as tx:
        await tx.run("INSERT INTO t VALUES (1)")
        waiting = asyncio.create_task(db.run("INSERT INTO t VALUES (2)"))
        await asyncio.sleep(0)  # it waits for the transaction to end
        waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await db.query("SELECT x FROM t")).rows == [(1,)]


async def test_a_call_timed_out_behind_a_transaction_ending_in_the_same_turn(open_db):
    """The same with ``asyncio.wait_for``: ``TimeoutError``, not ``ValueError``."""
    db = await open_db()
    await db.exec("CREATE TABLE t(x)")
    async with db.transaction() as tx:
        await tx.run("INSERT INTO t VALUES (1)")
        call = asyncio.ensure_future(db.run("INSERT INTO t VALUES (2)"))
        timed = asyncio.create_task(asyncio.wait_for(call, 0.001))
        for _ in range(100_000):  # bounded: the timeout cancels the call within a few turns
            if call.cancelling() or call.done():
                break
            await asyncio.sleep(0)
        assert call.cancelling(), "wait_for did not cancel the waiting call"
        # The transaction ends in the turn its waiter was cancelled in.
    with pytest.raises(TimeoutError):
        await timed
    assert (await db.query("SELECT x FROM t")).rows == [(1,)]


# -- item 8: a database dropped without close() -----------------------------------


def _renewer_threads() -> list[threading.Thread]:
    """The lease renewer threads alive (one per store the process holds leases on)."""
    return [t for t in threading.enumerate() if t.name == "sqlkv-lease-renewer" and t.is_alive()]


def test_a_connection_dropped_without_close_releases_its_lease(backend):
    """Reproduction (issue 9 item 8): a sync ``Connection`` dropped without
    ``close()`` kept its lease and its renewer for the life of the process: no
    other writer could open the database."""
    store = sqlkv.MemoryStore()
    db = sqlkv.connect(store, "dropped.db", backend=backend)
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    assert len(_renewer_threads()) == 1
    with pytest.warns(ResourceWarning, match="'dropped.db' was dropped without close"):
        del db
        gc.collect()
    assert _renewer_threads() == []
    with sqlkv.connect(store, "dropped.db", backend=backend, lock_timeout=0) as again:
        assert _count(again) == 1


async def test_an_async_database_dropped_without_close_warns(backend):
    db = await sqlkv.SqliteVfs(backend=backend).open("dropped.db", sqlkv.MemoryStore())
    pool = db._worker.pool
    with pytest.warns(ResourceWarning, match="sqlkv.Database 'dropped.db' was dropped without close"):
        del db
        gc.collect()
    await asyncio.wait_for(asyncio.wrap_future(pool.ended), WAIT)
    assert pool.threads == 0


# -- item 10: close() from another event loop --------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_close_from_another_event_loop_releases_everything(backend):
    """Reproduction (issue 9 item 10): ``close()`` from another event loop raised
    a raw ``RuntimeError`` and leaked the database's descriptors."""
    store = sqlkv.MemoryStore()
    before = _open_fds()

    async def open_it() -> sqlkv.Database:
        db = await sqlkv.SqliteVfs(backend=backend).open("app.db", store)
        await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        return db

    db = asyncio.run(open_it())  # its loop is closed when this returns
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        asyncio.run(db.close())
    assert db.closed and _open_fds() == before
    with pytest.raises(sqlkv.ClosedError):
        asyncio.run(db.query("SELECT 1"))
    with sqlkv.connect(store, "app.db", backend=backend, lock_timeout=0) as again:
        assert _count(again) == 1


def test_close_from_another_event_loop_is_handed_to_the_running_one(backend):
    store = sqlkv.MemoryStore()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        db = asyncio.run_coroutine_threadsafe(
            sqlkv.SqliteVfs(backend=backend).open("app.db", store), loop
        ).result(WAIT)
        asyncio.run(db.close())
        assert db.closed and db._worker._released
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()
    with sqlkv.connect(store, "app.db", backend=backend, lock_timeout=0) as again:
        assert again.query("SELECT 1").rows == [(1,)]

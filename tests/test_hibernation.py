"""Hibernation (issue 12): an idle async database gives back its SQLite
connection and caches, keeps its lease, and wakes at its next call."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from helpers import CountingStore

import sqlkv
from sqlkv.testing import FaultyStore

#: Hibernation delay for these tests, and the bound on every wait for it.
AFTER = 0.05
WAIT_S = 10.0


async def _until(condition: Any, what: str) -> None:
    for _ in range(int(WAIT_S / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def _open(store: Any, backend: str, **options: Any) -> sqlkv.Database:
    options.setdefault("hibernate_after", AFTER)
    return await sqlkv.SqliteVfs(backend=backend, **options).open("app.db", store)


def _lease_value(store: sqlkv.MemoryStore, db: sqlkv.Database) -> bytes | None:
    return store.get(db._engine._lease_request.keys()[0])  # type: ignore[attr-defined]


async def test_an_idle_database_hibernates_and_wakes_with_its_data_version_and_lease(backend):
    inner = sqlkv.MemoryStore()
    db = await _open(inner, backend)
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)")
    version, lease = db.version, _lease_value(inner, db)
    assert lease is not None and not db.hibernating
    await _until(lambda: db.hibernating, "the idle database to hibernate")
    assert db.version == version
    db.stats.reset()
    assert (await db.query("SELECT sum(x) FROM t")).rows == [(3,)]
    # Waking read the FileMeta and the database's chunks in one round trip, and
    # took no lease: the one it held is still its own.
    assert db.stats.round_trips == 1
    assert not db.hibernating
    assert _lease_value(inner, db) == lease
    commits = db.stats.commits
    await db.run("INSERT INTO t VALUES (3)")
    assert db.stats.commits == commits + 1 and db.version == version + 1
    await db.close()
    again = await sqlkv.SqliteVfs(backend=backend).open("app.db", inner)
    assert (await again.query("SELECT sum(x) FROM t")).rows == [(6,)]
    await again.close()


async def test_a_hibernating_database_holds_its_lease_against_other_writers(backend):
    store = sqlkv.MemoryStore()
    db = await _open(store, backend)
    await db.exec("CREATE TABLE t(x)")
    assert await db.hibernate()
    with pytest.raises(sqlkv.LockedError):
        await sqlkv.SqliteVfs(backend=backend).open("app.db", store)
    await db.close()
    # Closed while hibernating: the lease is released.
    other = await sqlkv.SqliteVfs(backend=backend).open("app.db", store)
    assert (await other.query("SELECT count(*) FROM t")).rows == [(0,)]
    await other.close()


async def test_no_hibernation_while_a_transaction_is_open(backend):
    db = await _open(sqlkv.MemoryStore(), backend)
    await db.exec("CREATE TABLE t(x)")
    async with db.transaction() as tx:
        await tx.run("INSERT INTO t VALUES (1)")
        assert not await db.hibernate()
        await asyncio.sleep(AFTER * 4)
        assert not db.hibernating
        await tx.run("INSERT INTO t VALUES (2)")
    await _until(lambda: db.hibernating, "hibernation after the transaction ended")
    assert (await db.query("SELECT count(*) FROM t")).rows == [(2,)]
    await db.close()


async def test_a_busy_database_does_not_hibernate(backend):
    db = await _open(sqlkv.MemoryStore(), backend, hibernate_after=0.2)
    await db.exec("CREATE TABLE t(x)")
    for i in range(40):  # 40 calls 10 ms apart: never 0.2 s idle
        await db.run("INSERT INTO t VALUES (?)", [i])
        assert not db.hibernating
        await asyncio.sleep(0.01)
    await db.close()


async def test_hibernate_after_none_never_hibernates(backend):
    db = await _open(sqlkv.MemoryStore(), backend, hibernate_after=None)
    await db.exec("CREATE TABLE t(x)")
    assert db._timer is None
    await asyncio.sleep(AFTER * 4)
    assert not db.hibernating
    await db.close()


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "60", True])
def test_a_bad_hibernate_after_is_refused(bad):
    with pytest.raises(sqlkv.ConfigError, match="hibernate_after"):
        sqlkv.SqliteVfs(hibernate_after=bad)


async def test_a_store_failure_while_waking_fails_the_call_and_the_next_one_wakes_it(backend):
    inner = sqlkv.MemoryStore()
    faulty = FaultyStore(inner)
    db = await _open(faulty, backend, lease_seconds=None)  # no renewal may take the fault
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (7)")
    assert await db.hibernate()
    faulty.fail_at = faulty.calls + 1
    with pytest.raises(sqlkv.StoreError):
        await db.query("SELECT x FROM t")
    assert db.hibernating
    assert (await db.query("SELECT x FROM t")).rows == [(7,)]
    await db.close()


async def test_a_reader_hibernates_and_wakes_at_the_latest_commit(backend):
    store = sqlkv.MemoryStore()
    writer = await sqlkv.SqliteVfs(backend=backend, hibernate_after=None).open("app.db", store)
    await writer.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    reader = await sqlkv.SqliteVfs(backend=backend, hibernate_after=AFTER).open("app.db", store, readonly=True)
    assert (await reader.query("SELECT count(*) FROM t")).rows == [(1,)]
    await _until(lambda: reader.hibernating, "the reader to hibernate")
    seen = reader.version
    await writer.run("INSERT INTO t VALUES (2)")
    assert (await reader.query("SELECT count(*) FROM t")).rows == [(2,)]
    assert reader.version == seen + 1
    await reader.close()
    await writer.close()


async def test_a_database_dropped_while_hibernating_warns_and_releases_its_lease(backend):
    store = sqlkv.MemoryStore()
    db = await _open(store, backend)
    await db.exec("CREATE TABLE t(x)")
    assert await db.hibernate()
    pool = db._worker.pool
    with pytest.warns(ResourceWarning, match="dropped without close"):
        del db
        gc.collect()
    await asyncio.wait_for(asyncio.wrap_future(pool.ended), WAIT_S)
    other = await sqlkv.SqliteVfs(backend=backend).open("app.db", store)  # the lease is free
    await other.close()


async def test_hibernation_keeps_no_sqlite_connection_and_no_cache(backend):
    store = CountingStore(sqlkv.MemoryStore())
    db = await _open(store, backend)
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    engine = db._engine
    assert await db.hibernate()
    assert not hasattr(engine, "conn") and not hasattr(engine, "storage")
    assert (await db.query("SELECT x FROM t")).rows == [(1,)]
    assert hasattr(engine, "conn")
    await db.close()

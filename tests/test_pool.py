"""Many databases on one event loop: one bounded thread pool, each database's calls in order."""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import pytest

import sqlkv
from sqlkv.runtime.pool import pool_of
from sqlkv.stores.wrapper import StoreWrapper

WAIT = 30


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class GateStore(StoreWrapper):
    """A MemoryStore whose writes wait at a gate while it is closed (a slow store call)."""

    def __init__(self) -> None:
        super().__init__(sqlkv.MemoryStore())
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def _call(self, kind, *args):
        if kind in ("put", "put_batch", "delete_batch", "write_batch") and not self.gate.is_set():
            self.waiting.set()
            assert self.gate.wait(WAIT), "the gate was never opened"
        return super()._call(kind, *args)


async def test_each_database_runs_its_calls_in_order_under_many_callers(backend):
    vfs = sqlkv.SqliteVfs(backend=backend, pool_size=3, lease_seconds=None)
    store = sqlkv.MemoryStore()
    dbs = [await vfs.open(f"db{i}.db", store) for i in range(12)]
    for db in dbs:
        await db.exec("CREATE TABLE t(seq INTEGER)")
    # Every database gets 25 calls from 25 coroutines, interleaved across databases.
    calls = [db.run("INSERT INTO t VALUES (?)", [n]) for n in range(25) for db in dbs]
    await asyncio.wait_for(asyncio.gather(*calls), WAIT)
    for db in dbs:
        rows = (await db.query("SELECT seq FROM t ORDER BY rowid")).rows
        assert [seq for (seq,) in rows] == list(range(25))
    assert pool_of(asyncio.get_running_loop()).threads <= 3
    for db in dbs:
        await db.close()


async def _stuck_in_the_store(vfs: sqlkv.SqliteVfs, gated: GateStore) -> tuple[sqlkv.Database, asyncio.Future]:
    """A database of ``gated`` whose INSERT waits in the store (on a pool thread)."""
    slow = await vfs.open("slow.db", gated)
    await slow.exec("CREATE TABLE t(x)")
    gated.gate.clear()
    stuck = asyncio.ensure_future(slow.run("INSERT INTO t VALUES (1)"))
    assert await asyncio.to_thread(gated.waiting.wait, WAIT)
    return slow, stuck


async def test_a_database_blocked_in_the_store_does_not_stall_the_others(backend):
    gated = GateStore()
    vfs = sqlkv.SqliteVfs(backend=backend, pool_size=2, lease_seconds=None)
    others = [await vfs.open(f"fast{i}.db", sqlkv.MemoryStore()) for i in range(10)]
    slow, stuck = await _stuck_in_the_store(vfs, gated)
    # One of the two threads waits in the store; the other serves every other database.
    for db in others:
        await asyncio.wait_for(db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)"), WAIT)
        assert (await db.query("SELECT count(*) FROM t")).rows == [(1,)]
    assert not stuck.done()
    gated.gate.set()
    assert (await asyncio.wait_for(stuck, WAIT)).changes == 1
    for db in [slow, *others]:
        await db.close()


async def test_a_blocked_pool_holds_calls_beyond_its_size_until_a_thread_frees(backend):
    gated = GateStore()
    vfs = sqlkv.SqliteVfs(backend=backend, pool_size=1, lease_seconds=None)
    other = await vfs.open("other.db", sqlkv.MemoryStore())
    slow, stuck = await _stuck_in_the_store(vfs, gated)
    waiting = asyncio.ensure_future(other.query("SELECT 1"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # the pool's only thread is in the store
    gated.gate.set()
    assert (await asyncio.wait_for(waiting, WAIT)).rows == [(1,)]
    await asyncio.wait_for(stuck, WAIT)
    await slow.close()
    await other.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
async def test_many_databases_cost_no_thread_or_descriptor_each_and_leave_nothing(backend):
    gc.collect()
    threads_before, fds_before = threading.active_count(), _open_fds()
    vfs = sqlkv.SqliteVfs(backend=backend, pool_size=2)
    store = sqlkv.MemoryStore()
    dbs = [await vfs.open(f"db{i}.db", store) for i in range(60)]
    await asyncio.gather(*(db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)") for db in dbs))
    assert threading.active_count() - threads_before <= 2 + 1  # the pool, and one lease renewer
    assert _open_fds() - fds_before <= 2 + 2 * 2  # the loop's bell, one bell per thread
    await asyncio.gather(*(db.close() for db in dbs[:-1]))
    dropped = dbs.pop()
    pool = pool_of(asyncio.get_running_loop())
    del dbs
    with pytest.warns(ResourceWarning, match="dropped without close"):
        del dropped
        gc.collect()
    await asyncio.wait_for(asyncio.wrap_future(pool.ended), WAIT)
    for _ in range(200):  # the lease renewer ends with its last lease
        if threading.active_count() == threads_before:
            break
        await asyncio.sleep(0.01)
    assert threading.active_count() == threads_before
    assert _open_fds() == fds_before
    assert pool_of(asyncio.get_running_loop()) is None


async def test_pool_size_is_checked_and_fixed_per_loop():
    with pytest.raises(sqlkv.ConfigError, match="pool_size must be a whole number"):
        sqlkv.SqliteVfs(pool_size=0)
    first = await sqlkv.SqliteVfs(pool_size=2, lease_seconds=None).open("a.db", sqlkv.MemoryStore())
    try:
        with pytest.raises(sqlkv.ConfigError, match="pool already has 2 threads"):
            await sqlkv.SqliteVfs(pool_size=3).open("b.db", sqlkv.MemoryStore())
        same = await sqlkv.SqliteVfs(pool_size=2).open("c.db", sqlkv.MemoryStore())
        await same.close()
    finally:
        await first.close()

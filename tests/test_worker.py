"""The thread pool behind the async API: order, errors, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest

import sqlkv
from sqlkv.runtime import pool as worker_module
from sqlkv.runtime.pool import Worker, pool_of


async def test_calls_run_one_at_a_time_in_the_order_made():
    worker = Worker(asyncio.get_running_loop())
    seen: list[int] = []
    running = []

    def job(i: int) -> int:
        running.append(i)
        assert len(running) == 1, "two calls ran at once"
        time.sleep(0.001)
        seen.append(i)
        running.remove(i)
        return i * i

    results = await asyncio.wait_for(asyncio.gather(*(worker.submit(job, i) for i in range(30))), 30)
    assert results == [i * i for i in range(30)]
    assert seen == list(range(30))
    await worker.stop()


async def test_calls_run_off_the_event_loop_thread():
    worker = Worker(asyncio.get_running_loop())
    assert await worker.submit(threading.get_ident) != threading.get_ident()
    await worker.stop()


async def test_an_exception_reaches_the_caller_and_the_worker_goes_on():
    worker = Worker(asyncio.get_running_loop())

    def fail() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        await worker.submit(fail)
    assert await worker.submit(lambda: 7) == 7
    await worker.stop()


async def test_a_cancelled_call_does_not_stop_the_next():
    worker = Worker(asyncio.get_running_loop())
    release = threading.Event()
    slow = worker.submit(release.wait, 10)
    slow.cancel()
    release.set()
    assert await asyncio.wait_for(worker.submit(lambda: "next"), 10) == "next"
    await worker.stop()


async def test_stop_runs_queued_calls_then_ends_the_thread_and_closes_its_pipes():
    worker = Worker(asyncio.get_running_loop())
    done = []
    futures = [worker.submit(done.append, i) for i in range(5)]
    pool = worker.pool
    fds = (pool._to_loop.read_fd, pool._to_loop.write_fd)
    threads = [t.thread for t in pool._threads]
    await worker.stop()
    assert done == list(range(5)) and all(f.done() for f in futures)
    # The pool's last worker left: its threads have ended and its pipe is closed.
    assert threads and not any(t.is_alive() for t in threads)
    assert pool.ended.done() and pool_of(asyncio.get_running_loop()) is None
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    with pytest.raises(RuntimeError, match="stopped"):
        worker.submit(lambda: None)


async def test_database_close_waits_for_calls_made_before_it():
    db = await sqlkv.SqliteVfs(backend="pages").open("app.db", sqlkv.MemoryStore())
    await db.exec("CREATE TABLE t(k INTEGER PRIMARY KEY)")
    pending = [asyncio.ensure_future(db.run(f"INSERT INTO t VALUES ({k})")) for k in range(20)]
    await asyncio.sleep(0)  # let every insert be queued before close
    await db.close()
    assert all(p.done() and p.exception() is None for p in pending)
    with pytest.raises(sqlkv.ClosedError):
        await db.query("SELECT 1")


async def test_a_database_dropped_without_close_closes_its_engine_and_ends_its_thread():
    import gc

    import apsw

    db = await sqlkv.SqliteVfs(backend="pages").open("app.db", sqlkv.MemoryStore())
    await db.exec("CREATE TABLE t(x)")
    worker, engine = db._worker, db._engine
    threads = [t.thread for t in worker.pool._threads]
    with pytest.warns(ResourceWarning, match="dropped without close"):
        del db
        gc.collect()
    await asyncio.wait_for(asyncio.wrap_future(worker.pool.ended), 10)
    assert worker._released and not any(t.is_alive() for t in threads)
    with pytest.raises(apsw.ConnectionClosedError):
        engine.conn.execute("SELECT 1")


async def test_call_spins_only_for_sync_stores(backend):
    from helpers import AsyncMemoryStore

    vfs = sqlkv.SqliteVfs(backend=backend)
    sync_db = await vfs.open("a.db", sqlkv.MemoryStore())
    async_db = await vfs.open("a.db", AsyncMemoryStore())
    try:
        assert sync_db._worker._spin > 0
        # An async store's coroutines run on the loop: the loop waits without
        # sleeping only while nothing waits to run on it.
        assert async_db._worker._spin_while_loop_idle and not sync_db._worker._spin_while_loop_idle
        assert (await async_db.query("SELECT 1")).rows == [(1,)]
    finally:
        await sync_db.close()
        await async_db.close()


async def test_spinning_off_by_environment(monkeypatch):
    monkeypatch.setenv("SQLKV_ASYNC_SPIN_US", "0")
    worker = Worker(asyncio.get_running_loop())
    try:
        assert worker._spin == 0
        assert await worker.call(lambda: 41 + 1) == 42
    finally:
        await worker.stop()


async def test_call_returns_results_and_errors_in_order():
    worker = Worker(asyncio.get_running_loop())
    try:
        results = [await worker.call(lambda i=i: i * i) for i in range(50)]
        assert results == [i * i for i in range(50)]
        with pytest.raises(ZeroDivisionError):
            await worker.call(lambda: 1 / 0)
        assert await worker.call(time.sleep, 0.002) is None  # longer than the spin: awaited
    finally:
        await worker.stop()


async def test_an_answer_found_while_the_loop_looks_rings_no_bell(monkeypatch):
    # Long enough to look for every answer of a call that returns at once.
    monkeypatch.setenv("SQLKV_ASYNC_SPIN_US", "500000")
    worker = Worker(asyncio.get_running_loop())
    rings = []
    bell = worker.pool._to_loop
    monkeypatch.setattr(bell, "ring", lambda ring=bell.ring: (rings.append(1), ring()))
    try:
        assert [await worker.call(lambda i=i: i) for i in range(50)] == list(range(50))
        assert rings == []
    finally:
        await worker.stop()


async def test_an_answer_after_the_loop_stopped_looking_still_wakes_it(monkeypatch):
    monkeypatch.setenv("SQLKV_ASYNC_SPIN_US", "1")
    worker = Worker(asyncio.get_running_loop())
    try:
        # Each call outlasts the look: its answer must ring, or the await never ends.
        calls = [asyncio.wait_for(worker.call(time.sleep, 0.002), 10) for _ in range(20)]
        for call in calls:
            assert await call is None
    finally:
        await worker.stop()


async def test_a_thread_lingering_for_its_caller_needs_no_wake_up(monkeypatch):
    monkeypatch.setattr(worker_module, "LINGER", 5.0)  # the caller always comes back in time
    worker = Worker(asyncio.get_running_loop())
    try:
        await worker.call(lambda: None)  # starts the thread
        (thread,) = worker.pool._threads
        rings = []
        monkeypatch.setattr(thread.bell, "ring", lambda ring=thread.bell.ring: (rings.append(1), ring()))
        assert [await worker.call(lambda i=i: i) for i in range(50)] == list(range(50))
        # At most the first (the thread may have parked after the call that started it).
        assert len(rings) <= 1
    finally:
        await worker.stop()


async def test_a_thread_parks_at_once_after_an_answer_nobody_looked_for(monkeypatch):
    monkeypatch.setattr(worker_module, "LINGER", 60.0)
    worker = Worker(asyncio.get_running_loop())
    try:
        assert await worker.submit(lambda: 1) == 1  # awaited, not looked for
        (thread,) = worker.pool._threads
        for _ in range(1000):  # parked well within the linger's 60 s (at most 10 s)
            if thread in worker.pool._idle:
                break
            await asyncio.sleep(0.01)
        assert thread in worker.pool._idle
    finally:
        await worker.stop()


async def test_no_lingering_without_spinning(monkeypatch):
    monkeypatch.setenv("SQLKV_ASYNC_SPIN_US", "0")
    monkeypatch.setattr(worker_module, "LINGER", 60.0)
    worker = Worker(asyncio.get_running_loop())

    async def parked(thread: Any) -> bool:
        for _ in range(1000):  # well within the linger's 60 s (at most 10 s)
            if thread in worker.pool._idle:
                return True
            await asyncio.sleep(0.01)
        return False

    try:
        await worker.call(lambda: None)
        (thread,) = worker.pool._threads
        rings = []
        monkeypatch.setattr(thread.bell, "ring", lambda ring=thread.bell.ring: (rings.append(1), ring()))
        for i in range(5):
            assert await parked(thread)
            assert await worker.call(lambda i=i: i) == i
        assert await parked(thread)
        # Each call found the thread parked, not lingering: woken by its bell.
        assert len(rings) == 5
    finally:
        await worker.stop()


async def test_a_lingering_thread_leaves_at_once_for_another_database(monkeypatch):
    monkeypatch.setattr(worker_module, "LINGER", 60.0)
    loop = asyncio.get_running_loop()
    first, second = Worker(loop, pool_size=1), Worker(loop, pool_size=1)
    try:
        await first.call(lambda: None)  # the only thread now lingers on `first`
        start = time.monotonic()
        assert await asyncio.wait_for(second.call(lambda: "other"), 30) == "other"
        assert await asyncio.wait_for(first.call(lambda: "again"), 30) == "again"
        assert time.monotonic() - start < 30  # not held for the linger's 60 s
    finally:
        await asyncio.wait_for(asyncio.gather(first.stop(), second.stop()), 30)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only")
async def test_worker_follows_the_loops_core():
    import ctypes

    worker = Worker(asyncio.get_running_loop())
    try:
        pool = worker.pool
        if not pool._follow:
            pytest.skip("this system does not let a thread choose its core")
        cpu = await worker.call(ctypes.CDLL(None).sched_getcpu)
        await worker.call(lambda: None)  # the thread now exists: placed at this hand-off
        assert os.sched_getaffinity(pool._threads[0].thread.native_id) == {pool._cpu}
        assert cpu == pool._cpu or await worker.call(ctypes.CDLL(None).sched_getcpu) == pool._cpu
    finally:
        await worker.stop()

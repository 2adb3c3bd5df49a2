"""Redis under faults: the server killed mid-stream, connections dropped mid-commit,
and the persistence guarantees the README states."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from helpers import integrity, unique_namespace
from redis_servers import CuttingProxy, RedisServer

import sqlkv

#: No renewal runs during these tests: every command the server sees is a commit's.
LONG_LEASE = 600


def rows(store, name: str = "app.db") -> list:
    """The ids in ``t``, read through a fresh read-only open, after an integrity check."""
    with sqlkv.connect(store, name, readonly=True) as db:
        assert integrity(db) == [("ok",)]
        return [r[0] for r in db.query("SELECT id FROM t ORDER BY id").rows]


def test_kill9_with_appendfsync_always_keeps_every_acknowledged_commit(tmp_path):
    server = RedisServer(tmp_path / "redis", persistence="always").start()
    url = f"{server.url}?namespace={unique_namespace()}"
    store = sqlkv.open_store(url)
    db = sqlkv.connect(store, "app.db", lease_seconds=LONG_LEASE)
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    acked: list[int] = []
    failures: list[BaseException] = []

    def commit_stream() -> None:
        for i in range(1, 5001):
            try:
                db.run("INSERT INTO t VALUES (?, ?)", [i, "x" * 200])
            except sqlkv.Error as exc:
                failures.append(exc)
                return
            acked.append(i)

    writer = threading.Thread(target=commit_stream)
    try:
        writer.start()
        deadline = time.monotonic() + 60
        while len(acked) < 200 and writer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill9()
        writer.join(timeout=60)
        assert not writer.is_alive()
        assert failures and isinstance(failures[0], sqlkv.StoreError), "the kill went unnoticed"
        assert 200 <= len(acked) < 5000
        server.start()  # same port, same files: it replays its AOF
        db.close()  # releases the lease on the restarted server
        reopened = sqlkv.open_store(url)
        try:
            got = rows(reopened)
        finally:
            reopened.close()
        assert got == list(range(1, len(got) + 1)), "a commit is missing or torn"
        # Every commit the writer saw succeed is there; the one in flight may or may not be.
        assert len(acked) <= len(got) <= len(acked) + 1
    finally:
        db.close()
        store.close()
        server.stop()


def test_without_aof_nothing_survives_a_restart(tmp_path):
    server = RedisServer(tmp_path / "redis", persistence="none").start()
    url = f"{server.url}?namespace={unique_namespace()}"
    try:
        with sqlkv.open_store(url) as store:
            with sqlkv.connect(store, "app.db") as db:
                db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)")
        server.restart()
        with sqlkv.open_store(url) as store:
            assert list(store.scan()) == []
    finally:
        server.stop()


def test_a_dropped_connection_mid_commit_is_an_error_and_nothing_is_torn(redis_server):
    proxy = CuttingProxy(redis_server.port)
    namespace = unique_namespace()
    store = sqlkv.open_store(f"{proxy.url}?namespace={namespace}")
    direct = sqlkv.open_store(f"{redis_server.url}?namespace={namespace}")
    db = sqlkv.connect(store, "app.db", lease_seconds=LONG_LEASE)
    try:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        db.run("INSERT INTO t VALUES (1, randomblob(50000))")

        def snapshot() -> dict[bytes, bytes]:
            keys = list(direct.scan())
            return dict(zip(keys, direct.get_batch(keys)))

        before = snapshot()
        proxy.cut_request_after(100)  # the server gets a part of the commit's request
        with pytest.raises(sqlkv.StoreError) as caught:
            db.run("INSERT INTO t VALUES (2, randomblob(50000))")
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
        assert proxy.cuts == 1
        assert snapshot() == before, "a commit cut mid-request changed the store"

        # The same handle goes on: it reopens the database and sees what is stored.
        assert db.query("SELECT id FROM t").rows == [(1,)]
        proxy.cut_next_reply()  # the server applies the commit; its answer is lost
        with pytest.raises(sqlkv.StoreError):
            db.run("INSERT INTO t VALUES (3, randomblob(50000))")
        assert proxy.cuts == 2
        assert rows(direct) == [1, 3], "a commit whose answer was lost must be whole"

        assert db.query("SELECT id FROM t ORDER BY id").rows == [(1,), (3,)]
        db.run("INSERT INTO t VALUES (4, randomblob(100))")
        assert rows(direct) == [1, 3, 4]
    finally:
        db.close()
        store.close()
        direct.close()
        proxy.close()

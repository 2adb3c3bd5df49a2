"""Leases renewed together: one renewer per store, one batch per round where the store allows."""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import Counter

import pytest

import sqlkv
from sqlkv import renewer
from sqlkv.wrapper import StoreWrapper


class CountingStore(StoreWrapper):
    """A MemoryStore with ``write_batch`` (so writers take leases), counting every call."""

    def __init__(self, limits: sqlkv.StoreLimits | None = None) -> None:
        super().__init__(sqlkv.MemoryStore(), limits=limits, write_batch=True)
        self.calls: Counter[str] = Counter()

    def _call(self, kind, *args):
        self.calls[kind] += 1
        return super()._call(kind, *args)

    def reset(self) -> None:
        self.calls.clear()

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _open_many(store, count: int, lease_seconds: float = 60.0) -> list[sqlkv.Connection]:
    conns = [sqlkv.connect(store, f"db{i}.db", lease_seconds=lease_seconds) for i in range(count)]
    for conn in conns:
        conn.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    return conns


def _lease(conn: sqlkv.Connection):
    """The lease ``conn`` holds (a plain value)."""
    return conn._engine._lease_request.lease


def _lost(conn: sqlkv.Connection) -> bool:
    request = conn._engine._lease_request
    return request.leaser.lost(request.lease)


def _renewer(lease):
    return renewer.renewer_of(lease)


def test_one_round_renews_every_lease_of_a_store_in_one_write_batch():
    store = CountingStore()
    conns = _open_many(store, 40)
    try:
        leases = [_lease(conn) for conn in conns]
        shared = {id(_renewer(lease)) for lease in leases}
        assert len(shared) == 1 and renewer.renewer_count() == 1
        store.reset()
        _renewer(leases[0]).renew(leases)
        assert dict(store.calls) == {"write_batch": 1}
        assert not any(_lost(conn) for conn in conns)
    finally:
        for conn in conns:
            conn.close()
    assert renewer.renewer_count() == 0


def test_a_round_keeps_within_the_stores_batch_limits():
    store = CountingStore(limits=sqlkv.StoreLimits(max_batch_keys=20))
    conns = _open_many(store, 45)
    try:
        leases = [_lease(conn) for conn in conns]
        store.reset()
        _renewer(leases[0]).renew(leases)
        assert dict(store.calls) == {"write_batch": 5}  # 10 leases (20 keys) a batch
    finally:
        for conn in conns:
            conn.close()


def test_a_lost_lease_fences_only_its_own_writer(caplog):
    store = CountingStore()
    conns = _open_many(store, 3)
    try:
        leases = [_lease(conn) for conn in conns]
        # Another writer took database db1's lease over (after it expired, say).
        stolen = leases[1]
        store.put(stolen.gen_key, struct.pack(">Q16s", stolen.generation + 1, b"x" * 16))
        store.reset()
        caplog.set_level(logging.WARNING, logger="sqlkv")
        _renewer(leases[0]).renew(leases)
        # The batch was refused, then each lease was tried alone.
        assert dict(store.calls) == {"write_batch": 1 + 3}
        assert [_lost(conn) for conn in conns] == [False, True, False]
        assert "database 'db1.db': another writer took over its lease" in caplog.text
        with pytest.raises(sqlkv.FencedError):
            conns[1].exec("INSERT INTO t VALUES (2)")
        for conn in (conns[0], conns[2]):
            conn.exec("INSERT INTO t VALUES (2)")
            assert conn.query("SELECT count(*) FROM t").rows == [(2,)]
    finally:
        for conn in conns:
            conn.close()


def test_idle_leases_cost_about_one_round_trip_per_interval_and_stay_held():
    store = CountingStore()
    conns = _open_many(store, 30, lease_seconds=0.3)
    try:
        store.reset()
        time.sleep(1.0)  # three lease lengths: without renewals every lease would have expired
        rounds = store.calls["write_batch"]
        # About 10 rounds of one batch each; one per lease would be 300.
        assert 1 <= rounds <= 20 and store.total == rounds
        for conn in conns:
            conn.exec("INSERT INTO t VALUES (2)")  # every writer still holds its lease
        assert not any(_lost(conn) for conn in conns)
    finally:
        for conn in conns:
            conn.close()


def test_a_shorter_lease_opened_later_is_renewed_at_its_own_pace():
    store = CountingStore()
    conns = _open_many(store, 5, lease_seconds=60.0)
    short = sqlkv.connect(store, "short.db", lease_seconds=0.3)
    try:
        store.reset()
        time.sleep(1.0)  # three lengths of the short lease
        assert 2 <= store.calls["write_batch"] <= 20
        short.exec("CREATE TABLE t(x)")  # still its writer's
        assert not _lost(short)
        short.close()
        store.reset()
        time.sleep(0.5)  # the long leases alone: at most the round already due, then 20 s away
        assert store.total <= 1
    finally:
        short.close()
        for conn in conns:
            conn.close()


def test_the_renewer_thread_ends_with_the_last_lease():
    store = sqlkv.MemoryStore()
    before = {t for t in threading.enumerate() if t.name == "sqlkv-lease-renewer"}
    conns = _open_many(store, 5)
    running = {t for t in threading.enumerate() if t.name == "sqlkv-lease-renewer"} - before
    assert len(running) == 1
    for conn in conns:
        conn.close()
    assert not any(t.is_alive() for t in running) and renewer.renewer_count() == 0
    # The leases are gone from the store: another writer opens at once.
    with sqlkv.connect(store, "db3.db", lock_timeout=0) as again:
        assert again.query("SELECT count(*) FROM t").rows == [(1,)]

"""Leases renewed together: one renewer per store, one batch per round where the store allows."""

from __future__ import annotations

import logging
import struct
import threading
import time
import types
from collections import Counter

import pytest

import sqlkv
from sqlkv.storage import renewer
from sqlkv.stores.wrapper import StoreWrapper


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



class _HookedWake(threading.Event):
    """A renewer's wake-up event with hooks that place an interleaving.

    ``parked`` is set when the renewer starts a wait that nothing has woken
    yet; once ``armed``, ``on_set`` runs after every ``set``, and while
    ``paused_wait`` is given the renewer's next wait acts as if its interval
    had passed, but first sets ``paused_wait[0]`` and waits (bounded) for
    ``paused_wait[1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.parked = threading.Event()
        self.armed = False
        self.on_set = lambda: None
        self.paused_wait: tuple[threading.Event, threading.Event] | None = None

    def set(self) -> None:
        super().set()
        if self.armed:
            self.on_set()

    def wait(self, timeout=None) -> bool:
        if self.paused_wait is not None:
            reached, go = self.paused_wait
            self.paused_wait = None
            reached.set()
            go.wait(10)
            return False
        if not self.is_set():
            self.parked.set()
        return super().wait(timeout)


def _connect_hooked(monkeypatch, store):
    """A writer on ``store`` whose (new) renewer has a :class:`_HookedWake` from its
    start, parked in its first unwoken wait; the writer and the event."""
    wakes: list[_HookedWake] = []

    def event() -> _HookedWake:
        wakes.append(_HookedWake())
        return wakes[-1]

    hooked = types.SimpleNamespace(
        Event=event, Lock=threading.Lock, Thread=threading.Thread, current_thread=threading.current_thread
    )
    with monkeypatch.context() as patch:
        patch.setattr(renewer, "threading", hooked)
        conn = sqlkv.connect(store, "a.db", lease_seconds=600)  # renewal interval: 200 s
    assert len(wakes) == 1 and wakes[0].parked.wait(10)
    return conn, wakes[0]


def test_closing_the_last_writer_right_after_the_renewer_read_its_leases_wakes_the_renewer(monkeypatch):
    # Issue 20, item 12: the thread read its leases (interval: 200 s), the last
    # writer closed and woke it, then the thread cleared the wake-up and slept
    # the whole interval, while close() waited for it.
    conn, wake = _connect_hooked(monkeypatch, CountingStore())
    r = _renewer(_lease(conn))
    read, go = threading.Event(), threading.Event()
    original = r._interval

    def interval():
        value = original()
        if value is not None and not read.is_set():
            read.set()  # the leases are read: the close comes now
            go.wait(10)
        return value

    r._interval = interval
    wake.on_set, wake.armed = go.set, True  # the close's wake-up lets the thread go on
    threading.Event.set(wake)  # one more round: it reads the leases, and pauses
    assert read.wait(10)
    closer = threading.Thread(target=conn.close)
    closer.start()
    closer.join(10)  # the renewer's interval is 200 s, its join's bound 30 s
    assert not closer.is_alive(), "close() waited for the renewer's interval"
    assert not r._thread.is_alive() and renewer.renewer_count() == 0
    closer.join(30)


def test_a_round_that_finds_no_lease_left_renews_nothing_and_the_thread_ends_cleanly(monkeypatch):
    # Issue 20, item 12: the interval passed, then the last writer closed before
    # the round read the leases; the empty round died in _transport() with
    # "RuntimeError: generator raised StopIteration".
    died: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    store = CountingStore()
    conn, wake = _connect_hooked(monkeypatch, store)
    r = _renewer(_lease(conn))
    waited, go = threading.Event(), threading.Event()
    wake.paused_wait = (waited, go)
    wake.on_set, wake.armed = go.set, True
    threading.Event.set(wake)  # the thread goes round: its next wait "times out", and pauses
    assert waited.wait(10)  # the round has not begun
    store.reset()
    conn.close()  # the last lease leaves; its wake-up lets the round begin, empty
    r._thread.join(10)
    assert not r._thread.is_alive()
    assert died == [] and store.calls["write_batch"] == 1  # the release, no renewal
    assert r.renew([]) is None and store.calls["write_batch"] == 1

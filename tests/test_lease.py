"""Writer leases and fencing: one writer at a time, on every store with write_batch."""

from __future__ import annotations

import logging
import signal
import struct
import threading
import time

import pytest
from helpers import CountingStore, integrity, unique_namespace
from processes import Worker

import sqlkv
from sqlkv.format.layout import EXT_LEASE, SeedLayout
from sqlkv.storage.lease import Leaser
from sqlkv.stores.contract import StoreClient
from sqlkv.stores.wrapper import AsyncStoreWrapper
from sqlkv.testing import FaultyStore, InjectedFault

LAYOUT = SeedLayout(9)
GEN_KEY = LAYOUT.ext_key("app.db", EXT_LEASE)
EXPIRY_KEY = LAYOUT.ext_key("app.db", EXT_LEASE, b"e")
#: Long enough that no renewal runs during a test that does not wait for one.
LONG_LEASE = 600


def lease_value(number: int, token: bytes = b"t" * 16) -> bytes:
    return struct.pack(">Q16s", number, token)


def generation(store) -> int:
    return struct.unpack(">Q16s", store.get(GEN_KEY))[0]


@pytest.fixture
def connect():
    """``sqlkv.connect``, with every connection it made closed at the end."""
    made = []

    def factory(store, name="app.db", **options):
        db = sqlkv.connect(store, name, **options)
        made.append(db)
        return db

    yield factory
    for db in made:
        db.close()


def test_second_writer_is_refused_and_readers_are_not(connect):
    store = sqlkv.MemoryStore()
    first = sqlkv.connect(store, "app.db", lease_seconds=LONG_LEASE)
    first.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    with pytest.raises(sqlkv.LockedError, match="open for writing elsewhere") as refused:
        sqlkv.connect(store, "app.db")
    # What happened and what to do are attributes (the CLI swaps in its flags), the message both.
    error = refused.value
    assert "open for writing elsewhere" in error.reason and "readonly=True" not in error.reason
    assert "readonly=True" in error.advice and str(error) == f"{error.reason}; {error.advice}"
    before = dict(store._data)
    with sqlkv.connect(store, "app.db", readonly=True) as reader:
        assert reader.query("SELECT x FROM t").rows == [(1,)]
    assert store._data == before, "a read-only open wrote to the store"
    first.close()
    assert store.get(GEN_KEY) is None and store.get(EXPIRY_KEY) is None  # released
    with sqlkv.connect(store, "app.db") as second:
        second.exec("INSERT INTO t VALUES (2)")
        assert generation(store) == 1


def test_an_expired_lease_is_taken_over_with_a_new_generation(connect):
    store = sqlkv.MemoryStore()
    store.put_batch([(GEN_KEY, lease_value(41)), (EXPIRY_KEY, lease_value(1))])  # ended in 1970
    db = connect(store, lease_seconds=LONG_LEASE)
    db.exec("CREATE TABLE t(x)")
    assert generation(store) == 42


def test_a_writer_waits_up_to_lock_timeout(connect):
    store = sqlkv.MemoryStore()
    ends = int(time.time() * 1000) + 300
    store.put_batch([(GEN_KEY, lease_value(7)), (EXPIRY_KEY, lease_value(ends))])
    with pytest.raises(sqlkv.LockedError):
        sqlkv.connect(store, "app.db", lock_timeout=0)
    db = connect(store, lock_timeout=30)  # waits for the other lease to end
    assert time.time() * 1000 >= ends
    assert generation(store) == 8
    db.exec("CREATE TABLE t(x)")


def test_a_fenced_writer_writes_nothing_and_stays_fenced(connect, backend):
    store = sqlkv.MemoryStore()
    stale = connect(store, lease_seconds=LONG_LEASE, backend=backend)
    stale.exec("CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('stale-1')")
    store.delete_batch([EXPIRY_KEY])  # as if its lease had run out while it was paused
    fresh = connect(store, lease_seconds=LONG_LEASE, backend=backend)
    fresh.exec("INSERT INTO t VALUES ('fresh-1')")
    committed = dict(store._data)
    with pytest.raises(sqlkv.FencedError):
        stale.exec("INSERT INTO t VALUES ('stale-2')")
    assert store._data == committed
    fresh.close()  # the lease is free now, but the stale writer's generation is gone
    assert store.get(GEN_KEY) is None
    with pytest.raises(sqlkv.FencedError):
        stale.exec("INSERT INTO t VALUES ('stale-3')")
    assert stale.query("SELECT v FROM t ORDER BY v").rows == [("fresh-1",), ("stale-1",)]
    stale.close()  # its release is refused too: it writes nothing
    assert store.get(GEN_KEY) is None and store.get(EXPIRY_KEY) is None


def test_renewal_keeps_the_lease_and_notices_its_loss(connect):
    store = sqlkv.MemoryStore()
    db = connect(store, lease_seconds=0.3)
    request = db._engine._lease_request
    first = store.get(EXPIRY_KEY)
    deadline = time.monotonic() + 10
    while store.get(EXPIRY_KEY) == first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.get(EXPIRY_KEY) != first, "the lease was not renewed"
    store.put(GEN_KEY, lease_value(99))  # another writer took over
    lease = request.lease
    while not request.leaser.lost(lease) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert request.leaser.lost(lease)
    with pytest.raises(sqlkv.FencedError):
        db.exec("CREATE TABLE t(x)")


class FlakyWrites(sqlkv.MemoryStore):
    """A MemoryStore whose ``write_batch`` fails (without applying) while ``failing``."""

    failing = False

    def write_batch(self, puts, deletes, expect=None):
        if self.failing:
            raise ConnectionError("store unreachable")
        return super().write_batch(puts, deletes, expect)


def test_a_lost_reply_to_the_lease_write_strands_no_lease(backend):
    """Issue 9 item 9: the open's lease write lands but its reply is lost.

    Reproduction: ``store = FaultyStore(MemoryStore(), fail_at=2,
    lose_reply=True)``; ``connect(store, "app.db")`` raises StoreError (call 1
    is the open's get_batch, call 2 the lease write); the store then held the
    lease keys, so a second ``connect(store, "app.db")`` raised LockedError
    for the next ``lease_seconds``. Now the failed open deletes what it sent.
    """
    base = sqlkv.MemoryStore()
    faulty = FaultyStore(base, fail_at=2, lose_reply=True)
    with pytest.raises(sqlkv.StoreError) as caught:
        sqlkv.connect(faulty, "app.db", lease_seconds=LONG_LEASE, backend=backend)
    assert isinstance(caught.value.__cause__, InjectedFault)
    assert faulty.calls == 3, "the failed open did not undo its lease write"
    assert base.get(GEN_KEY) is None and base.get(EXPIRY_KEY) is None
    with sqlkv.connect(faulty, "app.db", lease_seconds=LONG_LEASE, backend=backend) as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        assert generation(base) == 1
    assert base.get(GEN_KEY) is None


def test_a_lease_stranded_by_a_failed_open_is_reclaimed_by_its_process(backend):
    """Issue 9 item 9, when the undo fails too: the lease write's reply is lost
    (inner FaultyStore, call 2) and the delete that undoes it fails (outer
    FaultyStore, call 3). The lease stays in the store, held by nobody; this
    process's next open takes it over at once (generation 2), where before it
    raised LockedError for ``lease_seconds``.
    """
    base = sqlkv.MemoryStore()
    faulty = FaultyStore(FaultyStore(base, fail_at=2, lose_reply=True), fail_at=3)
    with pytest.raises(sqlkv.StoreError):
        sqlkv.connect(faulty, "app.db", lease_seconds=LONG_LEASE, backend=backend)
    assert generation(base) == 1 and base.get(EXPIRY_KEY) is not None  # stranded
    with sqlkv.connect(faulty, "app.db", lease_seconds=LONG_LEASE, backend=backend) as db:
        assert generation(base) == 2
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    assert base.get(GEN_KEY) is None


def test_a_foreign_live_lease_is_never_taken_over(connect):
    """Only this process's orphaned tokens are reclaimed: a live lease of another
    writer (a token never seen here) still refuses the open."""
    store = sqlkv.MemoryStore()
    ends = int(time.time() * 1000) + LONG_LEASE * 1000
    store.put_batch([(GEN_KEY, lease_value(5)), (EXPIRY_KEY, lease_value(ends))])
    with pytest.raises(sqlkv.LockedError):
        sqlkv.connect(store, "app.db")
    assert generation(store) == 5


def test_a_failed_renewal_is_logged(connect, caplog):
    store = FlakyWrites()
    connect(store, lease_seconds=0.3)
    caplog.set_level(logging.WARNING, logger="sqlkv")
    store.failing = True
    deadline = time.monotonic() + 10
    while not caplog.records and time.monotonic() < deadline:
        time.sleep(0.02)
    store.failing = False
    assert caplog.records, "a failed renewal was not logged"
    record = caplog.records[0]
    assert record.name == "sqlkv" and record.levelno == logging.WARNING
    assert "renewing the lease of database 'app.db' failed" in record.getMessage()
    assert "store unreachable" in record.getMessage()


def test_a_failed_release_is_logged_and_reclaimed_by_this_process(caplog):
    store = FlakyWrites()
    db = sqlkv.connect(store, "app.db", lease_seconds=LONG_LEASE)
    db.exec("CREATE TABLE t(x)")
    store.failing = True
    caplog.set_level(logging.WARNING, logger="sqlkv")
    db.close()
    store.failing = False
    assert [r.name for r in caplog.records] == ["sqlkv"]
    assert "releasing the lease of database 'app.db' failed" in caplog.records[0].getMessage()
    assert generation(store) == 1  # still in the store
    with sqlkv.connect(store, "app.db", lease_seconds=LONG_LEASE) as again:
        assert generation(store) == 2
        again.exec("INSERT INTO t VALUES (1)")


def test_lease_traffic_is_its_own(connect):
    store = CountingStore()
    store.write_batch = store.inner.write_batch  # a store that can fence, counted
    db = connect(store, lease_seconds=LONG_LEASE)
    # The lease keys come with the open's one get_batch; taking the lease is the one
    # write_batch more, made by the leaser (through the database's transport, counted
    # apart) and not in the database's stats.
    assert db.stats.round_trips == 1 and store.calls["get_batch"] == 1
    db.exec("CREATE TABLE t(x)")
    assert db.stats.calls["write_batch"] == 1


def _threads(prefix: str) -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(prefix)}


def _wait_for_renewal(store, key: bytes, first: bytes | None) -> None:
    deadline = time.monotonic() + 10
    while store.get(key) == first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.get(key) != first, "the lease was not renewed"


def test_a_sync_connection_on_an_async_store_runs_one_loop_thread(connect):
    """Issue 10: the lease has no store client nor event loop of its own; its
    renewals go through the database's transport, on the connection's one
    private loop thread."""
    base = sqlkv.MemoryStore()
    store = AsyncStoreWrapper(base, write_batch=True)
    loops, renewers = _threads("sqlkv-store-loop"), _threads("sqlkv-lease-")
    db = connect(store, lease_seconds=0.3)
    db.exec("CREATE TABLE t(x)")
    _wait_for_renewal(base, EXPIRY_KEY, base.get(EXPIRY_KEY))
    assert len(_threads("sqlkv-store-loop") - loops) == 1
    assert len(_threads("sqlkv-lease-") - renewers) == 1
    db.close()
    assert base.get(GEN_KEY) is None and base.get(EXPIRY_KEY) is None
    assert not _threads("sqlkv-store-loop") - loops and not _threads("sqlkv-lease-") - renewers


def test_one_leaser_holds_and_renews_several_leases():
    """The shape issue 12 builds on: one leaser per store, one renewer thread for
    all its leases; each is released on its own."""
    store = sqlkv.MemoryStore()
    renewers = _threads("sqlkv-lease-")
    leaser = Leaser(StoreClient(store))
    leases = [leaser.take(LAYOUT, name, 0.3, [None, None])[0] for name in ("a.db", "b.db")]
    assert [lease.generation for lease in leases] == [1, 1]
    assert leases[0].fence != leases[1].fence
    assert len(_threads("sqlkv-lease-") - renewers) == 1
    for lease in leases:
        _wait_for_renewal(store, lease.expiry_key, store.get(lease.expiry_key))
    leaser.release(leases[0])
    assert store.get(leases[0].gen_key) is None
    _wait_for_renewal(store, leases[1].expiry_key, store.get(leases[1].expiry_key))
    leaser.release(leases[1])
    assert store.get(leases[1].gen_key) is None and store.get(leases[1].expiry_key) is None
    assert not _threads("sqlkv-lease-") - renewers
    assert leaser.transport.stats.calls["write_batch"] >= 6  # 2 takes, 3+ renewals, 2 releases


def test_stores_without_write_batch_open_without_a_lease(connect):
    store = CountingStore()  # the five calls only: it cannot fence
    one = connect(store)
    two = connect(store, name="app.db")
    one.exec("CREATE TABLE t(x)")
    assert two.query("SELECT 1").rows == [(1,)]
    assert store.inner.get(GEN_KEY) is None


def test_lease_seconds_none_takes_no_lease(connect):
    store = sqlkv.MemoryStore()
    db = connect(store, lease_seconds=None)
    db.exec("CREATE TABLE t(x)")
    assert store.get(GEN_KEY) is None


@pytest.mark.parametrize(
    "options",
    [{"lease_seconds": 0}, {"lease_seconds": -1}, {"lease_seconds": "5"}, {"lock_timeout": -1},
     {"lock_timeout": None}],
)
def test_bad_lease_options_are_refused(options):
    with pytest.raises(sqlkv.ConfigError, match=next(iter(options))):
        sqlkv.connect(sqlkv.MemoryStore(), "app.db", **options)


def test_a_corrupt_lease_value_is_named():
    store = sqlkv.MemoryStore()
    store.put(GEN_KEY, b"junk")
    with pytest.raises(sqlkv.CorruptError, match=f"{GEN_KEY.hex()}.*check --repair"):
        sqlkv.connect(store, "app.db")
    assert store.get(EXPIRY_KEY) is None


@pytest.mark.parametrize("gen, expiry, taken", [
    (b"junk", None, 1),  # no generation to go on from
    (lease_value(7), b"junk", 8),  # the generation read goes on; the expiry tells nothing
    (b"junk", lease_value(2**62), 1),  # an unreadable generation is no holder, whatever the expiry
], ids=["generation", "expiry", "generation, expiry far ahead"])
def test_only_a_take_asked_to_replaces_an_unreadable_lease(gen, expiry, taken):
    """A take with ``replace_unreadable`` (check --repair, rm) takes over a lease
    value it cannot read, as it would an expired one, and says that what it read
    beside it is not current (its holder may have committed until now); any other
    take refuses it and writes nothing."""
    store = sqlkv.MemoryStore()
    store.put_batch([(k, v) for k, v in ((GEN_KEY, gen), (EXPIRY_KEY, expiry)) if v is not None])
    before = dict(store._data)
    leaser = Leaser(StoreClient(store))
    with pytest.raises(sqlkv.CorruptError, match="check --repair"):
        leaser.take(LAYOUT, "app.db", LONG_LEASE, [gen, expiry])
    assert store._data == before
    lease, current = leaser.take(LAYOUT, "app.db", LONG_LEASE, [gen, expiry], replace_unreadable=True)
    assert (lease.generation, current) == (taken, False)
    assert store.get(GEN_KEY) == lease.fence[GEN_KEY]
    leaser.release(lease)
    assert store.get(GEN_KEY) is None and store.get(EXPIRY_KEY) is None


async def test_async_api_takes_and_releases_the_lease(backend):
    store = sqlkv.MemoryStore()
    vfs = sqlkv.SqliteVfs(backend=backend, lease_seconds=LONG_LEASE)
    db = await vfs.open("app.db", store)
    with pytest.raises(sqlkv.LockedError):
        await vfs.open("app.db", store)
    await db.close()
    assert store.get(GEN_KEY) is None and store.get(EXPIRY_KEY) is None
    async with await vfs.open("app.db", store) as again:
        await again.exec("CREATE TABLE t(x)")
        assert generation(store) == 1


# -- between processes, on stores shared by processes -------------------------------


@pytest.fixture(params=["lmdb", "redis", "redis-cluster"])
def shared_url(request, tmp_path) -> str:
    """A store URL several processes can open."""
    if request.param == "lmdb":
        return f"lmdb://{tmp_path / 'lmdb'}"
    server = request.getfixturevalue(
        "redis_cluster" if request.param == "redis-cluster" else "redis_server"
    )
    return f"{server.url}?namespace={unique_namespace()}"


def test_fencing_between_processes(shared_url):
    """The issue's scenario: two processes open the database; the second is
    refused; the first is paused past its lease; a third takes over and
    commits; the first's next commit fails with FencedError; the final content
    is exactly the third's committed state."""
    lease = 1.0
    first, second, third = (Worker(shared_url, "app.db", lease) for _ in range(3))
    try:
        assert first.call("open")["ok"]
        assert first.call("exec", sql="CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('first-1')")["ok"]

        refused = second.call("open")
        assert (refused["ok"], refused["error"]) == (False, "LockedError")

        first.signal(signal.SIGSTOP)
        try:
            assert third.call("open", lock_timeout=30)["ok"]  # once the first's lease ran out
            assert third.call("exec", sql="INSERT INTO t VALUES ('third-1')")["ok"]
            assert third.call("exec", sql="INSERT INTO t VALUES ('third-2')")["ok"]
        finally:
            first.signal(signal.SIGCONT)

        fenced = first.call("exec", sql="INSERT INTO t VALUES ('first-2')")
        assert (fenced["ok"], fenced["error"]) == (False, "FencedError")
        assert third.call("exec", sql="INSERT INTO t VALUES ('third-3')")["ok"]
        assert third.call("close")["ok"]
        fenced = first.call("exec", sql="INSERT INTO t VALUES ('first-3')")
        assert (fenced["ok"], fenced["error"]) == (False, "FencedError")
    finally:
        for worker in (first, second, third):
            worker.stop()

    store = sqlkv.open_store(shared_url)
    try:
        with sqlkv.connect(store, "app.db", readonly=True) as db:
            assert integrity(db) == [("ok",)]
            assert db.query("SELECT v FROM t ORDER BY rowid").rows == [
                ("first-1",), ("third-1",), ("third-2",), ("third-3",)
            ]
    finally:
        store.close()

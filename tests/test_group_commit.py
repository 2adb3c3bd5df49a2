"""Group commit (runtime/group.py): calls queued on one database share each commit.

Most tests make the grouping deterministic with :class:`GatedStore`: the first
caller's commit is held at the store until every other caller's call is
queued behind it, so those calls run together once it lands, and the counts
(commits, write round trips) are exact.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from helpers import FiveCallStore, MangledAnswers

import sqlkv
from sqlkv.stores.latency import metered
from sqlkv.stores.wrapper import AsyncStoreWrapper, StoreWrapper
from sqlkv.testing import FaultyStore

#: Bound on every wait of these tests.
WAIT_S = 10.0


class StoreDown(Exception):
    """The failure GatedStore injects."""


class GatedStore(StoreWrapper):
    """A MemoryStore that can hold one commit of the pool's threads at its door,
    fail chosen writes, and note when each write lands."""

    def __init__(self, inner: Any = None) -> None:
        super().__init__(inner if inner is not None else sqlkv.MemoryStore(), write_batch=True)
        self._gate: threading.Event | None = None
        self.arrived = threading.Event()
        #: Writes by the pool's threads since :meth:`arm`, numbered from 1.
        self.writes = 0
        self.fail_writes: set[int] = set()
        #: Run just before the write of that number goes to the store.
        self.before_write: dict[int, Any] = {}
        #: What happened, in order: ``("landed", n)`` per write, and what the tests add.
        self.events: list[tuple[str, Any]] = []

    def arm(self) -> threading.Event:
        """Hold the next write of a pool thread until the returned event is set."""
        self._gate = threading.Event()
        self.arrived.clear()
        self.writes = 0
        return self._gate

    def _call(self, kind: str, *args: Any) -> Any:
        if kind not in ("put", "put_batch", "write_batch", "delete_batch"):
            return super()._call(kind, *args)
        if not threading.current_thread().name.startswith("sqlkv-pool"):
            return super()._call(kind, *args)  # the lease renewer
        gate, self._gate = self._gate, None
        if gate is not None:
            self.arrived.set()
            assert gate.wait(WAIT_S), "the test never opened the gate"
        self.writes += 1
        if self.writes in self.before_write:
            self.before_write[self.writes]()
        if self.writes in self.fail_writes:
            raise StoreDown(f"store down at write {self.writes}")
        result = super()._call(kind, *args)
        self.events.append(("landed", self.writes))
        return result


async def _until(condition: Any, what: str) -> None:
    """Wait (bounded) for ``condition()`` to hold."""
    for _ in range(int(WAIT_S / 0.002)):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


async def grouped(db: sqlkv.Database, store: GatedStore, first: Any, others: list[Any]) -> list[Any]:
    """Run ``first`` alone until its commit is at the store, queue every one of
    ``others`` behind it, then let it land. The outcomes, ``first``'s first."""
    gate = store.arm()
    lead = asyncio.ensure_future(first)
    await _until(store.arrived.is_set, "the first commit to reach the store")
    rest = [asyncio.ensure_future(call) for call in others]
    await _until(lambda: len(db._worker.jobs) == len(others), "the other calls to queue")
    gate.set()
    return await asyncio.gather(lead, *rest, return_exceptions=True)


async def _db(backend: str, store: Any, **options: Any) -> sqlkv.Database:
    db = await sqlkv.SqliteVfs(backend=backend, **options).open("app.db", store)
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, caller INT, seq INT)")
    return db


def _insert(db: sqlkv.Database, caller: int, seq: int = 0) -> Any:
    return db.run("INSERT INTO t(caller, seq) VALUES (?, ?)", [caller, seq])


async def test_queued_writes_share_one_commit(backend):
    store = GatedStore()
    db = await _db(backend, store)
    commits = db.stats.commits
    outcomes = await grouped(db, store, _insert(db, 0), [_insert(db, c) for c in range(1, 10)])
    assert all(isinstance(o, sqlkv.RunResult) and o.changes == 1 for o in outcomes), outcomes
    # The first alone, then the nine that queued behind it in one commit.
    assert db.stats.commits - commits == 2
    assert store.writes == 2
    # A group is one commit, one version.
    assert {o.version for o in outcomes[1:]} == {outcomes[0].version + 1}
    assert db.version == outcomes[0].version + 1
    assert (await db.query("SELECT count(*) FROM t")).rows == [(10,)]
    await db.close()
    # What was acknowledged is in the store.
    again = await sqlkv.SqliteVfs(backend=backend).open("app.db", store)
    assert (await again.query("SELECT count(*) FROM t")).rows == [(10,)]
    assert (await again.query("PRAGMA integrity_check")).rows == [("ok",)]
    await again.close()


async def test_a_lone_caller_commits_each_transaction_at_once(backend):
    store = GatedStore()
    db = await _db(backend, store)
    store.arm().set()
    commits = db.stats.commits
    for i in range(20):
        await _insert(db, 0, i)
        assert store.writes == i + 1  # landed before the call returned
    assert db.stats.commits - commits == 20
    await db.close()


async def test_a_failed_group_fails_every_caller_in_it_and_the_database_goes_on(backend):
    store = GatedStore()
    db = await _db(backend, store)
    store.fail_writes = {2}  # the group's commit
    others = [_insert(db, c) for c in range(1, 6)]
    others.append(db.query("SELECT count(*) FROM t"))  # a read that saw the group's rows
    outcomes = await grouped(db, store, _insert(db, 0), others)
    assert isinstance(outcomes[0], sqlkv.RunResult)  # landed before the group
    for failed in outcomes[1:]:
        assert isinstance(failed, sqlkv.StoreError), failed
        cause = failed
        while cause is not None and not isinstance(cause, StoreDown):
            cause = cause.__cause__
        assert isinstance(cause, StoreDown), f"{failed!r} does not carry the store's exception"
    # Back at the last durable state, and working.
    assert (await db.query("SELECT caller FROM t")).rows == [(0,)]
    await _insert(db, 7)
    assert (await db.query("SELECT caller FROM t ORDER BY id")).rows == [(0,), (7,)]
    await db.close()
    again = await sqlkv.SqliteVfs(backend=backend).open("app.db", store)
    assert (await again.query("SELECT caller FROM t ORDER BY id")).rows == [(0,), (7,)]
    await again.close()


async def test_a_group_whose_commit_fails_after_its_commit_point_is_committed_for_every_caller(backend):
    """Issue 20, item 6: a group's staged commit stores its record, then a
    manifest piece is answered garbled while the chunks are moved into place.
    Every held call hears "committed" (OutcomeUnknownError, committed=True),
    not a plain StoreError ("nothing of it is visible": a retry doubles it)."""
    from sqlkv.format.layout import EXT_COMMIT_RECORD, SeedLayout

    record_key = SeedLayout(9).ext_key("app.db", EXT_COMMIT_RECORD)
    mangling = MangledAnswers(
        sqlkv.MemoryStore(), sqlkv.StoreLimits(max_batch_keys=16), kinds=b"m", mode="garbled",
        after_key=record_key,
    )
    store = GatedStore(mangling)
    db = await _db(backend, store)
    big = "INSERT INTO t(caller, seq) SELECT ?, printf('%.1000c', 'q') || x FROM (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL " \
        "SELECT x + 1 FROM n WHERE x < 100) SELECT x FROM n)"
    others = [db.run(big, [c]) for c in range(1, 4)]
    others.append(db.query("SELECT count(*) FROM t"))
    outcomes = await grouped(db, store, _insert(db, 0), others)
    assert isinstance(outcomes[0], sqlkv.RunResult)
    assert mangling.mangled >= 1
    for held in outcomes[1:]:
        assert isinstance(held, sqlkv.OutcomeUnknownError), held
        assert held.committed is True
    mangling.armed = False
    mangling.after_key = None
    assert (await db.query("SELECT count(*) FROM t")).rows == [(1 + 3 * 100,)]
    await db.close()


async def test_a_transaction_that_fails_on_its_own_fails_alone(backend):
    store = GatedStore()
    db = await _db(backend, store)
    others = [
        _insert(db, 1),
        db.run("INSERT INTO t(id, caller) VALUES (1, 99)"),  # id 1 is the first caller's row
        _insert(db, 2),
    ]
    outcomes = await grouped(db, store, _insert(db, 0), others)
    assert isinstance(outcomes[2], sqlkv.SqlError) and "UNIQUE" in str(outcomes[2])
    assert [type(o) for o in (outcomes[0], outcomes[1], outcomes[3])] == [sqlkv.RunResult] * 3
    assert store.writes == 2
    assert (await db.query("SELECT caller FROM t ORDER BY id")).rows == [(0,), (1,), (2,)]
    await db.close()


async def test_a_read_behind_a_write_is_answered_only_once_the_write_landed(backend):
    store = GatedStore()
    db = await _db(backend, store)

    async def read() -> Any:
        result = await db.query("SELECT count(*) FROM t")
        store.events.append(("answered", result.rows[0][0]))
        return result

    await grouped(db, store, _insert(db, 0), [_insert(db, 1), _insert(db, 2), read()])
    answered = store.events.index(("answered", 3))
    assert ("landed", 2) in store.events[:answered], store.events


async def test_explicit_transactions_stay_whole_in_a_group(backend):
    store = GatedStore()
    db = await _db(backend, store)
    pair = "BEGIN; INSERT INTO t(caller, seq) VALUES ({0}, 1); INSERT INTO t(caller, seq) VALUES ({0}, 2); COMMIT"
    outcomes = await grouped(db, store, _insert(db, 0), [db.exec(pair.format(c)) for c in (1, 2)])
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    assert store.writes == 2
    # A failed group takes every statement of each transaction with it.
    store.fail_writes = {2}
    outcomes = await grouped(db, store, _insert(db, 3), [db.exec(pair.format(c)) for c in (4, 5)])
    assert all(isinstance(o, sqlkv.StoreError) for o in outcomes[1:]), outcomes
    rows = (await db.query("SELECT caller, count(*) FROM t GROUP BY caller ORDER BY caller")).rows
    assert rows == [(0, 1), (1, 2), (2, 2), (3, 1)]
    await db.close()


async def test_a_transaction_across_calls_is_never_part_of_a_group(backend):
    store = GatedStore()
    db = await _db(backend, store)

    async def across_calls() -> None:
        async with db.transaction() as tx:
            await tx.run("INSERT INTO t(caller, seq) VALUES (9, 1)")
            await tx.run("INSERT INTO t(caller, seq) VALUES (9, 2)")

    outcomes = await grouped(db, store, _insert(db, 0), [_insert(db, 1), _insert(db, 2), across_calls()])
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    # The first; the group of two, landed before the transaction began; the transaction.
    assert store.writes == 3
    assert (await db.query("SELECT count(*) FROM t")).rows == [(5,)]
    await db.close()


async def test_each_caller_s_calls_keep_their_order(backend):
    store = GatedStore()
    db = await _db(backend, store)

    async def caller(c: int) -> None:
        for seq in range(5):
            await _insert(db, c, seq)

    await grouped(db, store, _insert(db, 0), [caller(c) for c in range(1, 9)])
    for c in range(1, 9):
        seqs = [r[0] for r in (await db.query("SELECT seq FROM t WHERE caller = ? ORDER BY id", [c])).rows]
        assert seqs == list(range(5))
    assert db.stats.commits < 1 + 8 * 5  # some of them shared a commit
    await db.close()


async def test_a_reader_sees_a_group_whole(backend):
    store = GatedStore()
    db = await _db(backend, store)
    reader = await sqlkv.SqliteVfs(backend=backend).open("app.db", store, readonly=True)
    outcomes = await grouped(db, store, _insert(db, 0), [_insert(db, c) for c in range(1, 6)])
    assert (await reader.query("SELECT count(*) FROM t")).rows == [(6,)]
    assert reader.version == outcomes[-1].version
    await reader.close()
    await db.close()


async def test_with_a_lease_a_fenced_group_fails_every_caller(backend):
    store = GatedStore()
    db = await _db(backend, store, lease_seconds=30)
    generation_key = db._engine._lease_request.keys()[0]  # type: ignore[attr-defined]
    # Another writer takes the lease over after the first commit, before the group's.
    store.before_write[2] = lambda: store.inner.put(generation_key, b"another writer")
    outcomes = await grouped(db, store, _insert(db, 0), [_insert(db, c) for c in range(1, 4)])
    assert isinstance(outcomes[0], sqlkv.RunResult)
    assert all(isinstance(o, sqlkv.FencedError) for o in outcomes[1:]), outcomes
    await db.close()
    with sqlkv.connect(store.inner, "app.db", backend=backend, readonly=True) as reader:
        assert reader.query("SELECT caller FROM t").rows == [(0,)]


# -- a fault at every store call of a grouped workload ------------------------------

CALLERS, PER_CALLER = 6, 4

#: Store configurations: a store, the limits FaultyStore declares, options.
CONFIGS = {
    "one-batch": (sqlkv.MemoryStore, None, {}),
    # At most 12 keys a batch: a group's commit is staged once it outgrows that.
    "small-batches": (FiveCallStore, sqlkv.StoreLimits(max_batch_keys=12), {}),
    # A 16 KiB bound on buffered changes: a group spills to staging as it gathers
    # (a transaction writes 3 chunks; over 4, the group's committed ones are staged).
    "spill": (sqlkv.MemoryStore, None, {"max_dirty_bytes": 16 * 1024}),
}
#: The fault at call N: a crash (that call and every later one fail), a
#: transient failure, or a failure whose write landed but whose reply was lost.
FAULTS = {
    "crash": {"crash_at": True},
    "fail": {"fail_at": True},
    "lost-reply": {"fail_at": True, "lose_reply": True},
}


async def _grouped_workload(store: Any, backend: str, options: dict) -> tuple[set, set, int]:
    """Every caller inserts its rows, each transaction a row and its twin, until
    one of its calls fails; the transactions acknowledged, those tried, and the
    commits made."""
    acknowledged: set[tuple[int, int]] = set()
    tried: set[tuple[int, int]] = set()
    try:
        db = await sqlkv.SqliteVfs(backend=backend, lease_seconds=None, **options).open("app.db", store)
    except sqlkv.Error:
        return acknowledged, tried, 0

    async def caller(c: int) -> None:
        for seq in range(PER_CALLER):
            tried.add((c, seq))
            pad = "x" * 1500
            try:
                await db.exec(
                    f"BEGIN; INSERT INTO t VALUES ({c}, {seq}, 'a', '{pad}'); "
                    f"INSERT INTO t VALUES ({c}, {seq}, 'b', '{pad}'); COMMIT"
                )
            except sqlkv.Error:
                return
            acknowledged.add((c, seq))

    try:
        await db.exec("CREATE TABLE IF NOT EXISTS t(caller INT, seq INT, twin TEXT, pad TEXT)")
        await asyncio.gather(*(caller(c) for c in range(CALLERS)))
    except sqlkv.Error:
        pass
    finally:
        try:
            await db.close()
        except sqlkv.Error:
            pass
    return acknowledged, tried, db.stats.commits


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("config", sorted(CONFIGS))
async def test_acknowledged_writes_survive_a_fault_at_every_call_of_a_grouped_workload(backend, config, fault):
    make_store, limits, options = CONFIGS[config]
    dry = FaultyStore(make_store(), limits=limits, latency_ms=0.3)
    acknowledged, _, commits = await _grouped_workload(dry, backend, options)
    assert len(acknowledged) == CALLERS * PER_CALLER
    assert commits < CALLERS * PER_CALLER, "the workload's transactions never shared a commit"
    total = dry.calls
    for n in range(1, total + 3):
        base = make_store()
        where = {key: n for key, value in FAULTS[fault].items() if value is True and key.endswith("_at")}
        faulty = FaultyStore(base, limits=limits, latency_ms=0.3, lose_reply="lose_reply" in FAULTS[fault], seed=n, **where)
        acknowledged, tried, _ = await _grouped_workload(faulty, backend, options)
        with sqlkv.connect(base, "app.db", backend=backend, lease_seconds=None) as after:
            if not after.query("SELECT count(*) FROM sqlite_master WHERE name = 't'").rows[0][0]:
                assert not acknowledged
                continue
            assert after.query("PRAGMA integrity_check").rows == [("ok",)]
            rows = after.query("SELECT caller, seq, twin FROM t").rows
        present = {(c, s) for c, s, _ in rows}
        assert acknowledged <= present, f"{fault} at call {n} of {total}: acknowledged rows lost"
        assert present <= tried
        # Each transaction whole: both twins or neither.
        assert sorted(rows) == sorted((c, s, twin) for c, s in present for twin in "ab")
        GroupTally.points += 1


class GroupTally:
    points = 0


def _twins_watcher(store: Any, backend: str, stop: threading.Event, torn: list[Any], reads: list[int]) -> None:
    """A reader of ``store`` (at most 2,000 reads, until ``stop``): every
    transaction's twins 'a' and 'b' are seen both or neither; else noted in
    ``torn``. Each read that answered is counted in ``reads``."""
    sql = "SELECT caller, seq FROM t GROUP BY caller, seq HAVING count(*) != 2 LIMIT 1"
    try:
        with sqlkv.connect(store, "app.db", backend=backend, readonly=True) as reader:
            for _ in range(2000):
                if stop.is_set():
                    return
                try:
                    rows = reader.query(sql).rows
                except sqlkv.ConflictError:
                    continue  # a writer moved on: read again
                reads.append(1)
                if rows:
                    torn.append(rows)
                    return
    except sqlkv.Error as exc:  # nothing else may stop a reader of what is stored
        torn.append(exc)


def _with_table(store: Any) -> Any:
    """``store``, holding the grouped workload's table already (so a reader can open it)."""
    with sqlkv.connect(store, "app.db", lease_seconds=None) as db:
        db.exec("CREATE TABLE t(caller INT, seq INT, twin TEXT, pad TEXT)")
    return store


#: Grouped configurations whose commits read staging keys back, and which kind.
DAMAGED = [("spill", b"m"), ("spill", b"d")]


@pytest.mark.parametrize("mode", ["short", "garbled"])
@pytest.mark.parametrize(("config", "kinds"), DAMAGED, ids=[f"{c}-{k.decode()}" for c, k in DAMAGED])
async def test_acknowledged_writes_survive_a_damaged_staging_answer_at_every_read_of_a_grouped_workload(
    backend, config, kinds, mode
):
    """Issue 20, item 5, grouped: each read of a staged chunk or manifest piece
    in turn is answered short or garbled. Nothing acknowledged is lost, no
    transaction is torn, and nothing damaged reaches the database; a reader in
    another thread never sees one twin of a transaction without the other."""
    make_store, limits, options = CONFIGS[config]
    dry = MangledAnswers(
        FaultyStore(_with_table(make_store()), limits=limits, latency_ms=0.3), kinds=kinds, mode=mode, at=0
    )
    acknowledged, _, commits = await _grouped_workload(dry, backend, options)
    assert len(acknowledged) == CALLERS * PER_CALLER and commits < CALLERS * PER_CALLER
    assert dry.hits > 0
    reads: list[int] = []
    for n in range(1, dry.hits + 1):
        base = _with_table(make_store())
        store = MangledAnswers(FaultyStore(base, limits=limits, latency_ms=0.3), kinds=kinds, mode=mode, at=n)
        torn: list[Any] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_twins_watcher, args=(base, backend, stop, torn, reads))
        watcher.start()
        try:
            acknowledged, tried, _ = await _grouped_workload(store, backend, options)
        finally:
            stop.set()
            watcher.join(WAIT_S)
        assert not watcher.is_alive() and not torn, f"read {n}: a reader saw {torn[:1]}"
        with sqlkv.connect(base, "app.db", backend=backend, lease_seconds=None) as after:
            assert after.query("PRAGMA integrity_check").rows == [("ok",)]
            rows = after.query("SELECT caller, seq, twin FROM t").rows
        present = {(c, s) for c, s, _ in rows}
        if store.mangled:
            assert len(acknowledged) < CALLERS * PER_CALLER, f"read {n}: the damaged answer went unnoticed"
        assert acknowledged <= present <= tried, f"{mode} answer at read {n}: acknowledged rows lost"
        assert sorted(rows) == sorted((c, s, twin) for c, s in present for twin in "ab")
    assert len(reads) >= dry.hits, "the reader hardly read"


@pytest.mark.parametrize("async_store", [False, True], ids=["sync-store", "async-store"])
@pytest.mark.parametrize("layout", ["seed", "rivet-v2"])
async def test_groups_form_on_every_kind_of_store_and_layout(backend, async_store, layout):
    """Without a gate: 16 callers at 1 ms per store call share commits, and every
    acknowledged row is in the store afterwards."""
    store = sqlkv.MemoryStore()
    front: Any = metered(AsyncStoreWrapper(store, write_batch=True) if async_store else store, 1.0)
    db = await sqlkv.SqliteVfs(backend=backend, layout=layout).open("app.db", front)
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, caller INT, seq INT)")
    commits = db.stats.commits

    async def caller(c: int) -> None:
        for seq in range(5):
            await _insert(db, c, seq)

    await asyncio.gather(*(caller(c) for c in range(16)))
    assert db.stats.commits - commits < 16 * 5 // 2
    await db.close()
    with sqlkv.connect(store, "app.db", backend=backend, layout=layout, readonly=True) as reader:
        assert reader.query("SELECT count(*) FROM t").rows == [(80,)]


async def test_a_close_queued_behind_a_group_lets_it_land_first(backend):
    store = GatedStore()
    db = await _db(backend, store)
    commits = db.stats.commits
    outcomes = await grouped(db, store, _insert(db, 0), [_insert(db, 1), _insert(db, 2), db.close()])
    assert [type(o) for o in outcomes[:3]] == [sqlkv.RunResult] * 3 and outcomes[3] is None
    assert db.stats.commits - commits == 2  # the first, then the group, before the close
    with sqlkv.connect(store.inner, "app.db", backend=backend, readonly=True) as reader:
        assert reader.query("SELECT caller FROM t ORDER BY id").rows == [(0,), (1,), (2,)]

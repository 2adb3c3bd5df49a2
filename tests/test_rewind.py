"""A store that goes back in time under an open writer (issue 21).

A failover to a replica that was behind, or a backup put back, hands a writer
a store older than what it last committed. Here an older copy of the whole
store (MemoryStore, LmdbStore) is put back before every store call of a
workload in turn: plain one-batch commits, staged commits (a store taking few
keys per batch), grouped commits (the async API), a VACUUM whose rewrite
spills to the staging area, and a reader holding a cache. After each: the writer got :class:`sqlkv.RewoundError` (or succeeded on
a state that truly is the store's), the database opens, ``PRAGMA
integrity_check`` is ok, and every commit made before the copy was taken is
there; and a writer that dies right after its first call on the copy leaves a
database that opens whole. A slice runs by default; ``-m slow`` runs every
pair of points.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import integrity

import sqlkv
from sqlkv.stores.wrapper import StoreWrapper

#: Long enough that no renewal runs during a test: the writer's calls are all counted.
LEASE = 3600.0
#: A store whose batches take this many keys: a commit of a row this long is staged.
SMALL_BATCH = sqlkv.StoreLimits(max_batch_keys=6)
BIG_ROW = 3 * 4096
#: The FileMeta key of app.db (layout seed, prefix 9).
META_KEY = b"\x09\x00app.db"


def snapshot(store: Any) -> dict[bytes, bytes]:
    """Every key and value ``store`` holds (a backup)."""
    keys = list(store.scan(b""))
    return dict(zip(keys, store.get_batch(keys)))


def put_back(store: Any, copy: dict[bytes, bytes]) -> None:
    """Make ``store`` hold exactly ``copy`` again, in one atomic write (a restore)."""
    gone = [k for k in store.scan(b"") if k not in copy]
    assert store.write_batch(list(copy.items()), gone)


class Crashed(Exception):
    """The store stopped answering (``crash_after``)."""


class RewindingStore(StoreWrapper):
    """Counts the calls made through it; takes a copy of the wrapped store before
    call ``copy_at`` and puts it back before call ``restore_at``; with
    ``crash_after``, every call after that one fails without reaching the store
    (the writer's process died there)."""

    def __init__(
        self,
        inner: Any,
        copy_at: int,
        restore_at: int,
        limits: sqlkv.StoreLimits | None = None,
        backend: str = "pages",
        crash_after: int | None = None,
    ) -> None:
        super().__init__(inner, limits=limits, write_batch=True, scan=True)
        self.crash_after = crash_after
        #: The backend the workloads open their databases on.
        self.backend = backend
        self.copy_at = copy_at
        self.restore_at = restore_at
        self.calls = 0
        self.copy: dict[bytes, bytes] | None = None

    @property
    def crashed(self) -> bool:
        return self.crash_after is not None and self.calls > self.crash_after

    def _call(self, kind: str, *args: Any) -> Any:
        self.calls += 1
        if self.crashed:
            raise Crashed(f"call {self.calls}: the writer's process died")
        if self.calls == self.copy_at:
            self.copy = snapshot(self.inner)
        if self.calls == self.restore_at and self.copy is not None:
            put_back(self.inner, self.copy)
        return super()._call(kind, *args)


@dataclass
class Outcomes:
    """What the writer heard of each transaction (a row id), and when."""

    #: Row id -> the store calls made before its (last) try began, and when it was acknowledged.
    acked: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: Rows whose outcome is unknown (OutcomeUnknownError): there or not.
    maybe: set[int] = field(default_factory=set)
    rewound: int = 0
    #: The store calls made before the last try of any transaction began.
    last_start: int = 0


def _row(i: int, size: int) -> bytes:
    return (i.to_bytes(4, "big") * (size // 4 + 1))[:size]


def insert(i: int, size: int, more: str = "") -> str:
    """One transaction: row ``i`` (the table made first, should the store have gone
    back before it), and ``more`` statements. Tried again after a RewoundError,
    it gives the same state."""
    return (
        "BEGIN; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB);"
        f"INSERT OR REPLACE INTO t VALUES ({i}, x'{_row(i, size).hex()}'){more}; COMMIT"
    )


def _heard(
    store: RewindingStore, outcomes: Outcomes, i: int, start: int, answer: object, tail: bool = False
) -> bool:
    """Note what transaction ``i`` (tried after ``start`` calls) heard; whether to try it again.
    ``tail``: its script has a statement after its COMMIT, so an error may come from
    that statement after the transaction itself landed (exec commits the statements
    before a failing one): row ``i`` may then be there whatever the error says."""
    outcomes.last_start = start
    if tail and isinstance(answer, sqlkv.Error):
        outcomes.maybe.add(i)
    if isinstance(answer, sqlkv.RewoundError):
        outcomes.rewound += 1
        return True
    if isinstance(answer, sqlkv.FencedError) and store.crashed:
        pass  # refused, and the look at which fence failed died with the writer
    elif isinstance(answer, sqlkv.OutcomeUnknownError) or (isinstance(answer, sqlkv.StoreError) and store.crashed):
        outcomes.maybe.add(i)
    elif isinstance(answer, BaseException):
        raise answer
    else:
        outcomes.acked[i] = (start, store.calls)
    return False


def _rows(db: Any) -> list[tuple]:
    if not db.query("SELECT 1 FROM sqlite_master WHERE name = 't'").rows:
        return []
    return db.query("SELECT id, v FROM t ORDER BY id").rows


def plain_workload(
    store: RewindingStore,
    commits: int,
    size: int,
    after: Callable[[], None] = lambda: None,
    transaction: Callable[[int], str] | None = None,
    tail: Callable[[int], bool] = lambda i: False,
    **options: Any,
) -> Outcomes:
    """One transaction per call (``transaction(i)``, default :func:`insert`); one
    after a RewoundError is tried once more (the database reopened). ``after``:
    run after each transaction; ``tail(i)``: transaction ``i``'s script goes on after its
    COMMIT (see :func:`_heard`); ``options``: the database's."""
    outcomes = Outcomes()
    sql = transaction if transaction is not None else (lambda i: insert(i, size))
    try:
        db = sqlkv.connect(store, "app.db", lease_seconds=LEASE, backend=store.backend, **options)
    except sqlkv.StoreError:
        if not store.crashed:
            raise
        return outcomes  # died while opening
    with db:
        for i in range(commits):
            after()
            if store.crashed:
                break
            for _ in range(2):
                start = store.calls
                try:
                    answer: object = db.exec(sql(i))
                except sqlkv.Error as exc:
                    answer = exc
                if not _heard(store, outcomes, i, start, answer, tail(i)):
                    break
            else:
                pytest.fail(f"transaction {i} got RewoundError twice in a row")
        after()
    return outcomes


#: Rows that VACUUM drops: the file shrinks by about 24 KiB.
JUNK = ";CREATE TABLE IF NOT EXISTS u(v BLOB); INSERT INTO u VALUES (zeroblob(8000))"


def vacuum_workload(store: RewindingStore, commits: int, size: int) -> Outcomes:
    """Rows made beside junk, then the junk dropped and VACUUM with a small memory bound: its
    rewrite spills to the staging area and the file shrinks under it (staged
    chunks past the new end are dropped) before its staged commit."""

    def transaction(i: int) -> str:
        if i == commits - 1:
            return insert(i, size, ";DROP TABLE IF EXISTS u") + "; VACUUM"
        return insert(i, size, JUNK)

    return plain_workload(
        store, commits, size, transaction=transaction, tail=lambda i: i == commits - 1, max_dirty_bytes=2 * 4096
    )


def reader_workload(store: RewindingStore, commits: int, size: int) -> Outcomes:
    """The plain workload, with a reader holding a cache (on the store itself, so its
    calls are not counted) that reads everything after each transaction: it must
    show what a reader opened afresh shows, never rows of a state the store lost."""
    readers: list[Any] = []

    def fresh_rows() -> list[tuple]:
        if store.inner.get(META_KEY) is None:
            return []  # the store went back to before the database was made
        with sqlkv.connect(store.inner, "app.db", readonly=True, backend=store.backend) as fresh:
            return _rows(fresh)

    def read() -> None:
        if not readers:
            if store.inner.get(META_KEY) is None:
                return  # nothing to open yet
            readers.append(sqlkv.connect(store.inner, "app.db", readonly=True, backend=store.backend))
        assert _rows(readers[0]) == fresh_rows()

    try:
        return plain_workload(store, commits, size, read)
    finally:
        for reader in readers:
            reader.close()


def grouped_workload(store: RewindingStore, commits: int, size: int) -> Outcomes:
    """Transactions three at a time through the async API: each three share a group commit."""
    outcomes = Outcomes()

    async def run() -> None:
        async with await sqlkv.SqliteVfs(lease_seconds=LEASE, hibernate_after=None, backend=store.backend).open("app.db", store) as db:
            for first in range(0, commits, 3):
                ids = list(range(first, min(commits, first + 3)))
                for _ in range(2):
                    start = store.calls
                    answers = await asyncio.gather(
                        *(db.exec(insert(i, size)) for i in ids), return_exceptions=True
                    )
                    ids = [i for i, answer in zip(ids, answers) if _heard(store, outcomes, i, start, answer)]
                    if not ids:
                        break
                assert not ids, f"transactions {ids} got RewoundError twice in a row"

    asyncio.run(run())
    return outcomes


def test_a_reader_holding_a_cache_drops_it_when_the_store_goes_back_and_writes_another_branch(backend):
    """The reader's pinned version is written again, with other rows: it must not
    serve its cached pages of the lost branch (both rows live in one page)."""
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db", lease_seconds=LEASE, backend=backend) as writer:
        writer.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        with sqlkv.connect(store, "app.db", readonly=True, backend=backend) as reader:
            copy = snapshot(store)
            lost = writer.run("UPDATE t SET v = 'lost' WHERE id = 1").version
            assert reader.query("SELECT v FROM t ORDER BY id").rows == [("lost",), ("b",)]
            put_back(store, copy)
            with pytest.raises(sqlkv.RewoundError, match="went back in time"):
                writer.run("UPDATE t SET v = 'kept' WHERE id = 2")
            assert writer.query("SELECT v FROM t ORDER BY id").rows == [("a",), ("b",)]
            assert writer.version == lost - 1  # its next call reopened it at the store's state
            again = writer.run("UPDATE t SET v = 'kept' WHERE id = 2").version
            assert again == lost  # the same number, another head
            assert reader.query("SELECT v FROM t ORDER BY id").rows == [("a",), ("kept",)]
            assert reader.version == again
        assert writer.query("SELECT v FROM t ORDER BY id").rows == [("a",), ("kept",)]


def test_a_reader_drops_its_cache_when_the_store_went_back_and_wrote_past_its_version(backend):
    """The reader's version is exceeded by commits of another branch: the log entry
    after its version names another parent head, so it drops its whole cache
    rather than only the chunks that log lists (t1's page would be stale)."""
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db", lease_seconds=LEASE, backend=backend) as writer:
        writer.exec("CREATE TABLE t1(v TEXT); CREATE TABLE t2(v TEXT); INSERT INTO t1 VALUES ('a'); INSERT INTO t2 VALUES ('b')")
        with sqlkv.connect(store, "app.db", readonly=True, backend=backend) as reader:
            copy = snapshot(store)
            writer.run("UPDATE t1 SET v = 'lost'")
            assert reader.query("SELECT (SELECT v FROM t1), (SELECT v FROM t2)").rows == [("lost", "b")]
            pinned = reader.version
            put_back(store, copy)
            with pytest.raises(sqlkv.RewoundError):
                writer.run("UPDATE t1 SET v = 'kept'")
            writer.run("UPDATE t1 SET v = 'kept'")
            assert writer.run("UPDATE t2 SET v = 'c'").version == pinned + 1
            assert reader.query("SELECT (SELECT v FROM t1), (SELECT v FROM t2)").rows == [("kept", "c")]


def test_a_writer_whose_store_went_back_to_before_its_lease_takes_it_again():
    """A backup from before the writer opened: the lease is gone from the store;
    the writer hears RewoundError, and its reopen takes the lease again."""
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db") as db:
        db.exec("CREATE TABLE t(x)")
    copy = snapshot(store)
    with sqlkv.connect(store, "app.db", lease_seconds=LEASE) as db:
        db.run("INSERT INTO t VALUES (1)")
        put_back(store, copy)
        with pytest.raises(sqlkv.RewoundError):
            db.run("INSERT INTO t VALUES (2)")
        db.run("INSERT INTO t VALUES (3)")
        with pytest.raises(sqlkv.LockedError):
            sqlkv.connect(store, "app.db")
        assert db.query("SELECT x FROM t").rows == [(3,)]
    with sqlkv.connect(store, "app.db") as db:
        assert db.query("SELECT x FROM t").rows == [(3,)]


def test_a_lease_taken_over_by_another_writer_is_still_fenced_error_not_rewound():
    """Losing the lease to a writer that committed is FencedError, as before, not RewoundError."""
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db", lease_seconds=LEASE) as db:
        db.exec("CREATE TABLE t(x)")
        copy = snapshot(store)
        put_back(store, {k: v for k, v in copy.items() if not k.endswith(b"\x00l") and not k.endswith(b"\x00le")})
        with sqlkv.connect(store, "app.db", lease_seconds=LEASE) as other:
            other.run("INSERT INTO t VALUES (1)")
            with pytest.raises(sqlkv.FencedError) as caught:
                db.run("INSERT INTO t VALUES (2)")
            assert not isinstance(caught.value, sqlkv.RewoundError)
            assert other.query("SELECT x FROM t").rows == [(1,)]


def check_after(store: RewindingStore, outcomes: Outcomes, commits: int, size: int) -> None:
    """The database opens whole, and holds every commit acknowledged before the copy
    was taken and every one acknowledged after it was put back; the writer heard
    of the rewind if it lost anything."""
    inner = store.inner
    with sqlkv.connect(inner, "app.db") as db:
        assert integrity(db) == [("ok",)]
        rows = dict(db.query("SELECT id, v FROM t").rows) if _has_table(db) else {}
    for i, value in rows.items():
        assert value == _row(i, size), f"row {i} holds other bytes"
        assert i in outcomes.acked or i in outcomes.maybe, f"row {i} was never acknowledged"
    restored = store.calls >= store.restore_at
    for i, (start, end) in outcomes.acked.items():
        # Every call of the transaction before the copy, or after the copy was put back.
        if not restored or end < store.copy_at or start >= store.restore_at - 1:
            assert i in rows, (
                f"row {i} (calls {start + 1} to {end}) is missing; copy taken before call "
                f"{store.copy_at}, put back before call {store.restore_at}"
            )
    lost = [i for i in outcomes.acked if i not in rows]
    if lost and outcomes.last_start >= store.restore_at - 1 and not store.crashed:
        assert outcomes.rewound, f"rows {lost} were lost and the next writes never heard RewoundError"


def _has_table(db: Any) -> bool:
    return bool(db.query("SELECT 1 FROM sqlite_master WHERE name = 't'").rows)


def _count_calls(
    workload: Callable[[RewindingStore, int, int], Outcomes], commits: int, size: int, limits: Any, backend: str
) -> int:
    store = RewindingStore(sqlkv.MemoryStore(), 0, 0, limits, backend)
    workload(store, commits, size)
    return store.calls


def _points(total: int, every_pair: bool) -> Iterator[tuple[int, int]]:
    """(copy_at, restore_at): every restore point, each with copies taken one,
    three and all calls before it (every pair when ``every_pair``)."""
    for restore_at in range(2, total + 1):
        if every_pair:
            copies = range(1, restore_at)
        else:
            copies = sorted({restore_at - 1, max(1, restore_at - 3), 1})
        for copy_at in copies:
            yield copy_at, restore_at


WORKLOADS = {
    # name: (workload, commits, row size, store limits)
    "plain": (plain_workload, 4, 100, None),
    "reader": (reader_workload, 4, 100, None),
    "staged": (plain_workload, 3, BIG_ROW, SMALL_BATCH),
    "grouped": (grouped_workload, 6, 100, None),
    "vacuum": (vacuum_workload, 4, 100, None),
}


def _sweep(
    name: str,
    make_inner: Callable[[], Any],
    every_pair: bool,
    backend: str = "pages",
    step: int = 1,
    more: int = 1,
    crash: bool = False,
) -> int:
    """Run workload ``name`` (``more`` times as many commits) with a copy put back at
    each pair of points (every ``step``-th of them); how many runs. ``crash``:
    the writer dies right after the first call made on the copy put back."""
    workload, commits, size, limits = WORKLOADS[name]
    commits *= more
    total = _count_calls(workload, commits, size, limits, backend)
    runs = 0
    for n, (copy_at, restore_at) in enumerate(_points(total, every_pair)):
        if n % step:
            continue
        store = RewindingStore(make_inner(), copy_at, restore_at, limits, backend, restore_at if crash else None)
        outcomes = workload(store, commits, size)
        check_after(store, outcomes, commits, size)
        runs += 1
    return runs


def _lmdb_stores(directory: Any) -> Callable[[], sqlkv.LmdbStore]:
    """Makes a new LmdbStore under ``directory`` at each call."""
    paths = iter(range(1_000_000))
    return lambda: sqlkv.LmdbStore(str(directory / f"s{next(paths)}"))


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_an_older_copy_put_back_at_any_point_never_corrupts_memory(name, backend):
    assert _sweep(name, sqlkv.MemoryStore, every_pair=False, backend=backend) > 10


@pytest.mark.parametrize("name", ["plain", "staged", "vacuum"])
def test_a_writer_dying_right_after_its_store_went_back_leaves_a_database_that_opens(name, backend):
    """The first write made on the copy put back is the writer's last: whatever
    it left (a staged commit's first piece, say) must not keep the database from
    opening whole."""
    assert _sweep(name, sqlkv.MemoryStore, every_pair=False, backend=backend, crash=True) > 10


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_an_older_copy_put_back_at_some_points_never_corrupts_lmdb(name, tmp_path):
    assert _sweep(name, _lmdb_stores(tmp_path), every_pair=False, step=5) > 2


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_an_older_copy_put_back_at_every_pair_of_points_never_corrupts(name, backend, tmp_path):
    assert _sweep(name, sqlkv.MemoryStore, every_pair=True, backend=backend, more=2) > 50
    assert _sweep(name, _lmdb_stores(tmp_path), every_pair=False, backend=backend) > 10
    if name in ("plain", "staged", "vacuum"):
        assert _sweep(name, sqlkv.MemoryStore, every_pair=True, backend=backend, more=2, crash=True) > 50

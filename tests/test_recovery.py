"""Recovery at open: hot journals left by other implementations, interrupted
staged commits, read-only views; and atomic commits larger than a batch."""

from __future__ import annotations

import sqlite3

import pytest
from helpers import CountingStore, FiveCallStore, MangledAnswers, copy_store, mangled, staging_keys, staging_kind

import sqlkv
from sqlkv.format.layout import SeedLayout, encode_file_meta
from sqlkv.storage.commit import CommitRecord, Committer, Staging, record_key
from sqlkv.stores.contract import StoreClient
from sqlkv.stores.redis_store import REDIS_LIMITS
from sqlkv.testing import FaultyStore, StoreCrashed

LAYOUT = SeedLayout(9)


def put_file(store, name: str, data: bytes, chunk_size: int = 4096) -> None:
    """Put a file into the store as another implementation of the layout would."""
    entries = [(LAYOUT.meta_key(name), encode_file_meta(len(data)))]
    for i in range(0, len(data), chunk_size):
        entries.append((LAYOUT.chunk_key(name, i // chunk_size), data[i : i + chunk_size]))
    store.put_batch(entries)


def crashed_sqlite_files(tmp_path) -> tuple[bytes, bytes, list]:
    """A database file and its hot journal, as a crash in mid-transaction leaves them.

    Stdlib sqlite3 in journal_mode=DELETE with a tiny page cache: the big
    transaction spills changed pages into the database file (after syncing
    their originals into the journal), and we copy both files before it ends.
    """
    path = tmp_path / "source.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "PRAGMA journal_mode=DELETE; PRAGMA cache_size=5;"
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
        "INSERT INTO t(v) SELECT printf('%.300c', 'a') FROM n;"
    )
    expected = conn.execute("SELECT id, v FROM t").fetchall()
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET v = printf('%.300c', 'Z')")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) "
        "INSERT INTO t(v) SELECT printf('%.900c', 'b') FROM n"
    )
    db_image = path.read_bytes()
    journal_image = (tmp_path / "source.db-journal").read_bytes()
    conn.execute("ROLLBACK")
    conn.close()
    return db_image, journal_image, expected


def test_the_crash_image_really_is_inconsistent_without_its_journal(tmp_path):
    db_image, journal_image, expected = crashed_sqlite_files(tmp_path)
    assert journal_image[:8] == bytes.fromhex("d9d505f920a163d7")
    alone = sqlite3.connect(":memory:")
    alone.deserialize(db_image)
    assert alone.execute("SELECT id, v FROM t").fetchall() != expected


def test_hot_journal_is_rolled_back_on_open(tmp_path, backend):
    db_image, journal_image, expected = crashed_sqlite_files(tmp_path)
    store = sqlkv.MemoryStore()
    put_file(store, "app.db", db_image)
    put_file(store, "app.db-journal", journal_image)
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        assert db.query("SELECT id, v FROM t").rows == expected
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]
    # The journal is gone and the rollback is committed.
    assert store.get(LAYOUT.meta_key("app.db-journal")) is None
    assert not [k for k in store._data if b"app.db-journal" in k]
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        assert db.query("SELECT id, v FROM t").rows == expected


def test_hot_journal_read_only_open_shows_the_rolled_back_state_and_writes_nothing(tmp_path, backend):
    db_image, journal_image, expected = crashed_sqlite_files(tmp_path)
    store = CountingStore()
    put_file(store.inner, "app.db", db_image)
    put_file(store.inner, "app.db-journal", journal_image)
    before = dict(store.inner._data)
    with sqlkv.connect(store, "app.db", backend=backend, readonly=True) as db:
        assert db.query("SELECT id, v FROM t").rows == expected
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]
    assert store.calls["put_batch"] == store.calls["put"] == store.calls["delete_batch"] == 0
    assert store.inner._data == before


def test_crash_during_hot_journal_rollback_replays_to_the_same_state(tmp_path, backend):
    db_image, journal_image, expected = crashed_sqlite_files(tmp_path)
    template = sqlkv.MemoryStore()
    put_file(template, "app.db", db_image)
    put_file(template, "app.db-journal", journal_image)
    dry = FaultyStore(sqlkv.MemoryStore())
    dry.inner._data = dict(template._data)
    # One writer whose store fails under it: no lease, which a crash would leave
    # behind for the next open to wait out (leases are tested in test_lease.py).
    sqlkv.connect(dry, "app.db", backend=backend, lease_seconds=None).close()
    for n in range(1, dry.calls + 1):
        base = sqlkv.MemoryStore()
        base._data = dict(template._data)
        with pytest.raises(sqlkv.StoreError) as info:
            sqlkv.connect(FaultyStore(base, crash_at=n), "app.db", backend=backend, lease_seconds=None)
        assert isinstance(info.value.__cause__, StoreCrashed)
        with sqlkv.connect(base, "app.db", backend=backend, lease_seconds=None) as db:
            assert db.query("SELECT id, v FROM t").rows == expected
            assert db.query("PRAGMA integrity_check").rows == [("ok",)]


def test_journals_that_are_not_hot_are_left_alone(tmp_path, backend):
    db_image, journal_image, expected = crashed_sqlite_files(tmp_path)
    store = sqlkv.MemoryStore()
    source = sqlite3.connect(tmp_path / "source.db")
    clean = source.serialize()
    source.close()
    put_file(store, "app.db", clean)
    # A journal whose header was zeroed (journal_mode=PERSIST after a commit).
    put_file(store, "app.db-journal", bytes(len(journal_image)))
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        assert db.query("SELECT id, v FROM t").rows == expected
    assert store.get(LAYOUT.meta_key("app.db-journal")) is not None


def test_journal_of_a_committed_multi_file_transaction_is_not_rolled_back(tmp_path, backend):
    db_image, journal_image, _ = crashed_sqlite_files(tmp_path)
    # Name a super-journal at the end of the journal; it does not exist in the store,
    # so the multi-file transaction had committed and the database must stay as it is.
    name = b"other.db-mj01"
    trailer = (
        (0x40000000 // 4096 + 1).to_bytes(4, "big") + name
        + len(name).to_bytes(4, "big") + sum(name).to_bytes(4, "big")
        + bytes.fromhex("d9d505f920a163d7")
    )
    store = sqlkv.MemoryStore()
    put_file(store, "app.db", db_image)
    put_file(store, "app.db-journal", journal_image + trailer)
    alone = sqlite3.connect(":memory:")
    alone.deserialize(db_image)
    as_written = alone.execute("SELECT count(*) FROM t").fetchall()
    assert as_written != [(300,)]  # rolling back would give the 300 original rows
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        assert db.query("SELECT count(*) FROM t").rows == as_written


BIG_TX = (
    "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "
    "INSERT INTO t(v) SELECT printf('%.1000c', 'q') FROM n; COMMIT;"
)


@pytest.mark.parametrize(
    "limits",
    [sqlkv.RIVET_ACTOR_LIMITS, sqlkv.StoreLimits(max_batch_keys=128), sqlkv.StoreLimits(max_batch_bytes=40_000)],
    ids=["rivet-actor", "128-keys", "40-KB"],
)
def test_commits_larger_than_a_batch_stay_within_the_limits(backend, limits):
    """FaultyStore raises LimitViolation on any call over the declared limits."""
    base = sqlkv.MemoryStore()
    store = FaultyStore(base, limits=limits)
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        before = store.calls
        db.exec(BIG_TX.format(rows=2000))  # about 2 MB: far over one batch
        staged_calls = store.calls - before
        before = store.calls
        db.run("INSERT INTO t(v) VALUES ('small')")
        assert store.calls - before == 1  # a commit that fits is still one round trip
        assert db.query("SELECT count(*) FROM t").rows == [(2001,)]
    assert staged_calls > 10
    assert not staging_keys(base._data)
    with sqlkv.connect(base, "app.db", backend=backend) as db:
        assert db.query("SELECT count(*), sum(length(v)) FROM t").rows == [(2001, 2000 * 1000 + 5)]
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]


def test_transaction_over_the_memory_bound_spills_and_commits(connect_db):
    store = sqlkv.MemoryStore()
    db = connect_db(store, max_dirty_bytes=64 * 1024, backend="pages")
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    db.stats.reset()
    db.exec(BIG_TX.format(rows=1000))
    # Spilled during the transaction, then a staged commit: many round trips, one commit.
    assert db.stats.commits == 1 and db.stats.round_trips > 5
    assert db.query("SELECT count(*) FROM t").rows == [(1000,)]
    # A rollback of a spilled transaction leaves the committed state.
    db.exec("BEGIN; UPDATE t SET v = 'gone'; " + BIG_TX.format(rows=500).replace("BEGIN; ", "").replace("COMMIT;", "ROLLBACK;"))
    assert db.query("SELECT count(*), min(v) = max(v) FROM t").rows == [(1000, 1)]


def test_read_only_open_of_an_interrupted_commit_matches_recovery(backend):
    """Crash a staged commit at every call; a read-only open (which writes
    nothing) and a writable open (which finishes or discards) agree."""
    limits = sqlkv.StoreLimits(max_batch_keys=16)

    def workload(store):
        with sqlkv.connect(store, "app.db", backend=backend) as db:
            db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            db.exec(BIG_TX.format(rows=150))

    dry = FaultyStore(FiveCallStore(), limits=limits)
    workload(dry)
    for n in range(1, dry.calls + 1):
        base = FiveCallStore()
        try:
            workload(FaultyStore(base, crash_at=n, limits=limits))
        except sqlkv.StoreError:
            pass
        before = dict(base.inner._data)
        if not before:
            continue
        try:
            with sqlkv.connect(base, "app.db", backend=backend, readonly=True) as db:
                seen = db.query("SELECT count(*) FROM t").rows
        except sqlkv.SqlError as exc:
            assert "no such table" in str(exc)
            seen = None
        assert base.inner._data == before, f"read-only open at crash {n} wrote"
        with sqlkv.connect(base, "app.db", backend=backend) as db:
            try:
                recovered = db.query("SELECT count(*) FROM t").rows
            except sqlkv.SqlError:
                recovered = None
        assert seen == recovered and recovered in (None, [(0,)], [(150,)])


def test_memory_stays_bounded_during_a_large_import(tmp_path):
    """A 48 MiB import with a 2 MiB bound, into LMDB (whose memory is not
    Python's): Python's peak allocation stays near the bound, not the import."""
    import tracemalloc

    store = sqlkv.LmdbStore(tmp_path / "data")
    try:
        with sqlkv.connect(store, "app.db", max_dirty_bytes=2 * 1024 * 1024, cache_bytes=1024 * 1024) as db:
            db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
            tracemalloc.start()
            db.exec(
                "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 48000) "
                "INSERT INTO t(v) SELECT zeroblob(1000) FROM n; COMMIT;"
            )
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert db.query("SELECT count(*) FROM t").rows == [(48000,)]
        assert peak < 12 * 1024 * 1024, f"peak Python allocation {peak} bytes"
    finally:
        store.close()


def run_import(mib: int) -> dict:
    import json
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    result = subprocess.run(
        [sys.executable, str(here / "import_memory.py"), str(mib)],
        capture_output=True, text=True, cwd=here, timeout=1800,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_import_into_a_128_key_store_has_bounded_rss():
    report = run_import(128)
    assert report["rows"] == 128 * 1024 and report["quick_check"] == "ok"
    assert report["max_rss_mib"] < 200, report


@pytest.mark.slow
def test_one_gib_import_into_a_128_key_store_has_bounded_rss():
    """Measured: 1 GiB in one transaction, 15,830 round trips, peak RSS 116 MiB."""
    report = run_import(1024)
    assert report["rows"] == 1024 * 1024 and report["quick_check"] == "ok"
    assert report["max_rss_mib"] < 200, report


def test_a_journal_claiming_an_original_size_beyond_the_layout_is_not_played_back(tmp_path, backend):
    """A journal header whose original size (pages x page size) is past what the
    layout can address is none SQLite wrote: truncating to it would leave a
    FileMeta no open accepts. It is treated as SQLite treats a header with a bad
    page size: nothing is played back."""
    db_image, journal_image, _ = crashed_sqlite_files(tmp_path)
    header = bytearray(journal_image)
    header[16:20] = (0xFFFFFFFF).to_bytes(4, "big")  # original size in pages
    header[24:28] = (65536).to_bytes(4, "big")  # page size: 2^48 bytes in all
    store = sqlkv.MemoryStore()
    put_file(store, "app.db", db_image)
    put_file(store, "app.db-journal", bytes(header))
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        assert db.query("SELECT count(*) FROM sqlite_master").rows[0][0] >= 1
    # The database keeps its size (truncated to 2^48 bytes, no open would accept it).
    assert store.get(LAYOUT.meta_key("app.db")) == encode_file_meta(len(db_image))
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        assert db.query("SELECT count(*) FROM sqlite_master").rows[0][0] >= 1


class LargestRead(CountingStore):
    """A MemoryStore declaring ``limits``, remembering the most keys one ``get_batch`` asked for."""

    def __init__(self, limits: sqlkv.StoreLimits) -> None:
        super().__init__(sqlkv.MemoryStore(), limits=limits, write_batch=True)
        self.largest = 0

    def _call(self, kind, *args):
        if kind == "get_batch":
            self.largest = max(self.largest, len(args[0]))
        return super()._call(kind, *args)


@pytest.mark.parametrize("committed", [False, True], ids=["before-commit-point", "after-commit-point"])
def test_recovery_on_redis_limits_reads_what_it_needs_not_the_batch_limit(committed):
    """Redis takes 512 MiB a batch: 8,388,608 keys by the transport's reckoning.
    Recovering an interrupted staged commit must ask for what it needs (a few
    pieces, a few chunks), not that many absent keys in one MGET."""
    store = LargestRead(REDIS_LIMITS)
    with sqlkv.connect(store, "app.db", lease_seconds=None) as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        size = db.query("PRAGMA page_count").rows[0][0] * 4096
        page1 = store.inner.get(LAYOUT.chunk_key("app.db", 0))
    committer = Committer(StoreClient(store), LAYOUT, 4096)
    staging = Staging()
    committer.stage("app.db", staging, {0: page1})  # the same bytes: recovery changes nothing
    if committed:
        record = CommitRecord(staging.commit_id, size, size // 4096, size // 4096, staging.pieces)
        key = record_key(LAYOUT, "app.db")
        store.inner.put(key, record.encode(key))
    store.largest = 0
    with sqlkv.connect(store, "app.db", lease_seconds=None) as db:
        assert db.query("SELECT x FROM t").rows == [(1,)]
    assert not staging_keys(store.inner._data)
    assert 0 < store.largest <= 64, f"one get_batch asked for {store.largest} keys"


class StopsAfterKey(FiveCallStore):
    """A MemoryStore seen through the five calls, 16 keys a batch, whose every
    call fails once a write of ``key`` landed: a writer that died right there."""

    def __init__(self, inner: sqlkv.MemoryStore, key: bytes) -> None:
        super().__init__(inner)
        self.limits = sqlkv.StoreLimits(max_batch_keys=16)
        self.key = key
        self.stopped = False

    def _call(self, kind, *args):
        if self.stopped:
            raise StoreCrashed("the writer died after its commit record")
        result = super()._call(kind, *args)
        if kind in ("put", "put_batch") and any(k == self.key for k in ([args[0]] if kind == "put" else [k for k, _ in args[0]])):
            self.stopped = True
        return result


def interrupted_after_its_commit_point(backend: str) -> sqlkv.MemoryStore:
    """A database whose last transaction (150 rows, spilled while it ran) stored
    its commit record and was interrupted before any chunk was moved into place."""
    from sqlkv.storage.commit import record_key as commit_record_key

    inner = sqlkv.MemoryStore()
    store = StopsAfterKey(inner, commit_record_key(LAYOUT, "app.db"))
    db = sqlkv.connect(store, "app.db", backend=backend, lease_seconds=None, max_dirty_bytes=16 * 1024)
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    with pytest.raises(sqlkv.OutcomeUnknownError):
        db.exec(BIG_TX.format(rows=150))
    try:
        db.close()
    except sqlkv.Error:
        pass
    return inner


@pytest.mark.parametrize("mode", ["short", "garbled"])
@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "reader"])
def test_a_staged_chunk_answered_damaged_at_recovery_is_refused_and_never_put_in_place(backend, readonly, mode):
    """Issue 20, item 5: a staged chunk answered short was zero-padded and moved
    into place, destroying the database. At every staged-chunk read of the
    recovery in turn, the damaged answer is refused (CorruptError naming the
    key); nothing of it reaches a chunk's place; the next open, answered
    right, finishes the commit."""
    stored = interrupted_after_its_commit_point(backend)
    dry = MangledAnswers(copy_store(stored), kinds=b"d", mode=mode, at=0)
    with sqlkv.connect(dry, "app.db", backend=backend, lease_seconds=None, readonly=readonly) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(150,)]
    assert dry.hits > 0
    finished = copy_store(stored)
    sqlkv.connect(finished, "app.db", backend=backend, lease_seconds=None).close()
    final = {k: v for k, v in finished._data.items() if k[:2] == b"\x09\x01"}
    for n in range(1, dry.hits + 1):
        base = copy_store(stored)
        before = dict(base._data)
        store = MangledAnswers(base, kinds=b"d", mode=mode, at=n)
        with pytest.raises(sqlkv.CorruptError, match=r"staged chunk \d+ of 'app.db' at key [0-9a-f]+ "):
            with sqlkv.connect(store, "app.db", backend=backend, lease_seconds=None, readonly=readonly) as db:
                db.query("SELECT count(*), sum(length(v)) FROM t")
        assert store.mangled == 1
        for key, value in base._data.items():  # every chunk as it was, or as the commit makes it
            if key[:2] == b"\x09\x01":
                assert value in (before.get(key), final.get(key)), f"read {n}: chunk {key.hex()} damaged"
        with sqlkv.connect(base, "app.db", backend=backend, lease_seconds=None) as db:
            assert db.query("SELECT count(*), sum(length(v)) FROM t").rows == [(150, 150 * 1000)]
            assert db.query("PRAGMA integrity_check").rows == [("ok",)]
        assert not staging_keys(base._data)


def _rows_database(backend: str, rows: int = 30) -> sqlkv.MemoryStore:
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db", backend=backend, lease_seconds=None) as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        db.exec(BIG_TX.format(rows=rows))
    return store


@pytest.mark.parametrize("mode", ["short", "garbled"])
@pytest.mark.parametrize("which", [0, 1], ids=["piece-0", "piece-1"])
def test_garbled_pieces_of_a_commit_interrupted_before_its_commit_point_are_discarded(backend, which, mode):
    """Reproduction (issue 20, item 9): one garbled manifest piece left by a
    commit interrupted before its commit point (no record refers to it: it is
    garbage) made every writer's open fail on its checksum, and so the
    database unwritable. Recovery discards it; check --repair removes the
    staged chunks it listed, which it can no longer tell."""
    store = _rows_database(backend)
    committer = Committer(StoreClient(store), LAYOUT, 4096)
    staging = Staging()
    committer.stage("app.db", staging, {40: bytes(4096), 41: b"x" * 4096})
    committer.stage("app.db", staging, {42: b"y" * 100})
    key = committer.piece_key("app.db", which)
    store.put(key, mangled(store.get(key), mode))
    with sqlkv.connect(store, "app.db", backend=backend, lease_seconds=None) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(30,)]
        db.exec("INSERT INTO t(v) VALUES ('after')")
    assert not [k for k in store._data if staging_kind(k) == b"m"]
    leftovers = [k for k in store._data if staging_kind(k) == b"d"]
    assert len(leftovers) == (2 if which == 0 else 1)  # the garbled piece's chunks
    report = sqlkv.check_database(store, "app.db", repair=True)
    assert report.sound, report.problems
    assert not staging_keys(store._data)
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(31,)]


@pytest.mark.parametrize("mode", ["short", "garbled"])
def test_a_garbled_commit_record_is_refused_by_name_and_discarded_by_repair(backend, mode):
    """Reproduction (issue 20, item 9): a garbled commit record cannot be told
    from a committed one, so an open refuses it: a CorruptError naming its key
    and ``check --repair``. Repair, which failed on the same checksum, now
    discards it (read twice alike) with its staging area, and the database is
    writable again, at the state before that transaction."""
    from sqlkv.storage.commit import record_key as commit_record_key

    store = interrupted_after_its_commit_point(backend)
    key = commit_record_key(LAYOUT, "app.db")
    store.put(key, mangled(store.get(key), mode))
    before = dict(store._data)
    for readonly in (False, True):
        with pytest.raises(sqlkv.CorruptError) as caught:
            with sqlkv.connect(store, "app.db", backend=backend, lease_seconds=None, readonly=readonly) as db:
                db.query("SELECT count(*) FROM t")
        assert key.hex() in str(caught.value) and "check --repair" in str(caught.value)
        assert store._data == before
    report = sqlkv.check_database(store, "app.db", lease_seconds=None)
    assert any("cannot be read" in p.message and p.repairable for p in report.problems), report.problems
    report = sqlkv.check_database(store, "app.db", repair=True, lease_seconds=None)
    assert report.sound, report.problems
    assert report.repaired
    assert not staging_keys(store._data)
    with sqlkv.connect(store, "app.db", backend=backend, lease_seconds=None) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(0,)]
        db.exec("INSERT INTO t(v) VALUES ('writable')")
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]


def test_repair_discards_no_record_that_was_only_answered_garbled(backend):
    """A record answered garbled once, but stored intact, is not discarded:
    repair reads it twice, and the commit it records is rolled forward."""
    from sqlkv.storage.commit import record_key as commit_record_key

    stored = interrupted_after_its_commit_point(backend)
    key = commit_record_key(LAYOUT, "app.db")
    store = MangledAnswers(stored, kinds=b"c", mode="garbled", at=1)
    with pytest.raises(sqlkv.CorruptError):
        sqlkv.connect(store, "app.db", backend=backend, lease_seconds=None)
    assert stored.get(key) is not None
    store.at = 2  # the repair's open is answered garbled, its second read not
    store.hits = 1
    store.mangled = 0
    from sqlkv.storage.files import open_file
    from sqlkv.storage.options import Options

    with pytest.raises(sqlkv.CorruptError, match="answered differently by two reads"):
        with open_file(store, "app.db", Options(lease_seconds=None), readonly=False, salvage=True):
            pass
    assert stored.get(key) is not None
    with sqlkv.connect(stored, "app.db", backend=backend, lease_seconds=None) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(150,)]


def test_a_commit_staged_by_an_earlier_sqlkv_without_digests_still_rolls_forward(backend):
    """Pieces of an earlier sqlkv list indices only (no digests): an interrupted
    commit it left past its commit point is still finished, unchecked as before."""
    from sqlkv.storage.commit import encode_piece

    store = _rows_database(backend)
    size = int.from_bytes(store.get(LAYOUT.meta_key("app.db"))[2:], "little")
    chunks = size // 4096
    committer = Committer(StoreClient(store), LAYOUT, 4096)
    commit_id = b"\x07" * 8
    page = store.get(LAYOUT.chunk_key("app.db", 1))
    piece_key = committer.piece_key("app.db", 0)
    store.put_batch([
        (committer.staged_key("app.db", 1), page),
        (piece_key, encode_piece(piece_key, commit_id, [1])),
    ])
    key = record_key(LAYOUT, "app.db")
    store.put(key, CommitRecord(commit_id, size, chunks, chunks, 1).encode(key))
    with sqlkv.connect(store, "app.db", backend=backend, lease_seconds=None) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(30,)]
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]
    assert not staging_keys(store._data)

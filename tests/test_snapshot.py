"""Backend snapshot's own mechanics: loading the whole image, finding what changed,
taking no image for reads, and noticing every kind of write."""

from __future__ import annotations

import math

import pytest
from helpers import CountingStore, copy_store, is_version_key, stored_chunks, stored_size

import sqlkv
from sqlkv.engine.snapshot import changed_chunks
from sqlkv.format.layout import encode_file_meta
from sqlkv.storage.options import Options
from sqlkv.storage.storage import Storage
from sqlkv.stores.contract import StoreClient


def _engine(db):
    return db._engine


# -- changed_chunks --------------------------------------------------------------

CS = 16


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (b"", b"", []),
        (b"a" * 64, b"a" * 64, []),
        (b"", b"a" * 40, [0, 1, 2]),
        (b"a" * 64, b"a" * 20 + b"b" + b"a" * 43, [1]),
        (b"a" * 64, b"b" + b"a" * 62 + b"b", [0, 3]),
        (b"a" * 64, b"a" * 70, [4]),  # grew: a new chunk
        (b"a" * 60, b"a" * 64, [3]),  # grew inside the last chunk
        (b"a" * 64, b"a" * 40, [2]),  # shrank inside a chunk: its value is shorter
        (b"a" * 64, b"a" * 32, []),  # shrank to a chunk boundary: only deletions
        (b"a" * 64, b"a" * 30 + b"b" * 2, [1]),  # shrank and changed the new last chunk
    ],
)
def test_changed_chunks(old, new, expected):
    assert changed_chunks(old, new, CS) == expected


def test_changed_chunks_across_many_blocks():
    old = bytes(4096 * 1000)
    new = bytearray(old)
    for index in (0, 255, 256, 511, 999):
        new[index * 4096 + 17] = 1
    assert changed_chunks(old, bytes(new), 4096) == [0, 255, 256, 511, 999]


# -- loading the image -------------------------------------------------------------


def _three_chunk_file(store, name: str, chunk1: bytes | None, chunk2: bytes) -> Storage:
    layout = Options().make_layout("x.db")
    entries = [
        (layout.meta_key(name), encode_file_meta(4096 * 2 + 300)),
        (layout.chunk_key(name, 0), b"\x01" * 4096),
        (layout.chunk_key(name, 2), chunk2),
        (layout.chunk_key(name, 3), b"\x04" * 4096),  # past the end: not part of the file
    ]
    if chunk1 is not None:
        entries.append((layout.chunk_key(name, 1), chunk1))
    store.put_batch(entries)
    return Storage(StoreClient(store), layout, "x.db", 4096, 1 << 20)


@pytest.mark.parametrize(
    "chunk1, chunk2, key, problem",
    [
        (None, b"\x03" * 300, "01782e64620000000001", "is missing"),
        (b"\x02" * 4096, b"\x03" * 100, "01782e64620000000002", "is 100 bytes long"),
        (b"\x02" * 4000, b"\x03" * 300, "01782e64620000000001", "is 4000 bytes long"),
    ],
    ids=["missing", "short-last", "short-middle"],
)
def test_read_all_refuses_missing_and_short_chunks(chunk1, chunk2, key, problem):
    """Issue 9 item 6: a missing or short chunk of the database used to read
    as zeros (and be written back with the next commit)."""
    storage = _three_chunk_file(sqlkv.MemoryStore(), "x.db", chunk1, chunk2)
    with pytest.raises(sqlkv.CorruptError, match=f"at key 09{key} {problem}"):
        storage.open().read_all()


def test_files_beside_the_database_keep_the_layouts_zeros():
    """A journal another implementation left keeps LAYOUT.md's rule: missing
    and short chunks read as zeros (SQLite's journal checksums catch damage)."""
    store = sqlkv.MemoryStore()
    storage = _three_chunk_file(store, "x.db-journal", None, b"\x03" * 100)
    storage.open()
    image = storage.file("x.db-journal").read_all()
    assert image == b"\x01" * 4096 + bytes(4096) + b"\x03" * 100 + bytes(200)


@pytest.mark.parametrize(
    "limits, per_batch",
    [
        (None, None),
        (sqlkv.RIVET_ACTOR_LIMITS, 128),
        (sqlkv.StoreLimits(max_batch_bytes=100 * (4096 + 64)), 100),
    ],
)
def test_open_reads_every_chunk_in_as_few_round_trips_as_the_limits_allow(
    store_16mib, limits, per_batch
):
    store = CountingStore(copy_store(store_16mib), limits=limits)
    chunks = math.ceil(stored_size(store_16mib, "bench.db") / 4096)
    db = sqlkv.connect(store, "bench.db", backend="snapshot")
    # The first round trip brings three FileMeta keys (database, journal, WAL), the two
    # keys that tell of an interrupted commit, the version record and the first 4 chunks; the
    # rest follow in batches.
    rest = 1 if per_batch is None else math.ceil((chunks - 4) / per_batch)
    assert store.calls == {"get_batch": 1 + rest}
    assert db.stats.keys_read == 3 + 2 + 1 + 4 + (chunks - 4)
    meta = 10  # the database's FileMeta; its journal and WAL have none
    version = len(next(v for k, v in store_16mib._data.items() if is_version_key(k) and k.endswith(b"v")))
    assert db.stats.bytes_read == stored_size(store_16mib, "bench.db") + meta + version
    for i in range(50):
        assert db.query("SELECT id FROM t WHERE id = ?", [1 + i * 300]).rows == [(1 + i * 300,)]
    assert store.total == 1 + rest
    db.close()


def test_a_small_database_opens_in_one_round_trip():
    store = CountingStore()
    with sqlkv.connect(store, "small.db", backend="snapshot") as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    store.reset()
    with sqlkv.connect(store, "small.db", backend="snapshot") as db:
        assert db.query("SELECT x FROM t").rows == [(1,)]
        assert store.calls == {"get_batch": 1}


def test_a_store_failure_at_open_is_a_store_error():
    class Down(sqlkv.MemoryStore):
        def get_batch(self, keys):
            raise ConnectionError("no route to store")

    with pytest.raises(sqlkv.StoreError) as caught:
        sqlkv.connect(Down(), "x.db", backend="snapshot")
    assert isinstance(caught.value.__cause__, ConnectionError)


# -- what takes an image ---------------------------------------------------------------


def test_reads_take_no_image(store_16mib):
    store = CountingStore(copy_store(store_16mib))
    with sqlkv.connect(store, "bench.db", backend="snapshot") as db:
        store.reset()
        for i in range(200):
            k = 1 + (i * 7919) % 16000
            assert db.query(f"SELECT v FROM t WHERE id = {k}").rows == [(str(k).rjust(1000, "x"),)]
        db.exec("PRAGMA table_info(t); PRAGMA integrity_check; PRAGMA user_version; PRAGMA sqlkv_stats")
        db.exec("BEGIN; SELECT count(*) FROM t; COMMIT;")
        db.run("UPDATE t SET v = 'none' WHERE id = -1")  # changes no row
        assert _engine(db).images_taken == 0
        assert store.total == 0


def test_a_rolled_back_transaction_takes_an_image_and_writes_nothing():
    store = CountingStore()
    with sqlkv.connect(store, "app.db", backend="snapshot") as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        taken = _engine(db).images_taken
        store.reset()
        db.exec("BEGIN; INSERT INTO t VALUES (2); DELETE FROM t WHERE x = 1; ROLLBACK")
        assert _engine(db).images_taken == taken + 1
        assert store.total == 0


@pytest.mark.parametrize(
    "change, check, expected",
    [
        ("CREATE INDEX t_x ON t(x)", "SELECT name FROM sqlite_schema WHERE type = 'index'", [("t_x",)]),
        ("CREATE VIEW v AS SELECT x FROM t", "SELECT count(*) FROM v", [(3,)]),
        ("ALTER TABLE t RENAME TO renamed", "SELECT count(*) FROM renamed", [(3,)]),
        ("ALTER TABLE t ADD COLUMN y DEFAULT 5", "SELECT sum(y) FROM t", [(15,)]),
        ("DROP TABLE t", "SELECT count(*) FROM sqlite_schema", [(0,)]),
        ("ANALYZE", "SELECT tbl FROM sqlite_stat1", [("t",)]),
        ("PRAGMA user_version = 5", "PRAGMA user_version", [(5,)]),
        ("PRAGMA application_id = 77", "PRAGMA application_id", [(77,)]),
        ("DELETE FROM t WHERE x > 1", "SELECT x FROM t", [(1,)]),
        ("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END", "SELECT name FROM sqlite_schema WHERE type = 'trigger'", [("tr",)]),
        ("REPLACE INTO t(rowid, x) VALUES (1, 100)", "SELECT max(x) FROM t", [(100,)]),
    ],
)
def test_every_kind_of_change_is_committed(change, check, expected):
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db", backend="snapshot") as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)")
        commits = db.stats.commits
        db.exec(change)
        assert db.stats.commits == commits + 1
    # Read back by the other backend, from the store alone.
    with sqlkv.connect(store, "app.db", backend="pages") as db:
        assert db.query(check).rows == expected


def test_vacuum_shrinks_the_stored_file():
    store = CountingStore()
    with sqlkv.connect(store, "app.db", backend="snapshot", chunk_size=4097) as db:
        db.exec(
            "CREATE TABLE t(v); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            "WHERE i < 100) INSERT INTO t SELECT randomblob(3000) FROM n"
        )
        db.exec("DELETE FROM t WHERE rowid > 2")
        grown = stored_size(store.inner, "app.db")
        store.reset()
        db.exec("VACUUM")
        # One commit; a store without write_batch takes the deletions in a second call.
        assert store.calls == {"put_batch": 1, "delete_batch": 1}
        size = stored_size(store.inner, "app.db")
        assert size < grown // 10
        assert stored_chunks(store.inner, "app.db") == list(range(math.ceil(size / 4097)))


def test_opening_and_closing_a_new_database_writes_nothing():
    store = CountingStore()
    with sqlkv.connect(store, "new.db", backend="snapshot") as db:
        assert db.query("SELECT count(*) FROM sqlite_schema").rows == [(0,)]
        db.exec("PRAGMA cache_size = 100; PRAGMA foreign_keys = ON")
    assert store.calls == {"get_batch": 1} and len(store.inner) == 0

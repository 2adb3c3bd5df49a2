"""Round trips and chunks, counted by a store that sees every call.

The CountingStore offers only the seed's five calls, so commits must be plain
``put_batch`` calls: exactly one per write transaction.
"""

from __future__ import annotations

import pytest
from helpers import CountingStore, copy_store, stored_chunks, stored_size

import sqlkv


def test_one_put_batch_per_write_transaction(connect_db):
    store = CountingStore()
    db = connect_db(store)
    cases = [
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t(v) VALUES ('a')",
        "UPDATE t SET v = 'b' WHERE id = 1",
        "BEGIN; INSERT INTO t(v) VALUES ('c'); INSERT INTO t(v) VALUES ('d'); DELETE FROM t WHERE id = 1; COMMIT;",
        "CREATE INDEX t_v ON t(v)",
        # Large enough to spill SQLite's page cache mid-transaction.
        "PRAGMA cache_size = 20; BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
        "WHERE i < 3000) INSERT INTO t(v) SELECT printf('%.1000c', 'x') FROM n; COMMIT;",
    ]
    for sql in cases:
        store.reset()
        db.exec(sql)
        assert store.calls["put_batch"] == 1, (sql, store.calls)
        assert store.calls["put"] == 0 and store.calls["delete_batch"] == 0, (sql, store.calls)
    assert db.query("SELECT count(*) FROM t").rows == [(3002,)]


def test_write_batch_store_commits_in_one_call(connect_db):
    store = sqlkv.MemoryStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x)")
    db.stats.reset()
    db.run("INSERT INTO t VALUES (1)")
    assert db.stats.round_trips == 1 and db.stats.calls["write_batch"] == 1
    assert db.stats.commits == 1


def test_select_only_work_writes_nothing_and_cached_select_reads_nothing(connect_db):
    store = CountingStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)")
    db.query("SELECT sum(x) FROM t")
    store.reset()
    for _ in range(20):
        assert db.query("SELECT sum(x) FROM t").rows == [(6,)]
    db.exec("BEGIN; SELECT * FROM t; COMMIT;")
    assert store.total == 0, store.calls


def test_rolled_back_transaction_writes_nothing(connect_db):
    store = CountingStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    store.reset()
    db.exec("BEGIN; INSERT INTO t VALUES (2); UPDATE t SET x = 9; ROLLBACK;")
    assert store.calls["put_batch"] == 0 and store.calls["put"] == 0, store.calls
    assert db.query("SELECT x FROM t").rows == [(1,)]


def test_cold_point_query_on_16mib_takes_at_most_3_round_trips(store_16mib, backend):
    store = CountingStore(copy_store(store_16mib))
    with sqlkv.connect(store, "bench.db", backend=backend) as db:
        assert db.query("SELECT v FROM t WHERE id = 8000").rows == [("8000".rjust(1000, "x"),)]
        assert store.total <= 3, store.calls
        assert store.calls["put_batch"] == store.calls["put"] == 0
        if backend == "pages":
            # Page-level: a few chunks, not the database.
            assert db.stats.bytes_read <= 64 * 1024, db.stats.bytes_read
        else:
            # snapshot loads the whole image at open, in as few batches as the store allows.
            assert db.stats.bytes_read >= stored_size(store_16mib, "bench.db")


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t(id, v) VALUES (16001, 'new row')",
        "INSERT INTO t(id, v) VALUES (7777777, 'far row')",
        "UPDATE t SET v = 'short' WHERE id = 8000",
        f"UPDATE t SET v = '{'y' * 100}' WHERE id = 12345",
    ],
)
def test_single_row_change_in_16mib_writes_at_most_3_chunks(store_16mib, backend, sql):
    inner = copy_store(store_16mib)
    store = CountingStore(inner)
    with sqlkv.connect(store, "bench.db", backend=backend) as db:
        db.query("SELECT count(*) FROM t")
        store.reset()
        db.run(sql)
        assert store.calls["put_batch"] == 1, store.calls
        chunks = [k for k in store.keys_written if k[:2] == b"\x09\x01"]
        assert 1 <= len(chunks) <= 3, len(chunks)
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]


def test_shrink_leaves_no_chunk_past_the_end(connect_db):
    store = sqlkv.MemoryStore()
    db = connect_db(store)
    db.exec(
        "CREATE TABLE t(v); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
        "WHERE i < 2000) INSERT INTO t SELECT randomblob(1000) FROM n;"
    )
    big = stored_size(store, "app.db")
    assert len(stored_chunks(store, "app.db")) == big // 4096
    db.exec("DELETE FROM t")
    db.exec("VACUUM")
    small = stored_size(store, "app.db")
    assert small < big // 50
    chunks = stored_chunks(store, "app.db")
    assert len(chunks) == -(-small // 4096)
    assert all(i * 4096 < small for i in chunks)
    assert db.query("SELECT count(*) FROM t").rows == [(0,)]


def test_shrink_on_a_five_call_store(connect_db):
    """Without write_batch, the deletion of chunks past the end is one more call."""
    store = CountingStore()
    db = connect_db(store)
    db.exec(
        "CREATE TABLE t(v); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
        "WHERE i < 500) INSERT INTO t SELECT randomblob(1000) FROM n;"
    )
    db.exec("DELETE FROM t")
    store.reset()
    db.exec("VACUUM")
    assert store.calls["put_batch"] == 1 and store.calls["delete_batch"] == 1, store.calls
    size = stored_size(store.inner, "app.db")
    assert len(stored_chunks(store.inner, "app.db")) == -(-size // 4096)


@pytest.mark.parametrize("pragma", ["journal_mode=WAL", "journal_mode=OFF", "journal_mode=DELETE",
                                    "locking_mode=NORMAL", "synchronous=OFF", "main.journal_mode = 'wal'"])
def test_pinned_settings_are_refused_and_the_database_keeps_working(connect_db, pragma):
    store = CountingStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    with pytest.raises(sqlkv.PinnedSettingError, match="not allowed"):
        db.exec(f"PRAGMA {pragma}")
    assert db.query("PRAGMA journal_mode").rows == [("memory",)]
    store.reset()
    db.run("INSERT INTO t VALUES (2)")
    assert store.calls["put_batch"] == 1
    assert db.query("SELECT count(*) FROM t").rows == [(2,)]
    # Setting a pinned value to what it already is, and reading it, are fine.
    db.exec("PRAGMA journal_mode=MEMORY; PRAGMA synchronous=FULL")

"""Bad stored data: clear errors, nothing changed; corrupt databases still open to read."""

from __future__ import annotations

import pytest

import sqlkv


def test_corrupt_database_opens_and_integrity_check_reports_it(backend):
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        db.exec(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t(v);"
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400) "
            "INSERT INTO t(v) SELECT printf('%.200c', 'a') || i FROM n;"
        )
    # Change one byte of one row's text: the table no longer matches its index.
    needle = b"a" * 200 + b"123"
    key = next(k for k, v in store._data.items() if k[:2] == b"\x09\x01" and needle in v)
    page = bytearray(store.get(key))
    at = page.index(needle)
    page[at] = ord("b")
    store.put(key, bytes(page))
    before = dict(store._data)
    with sqlkv.connect(store, "app.db", backend=backend, readonly=True) as db:
        # The table itself is intact and readable.
        assert db.query("SELECT count(*) FROM t NOT INDEXED").rows == [(400,)]
        report = db.query("PRAGMA integrity_check").rows
        assert report != [("ok",)] and any("t_v" in line for (line,) in report), report
    assert store._data == before


@pytest.mark.parametrize(
    "meta, chunk_size, problem",
    [
        (b"\x01\x00\x00\x10", 4096, "FileMeta at key 09006170702e6462 is 4 bytes"),
        (b"\x07\x00" + (8192).to_bytes(8, "little"), 4096, "unknown version 7"),
        (b"\x01\x00" + (2**32 * 512 + 1).to_bytes(8, "little"), 512, r"beyond 2\^32 chunks"),
    ],
    ids=["wrong-length", "unknown-version", "too-large"],
)
def test_bad_file_meta_is_refused_without_writing(backend, meta, chunk_size, problem):
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db", chunk_size=chunk_size, backend=backend) as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    store.put(b"\x09\x00app.db", meta)
    before = dict(store._data)
    with pytest.raises(sqlkv.CorruptError, match=problem):
        sqlkv.connect(store, "app.db", chunk_size=chunk_size, backend=backend)
    assert store._data == before


def test_garbage_commit_record_is_a_clear_error(backend):
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(x)")
    store.put(b"\x09\x02app.db\x00c", b"not a record")
    before = dict(store._data)
    with pytest.raises(sqlkv.CorruptError, match="commit record"):
        sqlkv.connect(store, "app.db", backend=backend)
    assert store._data == before


def test_value_over_the_stores_largest_value_is_refused(backend):
    class Tiny(sqlkv.MemoryStore):
        limits = sqlkv.StoreLimits(max_value_bytes=512)

    with pytest.raises(sqlkv.StoreLimitError, match="largest value"):
        sqlkv.connect(Tiny(), "app.db", chunk_size=4096, backend=backend)

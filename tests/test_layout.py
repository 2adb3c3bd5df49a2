"""The byte layout of LAYOUT.md, checked against the keys actually written."""

from __future__ import annotations

import pytest

import sqlkv
from sqlkv.layout import (
    RivetV2Layout,
    SeedLayout,
    decode_file_meta,
    encode_file_meta,
)


def test_seed_test_vectors():
    layout = SeedLayout(9)
    assert layout.meta_key("app.db") == bytes.fromhex("09 00 61 70 70 2e 64 62")
    assert layout.chunk_key("app.db", 1) == bytes.fromhex("09 01 61 70 70 2e 64 62 00 00 00 00 01")
    assert layout.chunk_key("app.db", 0x01020304) == bytes.fromhex(
        "09 01 61 70 70 2e 64 62 00 01 02 03 04"
    )


def test_file_meta_vector():
    assert encode_file_meta(8192) == bytes.fromhex("01 00 00 20 00 00 00 00 00 00")
    assert decode_file_meta(bytes.fromhex("01 00 00 20 00 00 00 00 00 00"), 4096, b"k") == 8192


@pytest.mark.parametrize(
    "value, problem",
    [
        (b"\x01\x00" + (8192).to_bytes(8, "little") + b"\x00", "11 bytes long"),
        (b"\x01\x00\x00", "3 bytes long"),
        (b"\x02\x00" + (8192).to_bytes(8, "little"), "unknown version 2"),
        (b"\x01\x00" + (2**32 * 4096 + 1).to_bytes(8, "little"), r"beyond 2\^32 chunks"),
    ],
)
def test_bad_file_meta_is_a_clear_error(value, problem):
    with pytest.raises(sqlkv.CorruptError, match=problem):
        decode_file_meta(value, 4096, b"\x09\x00app.db")


def test_rivet_v2_keys():
    layout = RivetV2Layout("actor.db")
    assert layout.meta_key("actor.db") == bytes([0x08, 0x01, 0x00, 0])
    assert layout.meta_key("actor.db-journal") == bytes([0x08, 0x01, 0x00, 1])
    assert layout.chunk_key("actor.db", 0x01020304) == bytes([0x08, 0x01, 0x01, 0, 1, 2, 3, 4])
    assert layout.chunk_key("actor.db-wal", 7) == bytes([0x08, 0x01, 0x01, 2, 0, 0, 0, 7])
    with pytest.raises(sqlkv.ConfigError, match="no place for file"):
        layout.meta_key("other.db")


def test_keys_written_follow_the_seed_layout(connect_db):
    store = sqlkv.MemoryStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(5000))")
    db.close()
    meta = store.get(bytes.fromhex("09 00 61 70 70 2e 64 62"))
    size = decode_file_meta(meta, 4096, b"k")
    assert size > 4096 and size % 4096 == 0
    chunk_keys = sorted(k for k in store._data if k[:2] == b"\x09\x01")
    expected = [bytes.fromhex("09 01 61 70 70 2e 64 62 00") + i.to_bytes(4, "big") for i in range(size // 4096)]
    assert chunk_keys == expected
    assert bytes.fromhex("09 01 61 70 70 2e 64 62 00 00 00 00 01") in store._data
    # Chunk 0 is the start of a SQLite file.
    assert store.get(expected[0]).startswith(b"SQLite format 3\x00")
    assert set(store._data) == {bytes.fromhex("09 00 61 70 70 2e 64 62"), *expected}


def test_data_written_by_another_implementation_opens(connect_db, backend):
    """A database whose chunks were put in the store by hand, as another
    implementation of the layout would, opens here. A chunk missing inside
    the file is not read as zeros (LAYOUT.md's rule): for the database file it
    is damage, named by its key (see kvfile.py for why)."""
    import sqlite3

    source = sqlite3.connect(":memory:")
    source.executescript(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v); "
        "INSERT INTO t(v) SELECT randomblob(300) FROM (SELECT 1 UNION ALL SELECT 2);"
        "CREATE TABLE empty(x);"
    )
    image = source.serialize()
    rows = source.execute("SELECT id, v FROM t").fetchall()
    store = sqlkv.MemoryStore()
    layout = SeedLayout(9)
    store.put(layout.meta_key("other.db"), encode_file_meta(len(image)))
    for i in range(0, len(image), 4096):
        store.put(layout.chunk_key("other.db", i // 4096), image[i : i + 4096])
    db = connect_db(store, "other.db", backend=backend)
    assert db.query("SELECT id, v FROM t").rows == rows
    db.close()
    damaged = sqlkv.MemoryStore()
    damaged.put_batch(list(store._data.items()))
    damaged.delete_batch([layout.chunk_key("other.db", 1)])  # t's root page
    missing = layout.chunk_key("other.db", 1).hex()
    with pytest.raises(sqlkv.CorruptError, match=f"at key {missing} is missing"):
        with sqlkv.connect(damaged, "other.db", backend=backend) as db:
            db.query("SELECT id, v FROM t")


def test_rivet_v2_layout_end_to_end(connect_db):
    store = sqlkv.MemoryStore()
    db = connect_db(store, "actor.db", layout="rivet-v2")
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (42)")
    db.close()
    assert store.get(bytes([0x08, 0x01, 0x00, 0])) is not None
    assert store.get(bytes([0x08, 0x01, 0x01, 0, 0, 0, 0, 0])).startswith(b"SQLite format 3")
    assert all(k[:2] == b"\x08\x01" for k in store._data)
    db = connect_db(store, "actor.db", layout="rivet-v2")
    assert db.query("SELECT x FROM t").rows == [(42,)]

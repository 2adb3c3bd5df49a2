"""The byte layout of docs/layout.md, checked against the keys actually written."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from helpers import is_version_key

import sqlkv
from sqlkv.format.layout import (
    CHUNK,
    EXT,
    EXT_COMMIT_RECORD,
    EXT_LEASE,
    EXT_STAGED_CHUNK,
    EXT_STAGED_MANIFEST,
    META,
    SIDECARS,
    KeyInfo,
    Layout,
    RivetV2Layout,
    SeedLayout,
    chunk_spans,
    database_of,
    decode_file_meta,
    encode_file_meta,
    record_key,
)
from sqlkv.storage.lease import lease_keys
from sqlkv.storage.versions import log_key, version_key


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


def test_database_of_names_the_database_of_every_key_a_database_writes(connect_db):
    """Every key of a seed database, its journal's and sqlkv's own name it; rivet-v2 keys name none."""
    store = sqlkv.MemoryStore()
    with connect_db(store, "app.db") as db:  # a writer: its lease keys are there while it is open
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(9000))")
        keys = list(store.scan(b""))
    assert len(keys) > 3 and {database_of(k) for k in keys} == {b"\x09app.db"}
    seed = SeedLayout(200)
    assert database_of(seed.chunk_key("x.db-shm", 5)) == b"\xc8x.db"
    assert database_of(seed.meta_key("-wal")) == b"\xc8-wal"  # a suffix alone is a name
    assert database_of(seed.ext_key("x.db-journal", EXT_STAGED_CHUNK, b"\x00\x00\x00\x01")) == b"\xc8x.db"
    rivet = RivetV2Layout("app.db")
    rivet_keys = [rivet.meta_key("app.db"), rivet.chunk_key("app.db-wal", 7), rivet.ext_key("app.db", EXT_LEASE)]
    odd = [b"", b"\x09", b"\x09\x07junk", b"\x09\x01app.db", b"\x09\x02\x00c"]
    assert [database_of(k) for k in rivet_keys + odd] == [None] * 8


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
    assert {k for k in store._data if not is_version_key(k)} == {bytes.fromhex("09 00 61 70 70 2e 64 62"), *expected}


def test_data_written_by_another_implementation_opens(connect_db, backend):
    """A database whose chunks were put in the store by hand, as another
    implementation of the layout would, opens here. A chunk missing inside
    the file is not read as zeros (LAYOUT.md's rule): for the database file it
    is damage, named by its key (see storage/kvfile.py for why)."""
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


def test_rivet_v2_refuses_a_kv_prefix_it_cannot_honour(connect_db):
    """Issue 9 item 11. Reproduction: in one MemoryStore,
    ``connect(store, "a.db", layout="rivet-v2")`` creates table ``a``; then
    ``connect(store, "b.db", layout="rivet-v2", kv_prefix=2)`` opened and showed
    table ``a``: the prefix (and the name) were silently ignored. Now the prefix
    is refused before anything is read or written."""
    store = sqlkv.MemoryStore()
    db = connect_db(store, "a.db", layout="rivet-v2")
    db.exec("CREATE TABLE a(x)")
    db.close()
    before = dict(store._data)
    with pytest.raises(sqlkv.ConfigError, match="rivet-v2 has no prefix byte.*kv_prefix 2"):
        sqlkv.connect(store, "b.db", layout="rivet-v2", kv_prefix=2)
    with pytest.raises(sqlkv.ConfigError, match="kv_prefix 2"):
        sqlkv.SqliteVfs(layout="rivet-v2", kv_prefix=2)
    assert store._data == before


def test_rivet_v2_names_only_label_the_one_database_per_key_space(connect_db):
    """Layout rivet-v2 has no place for a file name: the store (key space) is the
    database, and the name it is opened with is not part of any key (README,
    Options). So opening another name in the same store opens that same
    database, as documented, and no key holds either name."""
    store = sqlkv.MemoryStore()
    db = connect_db(store, "actor-1", layout="rivet-v2")
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (7)")
    db.close()
    assert not any(b"actor" in key for key in store._data)
    db = connect_db(store, "any-other-name.db", layout="rivet-v2")
    assert db.query("SELECT x FROM t").rows == [(7,)]


def test_the_vectors_of_docs_layout_md_are_the_keys_the_code_makes():
    """docs/layout.md gives test vectors; each must be what format/layout.py computes."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "layout.md").read_text()
    seed, rivet = SeedLayout(9), RivetV2Layout("actor.db")
    u32 = struct.Struct(">I").pack
    keys = [
        seed.meta_key("app.db"),
        seed.chunk_key("app.db", 1),
        seed.chunk_key("app.db", 0x01020304),
        seed.ext_key("app.db", EXT_COMMIT_RECORD),
        seed.ext_key("app.db", EXT_STAGED_MANIFEST, u32(0)),
        seed.ext_key("app.db", EXT_STAGED_CHUNK, u32(5)),
        seed.ext_key("app.db", EXT_LEASE),
        seed.ext_key("app.db", EXT_LEASE, b"e"),
        version_key(seed, "app.db"),
        log_key(seed, "app.db", 257),
        rivet.meta_key("actor.db"),
        rivet.meta_key("actor.db-journal"),
        rivet.chunk_key("actor.db", 1),
        rivet.chunk_key("actor.db", 0x01020304),
        rivet.ext_key("actor.db", EXT_COMMIT_RECORD),
        rivet.ext_key("actor.db", EXT_LEASE, b"e"),
        encode_file_meta(8192),
    ]
    for key in keys:
        assert f"`{key.hex(' ')}`" in text, f"docs/layout.md lacks the vector {key.hex(' ')}"


def test_a_version_log_entry_round_trips_and_says_every_chunk_past_its_limit():
    from sqlkv.storage.versions import MAX_LOGGED_CHUNKS, decode_log, encode_log

    key = log_key(SeedLayout(9), "app.db", 7)
    entry = encode_log(key, 7, {3, 1, 2})
    assert decode_log(entry, key, 7) == frozenset({1, 2, 3})
    # The indices, the parent head's id (8 bytes), the format byte, the checksum.
    assert len(entry) == 3 * 4 + 8 + 1 + 4
    assert decode_log(encode_log(key, 7, range(MAX_LOGGED_CHUNKS + 1)), key, 7) is None
    # The slot of version 7 read for version 263 (256 later), or garbled: not known.
    assert decode_log(entry, key, 263) is None
    assert decode_log(entry[:4] + bytes([entry[4] ^ 1]) + entry[5:], key, 7) is None


@pytest.mark.parametrize(
    "offset, length, spans",
    [
        (0, 0, []),
        (0, 4096, [(0, 0, 4096)]),
        (100, 50, [(0, 100, 150)]),
        (4000, 200, [(0, 4000, 4096), (1, 0, 104)]),
        (4096, 8192 + 1, [(1, 0, 4096), (2, 0, 4096), (3, 0, 1)]),
    ],
)
def test_chunk_spans_say_which_chunks_a_range_touches(offset, length, spans):
    assert list(chunk_spans(offset, length, 4096)) == spans


def test_version_records_and_log_entries_of_the_format_without_head_ids_are_still_read():
    """A record without a head id (5 to 12 bytes) and a log entry without a parent,
    written by the release before heads had ids, are read; new ones carry both."""
    from sqlkv.format.sealed import seal
    from sqlkv.storage.versions import Head, encode_version, read_head, read_log

    layout = SeedLayout(9)
    vkey = version_key(layout, "app.db")
    meta = encode_file_meta(8192)
    old_record = b"\x07" + seal(vkey + meta, b"\x07", 4)[1:]
    assert read_head(old_record, vkey) == Head(7, None)
    new_record = encode_version(vkey, 7, meta, b"\xaa" * 8)
    assert len(new_record) == 1 + 8 + 4
    assert read_head(new_record, vkey) == Head(7, b"\xaa" * 8)
    assert read_head(encode_version(vkey, 2**64 - 1, meta, b"\x01" * 8), vkey) == Head(2**64 - 1, b"\x01" * 8)
    lkey = log_key(layout, "app.db", 7)
    body = (5).to_bytes(4, "big")
    old_entry = body + seal(lkey + (7).to_bytes(8, "big"), body, 4)[len(body):]
    entry = read_log(old_entry, lkey, 7)
    assert entry is not None and entry.changed == frozenset({5}) and entry.parent is None
    from sqlkv.storage.versions import encode_log

    entry = read_log(encode_log(lkey, 7, {5}, b"\xbb" * 8), lkey, 7)
    assert entry is not None and entry.changed == frozenset({5}) and entry.parent == b"\xbb" * 8


def _rebuilt(layout: Layout, info: KeyInfo) -> bytes:
    """The key ``info`` describes, made again by the layout's own key functions."""
    if info.what == META:
        return layout.meta_key(info.file_name)
    if info.what == CHUNK:
        assert info.index is not None
        return layout.chunk_key(info.file_name, info.index)
    assert info.what == EXT and len(info.kind) == 1
    return layout.ext_key(info.file_name, info.kind, info.suffix)


@pytest.mark.parametrize("layout", [SeedLayout(9), RivetV2Layout("app.db")], ids=["seed", "rivet-v2"])
def test_the_key_classifier_names_every_kind_of_key_a_layout_makes(layout):
    """classify() is the one reader of keys (inventory asks it instead of counting
    bytes): for every key kind of both layouts, of the database and each sidecar,
    it names what the key is, and the layout's key functions make the key again."""
    u32 = struct.Struct(">I").pack
    for file_name in ["app.db", *("app.db" + s for s in SIDECARS)]:
        cases = {
            layout.meta_key(file_name): KeyInfo(META, file_name),
            record_key(layout, file_name): KeyInfo(EXT, file_name, None, EXT_COMMIT_RECORD),
            layout.ext_key(file_name, EXT_STAGED_MANIFEST, u32(3)): KeyInfo(EXT, file_name, None, b"m", u32(3)),
            layout.ext_key(file_name, EXT_STAGED_CHUNK, u32(2**32 - 1)):
                KeyInfo(EXT, file_name, None, b"d", u32(2**32 - 1)),
            version_key(layout, file_name): KeyInfo(EXT, file_name, None, version_key(layout, file_name)[-1:]),
        }
        for index in (0, 1, 0x01020304, 2**32 - 1):
            cases[layout.chunk_key(file_name, index)] = KeyInfo(CHUNK, file_name, index)
        for key in [*lease_keys(layout, file_name), log_key(layout, file_name, 257)]:
            cases[key] = layout.classify(key)
            assert cases[key] is not None and cases[key].what == EXT and cases[key].kind in (b"l", key[-2:-1])
        for key, info in cases.items():
            assert layout.classify(key) == info, key.hex(" ")
            assert _rebuilt(layout, info) == key
        assert layout.chunk_prefix(file_name) == layout.chunk_key(file_name, 7)[:-4]
        assert layout.ext_key(file_name, EXT_LEASE).startswith(layout.ext_prefix(file_name))
    other = RivetV2Layout("app.db") if isinstance(layout, SeedLayout) else SeedLayout(9)
    for key in [other.meta_key("app.db"), other.chunk_key("app.db", 1), other.ext_key("app.db", EXT_LEASE), b"", b"\x09"]:
        assert layout.classify(key) is None, key.hex(" ")
    assert SeedLayout(8).classify(SeedLayout(9).meta_key("app.db")) is None


@pytest.mark.parametrize("layout", ["seed", "rivet-v2"])
def test_every_key_a_database_writes_is_one_the_classifier_reads_back(connect_db, layout):
    """The keys a real database leaves in the store (FileMeta, chunks, lease,
    versions) each classify as a key of its file, and are made again from that."""
    store = sqlkv.MemoryStore()
    db = connect_db(store, "app.db", layout=layout)
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (zeroblob(20000))")
    db.close()
    made = SeedLayout(9) if layout == "seed" else RivetV2Layout("app.db")
    whats = set()
    for key in store._data:
        info = made.classify(key)
        assert info is not None and info.file_name == "app.db", key.hex(" ")
        assert _rebuilt(made, info) == key
        whats.add(info.what)
    assert whats == {META, CHUNK, EXT}

"""Bad stored data: clear errors, nothing changed; corrupt databases still open to read."""

from __future__ import annotations

import struct

import pytest
from helpers import CountingStore, FiveCallStore

import sqlkv
from sqlkv.format.layout import EXT_COMMIT_RECORD, EXT_STAGED_MANIFEST, SeedLayout, decode_file_meta, encode_file_meta
from sqlkv.storage.commit import CommitRecord
from sqlkv.stores.wrapper import call_parts


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


# -- issue 9: damaged stored data is named and never trusted ---------------------------

LAYOUT = SeedLayout(9)
META_KEY = LAYOUT.meta_key("app.db")
RECORD_KEY = LAYOUT.ext_key("app.db", EXT_COMMIT_RECORD)
ROWS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) SELECT i FROM n"


def _database_of_rows(backend: str) -> sqlkv.MemoryStore:
    """app.db with 20 rows of 1,000 bytes: seven chunks."""
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        db.exec(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
            f"INSERT INTO t(v) SELECT printf('%.1000c', 'a') || i FROM ({ROWS})"
        )
    return store


def _old_format_record(new_size: int, first_gone: int, old_chunks: int, pieces: int) -> bytes:
    """A commit record as sqlkv wrote it before records carried a checksum."""
    return struct.pack(">4sQQQQ", b"SKVc", new_size, first_gone, old_chunks, pieces)


def _sealed(new_size: int, first_gone: int, old_chunks: int, pieces: int) -> bytes:
    return CommitRecord(b"12345678", new_size, first_gone, old_chunks, pieces).encode(RECORD_KEY)


def _flipped(value: bytes) -> bytes:
    return value[:12] + bytes([value[12] ^ 1]) + value[13:]


@pytest.mark.parametrize(
    "record, problem",
    [
        (_old_format_record(4096, 1, 60, 0), "is 36 bytes long, not 52"),
        (_sealed(4096, 1, 60, 0), "says the file had 60 chunks, but its FileMeta"),
        (_flipped(_sealed(4096, 1, 7, 0)), "fails its checksum"),
        (_sealed(4096, 0, 7, 2**40), "1099511627776 pieces: beyond"),
        (_sealed(4096, 1, 2**33, 0), "8589934592 old chunks .*beyond"),
        (_sealed(2**60, 1, 7, 0), "beyond the layout"),
        (_sealed(4096, 5, 7, 0), "drops chunks from 5, past"),
        (_sealed(4096, 1, 7, 3), "manifest piece at key 09026170702e6462006d00000002 is missing"),
    ],
    ids=[
        "old-format-wipe",
        "old-chunks-not-the-filemeta",
        "garbled",
        "2^40-pieces",
        "2^33-old-chunks",
        "size-beyond-the-layout",
        "first-gone-past-the-end",
        "pieces-missing",
    ],
)
@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "reader"])
def test_an_unverified_commit_record_deletes_nothing(backend, record, problem, readonly):
    """Reproduction (issue 9, items 5 and 7): a well-formed record saying new
    size 4096, first gone 1, 60 old chunks, 0 pieces was applied at a writer's
    open and the keys went from 53 to 2; records claiming 2^40 pieces or 2^33
    old chunks ran out of memory. Every record is checked (checksum, fields
    against the FileMeta and the layout, its pieces) before anything is
    deleted, at once, on the writer's and the reader's open alike."""
    store = _database_of_rows(backend)
    store.put(RECORD_KEY, record)
    before = dict(store._data)
    with pytest.raises(sqlkv.CorruptError, match=problem) as caught:
        sqlkv.connect(store, "app.db", backend=backend, readonly=readonly)
    assert RECORD_KEY.hex() in str(caught.value) or "manifest piece at key" in str(caught.value)
    assert store._data == before


def test_a_garbled_manifest_piece_deletes_nothing_but_itself(backend):
    """Pieces without a record are rolled back, deleting the staged chunks they
    list. A piece that fails its checksum lists nothing to trust: it alone is
    deleted (issue 20, item 9: it used to be refused, which left the database
    unwritable, since no record refers to it and nothing ever would)."""
    store = _database_of_rows(backend)
    piece_key = LAYOUT.ext_key("app.db", EXT_STAGED_MANIFEST, b"\x00\x00\x00\x00")
    store.put(piece_key, b"\x00" * 8 + struct.pack(">I", 1) + b"\x00" * 8)
    before = dict(store._data)
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(20,)]
    assert piece_key not in store._data
    assert all(store._data.get(k) == v for k, v in before.items() if k != piece_key)


class DamagingStore(sqlkv.MemoryStore):
    """A MemoryStore that, while ``damage`` is on, answers reads of ``key``
    with a truncated value (``short``) or none (``missing``): a store's bad
    answer, which the next read may not repeat."""

    def __init__(self, data: dict[bytes, bytes], key: bytes, kind: str) -> None:
        super().__init__()
        self._data = dict(data)
        self.key, self.kind, self.damage = key, kind, False

    def _answer(self, key: bytes, value: bytes | None) -> bytes | None:
        if not self.damage or key != self.key or value is None:
            return value
        return value[:1000] if self.kind == "short" else None

    def get(self, key):
        return self._answer(key, super().get(key))

    def get_batch(self, keys):
        return [self._answer(k, v) for k, v in zip(keys, super().get_batch(keys))]


@pytest.mark.parametrize("kind", ["short", "missing"])
def test_a_short_or_missing_chunk_is_never_read_as_zeros(backend, kind):
    """Reproduction (issue 9, items 6 and 10): on pages one short read
    (truncated value) or missing value of a chunk inside the file was read as
    zeros, and the next write of that page stored the zeros for good; the
    missing middle chunk otherwise gave only "database disk image is
    malformed". Now: CorruptError naming the key, and nothing written."""
    key = LAYOUT.chunk_key("app.db", 5)  # past what an open reads ahead
    store = DamagingStore(_database_of_rows(backend)._data, key, kind)
    found = "is missing" if kind == "missing" else "is 1000 bytes long"
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        store.damage = True
        before = dict(store._data)
        with pytest.raises(sqlkv.CorruptError, match=f"chunk 5 of 'app.db' at key {key.hex()} {found}"):
            if backend == "snapshot":  # reads the whole image at its (re)open
                db._engine._broken = RuntimeError("reopen")
            db.exec("UPDATE t SET v = upper(v)")
        assert store._data == before
        store.damage = False
        db.exec("UPDATE t SET v = upper(v)")
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]
        assert db.query("SELECT count(*) FROM t WHERE v = upper(printf('%.1000c', 'a') || id)").rows == [(20,)]


def test_a_huge_file_meta_on_snapshot_fails_at_once():
    """Reproduction (issue 9, item 7): a FileMeta of 2^40 bytes made backend
    snapshot allocate without bound (1.8 GiB resident in 20 s). The last chunk
    such a size needs is read first, and its absence is named at once."""
    store = _database_of_rows("snapshot")
    store.put(META_KEY, encode_file_meta(2**40))
    last = LAYOUT.chunk_key("app.db", 2**40 // 4096 - 1)
    for readonly in (False, True):
        with pytest.raises(sqlkv.CorruptError, match=f"at key {last.hex()} is missing"):
            sqlkv.connect(store, "app.db", backend="snapshot", readonly=readonly)


@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "reader"])
def test_a_file_meta_claiming_more_than_its_chunks_fails_at_open(backend, readonly):
    """Reproduction (issue 20, item 8): a FileMeta claiming 2^40 bytes over a
    3-page database opened on backend pages, ``check`` called it sound, and a
    VACUUM then cost time and memory in proportion to the size claimed. The
    open fails, naming the last chunk such a size needs, and writes nothing."""
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(x); CREATE TABLE u(y); INSERT INTO t VALUES (1)")
    assert decode_file_meta(store.get(META_KEY), 4096, META_KEY) == 3 * 4096
    store.put(META_KEY, encode_file_meta(2**40))
    before = dict(store._data)
    last = LAYOUT.chunk_key("app.db", 2**40 // 4096 - 1)
    with pytest.raises(sqlkv.CorruptError, match=f"chunk 268435455 of 'app.db' at key {last.hex()} is missing"):
        with sqlkv.connect(store, "app.db", backend=backend, readonly=readonly) as db:
            db.exec("VACUUM")
    assert store._data == before
    report = sqlkv.check_database(store, "app.db")
    assert not report.sound
    assert any(last.hex() in p.message for p in report.problems), report.problems


def test_the_size_check_at_open_costs_a_round_trip_only_where_the_header_disagrees():
    """Backend pages checks a FileMeta against SQLite's header in chunk 0, read
    in the open's one round trip: no extra round trip when they agree; where
    they do not (a file larger than its header says, as SQLite allows), one
    read of the last chunk, and a last chunk that is there opens."""
    store = _database_of_rows("pages")
    counting = CountingStore(store)

    def open_calls() -> int:
        counting.reset()
        with sqlkv.connect(counting, "app.db", backend="pages") as db:  # a writer without a lease
            calls = counting.total
            assert db.query("SELECT count(*) FROM t").rows == [(20,)]
        return calls

    assert open_calls() == 1
    size = decode_file_meta(store.get(META_KEY), 4096, META_KEY)
    assert size == 7 * 4096  # more than the open reads ahead: the header answers for the rest
    store.put_batch([(META_KEY, encode_file_meta(size + 4096)), (LAYOUT.chunk_key("app.db", 7), bytes(4096))])
    assert open_calls() == 2


class CommitsBeforeRead(FiveCallStore):
    """Before answering the first read of the key ``key``, lets ``commit()`` run."""

    def __init__(self, inner: sqlkv.MemoryStore, key: bytes, commit) -> None:
        super().__init__(inner)
        self.key = key
        self.commit = commit

    def _call(self, kind, *args):
        if self.commit is not None and self.key in call_parts(kind, args).reads:
            commit, self.commit = self.commit, None
            commit()
        return super()._call(kind, *args)


def test_a_reader_whose_size_check_meets_a_commit_opens_again():
    """A reader that reads the last chunk at open (the FileMeta and the header
    disagree) while a writer's commit shrinks the file opens again on the
    new state, instead of calling the chunk the commit removed damage."""
    store = _database_of_rows("pages")
    size = decode_file_meta(store.get(META_KEY), 4096, META_KEY)
    store.put_batch([(META_KEY, encode_file_meta(size + 4096)), (LAYOUT.chunk_key("app.db", 7), bytes(4096))])

    def commit() -> None:
        with sqlkv.connect(store, "app.db", backend="pages") as writer:
            writer.exec("INSERT INTO t(v) VALUES ('new'); VACUUM")  # the file shrinks to its pages
        assert decode_file_meta(store.get(META_KEY), 4096, META_KEY) == size
        assert store.get(LAYOUT.chunk_key("app.db", 7)) is None

    racing = CommitsBeforeRead(store, LAYOUT.chunk_key("app.db", 7), commit)
    with sqlkv.connect(racing, "app.db", readonly=True, backend="pages") as reader:
        assert racing.commit is None  # it ran
        assert reader.query("SELECT count(*) FROM t").rows == [(21,)]


def test_snapshot_refuses_a_database_larger_than_it_can_hold(monkeypatch):
    """A real database past what SQLite holds in memory is a clear error that
    names the way out, before any chunk but the last is read."""
    from sqlkv.engine import snapshot as engine_snapshot

    monkeypatch.setattr(engine_snapshot, "MAX_IMAGE_BYTES", 8192)
    store = _database_of_rows("snapshot")
    with pytest.raises(sqlkv.ConfigError, match="backend snapshot holds at most 8192 bytes.*pages"):
        sqlkv.connect(store, "app.db", backend="snapshot")


@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "reader"])
def test_a_damaged_image_is_an_sqlkv_error(backend, readonly):
    """Reproduction (issue 9, item 10): a read-only open of data that is not a
    SQLite database raised a raw sqlite3.DatabaseError on snapshot."""
    store = sqlkv.MemoryStore()
    store.put_batch([(META_KEY, encode_file_meta(4096)), (LAYOUT.chunk_key("app.db", 0), b"\x07" * 4096)])
    with pytest.raises(sqlkv.SqlError, match="not a database"):
        with sqlkv.connect(store, "app.db", backend=backend, readonly=readonly) as db:
            db.query("SELECT * FROM sqlite_master")


def test_a_bad_file_meta_beside_the_database_names_its_key():
    """Reproduction (issue 9, item 10): "CorruptError: FileMeta at key  is 1
    bytes long" named no key (a FileMeta SQLite looks for beside the database;
    backend snapshot never looks)."""
    backend = "pages"
    store = _database_of_rows(backend)
    wal_meta = LAYOUT.meta_key("app.db-wal")
    store.put(wal_meta, b"\x01")
    with pytest.raises(sqlkv.CorruptError, match=f"FileMeta at key {wal_meta.hex()} is 1 bytes long"):
        with sqlkv.connect(store, "app.db", backend=backend) as db:
            db.exec("INSERT INTO t(v) VALUES ('x')")


class RacingStore(FiveCallStore):
    """Five calls on ``inner``; the first read of a manifest piece first lets
    ``race()`` run: a writer finishing the staged commit under the reader."""

    def __init__(self, inner: sqlkv.MemoryStore, race) -> None:
        super().__init__(inner)
        self.race = race

    def get_batch(self, keys):
        if self.race is not None and any(k[:-4].endswith(b"\x00m") for k in keys):
            race, self.race = self.race, None
            race()
        return self.inner.get_batch(keys)


def test_a_reader_racing_a_staged_commit_reads_the_committed_state(backend):
    """Reproduction (issue 9, item 10): a read-only open that found a staged
    commit's record, while the writer finished that commit before the open
    read its manifest, failed with "CorruptError: manifest piece ... is
    missing", though nothing was corrupt. It reads the database again."""
    inner = sqlkv.MemoryStore()

    class StopAfterRecord(sqlkv.MemoryStore):
        limits = sqlkv.StoreLimits(max_batch_keys=16)

        def write_batch(self, puts, deletes, expect=None):
            applied = super().write_batch(puts, deletes, expect)
            if any(k == RECORD_KEY for k, _ in puts):
                raise RuntimeError("the writer stops here: committed, not yet applied")
            return applied

    writer_store = StopAfterRecord()
    writer_store._data = inner._data
    db = sqlkv.connect(writer_store, "app.db", backend=backend, lease_seconds=None)
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    with pytest.raises(sqlkv.OutcomeUnknownError):
        db.exec(f"INSERT INTO t(v) SELECT printf('%.1000c', 'r') FROM ({ROWS.replace('20', '100')})")
    db._engine.client.close()  # abandoned, as by a crash: nothing more of it runs
    assert inner.get(RECORD_KEY) is not None

    def finish() -> None:
        sqlkv.connect(inner, "app.db", backend=backend, lease_seconds=None).close()

    with sqlkv.connect(RacingStore(inner, finish), "app.db", backend=backend, readonly=True) as reader:
        assert reader.query("SELECT count(*) FROM t").rows == [(100,)]
    assert inner.get(RECORD_KEY) is None


def test_a_huge_super_journal_name_length_is_not_read():
    """Issue 9, item 7 (a decoded size bounded): a journal whose tail claims a
    super-journal name of 2^32 - 1 bytes made the hot-journal check read that
    much (a journal's missing chunks read as zeros). A name that long is no
    super-journal SQLite wrote."""
    from sqlkv.storage.journal import MAGIC, super_journal_name
    from sqlkv.storage.storage import Storage
    from sqlkv.stores.contract import StoreClient

    store = sqlkv.MemoryStore()
    size = 2**33
    tail = struct.pack(">II", 2**32 - 1, 0) + MAGIC
    store.put_batch(
        [
            (LAYOUT.meta_key("app.db-journal"), encode_file_meta(size)),
            (LAYOUT.chunk_key("app.db-journal", (size - 1) // 4096), bytes(4096 - len(tail)) + tail),
        ]
    )
    storage = Storage(StoreClient(store), LAYOUT, "app.db", 4096, 1 << 20)
    assert super_journal_name(storage.file("app.db-journal")) is None


def test_a_reader_whose_chunks_a_writer_dropped_sees_the_new_state():
    """A read-only open reads after a writer's commit dropped chunks it had
    read: its next read transaction moves to the new version (before
    versions it read zeros, then got ConcurrentCommitError)."""
    store = _database_of_rows("pages")
    with sqlkv.connect(store, "app.db", readonly=True) as reader:
        assert reader.query("SELECT count(*) FROM t NOT INDEXED").rows[0][0] > 0
        with sqlkv.connect(store, "app.db") as writer:
            writer.exec("DELETE FROM t; VACUUM")
        assert reader.query("SELECT count(*), max(v) FROM t NOT INDEXED").rows == [(0, None)]
    with sqlkv.connect(store, "app.db", readonly=True) as reader:
        assert reader.query("SELECT count(*) FROM t").rows == [(0,)]

"""list_databases, copy_database between stores, check_database (and repair), remove_database,
over MemoryStore, LMDB, and a Redis of the test's own (standalone and cluster)."""

from __future__ import annotations

import struct
import time

import pytest
from helpers import CountingStore, is_version_key, unique_namespace

import sqlkv
from sqlkv.format.layout import SeedLayout, encode_file_meta
from sqlkv.storage.commit import encode_piece
from sqlkv.stores.wrapper import StoreWrapper

STORE_KINDS = ["memory", "lmdb", "redis", "redis-cluster"]
LAYOUT = SeedLayout(9)


@pytest.fixture(params=STORE_KINDS)
def any_store(request, tmp_path):
    """A fresh store of each kind, and its URL (closed at the end)."""
    kind = request.param
    if kind == "memory":
        store, url = sqlkv.MemoryStore(), "memory://"
    elif kind == "lmdb":
        url = f"lmdb://{tmp_path / 'lmdb'}"
        store = sqlkv.open_store(url)
    else:
        server = request.getfixturevalue("redis_cluster" if kind == "redis-cluster" else "redis_server")
        url = f"{server.url}?namespace={unique_namespace()}"
        store = sqlkv.open_store(url)
    yield store, url
    store.close()


def fill(store, name: str, rows: int) -> None:
    with sqlkv.connect(store, name) as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        with db.transaction() as tx:
            for i in range(rows):
                tx.run("INSERT INTO t(v) VALUES (?)", [bytes([i % 256]) * 1000])


def test_ls_lists_each_database_with_its_size_chunks_and_lease(any_store):
    store, _ = any_store
    fill(store, "a.db", 10)
    fill(store, "b.db", 200)
    with sqlkv.connect(store, "held.db") as holder:
        holder.exec("CREATE TABLE x(y)")
        found = {d.name: d for d in sqlkv.list_databases(store)}
        assert sorted(found) == ["a.db", "b.db", "held.db"]
        assert found["held.db"].lease is not None and found["held.db"].lease.held
    for name in ("a.db", "b.db"):
        with sqlkv.connect(store, name, readonly=True) as db:
            pages, size = db.query("PRAGMA page_count").rows[0][0], db.query("PRAGMA page_size").rows[0][0]
        assert found[name].size == pages * size
        assert found[name].chunks == -(-found[name].size // 4096)
        assert found[name].lease is None
    assert found["b.db"].size > found["a.db"].size
    assert [d.name for d in sqlkv.list_databases(store)] == ["a.db", "b.db", "held.db"]


def test_copy_to_every_store_and_back(any_store, tmp_path):
    store, _ = any_store
    origin = sqlkv.MemoryStore()
    fill(origin, "app.db", 300)
    sqlkv.copy_database(origin, store, "app.db", "copied.db")
    back = sqlkv.MemoryStore()
    sqlkv.copy_database(store, back, "copied.db", "app.db")
    # The data keys; each copy has version keys of its own (its own commits).
    data = sorted(k for k in origin.scan(b"") if not is_version_key(k))
    assert data == sorted(k for k in back.scan(b"") if not is_version_key(k))
    assert all(origin.get(k) == back.get(k) for k in data)
    assert [d.name for d in sqlkv.list_databases(store)] == ["copied.db"]
    with sqlkv.connect(store, "copied.db") as db:
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]
        assert db.query("SELECT count(*) FROM t").rows == [(300,)]


def test_remove_takes_every_key_and_only_those_of_the_database(any_store):
    store, _ = any_store
    fill(store, "keep.db", 20)
    fill(store, "gone.db", 50)
    store.put_batch([(LAYOUT.ext_key("gone.db", b"d", b"\x00\x00\x00\x07"), b"staged leftover")])
    removed = sqlkv.remove_database(store, "gone.db")
    assert removed >= 50 * 1000 // 4096 + 2
    assert [d.name for d in sqlkv.list_databases(store)] == ["keep.db"]
    left = list(store.scan(b""))
    assert left and all(b"gone.db" not in key for key in left)
    with pytest.raises(sqlkv.NotFoundError):
        sqlkv.remove_database(store, "gone.db")
    with sqlkv.connect(store, "keep.db") as db:
        assert db.query("SELECT count(*) FROM t").rows == [(20,)]


def plant(store, kind: str) -> None:
    """One problem of a kind ``check`` must find in database ``app.db``."""
    if kind == "orphan chunk":
        store.put_batch([(LAYOUT.chunk_key("app.db", 5000), b"\x01" * 4096)])
    elif kind == "staging leftovers":
        piece_key = LAYOUT.ext_key("app.db", b"m", struct.pack(">I", 0))
        store.put_batch([
            (piece_key, encode_piece(piece_key, b"\x05" * 8, [3])),
            (LAYOUT.ext_key("app.db", b"d", struct.pack(">I", 3)), b"\x02" * 4096),
        ])
    elif kind == "stale lease":
        gen = LAYOUT.ext_key("app.db", b"l")
        expiry = LAYOUT.ext_key("app.db", b"l", b"e")
        token = b"t" * 16
        store.put_batch([(gen, struct.pack(">Q16s", 7, token)), (expiry, struct.pack(">Q16s", 1000, token))])
    elif kind == "bad FileMeta":
        store.put_batch([(LAYOUT.meta_key("app.db"), b"\x09\x09\x09")])
    elif kind == "chunk past a shrunken FileMeta":
        size = 4096 * 2
        store.put_batch([(LAYOUT.meta_key("app.db"), encode_file_meta(size))])


@pytest.mark.parametrize("kind, removes, sound_after", [
    ("orphan chunk", True, True),
    ("staging leftovers", True, True),
    ("stale lease", True, True),
    ("bad FileMeta", False, False),
    # The header and the chunks say where the file ends: the FileMeta is rewritten, nothing removed.
    ("chunk past a shrunken FileMeta", True, True),
])
def test_check_finds_each_planted_problem_and_repair_fixes_what_it_claims(kind, removes, sound_after):
    store = sqlkv.MemoryStore()
    fill(store, "app.db", 40)
    assert sqlkv.check_database(store, "app.db").sound
    before = {k: store.get(k) for k in store.scan(b"")}
    plant(store, kind)
    report = sqlkv.check_database(store, "app.db")
    assert not report.sound, kind
    messages = " / ".join(p.message for p in report.problems)
    word = {"orphan chunk": "past the end", "staging leftovers": "staging key",
            "stale lease": "stale lease", "bad FileMeta": "bad FileMeta",
            "chunk past a shrunken FileMeta": "FileMeta says 8192 bytes, but the database's SQLite header"}[kind]
    assert word in messages
    repaired = sqlkv.check_database(store, "app.db", repair=True)
    assert bool(repaired.repaired) == removes, "repair says what it removed, and only that"
    if sound_after:
        assert repaired.sound, repaired.problems
        # Exactly what was planted is gone (a rewritten FileMeta moves the version keys on).
        data = {k: store.get(k) for k in store.scan(b"") if not is_version_key(k)}
        assert data == {k: v for k, v in before.items() if not is_version_key(k)}
    else:
        # A bad FileMeta is never "repaired" (that would lose data).
        assert not repaired.sound
        assert any(w in p.message for p in repaired.problems for w in ("FileMeta", "integrity_check", "malformed"))


def damage_file_meta(store, how: str) -> int:
    """Take away ``app.db``'s FileMeta, or make it claim half the size; the real size."""
    with sqlkv.connect(store, "app.db", readonly=True) as db:
        size = db.query("PRAGMA page_count").rows[0][0] * db.query("PRAGMA page_size").rows[0][0]
    if how == "missing":
        store.delete_batch([LAYOUT.meta_key("app.db")])
    else:
        store.put_batch([(LAYOUT.meta_key("app.db"), encode_file_meta(size // 2))])
    return size


@pytest.mark.parametrize("how", ["missing", "half the size"])
def test_repair_rebuilds_a_file_meta_the_header_and_chunks_agree_on_and_deletes_nothing(how):
    """With the FileMeta missing, repair deleted every chunk (102 of 102); with one
    claiming half the size, the chunks past it (issue 20, item 4). The SQLite header
    in chunk 0 and the chunks present agree on the size: the FileMeta is rebuilt."""
    store = sqlkv.MemoryStore()
    fill(store, "app.db", 400)
    chunks = sorted(store.scan(b"\x09\x01"))
    assert len(chunks) > 100
    damage_file_meta(store, how)
    assert not sqlkv.check_database(store, "app.db").sound
    repaired = sqlkv.check_database(store, "app.db", repair=True)
    assert sorted(store.scan(b"\x09\x01")) == chunks  # every chunk kept
    assert len(repaired.repaired) == 1 and repaired.sound, repaired.problems
    with sqlkv.connect(store, "app.db", readonly=True) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(400,)]


def test_repair_tells_its_plan_before_it_writes_anything():
    class ScanningCountingStore(CountingStore):
        def scan(self, prefix: bytes):
            return self.inner.scan(prefix)

    store = ScanningCountingStore(write_batch=True)
    fill(store, "app.db", 40)
    size = damage_file_meta(store, "missing")
    store.put_batch([(LAYOUT.chunk_key("orphan.db", 3), b"x")])  # another database's: none of this one's
    report = sqlkv.check_database(store, "app.db")
    (fix,) = [p for p in report.problems if p.repairable]
    assert fix.action == f"a FileMeta of {size} bytes written"
    planned: list[list[str]] = []
    writes_before_plan: list[int] = []

    def on_plan(lines: list[str]) -> None:
        planned.append(lines)
        writes_before_plan.append(sum(store.calls[c] for c in ("put", "put_batch", "write_batch", "delete_batch")))

    store.reset()
    repaired = sqlkv.check_database(store, "app.db", repair=True, on_plan=on_plan)
    assert planned == [[fix.describe()]] and writes_before_plan == [0]
    assert repaired.repaired == [fix.describe()] and repaired.sound
    assert store.inner.get(LAYOUT.chunk_key("orphan.db", 3)) == b"x"


@pytest.mark.parametrize("how", ["missing", "half the size"])
def test_repair_removes_nothing_when_the_header_and_chunks_do_not_agree(how):
    """No evidence of where the file ends (here: one chunk inside it is gone): the
    chunks could be the database's, so nothing is removed and nothing written."""
    store = sqlkv.MemoryStore()
    fill(store, "app.db", 400)
    damage_file_meta(store, how)
    store.delete_batch([LAYOUT.chunk_key("app.db", 70)])
    before = {k: store.get(k) for k in store.scan(b"")}
    report = sqlkv.check_database(store, "app.db")
    assert not report.sound and not any(p.repairable for p in report.problems), report.problems
    assert any("not removed" in p.message or "nothing removed" in p.message for p in report.problems)
    repaired = sqlkv.check_database(store, "app.db", repair=True)
    assert repaired.repaired == [] and not repaired.sound
    assert {k: store.get(k) for k in store.scan(b"")} == before


def test_a_remove_interrupted_anywhere_is_never_brought_back_by_repair():
    """remove deletes the FileMeta with chunk 0 (the header a repair rebuilds from)
    in its first write: whatever a crash leaves, repair neither revives the
    database nor deletes chunks of one that still exists."""
    from sqlkv.testing import FaultyStore, StoreCrashed

    for crash_at in range(1, 40):
        base = sqlkv.MemoryStore()
        fill(base, "app.db", 100)
        try:
            sqlkv.remove_database(FaultyStore(base, crash_at=crash_at), "app.db", lease_seconds=None)
        except sqlkv.StoreError as exc:
            assert isinstance(exc.__cause__, StoreCrashed)
        else:
            break
        existed = LAYOUT.meta_key("app.db") in set(base.scan(b""))
        if base.scan(b""):
            sqlkv.check_database(base, "app.db", repair=True, lease_seconds=None)
        if existed:
            with sqlkv.connect(base, "app.db", readonly=True) as db:
                assert db.query("SELECT count(*) FROM t").rows == [(100,)]
        else:
            assert LAYOUT.meta_key("app.db") not in set(base.scan(b"")), crash_at
    else:
        pytest.fail("remove_database never finished")


def test_check_of_a_sound_database_in_use_notes_the_lease():
    store = sqlkv.MemoryStore()
    fill(store, "app.db", 5)
    with sqlkv.connect(store, "app.db"):
        report = sqlkv.check_database(store, "app.db")
    assert report.sound and any("held by a writer" in n for n in report.notes)
    with pytest.raises(sqlkv.NotFoundError):
        sqlkv.check_database(store, "missing.db")


def test_a_store_without_scan_gets_a_clear_error():
    class FiveCalls:
        def __init__(self) -> None:
            self.inner = sqlkv.MemoryStore()
            for call in ("get", "get_batch", "put", "put_batch", "delete_batch"):
                setattr(self, call, getattr(self.inner, call))

    with pytest.raises(sqlkv.StoreError, match="cannot list its keys"):
        sqlkv.list_databases(FiveCalls())


HUGE = 2**40  # what a damaged FileMeta claims in the tests below (issue 20, item 8)


def claim(store, size_or_value: int | bytes) -> None:
    """Overwrite ``app.db``'s FileMeta: with one of ``size_or_value`` bytes, or with that value."""
    value = encode_file_meta(size_or_value) if isinstance(size_or_value, int) else size_or_value
    store.put_batch([(LAYOUT.meta_key("app.db"), value)])


@pytest.mark.parametrize("meta", [HUGE, b"\x09\x09\x09"], ids=["claims 2^40 bytes", "unreadable"])
def test_remove_takes_every_key_whatever_the_file_meta_says(any_store, meta):
    """rm is the way out of a damaged database: with a FileMeta claiming 2^40 bytes
    over 10 chunks (or one that cannot be read) it refused with the open's
    CorruptError. It removes every key a scan finds, and nothing of another's."""
    store, _ = any_store
    fill(store, "keep.db", 20)
    fill(store, "app.db", 40)
    store.put_batch([(LAYOUT.ext_key("app.db", b"d", b"\x00\x00\x00\x07"), b"staged leftover")])
    claim(store, meta)
    with pytest.raises(sqlkv.CorruptError):  # a normal open still refuses it
        sqlkv.connect(store, "app.db", readonly=True)
    mine = [k for k in store.scan(b"") if b"app.db" in k and not k.startswith(LAYOUT.ext_key("app.db", b"l"))]
    assert sqlkv.remove_database(store, "app.db") == len(mine)
    assert not [k for k in store.scan(b"") if b"app.db" in k]
    assert [d.name for d in sqlkv.list_databases(store)] == ["keep.db"]
    with sqlkv.connect(store, "keep.db", readonly=True) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(20,)]


def test_ls_names_a_file_meta_its_chunks_do_not_bear_out_and_lists_the_others():
    store = sqlkv.MemoryStore()
    for name in ("a.db", "app.db", "b.db"):
        fill(store, name, 10)
    claim(store, HUGE)
    found = {d.name: d for d in sqlkv.list_databases(store)}
    assert sorted(found) == ["a.db", "app.db", "b.db"]
    last = LAYOUT.chunk_key("app.db", HUGE // 4096 - 1)
    assert found["app.db"].size == HUGE and found["app.db"].chunks == found["a.db"].chunks
    assert found["app.db"].problem is not None and f"chunk {HUGE // 4096 - 1}" in found["app.db"].problem
    assert last.hex() in found["app.db"].problem and "missing" in found["app.db"].problem
    assert found["a.db"].problem is None and found["b.db"].problem is None


def test_repair_rebuilds_a_file_meta_claiming_more_than_its_chunks_from_the_header():
    """A FileMeta claiming 2^40 bytes over a database whose SQLite header and chunks
    agree: check said only "cannot open the database", and repair failed on the
    open's CorruptError. check names the problem and the repair; repair rewrites
    the FileMeta, keeps every chunk, and a normal open works again."""
    store = sqlkv.MemoryStore()
    fill(store, "app.db", 40)
    size = damage_file_meta(store, "half the size")  # the real size (then claim 2^40)
    claim(store, HUGE)
    chunks = {k: store.get(k) for k in store.scan(b"\x09\x01")}
    report = sqlkv.check_database(store, "app.db")
    (problem,) = report.problems
    assert problem.repairable and problem.action == f"the FileMeta rewritten to {size} bytes"
    assert f"FileMeta says {HUGE} bytes" in problem.message and f"chunk {HUGE // 4096 - 1}" in problem.message
    repaired = sqlkv.check_database(store, "app.db", repair=True)
    assert repaired.repaired == [problem.describe()] and repaired.sound, repaired.problems
    assert {k: store.get(k) for k in store.scan(b"\x09\x01")} == chunks
    with sqlkv.connect(store, "app.db", readonly=True) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(40,)]


@pytest.mark.parametrize("how", ["a chunk inside is gone", "no header", "the last chunk is short"])
def test_repair_writes_nothing_for_a_file_meta_the_header_and_chunks_do_not_confirm(how):
    store = sqlkv.MemoryStore()
    fill(store, "app.db", 40)
    size = damage_file_meta(store, "half the size")
    claim(store, size if how == "the last chunk is short" else HUGE)
    if how == "a chunk inside is gone":
        store.delete_batch([LAYOUT.chunk_key("app.db", 3)])
    elif how == "no header":
        store.put_batch([(LAYOUT.chunk_key("app.db", 0), bytes(4096))])
    else:
        last = LAYOUT.chunk_key("app.db", size // 4096 - 1)
        store.put_batch([(last, store.get(last)[:1000])])
    before = {k: store.get(k) for k in store.scan(b"")}
    report = sqlkv.check_database(store, "app.db")
    (problem,) = report.problems
    assert not problem.repairable and "nothing written" in problem.message, problem
    why = {"a chunk inside is gone": "do not agree with it", "no header": "no SQLite header",
           "the last chunk is short": "1000 bytes long"}[how]
    assert why in problem.message
    repaired = sqlkv.check_database(store, "app.db", repair=True)
    assert repaired.repaired == [] and [p.message for p in repaired.problems] == [problem.message]
    assert {k: store.get(k) for k in store.scan(b"")} == before


GEN_KEY, EXPIRY_KEY = LAYOUT.ext_key("app.db", b"l"), LAYOUT.ext_key("app.db", b"l", b"e")
GARBAGE = b"garbage!"  # no lease value: those are 24 bytes


@pytest.mark.parametrize("garbled", [[GEN_KEY], [EXPIRY_KEY], [GEN_KEY, EXPIRY_KEY]],
                         ids=["generation", "expiry", "both"])
def test_check_repair_and_remove_replace_an_unreadable_lease(any_store, garbled):
    """Garbled bytes under the lease keys stopped check --repair and remove with the
    open's CorruptError, although check offered "replaced and released". A normal
    open still refuses them, naming the key and the repair."""
    store, _ = any_store
    fill(store, "keep.db", 5)
    fill(store, "app.db", 40)
    store.put_batch([(key, GARBAGE) for key in garbled])
    with pytest.raises(sqlkv.CorruptError, match=f"{garbled[0].hex()}.*check --repair"):
        sqlkv.connect(store, "app.db")
    assert [store.get(key) for key in garbled] == [GARBAGE] * len(garbled), "the refused open wrote nothing"
    report = sqlkv.check_database(store, "app.db")
    assert [p.describe() for p in report.problems if p.repairable] == [
        p.describe() for p in report.problems
    ] and "unreadable lease" in report.problems[0].message
    repaired = sqlkv.check_database(store, "app.db", repair=True)
    assert repaired.sound, repaired.problems
    assert repaired.repaired == [p.describe() for p in report.problems]
    assert store.get(GEN_KEY) is None and store.get(EXPIRY_KEY) is None, "replaced and released"
    with sqlkv.connect(store, "app.db") as db:
        assert db.query("SELECT count(*) FROM t").rows == [(40,)]
    store.put_batch([(key, GARBAGE) for key in garbled])
    mine = [k for k in store.scan(b"") if b"app.db" in k and k not in garbled]
    assert sqlkv.remove_database(store, "app.db") == len(mine)
    assert not [k for k in store.scan(b"") if b"app.db" in k]
    with sqlkv.connect(store, "keep.db", readonly=True) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(5,)]


class LeaseRacer(StoreWrapper):
    """A MemoryStore where another writer takes the lease (a valid, live one)
    between a tool's read of the garbled lease and its write replacing it."""

    def __init__(self) -> None:
        super().__init__(sqlkv.MemoryStore(), write_batch=True, scan=True)
        self.live = [(GEN_KEY, struct.pack(">Q16s", 3, b"w" * 16)),
                     (EXPIRY_KEY, struct.pack(">Q16s", int(time.time() * 1000) + 600_000, b"w" * 16))]
        self.raced = 0

    def _call(self, kind, *args):
        if kind == "write_batch" and GARBAGE in (args[2] or {}).values() and not self.raced:
            self.raced += 1
            self.inner.put_batch(self.live)
        return super()._call(kind, *args)


@pytest.mark.parametrize("tool", ["repair", "remove"])
def test_replacing_an_unreadable_lease_never_overwrites_a_live_one_written_meanwhile(tool):
    store = LeaseRacer()
    fill(store, "app.db", 10)
    store.put(GEN_KEY, GARBAGE)
    with pytest.raises(sqlkv.LockedError, match="open for writing elsewhere"):
        if tool == "repair":
            sqlkv.check_database(store, "app.db", repair=True)
        else:
            sqlkv.remove_database(store, "app.db")
    assert store.raced == 1
    assert [(k, store.get(k)) for k in (GEN_KEY, EXPIRY_KEY)] == store.live
    with sqlkv.connect(store, "app.db", readonly=True) as db:
        assert db.query("SELECT count(*) FROM t").rows == [(10,)]

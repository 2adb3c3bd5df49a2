"""LmdbStore: the embedded default. Persistence across processes, and a map that grows."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import sqlkv
from sqlkv.stores import lmdbstore


def run_python(code: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_database_written_by_one_process_opens_in_another(tmp_path, backend, opened):
    path = tmp_path / "data"
    run_python(
        f"""
        import sqlkv
        store = sqlkv.LmdbStore({str(path)!r})
        with sqlkv.connect(store, "app.db", backend={backend!r}) as db:
            db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            for i in range(100):
                db.run("INSERT INTO t(v) VALUES (?)", [f"row {{i}}"])
        store.close()
        """
    )
    store = sqlkv.LmdbStore(path)
    try:
        with sqlkv.connect(store, "app.db", backend=backend) as db:
            assert db.query("SELECT count(*), max(v) FROM t").rows == [(100, "row 99")]
            db.run("INSERT INTO t(v) VALUES ('from parent')")
    finally:
        store.close()
    out = run_python(
        f"""
        import sqlkv
        store = sqlkv.LmdbStore({str(path)!r})
        with sqlkv.connect(store, "app.db", backend={backend!r}) as db:
            print(db.query("SELECT v FROM t ORDER BY id DESC LIMIT 1").rows[0][0])
            print(db.query("PRAGMA integrity_check").rows[0][0])
        """
    )
    assert out.split() == ["from", "parent", "ok"]


async def test_async_api_on_lmdb(tmp_path, open_db):
    # Left open: the fixture's final integrity check reopens the database in it.
    store = sqlkv.LmdbStore(tmp_path / "data")
    db = await open_db(store)
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)")
    await db.close()
    db = await open_db(store)
    assert (await db.query("SELECT sum(x) FROM t")).rows == [(3,)]


def test_the_map_grows_instead_of_failing(tmp_path, monkeypatch, backend):
    monkeypatch.setattr(lmdbstore, "_INITIAL_MAP_SIZE", 256 * 1024)
    store = sqlkv.LmdbStore(tmp_path / "data")
    try:
        with sqlkv.connect(store, "app.db", backend=backend) as db:
            db.exec("CREATE TABLE t(b)")
            for _ in range(8):
                db.exec(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 128) "
                    "INSERT INTO t SELECT randomblob(1000) FROM n"
                )
            assert db.query("SELECT count(*) FROM t").rows == [(1024,)]
        assert store._env.info()["map_size"] > 1024 * 1024
    finally:
        store.close()


def test_a_map_grown_by_another_process_is_adopted(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdbstore, "_INITIAL_MAP_SIZE", 256 * 1024)
    path = tmp_path / "data"
    store = sqlkv.LmdbStore(path)
    try:
        store.put(b"k", b"v")
        run_python(
            f"""
            import sqlkv
            from sqlkv.stores import lmdbstore
            lmdbstore._INITIAL_MAP_SIZE = 256 * 1024
            store = sqlkv.LmdbStore({str(path)!r})
            store.put_batch([(b"big%d" % i, b"x" * 4000) for i in range(1000)])
            store.close()
            """
        )
        values = store.get_batch([b"k", b"big999"])
        assert values == [b"v", b"x" * 4000]
        store.put(b"after", b"growth")
        assert store.get(b"after") == b"growth"
    finally:
        store.close()


def test_stores_on_one_path_share_the_environment(tmp_path):
    a = sqlkv.LmdbStore(tmp_path / "data")
    b = sqlkv.LmdbStore(tmp_path / "data")
    try:
        assert a._env is b._env
        a.put(b"k", b"1")
        assert b.get(b"k") == b"1"
        a.close()
        assert b.get(b"k") == b"1"
    finally:
        b.close()
    with pytest.raises(sqlkv.StoreError, match="closed"):
        b.get(b"k")


def test_write_batch_and_scan(tmp_path):
    store = sqlkv.LmdbStore(tmp_path / "data")
    try:
        assert store.write_batch([(b"a1", b"x"), (b"a2", b"y"), (b"b", b"z")], [], None)
        assert not store.write_batch([(b"a1", b"nope")], [b"a2"], {b"b": b"other"})
        assert store.get_batch([b"a1", b"a2"]) == [b"x", b"y"]
        assert store.write_batch([], [b"a2"], {b"b": b"z", b"missing": None})
        assert list(store.scan(b"a")) == [b"a1"]
    finally:
        store.close()


def test_a_name_too_long_for_lmdbs_keys_is_refused_at_open(tmp_path, backend):
    """A 505-byte name opened, then every commit failed with OutcomeUnknownError
    (issue 20, item 14): the longest key the layout makes for a name (a staged
    chunk's, 8 bytes longer) must fit LMDB's 511 bytes, checked at open."""
    store = sqlkv.LmdbStore(tmp_path / "data")
    try:
        fits = "x" * 503
        # Staged (max_dirty_bytes spills), so the longest keys are written too.
        with sqlkv.connect(store, fits, backend=backend, max_dirty_bytes=4096) as db:
            db.exec("CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) INSERT INTO t SELECT randomblob(3000) FROM n")
            assert db.query("SELECT count(*) FROM t").rows == [(20,)]
        assert max(len(k) for k in store.scan(b"")) <= 511
        before = list(store.scan(b""))
        for name in ("x" * 504, "x" * 505, "é" * 300):
            with pytest.raises(sqlkv.ConfigError, match="store takes keys of at most 511 bytes .a name of at most 503 bytes fits"):
                sqlkv.connect(store, name, backend=backend)
        assert list(store.scan(b"")) == before
    finally:
        store.close()


def test_longest_key_bytes_is_the_longest_key_sqlkv_writes():
    """What the name check computes from the layout is what a database really writes:
    chunks, FileMeta, a staged commit's pieces and chunks, lease and version keys."""
    from helpers import CountingStore

    from sqlkv.format.layout import SeedLayout, longest_key_bytes

    store = CountingStore(write_batch=True)
    name = "app.db"
    with sqlkv.connect(store, name, max_dirty_bytes=4096) as db:
        db.exec("CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) INSERT INTO t SELECT randomblob(3000) FROM n")
    kinds = {k[:3] for k in store.keys_written}
    assert {b"\x09\x00a", b"\x09\x01a", b"\x09\x02a"} <= kinds  # FileMeta, chunks, sqlkv's own
    assert max(len(k) for k in store.keys_written) == longest_key_bytes(SeedLayout(9), name)


@pytest.mark.parametrize("limit_declared", [True, False])
def test_a_key_lmdb_refuses_before_writing_is_a_plain_store_limit_error(tmp_path, limit_declared):
    """Where LMDB refuses a key before writing anything (our own check, or its
    BadValsizeError in a transaction that is then aborted) the commit is known
    not to have happened: a StoreLimitError, not an OutcomeUnknownError."""
    import lmdb

    class Unchecked(sqlkv.LmdbStore):
        limits = sqlkv.StoreLimits(atomic_batches=True)  # declares no key limit: the open lets the name by

        if not limit_declared:
            @staticmethod
            def _check_key(key):  # leaves the refusal to LMDB itself, inside the transaction
                pass

    store = Unchecked(tmp_path / "data")
    try:
        db = sqlkv.connect(store, "x" * 505)
        with pytest.raises(sqlkv.StoreLimitError) as info:
            db.exec("CREATE TABLE t(x)")
        assert not isinstance(info.value, sqlkv.OutcomeUnknownError)
        if not limit_declared:
            assert isinstance(info.value.__cause__, lmdb.BadValsizeError)
        db.close()
        assert not [k for k in store.scan(b"") if b"\x00" + b"x" * 505 == k[1:]]  # no FileMeta written
    finally:
        store.close()

"""Readers anywhere see whole commits (issue 11): versions, validated reads,
caches that survive other processes' commits, and mixed writers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import CountingStore, copy_store, is_version_key, staging_keys, unique_namespace

import sqlkv
from sqlkv.stores.wrapper import StoreWrapper, call_parts

BANK = str(Path(__file__).resolve().parent / "bank_process.py")
ACCOUNTS = 3000
#: The commit record of app.db (prefix 9, layout seed): a staged commit's commit point.
RECORD_KEY = b"\x09\x02app.db\x00c"


def make_bank(store: Any, backend: str = "pages") -> None:
    """3,000 accounts whose balances sum to 0, about 700 KB (some 170 chunks)."""
    with sqlkv.connect(store, "bank.db", backend=backend) as db:
        db.exec(
            "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad TEXT);"
            f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {ACCOUNTS - 1})"
            " INSERT INTO accounts SELECT i, 0, printf('%.200c', 'x') FROM n"
        )


def bank_run(url: str, backend: str, seconds: float, commits: int) -> None:
    """A writer process and two reader processes (reopening, long-lived) at once.

    The writer starts once both readers have made their first read, so that
    its commits fall within their time whatever each process's start costs."""
    common = [url, "bank.db", backend, str(seconds)]
    readers = {
        mode: subprocess.Popen(
            [sys.executable, BANK, "reader", *common, "100000", mode], stdout=subprocess.PIPE, text=True
        )
        for mode in ("reopen", "long")
    }
    for process in readers.values():
        assert process.stdout is not None
        process.stdout.readline()  # {"ready": true}; or nothing, if it failed (then seen below)
    writer = subprocess.Popen(
        [sys.executable, BANK, "writer", *common, str(commits), "7"], stdout=subprocess.PIPE, text=True
    )
    reports = {}
    for role, process in [("writer", writer), *readers.items()]:
        out, _ = process.communicate(timeout=seconds + 120)
        assert process.returncode == 0, f"{role} process failed with code {process.returncode}"
        reports[role] = json.loads(out.strip().splitlines()[-1])
    assert reports["writer"]["commits"] > 10
    for mode in ("reopen", "long"):
        report = reports[mode]
        assert report["reads"] > 5, report
        assert report["torn"] == 0, f"{mode} reader: {report['torn']} of {report['reads']} reads torn"
        assert report["integrity"] == [["ok"]]
        assert report["only_grew"]
    # The long-lived reader kept seeing new commits.
    assert len(reports["long"]["versions"]) > 3, reports


def store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "lmdb":
        return f"lmdb://{tmp_path / 'lmdb'}"
    server = request.getfixturevalue("redis_cluster" if kind == "redis-cluster" else "redis_server")
    joiner = "&" if "?" in server.url else "?"
    return f"{server.url}{joiner}namespace={unique_namespace()}"


def bank(kind: str, engine: str, request: pytest.FixtureRequest, tmp_path: Path, seconds: float, commits: int) -> None:
    """The bank scenario on a fresh database in a store of ``kind``."""
    url = store_url(kind, request, tmp_path)
    store = sqlkv.open_store(url)
    make_bank(store, engine)
    store.close()
    bank_run(url, engine, seconds=seconds, commits=commits)


BANK_CASES = [("lmdb", "pages"), ("lmdb", "snapshot"), ("redis", "pages"), ("redis-cluster", "pages")]


@pytest.mark.parametrize(("kind", "engine"), BANK_CASES, ids=[f"{k}-{b}" for k, b in BANK_CASES])
def test_bank_readers_in_other_processes_never_see_a_torn_state(kind, engine, request, tmp_path):
    bank(kind, engine, request, tmp_path, seconds=3, commits=400)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "engine"), BANK_CASES, ids=[f"{k}-{b}" for k, b in BANK_CASES])
def test_bank_for_a_minute(kind, engine, request, tmp_path):
    bank(kind, engine, request, tmp_path, seconds=60, commits=10**6)


# -- counted: what a reader's cache costs after another's commit -------------------------


class KeyCountingStore(CountingStore):
    """Counts round trips, and records the chunk keys each read asks for."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner, write_batch=True)
        self.chunk_reads: list[bytes] = []

    def _call(self, kind: str, *args: Any) -> Any:
        self.chunk_reads += [k for k in call_parts(kind, args).reads if k[1:2] == b"\x01"]
        return super()._call(kind, *args)


def test_a_warm_reader_reads_again_only_what_one_update_changed(store_16mib, backend):
    """WORKLOADS.md's 16 MiB database: after a single-row UPDATE by a writer,
    the reader's next point query costs at most 2 round trips and 3 chunks."""
    base = copy_store(store_16mib)
    counting = KeyCountingStore(base)
    reader = sqlkv.connect(counting, "bench.db", readonly=True, backend=backend)
    writer = sqlkv.connect(base, "bench.db")
    for k in range(1, 16001, 97):
        assert reader.query("SELECT length(v) FROM t WHERE id = ?", [k]).rows == [(1000,)]
    for step in range(5):
        k = 1 + (step * 104729) % 16000
        writer.run("UPDATE t SET v = ? WHERE id = ?", ["u" * 100, k])
        counting.calls.clear()
        counting.chunk_reads.clear()
        assert reader.query("SELECT v FROM t WHERE id = ?", [k]).rows == [("u" * 100,)]
        assert sum(counting.calls.values()) <= 2, counting.calls
        assert len(counting.chunk_reads) <= 3, counting.chunk_reads
        assert reader.version == writer.version
    reader.close()
    writer.close()


def test_a_reader_with_nothing_new_checks_in_one_small_read(backend):
    store = CountingStore(sqlkv.MemoryStore(), write_batch=True)
    with sqlkv.connect(store, "app.db", backend=backend) as writer:
        writer.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    with sqlkv.connect(store, "app.db", readonly=True, backend=backend) as reader:
        reader.query("SELECT x FROM t")
        before = store.total
        for _ in range(10):
            assert reader.query("SELECT x FROM t").rows == [(1,)]
        assert store.total - before == 10  # one version check per read transaction


def test_max_staleness_serves_from_the_cache_and_min_version_catches_up(backend, monkeypatch):
    store = CountingStore(sqlkv.MemoryStore(), write_batch=True)
    writer = sqlkv.connect(store, "app.db", backend=backend)
    writer.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    reader = sqlkv.connect(store, "app.db", readonly=True, backend=backend, max_staleness=3600)
    assert reader.query("SELECT count(*) FROM t").rows == [(1,)]
    version = writer.run("INSERT INTO t VALUES (2)").version
    assert version == writer.version == reader.version + 1
    before = store.total
    assert reader.query("SELECT count(*) FROM t").rows == [(1,)]  # stale, allowed: no round trip
    assert store.total == before
    # Read your own writes through the reader.
    assert reader.query("SELECT count(*) FROM t", min_version=version).rows == [(2,)]
    assert reader.version == version
    monkeypatch.setattr(sqlkv.engine.common, "MIN_VERSION_TIMEOUT", 0.05)
    with pytest.raises(sqlkv.StaleError, match=f"did not reach version {version + 1}"):
        reader.query("SELECT 1", min_version=version + 1)
    with pytest.raises(sqlkv.StaleError, match="below min_version"):
        writer.query("SELECT 1", min_version=version + 1)
    with pytest.raises(sqlkv.ConfigError, match="min_version must be"):
        reader.query("SELECT 1", min_version=-1)
    reader.close()
    writer.close()


def test_the_dbapi_reader_takes_max_staleness(backend):
    from sqlkv import dbapi2

    store = CountingStore(sqlkv.MemoryStore(), write_batch=True)
    writer = sqlkv.connect(store, "app.db", backend=backend)
    writer.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    reader = dbapi2.connect("app.db", store, readonly=True, backend=backend, max_staleness=3600)
    assert reader.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
    writer.run("INSERT INTO t VALUES (2)")
    before = store.total
    assert reader.execute("SELECT count(*) FROM t").fetchall() == [(1,)]  # stale, allowed: no round trip
    assert store.total == before
    with pytest.raises(sqlkv.ConfigError, match="max_staleness"):
        dbapi2.connect("app.db", store, readonly=True, backend=backend, max_staleness=-1)
    reader.close()
    writer.close()


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "1", True])
def test_max_staleness_must_be_seconds(value):
    store = sqlkv.MemoryStore()
    with pytest.raises(sqlkv.ConfigError, match="max_staleness"):
        sqlkv.connect(store, "app.db", readonly=True, max_staleness=value)


def test_versions_cost_the_writer_no_round_trip_and_few_bytes(backend):
    store = CountingStore(sqlkv.MemoryStore(), write_batch=True)
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(x TEXT)")
        for i in range(20):
            before = store.total
            written = len(store.keys_written)
            db.stats.reset()
            db.run("INSERT INTO t VALUES (?)", [str(i)])
            assert store.total - before == 1
            keys = store.keys_written[written:]
            chunk_bytes = sum(
                len(k) + len(store.inner._data[k]) for k in keys if not is_version_key(k)
            )
            changed = sum(1 for k in keys if k[1:2] == b"\x01")
            assert db.stats.bytes_written - chunk_bytes <= 64 + 4 * changed


# -- conflicts ------------------------------------------------------------------------------


def _spread_database(store: Any) -> None:
    """About 1 MB of rows: a reader with a small cache cannot hold it."""
    with sqlkv.connect(store, "app.db") as db:
        db.exec(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)"
            " INSERT INTO t SELECT i, printf('%.1000c', 'a') FROM n"
        )


def test_an_explicit_read_transaction_gets_conflict_error_a_statement_is_retried():
    store = sqlkv.MemoryStore()
    _spread_database(store)
    reader = sqlkv.connect(store, "app.db", readonly=True, backend="pages", cache_bytes=64 * 1024)
    writer = sqlkv.connect(store, "app.db")
    with pytest.raises(sqlkv.ConflictError, match="retry the transaction"):
        with reader.transaction() as tx:
            assert tx.query("SELECT length(v) FROM t WHERE id = 1").rows == [(1000,)]
            writer.run("UPDATE t SET v = 'b' WHERE id = 900")
            tx.query("SELECT v FROM t WHERE id = 900")  # a page the writer changed: not pinned state
    assert not reader.in_transaction
    # A single statement meeting the same conflict is run again on the new state.
    assert reader.query("SELECT v FROM t WHERE id = 900").rows == [("b",)]
    writer.run("UPDATE t SET v = 'c' WHERE id = 901")
    assert reader.query("SELECT v FROM t WHERE id = 901").rows == [("c",)]
    # Within a transaction, a page no later commit changed is still served.
    with reader.transaction() as tx:
        assert tx.query("SELECT v FROM t WHERE id = 901").rows == [("c",)]
        writer.run("UPDATE t SET v = 'd' WHERE id = 2")
        assert tx.query("SELECT length(v) FROM t WHERE id = 500").rows == [(1000,)]
    reader.close()
    writer.close()


class StatementDuringWrites(StoreWrapper):
    """A writer's store that, before each of its writes, lets readers look."""

    def __init__(self, inner: Any, look: Any, limits: sqlkv.StoreLimits) -> None:
        super().__init__(inner, limits=limits, write_batch=True)
        self.look = look
        self.looks = 0

    def _call(self, kind: str, *args: Any) -> Any:
        if kind not in ("get", "get_batch"):
            self.look()
            self.looks += 1
        return super()._call(kind, *args)


def test_readers_racing_a_staged_commit_at_every_step_see_one_state(backend):
    """A 400-row UPDATE staged on a store of 128 keys per batch; before every
    write of it, a long-lived reader and a fresh one check the table is all
    old or all new."""
    inner = sqlkv.MemoryStore()
    with sqlkv.connect(inner, "app.db", backend=backend) as db:
        db.exec(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, pad TEXT);"
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 400)"
            " INSERT INTO t SELECT i, 0, printf('%.2000c', 'p') FROM s"
        )
    long_reader = sqlkv.connect(inner, "app.db", readonly=True, backend=backend, cache_bytes=64 * 1024)
    seen = []

    def look() -> None:
        for reader in (long_reader, sqlkv.connect(inner, "app.db", readonly=True, backend=backend)):
            rows = reader.query("SELECT min(n), max(n), count(*) FROM t").rows
            seen.append(rows[0])
            if reader is not long_reader:
                reader.close()

    limits = sqlkv.StoreLimits(max_batch_keys=128)
    with sqlkv.connect(StatementDuringWrites(inner, look, limits), "app.db", backend=backend) as db:
        store = db._engine.client.store
        db.run("UPDATE t SET n = n + 1, pad = printf('%.2000c', 'q')")
        assert store.looks > 5  # staged: many writes, each raced
    assert set(seen) <= {(0, 0, 400), (1, 1, 400)}
    assert (1, 1, 400) in seen and (0, 0, 400) in seen
    assert long_reader.query("SELECT min(n), max(n) FROM t").rows == [(1, 1)]
    long_reader.close()


class DiesAfterCommitPoint(StoreWrapper):
    """Fails every write after the commit record of a staged commit was stored."""

    def __init__(self, inner: Any, limits: sqlkv.StoreLimits) -> None:
        super().__init__(inner, limits=limits, write_batch=True)
        self.dead = False

    def _call(self, kind: str, *args: Any) -> Any:
        if self.dead and kind not in ("get", "get_batch"):
            raise ConnectionError("the writer's process died")
        result = super()._call(kind, *args)
        if any(k == RECORD_KEY for k, _ in call_parts(kind, args).puts):
            self.dead = True
        return result


def test_a_writer_killed_between_commit_point_and_apply(backend):
    inner = sqlkv.MemoryStore()
    with sqlkv.connect(inner, "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, pad TEXT); INSERT INTO t VALUES (0, 0, '')")
    before = sqlkv.connect(inner, "app.db", readonly=True, backend=backend)
    assert before.query("SELECT count(*) FROM t").rows == [(1,)]
    limits = sqlkv.StoreLimits(max_batch_keys=128)
    writer = sqlkv.connect(DiesAfterCommitPoint(inner, limits), "app.db", backend=backend, lease_seconds=None)
    with pytest.raises(sqlkv.OutcomeUnknownError):
        writer.exec(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 600)"
            " INSERT INTO t SELECT i, i, printf('%.2000c', 'p') FROM s"
        )
    # Readers, open before or opened now, read through the staged commit: all of it.
    after = sqlkv.connect(inner, "app.db", readonly=True, backend=backend)
    for reader in (before, after):
        assert reader.query("SELECT count(*), sum(n) FROM t").rows == [(601, 600 * 601 // 2)]
        assert reader.query("PRAGMA integrity_check").rows == [("ok",)]
    # The next writer finishes it; the readers go on seeing the same state.
    with sqlkv.connect(inner, "app.db", backend=backend) as fixer:
        assert fixer.query("SELECT count(*) FROM t").rows == [(601,)]
        fixer.run("INSERT INTO t VALUES (-1, 0, '')")
    for reader in (before, after):
        assert reader.query("SELECT count(*), sum(n) FROM t").rows == [(602, 600 * 601 // 2)]
        reader.close()
    assert not staging_keys(inner._data)


# -- mixed writers ----------------------------------------------------------------------------


class KnowsNoVersions(StoreWrapper):
    """The store as another implementation of the layout uses it: sqlkv's own
    keys (version, log, commit record, staging, lease) are never read nor written."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner, write_batch=True)

    @staticmethod
    def _own(key: bytes) -> bool:
        return key[1:2] == b"\x02"

    def _call(self, kind: str, *args: Any) -> Any:
        if kind == "get":
            return None if self._own(args[0]) else super()._call(kind, *args)
        if kind == "get_batch":
            values = super()._call(kind, list(args[0]))
            return [None if self._own(k) else v for k, v in zip(args[0], values)]
        parts = call_parts(kind, args)
        puts = [(k, v) for k, v in parts.puts if not self._own(k)]
        deletes = [k for k in parts.deletes if not self._own(k)]
        if kind == "write_batch":
            return super()._call(kind, puts, deletes, None)
        if kind in ("put", "put_batch"):
            return super()._call("put_batch", puts) if puts else None
        return super()._call(kind, deletes) if deletes else None


def test_a_staged_commit_is_never_rolled_forward_over_another_writers_commit(backend, caplog):
    inner = sqlkv.MemoryStore()
    limits = sqlkv.StoreLimits(max_batch_keys=128)
    with sqlkv.connect(inner, "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT)")
    writer = sqlkv.connect(DiesAfterCommitPoint(inner, limits), "app.db", backend=backend, lease_seconds=None)
    with pytest.raises(sqlkv.OutcomeUnknownError):
        writer.exec(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 600)"
            " INSERT INTO t SELECT i, printf('staged %d %.1000c', i, 'x') FROM s"
        )
    # Another implementation sees the old state and commits over it.
    with sqlkv.connect(KnowsNoVersions(inner), "app.db", backend=backend, lease_seconds=None) as other:
        assert other.query("SELECT count(*) FROM t").rows == [(0,)]
        other.exec(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 10)"
            " INSERT INTO t SELECT 1000 + i, printf('other %d', i) FROM s"
        )
    with caplog.at_level(logging.WARNING, logger="sqlkv"):
        with sqlkv.connect(inner, "app.db", backend=backend) as db:
            assert db.query("PRAGMA integrity_check").rows == [("ok",)]
            assert db.query("SELECT count(*), min(name), max(name) FROM t").rows == [
                (10, "other 1", "other 9")
            ]
    assert "discarding the staged commit of 'app.db'" in caplog.text
    assert "never acknowledged" in caplog.text
    assert not staging_keys(inner._data)


def test_a_reader_reads_a_database_written_without_versions(backend):
    """Data written by an implementation that knows no versions: a reader opens
    it, reads it, and sees that writer's later commits (its cache dropped at
    every read transaction)."""
    inner = sqlkv.MemoryStore()
    other = sqlkv.connect(KnowsNoVersions(inner), "app.db", backend=backend, lease_seconds=None)
    other.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    assert not [k for k in inner._data if is_version_key(k)]
    reader = sqlkv.connect(inner, "app.db", readonly=True, backend=backend)
    assert reader.query("SELECT sum(x) FROM t").rows == [(1,)]
    assert reader.version == 0
    for i in range(2, 6):
        other.run("INSERT INTO t VALUES (?)", [i])
        assert reader.query("SELECT sum(x) FROM t").rows == [(sum(range(1, i + 1)),)]
        assert reader.query("PRAGMA integrity_check").rows == [("ok",)]
    reader.close()
    other.close()


def test_a_garbled_version_record_is_named_or_read_past(backend):
    inner = sqlkv.MemoryStore()
    with sqlkv.connect(inner, "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(x)")
    key = next(k for k in inner._data if is_version_key(k) and k.endswith(b"v"))
    good = inner._data[key]
    inner._data[key] = bytes(9) + good
    with pytest.raises(sqlkv.CorruptError, match=f"version record at key {key.hex()} is {len(good) + 9} bytes long"):
        sqlkv.connect(inner, "app.db", readonly=True, backend=backend)
    # Of the right length, but its checksum fails: the reader cannot tell what
    # changed, so it drops its cache at each read transaction, and reads right.
    inner._data[key] = good[:-1] + bytes([good[-1] ^ 1])
    with sqlkv.connect(inner, "app.db", readonly=True, backend=backend) as reader:
        for _ in range(3):
            assert reader.query("SELECT count(*) FROM t").rows == [(0,)]
            assert reader.stats.cache_misses > 0
            reader.stats.reset()


def test_a_reader_in_layout_rivet_v2_follows_the_writer(backend):
    """Versions live in layout rivet-v2's own key range too (08 01 F0 ...)."""
    store = CountingStore(sqlkv.MemoryStore(), write_batch=True)
    writer = sqlkv.connect(store, "actor.db", layout="rivet-v2", backend=backend)
    writer.exec("CREATE TABLE t(x)")
    reader = sqlkv.connect(store, "actor.db", layout="rivet-v2", readonly=True, backend=backend)
    for i in range(1, 6):
        version = writer.run("INSERT INTO t VALUES (?)", [i]).version
        before = store.total
        assert reader.query("SELECT sum(x) FROM t", min_version=version).rows == [(i * (i + 1) // 2,)]
        assert reader.version == version
        assert store.total - before <= 2  # the version check, then the one changed chunk
    assert any(k.startswith(b"\x08\x01\xf0\x00v") for k in store.inner._data)
    reader.close()
    writer.close()


async def test_the_async_api_reads_its_own_writes_through_a_stale_reader(backend):
    store = sqlkv.MemoryStore()
    vfs = sqlkv.SqliteVfs(backend=backend)
    writer = await vfs.open("app.db", store)
    await writer.exec("CREATE TABLE t(x)")
    reader = await vfs.open("app.db", store, readonly=True, max_staleness=3600)
    result = await writer.run("INSERT INTO t VALUES (1)")
    assert result.version == writer.version == reader.version + 1
    assert (await reader.query("SELECT count(*) FROM t")).rows == [(0,)]  # stale, as allowed
    assert (await reader.query("SELECT count(*) FROM t", min_version=result.version)).rows == [(1,)]
    assert reader.version == result.version
    await reader.close()
    await writer.close()

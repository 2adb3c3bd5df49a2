"""What a database cost: ``db.stats``, ``PRAGMA sqlkv_stats``, and the metered store.

The store's own door (:mod:`sqlkv.stores.latency`) and the database's counters are
counted apart; they must agree.
"""

from __future__ import annotations

import json

import pytest
from helpers import AsyncMemoryStore, CountingStore, copy_store

import sqlkv
from sqlkv.stores.latency import AsyncMeteredStore, MeteredStore, metered


def same_counts(stats: sqlkv.Stats, meter: sqlkv.Stats) -> None:
    assert {k: v for k, v in stats.calls.items() if v} == {k: v for k, v in meter.calls.items() if v}
    for name in ("keys_read", "bytes_read", "keys_written", "bytes_written", "keys_deleted"):
        assert getattr(stats, name) == getattr(meter, name), name


def test_stats_count_each_commit_as_one_round_trip(backend):
    store = metered(sqlkv.MemoryStore())
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        db.stats.reset()
        store.meter.reset()
        db.exec("CREATE TABLE t(x)")
        for i in range(3):
            db.exec(f"INSERT INTO t VALUES ({i})")
        assert db.stats.commits == 4
        assert db.stats.calls["write_batch"] == 4
        assert db.stats.round_trips == 4
        assert db.stats.bytes_written > 4 * 4096  # a chunk and a FileMeta per commit
        same_counts(db.stats, store.meter)
        # A read of what was just written costs nothing: SQLite's cache has it.
        db.query("SELECT count(*) FROM t")
        assert db.stats.round_trips == 4


def test_a_scan_reads_ahead_hits_outnumber_misses(store_16mib):
    """Read-ahead: a full scan of 16 MiB in few round trips, most chunks found in cache."""
    store = metered(copy_store(store_16mib))
    with sqlkv.connect(store, "bench.db", backend="pages") as db:
        db.stats.reset()
        store.meter.reset()
        assert db.query("SELECT count(*), sum(length(v)) FROM t").rows == [(16000, 16_000_000)]
        stats = db.stats
        chunks = stats.keys_read
        assert chunks > 4000  # the whole file came in
        assert stats.round_trips <= chunks // 100
        assert stats.cache_hits > 10 * stats.cache_misses
        same_counts(stats, store.meter)


def test_pragma_sqlkv_stats_is_db_stats_as_json(backend):
    with sqlkv.connect(sqlkv.MemoryStore(), "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        (row,) = db.query("PRAGMA sqlkv_stats").rows
        shown = json.loads(row[0])
        assert shown["commits"] == db.stats.commits == 1  # a script's transactions share a commit
        assert shown["round_trips"] == db.stats.round_trips
        assert shown["calls"] == db.stats.calls
        assert {"keys_read", "bytes_read", "keys_written", "bytes_written", "cache_hits",
                "cache_misses", "store_seconds"} <= set(shown)


async def test_pragma_sqlkv_stats_reset_through_the_async_api(backend):
    vfs = sqlkv.SqliteVfs(backend=backend)
    async with await vfs.open("app.db", sqlkv.MemoryStore()) as db:
        await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        assert db.stats.commits == 1  # a script's transactions share a commit
        (row,) = (await db.query("PRAGMA sqlkv_stats=reset")).rows
        assert json.loads(row[0])["commits"] == 0
        assert db.stats.commits == 0 and db.stats.round_trips == 0
        await db.exec("INSERT INTO t VALUES (2)")
        assert db.stats.commits == 1


def test_store_seconds_is_time_waiting_on_the_store(backend):
    store = metered(sqlkv.MemoryStore(), latency_ms=2)
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        db.stats.reset()
        store.meter.reset()
        for i in range(5):
            db.exec(f"CREATE TABLE t{i}(x)")
        assert db.stats.round_trips == 5
        assert db.stats.store_seconds >= 5 * 0.002
        assert store.meter.store_seconds >= 5 * 0.002


# -- the metered store ------------------------------------------------------------


def test_metered_store_keeps_limits_and_has_write_batch_only_if_the_store_has():
    limits = sqlkv.StoreLimits(max_batch_keys=64)
    bare = metered(CountingStore(limits=limits))
    assert type(bare) is MeteredStore
    assert bare.limits == limits
    assert not hasattr(bare, "write_batch")
    assert hasattr(metered(sqlkv.MemoryStore()), "write_batch")


def test_metered_store_counts_chunks_apart_from_file_meta():
    layout_prefix = bytes([9, 1]) + b"app.db\x00"
    store = metered(sqlkv.MemoryStore(), chunk_prefix=layout_prefix)
    with sqlkv.connect(store, "app.db", backend="pages") as db:
        store.meter.reset()
        db.exec("CREATE TABLE t(x)")
    # One FileMeta, and the version record and log entry of the commit (storage/versions.py).
    assert store.meter.keys_written == store.meter.chunks_written + 1 + 2


async def test_metered_async_store_counts_and_sleeps():
    store = metered(AsyncMemoryStore(), latency_ms=1)
    assert type(store) is AsyncMeteredStore
    async with await sqlkv.SqliteVfs(backend="pages").open("app.db", store) as db:
        store.meter.reset()
        db.stats.reset()
        await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        await db.exec("INSERT INTO t VALUES (2)")
        assert store.meter.round_trips == db.stats.round_trips == 2
        assert store.meter.store_seconds >= 2 * 0.001
        same_counts(db.stats, store.meter)


def test_metered_store_refuses_negative_latency():
    with pytest.raises(sqlkv.ConfigError, match="latency_ms"):
        metered(sqlkv.MemoryStore(), latency_ms=-1)

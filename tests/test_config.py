"""Bad configuration is refused at construction, naming the field; bad stores likewise."""

from __future__ import annotations

import pytest

import sqlkv


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"kv_prefix": -1}, "kv_prefix"),
        ({"kv_prefix": 256}, "kv_prefix"),
        ({"kv_prefix": "9"}, "kv_prefix"),
        ({"kv_prefix": 9.0}, "kv_prefix"),
        ({"kv_prefix": True}, "kv_prefix"),
        ({"kv_prefix": None}, "kv_prefix"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": -4096}, "chunk_size"),
        ({"chunk_size": "4096"}, "chunk_size"),
        ({"chunk_size": 4096.0}, "chunk_size"),
        ({"chunk_size": False}, "chunk_size"),
        ({"backend": "fast"}, "backend"),
        ({"backend": ""}, "backend"),
        ({"layout": "rivet-v3"}, "layout"),
        ({"layout": "rivet-v2", "chunk_size": 8192}, "chunk_size"),
        ({"layout": "rivet-v2", "kv_prefix": 2}, "kv_prefix"),
        ({"layout": "rivet-v2", "kv_prefix": 8}, "kv_prefix"),
        ({"cache_bytes": 0}, "cache_bytes"),
    ],
)
def test_bad_configuration_is_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field) as info:
        sqlkv.SqliteVfs(**kwargs)
    assert isinstance(info.value, sqlkv.ConfigError)
    with pytest.raises(sqlkv.ConfigError, match=field):
        sqlkv.connect(sqlkv.MemoryStore(), "app.db", **kwargs)


def test_good_configuration_edges():
    for prefix in (0, 255):
        assert sqlkv.SqliteVfs(kv_prefix=prefix).options.kv_prefix == prefix
    assert sqlkv.SqliteVfs(chunk_size=1).options.chunk_size == 1


class HalfStore:
    def get(self, key):
        return None

    def put(self, key, value):
        pass


async def test_a_store_lacking_calls_is_refused(backend):
    with pytest.raises(sqlkv.ConfigError, match="get_batch, put_batch, delete_batch"):
        await sqlkv.SqliteVfs(backend=backend).open("app.db", HalfStore())
    with pytest.raises(sqlkv.ConfigError, match="lacks"):
        sqlkv.connect(object(), "app.db", backend=backend)


def test_store_limits_are_checked():
    with pytest.raises(sqlkv.ConfigError, match="max_batch_keys"):
        sqlkv.StoreLimits(max_batch_keys=0)
    with pytest.raises(sqlkv.ConfigError, match="max_value_bytes"):
        sqlkv.StoreLimits(max_value_bytes=-1)


def test_chunk_larger_than_the_stores_largest_value(backend):
    class SmallValues(sqlkv.MemoryStore):
        limits = sqlkv.StoreLimits(max_value_bytes=1024)

    with pytest.raises(sqlkv.StoreLimitError, match="chunk_size 4096 exceeds"):
        sqlkv.connect(SmallValues(), "app.db", backend=backend)
    with sqlkv.connect(SmallValues(), "app.db", chunk_size=1024, backend=backend) as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(5000))")
        assert db.query("SELECT length(x) FROM t").rows == [(5000,)]


def test_open_store_urls(tmp_path):
    assert isinstance(sqlkv.open_store("memory://"), sqlkv.MemoryStore)
    store = sqlkv.open_store(f"lmdb://{tmp_path / 'data'}")
    try:
        assert isinstance(store, sqlkv.LmdbStore)
        assert (tmp_path / "data").is_dir()
    finally:
        store.close()
    with pytest.raises(sqlkv.ConfigError, match=r"unknown store scheme 'ftp'.*memory://.*lmdb://"):
        sqlkv.open_store("ftp://example")
    with pytest.raises(sqlkv.ConfigError, match="no scheme"):
        sqlkv.open_store("just-a-path")
    with pytest.raises(sqlkv.ConfigError, match="needs a path"):
        sqlkv.open_store("lmdb://")

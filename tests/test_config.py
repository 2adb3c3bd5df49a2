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


class FiveCalls(HalfStore):
    """The five calls and nothing more."""

    def get_batch(self, keys):
        return [None] * len(keys)

    def put_batch(self, entries):
        pass

    def delete_batch(self, keys):
        pass


class AsyncFull:
    """The five calls and every optional one, all ``async``, with limits."""

    limits = sqlkv.StoreLimits(max_batch_keys=16)

    async def get(self, key): return None
    async def get_batch(self, keys): return [None] * len(keys)
    async def put(self, key, value): pass
    async def put_batch(self, entries): pass
    async def delete_batch(self, keys): pass
    async def write_batch(self, puts, deletes, expect=None): return True
    async def scan(self, prefix): return iter(())
    async def close(self): pass


def test_store_capabilities_say_what_a_store_has_beyond_the_five_calls():
    bare = sqlkv.store_capabilities(FiveCalls())
    assert bare == sqlkv.StoreCapabilities(
        is_async=False, limits=sqlkv.StoreLimits(), write_batch=False, scan=False, close=False
    )
    assert isinstance(FiveCalls(), sqlkv.KvStore) and not isinstance(HalfStore(), sqlkv.KvStore)
    full = sqlkv.store_capabilities(AsyncFull())
    assert full == sqlkv.StoreCapabilities(
        is_async=True, limits=sqlkv.StoreLimits(max_batch_keys=16), write_batch=True, scan=True, close=True
    )
    assert isinstance(AsyncFull(), sqlkv.AsyncKvStore)
    memory = sqlkv.store_capabilities(sqlkv.MemoryStore())
    assert (memory.is_async, memory.write_batch, memory.scan, memory.close) == (False, True, True, True)


def test_store_capabilities_refuse_what_is_no_store():
    with pytest.raises(sqlkv.ConfigError, match="HalfStore lacks get_batch, put_batch, delete_batch"):
        sqlkv.store_capabilities(HalfStore())
    odd = FiveCalls()
    odd.limits = {"max_batch_keys": 16}
    with pytest.raises(sqlkv.ConfigError, match="limits must be a StoreLimits"):
        sqlkv.store_capabilities(odd)
    odd.write_batch = "not a call"
    del odd.limits
    assert sqlkv.store_capabilities(odd).write_batch is False


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


def test_both_apis_take_the_same_options_and_refuse_unknown_ones():
    store = sqlkv.MemoryStore()
    vfs = sqlkv.SqliteVfs(9, 1024, None, cache_bytes=1 << 20)
    with sqlkv.connect(store, "a.db", chunk_size=1024, cache_bytes=1 << 20) as conn:
        assert vfs.options.chunk_size == conn._engine.options.chunk_size == 1024
    keys_before = set(store._data)
    for build in (lambda: sqlkv.SqliteVfs(cache_byte=1), lambda: sqlkv.connect(store, "b.db", cache_byte=1)):
        with pytest.raises(sqlkv.ConfigError, match=r"unknown option\(s\): cache_byte"):
            build()
    with pytest.raises(sqlkv.ConfigError, match="both by position and by name: chunk_size"):
        sqlkv.SqliteVfs(9, 4096, chunk_size=4096)
    with pytest.raises(sqlkv.ConfigError, match="at most 3 options by position"):
        sqlkv.SqliteVfs(9, 4096, None, "seed")
    assert set(store._data) == keys_before  # the refused open touched nothing


@pytest.mark.parametrize(
    "variable, value",
    [
        ("SQLKV_ASYNC_SPIN_US", "fast"),
        ("SQLKV_ASYNC_SPIN_US", "-5"),
        ("SQLKV_WORKER_FOLLOWS_LOOP", "yes"),
        ("SQLKV_POOL_SIZE", "0"),
        ("SQLKV_POOL_SIZE", "two"),
    ],
)
def test_a_bad_environment_value_names_its_variable(monkeypatch, variable, value):
    from sqlkv import environment

    monkeypatch.setenv(variable, value)
    readers = {
        "SQLKV_ASYNC_SPIN_US": environment.async_spin_seconds,
        "SQLKV_WORKER_FOLLOWS_LOOP": environment.worker_follows_loop,
        "SQLKV_POOL_SIZE": environment.pool_size,
    }
    with pytest.raises(sqlkv.ConfigError, match=rf"\${variable} must be .*{value!r}"):
        readers[variable]()


def test_unset_environment_values_give_the_defaults(monkeypatch):
    from sqlkv import environment

    for variable in ("SQLKV_ASYNC_SPIN_US", "SQLKV_WORKER_FOLLOWS_LOOP", "SQLKV_POOL_SIZE", "SQLKV_STORE"):
        monkeypatch.delenv(variable, raising=False)
    assert environment.async_spin_seconds() == 100e-6
    assert environment.worker_follows_loop() is True
    assert environment.pool_size() is None
    assert environment.store_url() == environment.DEFAULT_STORE

"""RedisStore itself: URLs, where keys go, atomic conditional writes, round trips."""

from __future__ import annotations

import pytest
import redis
from helpers import integrity, unique_namespace
from redis_servers import free_port

import sqlkv
from sqlkv.format.layout import EXT_LEASE, RivetV2Layout, SeedLayout, database_of
from sqlkv.stores.redis_store import REDIS_LIMITS, WRITE_BATCH_SHA, KeySpace

#: No renewal runs during these tests: every command the server sees is a commit's.
LONG_LEASE = 600


@pytest.fixture
def store(redis_server):
    with sqlkv.open_store(f"{redis_server.url}?namespace={unique_namespace()}") as store:
        yield store


# -- URLs ---------------------------------------------------------------------------


def test_url_options_reach_the_store_and_the_client(redis_server):
    url = f"{redis_server.url}?namespace=app-1&hash_tag=namespace&socket_timeout=2.5&client_name=t"
    with sqlkv.open_store(url) as store:
        assert isinstance(store, sqlkv.RedisStore)
        assert (store.namespace, store.keyspace.hash_tag) == ("app-1", "namespace")
        kwargs = store.client.get_connection_kwargs()
        assert (kwargs["socket_timeout"], kwargs["client_name"]) == (2.5, "t")
        store.put(b"k", b"v")
        assert store.client.get(b"{app-1}k") == b"v"


@pytest.mark.parametrize(
    "url, message",
    [
        ("redis://127.0.0.1:1/0?bogus=1", "unknown option 'bogus'"),
        ("redis://127.0.0.1:1/0?socket_timeout=soon", "socket_timeout"),
        ("redis+cluster://127.0.0.1:1/3", "only database 0"),
        ("redis+fancy://127.0.0.1:1", "unknown store scheme"),
        ("redis+sentinel://127.0.0.1:1", "names no service"),
        ("redis+sentinel://127.0.0.1:1,:2/s", "empty Sentinel address"),
        ("redis+sentinel://127.0.0.1:99999/s", "Port"),
        ("redis://127.0.0.1:1?sentinel_password=x", "unknown option 'sentinel_password'"),
        ("redis://127.0.0.1:1?replicas=one", "replicas must be a whole number"),
        ("redis://127.0.0.1:1?replicas=1&replica_timeout=0", "replica_timeout must be a positive"),
        ("redis://127.0.0.1:1?replicas=1&replica_timeout=nan", "replica_timeout must be a positive"),
        ("redis://127.0.0.1:1?replicas=1&replica_timeout=5&socket_timeout=2", "shorter than"),
        ("redis://127.0.0.1:1?replicas=1&replica_timeout=5", "socket_timeout \\(5 s\\)"),
        ("redis://", "names no host"),
        ("redis://127.0.0.1:99999", "Port"),
        ("redis://127.0.0.1:1?namespace=a{b}", "braces"),
        ("redis://127.0.0.1:1?namespace=", "non-empty"),
        ("redis://127.0.0.1:1?hash_tag=slot", "hash_tag"),
    ],
)
def test_bad_urls_are_refused_by_name(url, message):
    with pytest.raises(sqlkv.ConfigError, match=message):
        sqlkv.open_store(url)


def test_an_unreachable_server_is_a_store_error_with_redis_cause():
    store = sqlkv.open_store(f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=2")
    with pytest.raises(sqlkv.StoreError) as caught:
        sqlkv.connect(store, "app.db")
    assert isinstance(caught.value.__cause__, redis.ConnectionError)
    store.close()


# -- where keys go -------------------------------------------------------------------


def test_a_database_and_its_sidecars_share_one_tag_and_others_do_not():
    layout = SeedLayout(9)
    keyspace = KeySpace("ns")
    app = [
        layout.meta_key("app.db"), layout.chunk_key("app.db", 7),
        layout.meta_key("app.db-journal"), layout.chunk_key("app.db-journal", 0),
        layout.meta_key("app.db-wal"), layout.ext_key("app.db", EXT_LEASE, b"e"),
    ]
    assert {database_of(k) for k in app} == {b"\x09app.db"}
    assert {keyspace.tag(k) for k in app} == {b"{ns/" + b"\x09app.db".hex().encode() + b"}"}
    others = [layout.meta_key("b.db"), SeedLayout(8).meta_key("app.db"), KeySpace("ns2").key(app[0])]
    assert len({keyspace.tag(k) for k in others[:2]} | {keyspace.tag(app[0])}) == 3
    assert not others[2].startswith(b"{ns/") and not others[2].startswith(b"{ns}")
    assert KeySpace.raw(keyspace.key(app[1])) == app[1]


@pytest.mark.parametrize(
    "raw, redis_key",
    [
        # layout seed, prefix 9: the tag is the namespace and hex(prefix + main file name)
        (SeedLayout(9).meta_key("app.db"), b"{ns/096170702e6462}\x09\x00app.db"),
        (SeedLayout(9).chunk_key("app.db", 0x01020304), b"{ns/096170702e6462}\x09\x01app.db\x00\x01\x02\x03\x04"),
        (SeedLayout(9).chunk_key("app.db-journal", 1), b"{ns/096170702e6462}\x09\x01app.db-journal\x00\x00\x00\x00\x01"),
        (SeedLayout(9).meta_key("app.db-wal"), b"{ns/096170702e6462}\x09\x00app.db-wal"),
        (SeedLayout(9).ext_key("app.db", EXT_LEASE, b"e"), b"{ns/096170702e6462}\x09\x02app.db\x00le"),
        (SeedLayout(0).meta_key("-journal"), b"{ns/002d6a6f75726e616c}\x00\x00-journal"),
        # layout rivet-v2: the key space is the database, so the namespace's own tag
        (RivetV2Layout("app.db").meta_key("app.db"), b"{ns}\x08\x01\x00\x00"),
        (RivetV2Layout("app.db").chunk_key("app.db-journal", 2), b"{ns}\x08\x01\x01\x01\x00\x00\x00\x02"),
        (RivetV2Layout("app.db").ext_key("app.db", EXT_LEASE), b"{ns}\x08\x01\xf0\x00l"),
    ],
)
def test_redis_keys_of_layout_keys_are_pinned(raw, redis_key):
    """Existing data is found only if these bytes never change."""
    assert KeySpace("ns").key(raw) == redis_key
    assert KeySpace.raw(redis_key) == raw


def test_rivet_v2_keys_and_odd_keys_share_the_namespace_tag():
    rivet = RivetV2Layout("app.db")
    keys = [rivet.meta_key("app.db"), rivet.chunk_key("app.db", 0), rivet.chunk_key("app.db-journal", 3),
            rivet.ext_key("app.db", EXT_LEASE), b"", b"\x09", b"\x09\x07junk"]
    assert {database_of(k) for k in keys} == {None}
    assert {KeySpace("ns").tag(k) for k in keys} == {b"{ns}"}
    assert KeySpace("ns", "namespace").tag(SeedLayout(9).meta_key("app.db")) == b"{ns}"


def test_rivet_v2_databases_work_on_a_cluster(redis_cluster):
    url = f"{redis_cluster.url}?namespace={unique_namespace()}"
    with sqlkv.open_store(url) as store:
        with sqlkv.connect(store, "app.db", layout="rivet-v2") as db:
            db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        with sqlkv.connect(store, "app.db", layout="rivet-v2", readonly=True) as db:
            assert db.query("SELECT x FROM t").rows == [(1,)]


def test_databases_and_namespaces_never_touch_each_others_keys(redis_server):
    namespaces = [unique_namespace(), unique_namespace()]
    for ns in namespaces:
        with sqlkv.open_store(f"{redis_server.url}?namespace={ns}") as store:
            for name in ("app.db", "other.db"):
                with sqlkv.connect(store, name) as db:
                    db.exec(f"CREATE TABLE t(v); INSERT INTO t VALUES ('{ns}/{name}')")
    raw = redis.Redis(host="127.0.0.1", port=redis_server.port)
    for ns in namespaces:
        for name in ("app.db", "other.db"):
            tag = b"{" + ns.encode() + b"/" + (b"\x09" + name.encode()).hex().encode() + b"}"
            keys = list(raw.scan_iter(match=tag.replace(b"{", b"\\{").replace(b"}", b"\\}") + b"*"))
            assert keys and all(name.encode() in KeySpace.raw(k) for k in keys)
        with sqlkv.open_store(f"{redis_server.url}?namespace={ns}") as store:
            for name in ("app.db", "other.db"):
                with sqlkv.connect(store, name, readonly=True) as db:
                    assert db.query("SELECT v FROM t").rows == [(f"{ns}/{name}",)]
    raw.close()


def test_on_a_cluster_each_database_is_one_slot_and_databases_spread(redis_cluster):
    url = f"{redis_cluster.url}?namespace={unique_namespace()}"
    names = [f"db{n}.db" for n in range(12)]
    with sqlkv.open_store(url) as store:
        for name in names:
            with sqlkv.connect(store, name) as db:
                db.exec("CREATE TABLE t(v); INSERT INTO t VALUES (randomblob(20000))")
        slots = {}
        for key in store.client.scan_iter(match=store.keyspace.scan_pattern()):
            raw = KeySpace.raw(key)
            slots.setdefault(database_of(raw), set()).add(store.client.keyslot(key))
        assert set(slots) == {b"\x09" + n.encode() for n in names}
        assert all(len(s) == 1 for s in slots.values())
        nodes = {store.client.nodes_manager.get_node_from_slot(next(iter(s))).name for s in slots.values()}
        assert len(nodes) >= 2, "twelve databases all landed on one primary"


def test_on_a_cluster_a_batch_across_databases_is_refused(redis_cluster):
    with sqlkv.open_store(f"{redis_cluster.url}?namespace={unique_namespace()}") as store:
        layout = SeedLayout(9)
        batch = [(layout.meta_key("a.db"), b"x"), (layout.meta_key("b.db"), b"y")]
        with pytest.raises(sqlkv.StoreError, match="different databases"):
            store.put_batch(batch)
        assert store.get_batch([k for k, _ in batch]) == [None, None]


# -- writes -------------------------------------------------------------------------------


def test_write_batch_checks_every_expectation_before_writing(store):
    store.put_batch([(b"\x09\x00a", b""), (b"\x09\x00b", b"old")])
    assert not store.write_batch([(b"\x09\x00b", b"new")], [], {b"\x09\x00a": None})
    assert not store.write_batch([], [b"\x09\x00b"], {b"\x09\x00b": b"ol"})
    assert store.get_batch([b"\x09\x00a", b"\x09\x00b"]) == [b"", b"old"]
    assert store.write_batch(
        [(b"\x09\x00b", b"new")], [b"\x09\x00a"], {b"\x09\x00a": b"", b"\x09\x00c": None}
    )
    assert store.get_batch([b"\x09\x00a", b"\x09\x00b"]) == [None, b"new"]
    assert store.limits == REDIS_LIMITS and store.limits.atomic_batches


def test_a_flushed_script_cache_is_reloaded(store):
    store.client.script_flush()
    assert store.write_batch([(b"\x09\x00a", b"1")], [])
    assert store.client.script_exists(WRITE_BATCH_SHA) == [True]
    assert store.get(b"\x09\x00a") == b"1"


def test_one_request_per_commit_as_the_server_counts(redis_server, store):
    def counts() -> dict[str, int]:
        stats = redis_server.command("INFO", "commandstats")
        return {k: v["calls"] for k, v in stats.items()}

    with sqlkv.connect(store, "app.db", lease_seconds=LONG_LEASE) as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        before = counts()
        for _ in range(50):
            db.run("INSERT INTO t(v) VALUES (?)", ["x" * 100])
        after = counts()
        assert db.stats.calls["write_batch"] >= 50
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta = {k: v for k, v in delta.items() if v}
    # 50 scripts (their GET/SET run inside them), and the INFO that read `before`
    # on a connection of its own (which said HELLO first).
    assert delta.pop("cmdstat_evalsha") == 50
    assert delta.pop("cmdstat_info") == 1
    assert delta.pop("cmdstat_hello", 1) == 1
    assert set(delta) <= {"cmdstat_get", "cmdstat_set"}  # inside the scripts


def test_async_store_keys_match_the_sync_store(redis_server):
    import asyncio

    url = f"{redis_server.url}?namespace={unique_namespace()}"

    async def write() -> None:
        store = sqlkv.AsyncRedisStore.from_url(url)
        db = await sqlkv.SqliteVfs().open("app.db", store)
        await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (42)")
        await db.close()
        await store.close()

    asyncio.run(write())
    with sqlkv.open_store(url) as store, sqlkv.connect(store, "app.db", readonly=True) as db:
        assert integrity(db) == [("ok",)]
        assert db.query("SELECT x FROM t").rows == [(42,)]


def test_an_open_after_an_interrupted_staged_commit_asks_redis_for_few_keys(store):
    """Reproduction (issue 20, item 3): on Redis the open after a staged commit
    interrupted before its commit point counted the pieces with one MGET of
    8,388,608 keys (67.5 s, 3.9 GB). Every get_batch now asks for what it needs."""
    from sqlkv.storage.commit import Committer, Staging
    from sqlkv.stores.contract import StoreClient
    from sqlkv.stores.wrapper import StoreWrapper

    class Largest(StoreWrapper):
        def __init__(self, inner) -> None:
            super().__init__(inner, write_batch=True)
            self.largest = 0

        def _call(self, kind, *args):
            if kind == "get_batch":
                self.largest = max(self.largest, len(args[0]))
            return super()._call(kind, *args)

    watched = Largest(store)
    assert watched.limits == REDIS_LIMITS
    with sqlkv.connect(watched, "app.db", lease_seconds=None) as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    Committer(StoreClient(store), SeedLayout(9), 4096).stage("app.db", Staging(), {7: b"x" * 4096})
    watched.largest = 0
    with sqlkv.connect(watched, "app.db", lease_seconds=None) as db:
        assert db.query("SELECT x FROM t").rows == [(1,)]
    assert 0 < watched.largest <= 64
    assert store.get(SeedLayout(9).ext_key("app.db", b"m", b"\x00\x00\x00\x00")) is None

"""Redis failover: acknowledged-means-replicated (``replicas``), Sentinel, and a
Cluster whose primary dies, with real processes on loopback ports.

The failover scenario (one per topology, shared by the tests of that topology):
two writers commit to two databases on the same primary, one without
``replicas`` (A) and one with ``replicas=1`` (B). Once the replica holds every
commit so far it is paused (``SIGSTOP``): B's next commit cannot be replicated
and raises :class:`sqlkv.OutcomeUnknownError`; the primary's link to the
paused replica is closed (``CLIENT KILL``), and A goes on committing,
acknowledged by the primary alone. Then the primary is killed, the replica
resumed, and promoted (by the Sentinels, or by the Cluster itself); a third
store writes straight through ``write_batch`` to see how it finds the new
primary, and both writers try more commits there (it has no replica left).
Last, fresh opens read what each database holds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from helpers import integrity, unique_namespace
from redis_servers import (
    RedisCluster3,
    RedisServer,
    ReplicatedRedis,
    Sentinels,
    drop_replicas,
    wait_until,
    wait_until_synced,
)

import sqlkv
from sqlkv.errors import RewoundError
from sqlkv.stores.redis_store import AsyncRedisStore, NotReplicatedError, RedisStore, parse_redis_url

#: No renewal runs during these tests: the lease is written at open and close only.
LONG_LEASE = 600
REPLICA_TIMEOUT = 0.5
ROW = "r" * 300


def insert(db: sqlkv.Connection, i: int) -> None:
    db.run("INSERT INTO t VALUES (?, ?)", [i, ROW])


def content(url: str, name: str) -> tuple[list, list[int]]:
    """``(integrity_check, ids)`` of ``name`` through a fresh store and read-only open."""
    with sqlkv.open_store(url) as store, sqlkv.connect(store, name, readonly=True) as db:
        return integrity(db), [r[0] for r in db.query("SELECT id FROM t ORDER BY id").rows]


# -- URLs -----------------------------------------------------------------------------


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_primarys_login():
    target = parse_redis_url(
        "rediss+sentinel://u:pw@10.0.0.1:5000,[::1],sentinel.example/billing/2"
        "?replicas=1&replica_timeout=0.25&sentinel_password=sp&socket_timeout=3&namespace=n"
    )
    assert target.sentinels == [("10.0.0.1", 5000), ("::1", 26379), ("sentinel.example", 26379)]
    assert target.service_name == "billing"
    assert target.store_kwargs == {"replicas": 1, "replica_timeout": 0.25, "namespace": "n"}
    assert target.sentinel_login == {"password": "sp"}
    assert "pw" not in target.safe_url and "billing" in target.safe_url
    with sqlkv.open_store("rediss+sentinel://u:pw@10.0.0.1:5000/billing/2?socket_timeout=3") as store:
        pool = store.client.connection_pool  # nothing is connected yet
        assert (pool.service_name, pool.connection_kwargs["db"]) == ("billing", 2)
        assert (pool.connection_kwargs["username"], pool.connection_kwargs["password"]) == ("u", "pw")
        assert issubclass(pool.connection_class, redis.connection.SSLConnection)
        (sentinel,) = pool.sentinel_manager.sentinels
        assert issubclass(sentinel.connection_pool.connection_class, redis.connection.SSLConnection)
        assert sentinel.connection_pool.connection_kwargs["socket_timeout"] == 3


@pytest.mark.parametrize(
    "options, message",
    [
        ({"replicas": -1}, "replicas must be an int >= 0"),
        ({"replicas": True}, "replicas must be an int >= 0"),
        ({"replicas": 1, "replica_timeout": 0}, "replica_timeout must be a positive"),
        ({"replicas": 1, "replica_timeout": float("inf")}, "replica_timeout must be a positive"),
        ({"replicas": 1, "replica_timeout": 2}, "shorter than the client's socket_timeout"),
    ],
)
def test_bad_replication_keywords_are_refused_by_name(options, message):
    with pytest.raises(sqlkv.ConfigError, match=message):
        RedisStore(redis.Redis(port=1, socket_timeout=1), **options)


# -- acknowledged means replicated ----------------------------------------------------


class RecordingConnection(redis.connection.Connection):
    """A redis-py connection that records each request it sends (one send, one round trip)."""

    requests: list[bytes] = []

    def send_packed_command(self, command, check_health=True):
        parts = [command] if isinstance(command, (bytes, str)) else command
        RecordingConnection.requests.append(b"".join(p if isinstance(p, bytes) else p.encode() for p in parts))
        super().send_packed_command(command, check_health)


def test_replicas_make_each_commit_wait_for_a_replica_in_the_same_round_trip(tmp_path):
    servers = ReplicatedRedis(tmp_path).start()
    namespace = unique_namespace()
    on_replica = f"{servers.replica_url}?namespace={namespace}"
    url = f"{servers.url}?namespace={namespace}&replicas=1&replica_timeout={REPLICA_TIMEOUT}"
    store = RedisStore.from_url(url, connection_class=RecordingConnection)
    try:
        assert (store.replicas, store.replica_timeout) == (1, REPLICA_TIMEOUT)
        db = sqlkv.connect(store, "app.db", lease_seconds=LONG_LEASE)
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        waits_before = servers.primary.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
        RecordingConnection.requests.clear()
        for i in range(20):
            insert(db, i)
        commits = [r for r in RecordingConnection.requests if b"EVALSHA" in r]
        assert len(commits) == 20 and all(b"WAIT" in r for r in commits), "a commit is not one round trip"
        assert not any(b"WAIT" in r for r in RecordingConnection.requests if b"EVALSHA" not in r)
        waits = servers.primary.info("commandstats")["cmdstat_wait"]["calls"] - waits_before
        assert waits == 20, "a commit did not wait for its replica"
        servers.wait_synced()
        assert content(on_replica, "app.db") == ([("ok",)], list(range(20)))

        servers.replica.pause()
        started = time.monotonic()
        with pytest.raises(sqlkv.OutcomeUnknownError) as caught:
            insert(db, 20)
        waited = time.monotonic() - started
        assert caught.value.committed is None
        assert isinstance(caught.value.__cause__, NotReplicatedError)
        assert "0 of the 1 replica" in str(caught.value)
        # WAIT ends at its timeout, not never.
        assert REPLICA_TIMEOUT <= waited < REPLICA_TIMEOUT + 4
        with pytest.raises(NotReplicatedError):  # the single-key put waits too
            store.put(b"k", b"v")
        servers.replica.resume()
        servers.wait_synced()
        insert(db, 21)  # acknowledged once the replica has it again
        db.close()
        # The unknown-outcome commit was applied by the primary, and the replica caught up.
        assert content(on_replica, "app.db") == ([("ok",)], list(range(22)))
    finally:
        store.close()
        servers.stop()


async def test_an_async_store_waits_for_replicas_too(tmp_path):
    servers = ReplicatedRedis(tmp_path).start()
    url = f"{servers.url}?namespace={unique_namespace()}&replicas=1&replica_timeout={REPLICA_TIMEOUT}"
    store = AsyncRedisStore.from_url(url)
    try:
        db = await sqlkv.SqliteVfs(lease_seconds=LONG_LEASE).open("app.db", store)
        await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        waits_before = servers.primary.info("commandstats")["cmdstat_wait"]["calls"]
        for i in range(5):
            await db.run("INSERT INTO t VALUES (?, ?)", [i, ROW])
        assert servers.primary.info("commandstats")["cmdstat_wait"]["calls"] - waits_before == 5
        servers.replica.pause()
        with pytest.raises(sqlkv.OutcomeUnknownError) as caught:
            await db.run("INSERT INTO t VALUES (5, 'x')")
        assert isinstance(caught.value.__cause__, NotReplicatedError)
        servers.replica.resume()
        servers.wait_synced()
        await db.close()
    finally:
        await store.close()
        servers.stop()
    with pytest.raises(sqlkv.ConfigError, match="Redis Cluster"):
        AsyncRedisStore.from_url("redis+cluster://127.0.0.1:1?replicas=1")


# -- the failover scenario -------------------------------------------------------------


@dataclass
class Writer:
    """One writer of the scenario and what it saw."""

    name: str
    db: sqlkv.Connection
    acked: list[int] = field(default_factory=list)  # ids whose commit returned
    tried: list[int] = field(default_factory=list)  # every id it tried to commit
    cut_off_error: BaseException | None = None  # the commit tried while the replica was paused
    after: list[int | BaseException] = field(default_factory=list)  # each try after the failover
    integrity: list = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    def commit(self, i: int) -> BaseException | None:
        self.tried.append(i)
        try:
            insert(self.db, i)
        except sqlkv.Error as exc:
            return exc
        self.acked.append(i)
        return None


@dataclass
class Failover:
    """What the scenario did: ids committed before the replica stopped, ids that
    only the old primary acknowledged, and the two writers."""

    before: list[int]
    unreplicated: list[int]
    plain: Writer  # A: no replicas
    replicated: Writer  # B: replicas=1
    probe: list[bool | BaseException]  # each write_batch of a third store after the failover


BEFORE, UNREPLICATED, AFTER = 30, 20, 8


def _not_replicated(tried: int | BaseException) -> bool:
    """Whether a try failed because too few replicas acknowledged it."""
    return isinstance(tried, sqlkv.OutcomeUnknownError) and isinstance(tried.__cause__, NotReplicatedError)


def run_failover(topology) -> Failover:
    """The module docstring's scenario on ``topology`` (see SentinelTopology)."""
    plain_store = sqlkv.open_store(topology.store_url())
    replicated_store = sqlkv.open_store(
        topology.store_url() + f"&replicas=1&replica_timeout={REPLICA_TIMEOUT}"
    )
    # A store that writes one key before the failover and again after it, straight
    # through write_batch: how it finds the new primary.
    probe_store = RedisStore.from_url(topology.store_url() + f"&replicas=1&replica_timeout={REPLICA_TIMEOUT}")
    probe: list[bool | BaseException] = []
    writers = []
    try:
        assert probe_store.write_batch([(b"probe", b"before")], [])
        for name, store in (("a.db", plain_store), ("b.db", replicated_store)):
            db = sqlkv.connect(store, name, lease_seconds=LONG_LEASE)
            db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            writers.append(Writer(name, db))
        plain, replicated = writers
        before = list(range(BEFORE))
        for i in before:
            for writer in writers:
                assert writer.commit(i) is None
        topology.wait_synced()

        topology.pause_replica()
        replicated.cut_off_error = replicated.commit(BEFORE)
        topology.drop_replica()
        unreplicated = list(range(BEFORE + 1, BEFORE + 1 + UNREPLICATED))
        for i in unreplicated:
            assert plain.commit(i) is None

        topology.fail_over()
        for _ in range(3):
            try:
                probe.append(probe_store.write_batch([(b"probe", b"after")], []))
            except Exception as exc:  # redis-py's, or the store's
                probe.append(exc)
                if isinstance(exc, NotReplicatedError):
                    break
        for i in range(BEFORE + 1 + UNREPLICATED, BEFORE + 1 + UNREPLICATED + AFTER):
            plain.after.append(plain.commit(i) or i)
            # B tries until its write reaches the new primary, which has no replica to
            # wait for (the first tries may fail while the client looks for the primary).
            if not any(_not_replicated(tried) for tried in replicated.after):
                replicated.after.append(replicated.commit(i) or i)
    finally:
        for writer in writers:
            try:
                writer.db.close()
            except sqlkv.Error:
                pass  # a release the new primary cannot replicate: the lease expires
        plain_store.close()
        replicated_store.close()
        probe_store.close()
    for writer in writers:
        writer.integrity, writer.rows = content(topology.store_url(), writer.name)
    return Failover(before, unreplicated, plain, replicated, probe)


class SentinelTopology:
    """A primary, a replica and three Sentinels; writers connect through the Sentinels."""

    def __init__(self, directory: Path) -> None:
        self.servers = ReplicatedRedis(directory / "servers")
        self.directory = directory
        self.namespace = unique_namespace()
        self.sentinels: Sentinels | None = None

    def start(self) -> SentinelTopology:
        self.servers.start()
        self.sentinels = Sentinels(self.directory / "sentinels", self.servers.primary.port).start()
        return self

    def store_url(self) -> str:
        assert self.sentinels is not None
        return f"{self.sentinels.url}?namespace={self.namespace}"

    def wait_synced(self) -> None:
        self.servers.wait_synced()

    def pause_replica(self) -> None:
        assert self.servers.replica is not None
        self.servers.replica.pause()

    def drop_replica(self) -> None:
        drop_replicas(self.servers.primary)

    def fail_over(self) -> None:
        """Kill the primary, resume the replica (it never got what followed its
        pause), and wait until the Sentinels have promoted it."""
        assert self.sentinels is not None and self.servers.replica is not None
        old = self.servers.primary.port
        self.servers.primary.kill9()
        self.servers.replica.resume()
        assert self.sentinels.wait_failover(old) == self.servers.replica.port

    def stop(self) -> None:
        if self.sentinels is not None:
            self.sentinels.stop()
        self.servers.stop()


class ClusterTopology:
    """A Redis Cluster of three primaries with a replica each; both writers'
    databases are in one hash slot (``hash_tag=namespace``), so on one primary."""

    def __init__(self, directory: Path) -> None:
        self.cluster = RedisCluster3(directory, replicas=1, node_timeout_ms=1500)
        self.namespace = unique_namespace()
        self.url = ""
        self.primary: RedisServer | None = None
        self.replica: RedisServer | None = None

    def start(self) -> ClusterTopology:
        self.cluster.start()
        self.url = self.cluster.url
        with redis.cluster.RedisCluster("127.0.0.1", self.cluster.nodes[0].port) as client:
            # Every key of the namespace has its tag, so lives on this node.
            node = client.get_node_from_key("{" + self.namespace + "}")
        self.primary = self.cluster.node_at(node.port)
        self.replica = self.cluster.replica_of(self.primary)
        return self

    def store_url(self) -> str:
        return f"{self.url}?namespace={self.namespace}&hash_tag=namespace"

    def wait_synced(self) -> None:
        assert self.primary is not None and self.replica is not None
        wait_until_synced(self.primary, self.replica)

    def pause_replica(self) -> None:
        assert self.replica is not None
        self.replica.pause()

    def drop_replica(self) -> None:
        assert self.primary is not None
        drop_replicas(self.primary)

    def fail_over(self) -> None:
        """Kill the primary, resume its replica, and wait until the cluster has
        promoted it and every live node says the cluster is ok (no CLUSTER FAILOVER)."""
        assert self.primary is not None and self.replica is not None
        replica = self.replica
        self.primary.kill9()
        replica.resume()
        wait_until("the replica's promotion", lambda: replica.info("replication")["role"] == "master")
        self.cluster.wait_ok([node for node in self.cluster.nodes if node is not self.primary])
        self.url = f"redis+cluster://127.0.0.1:{replica.port}"  # the URL's node must be alive

    def stop(self) -> None:
        for node in self.cluster.nodes:
            if node.process is not None and node.process.poll() is None:
                node.resume()  # a stopped process does not act on SIGTERM
        self.cluster.stop()


@pytest.fixture(scope="module", params=["sentinel", "cluster"])
def failover(request, tmp_path_factory):
    """The scenario, run once per topology; its tests read what happened."""
    directory = tmp_path_factory.mktemp(f"failover-{request.param}")
    topology = SentinelTopology(directory) if request.param == "sentinel" else ClusterTopology(directory)
    try:
        topology.start()
        yield run_failover(topology)
    finally:
        topology.stop()


def test_with_replicas_a_failover_loses_no_acknowledged_commit(failover):
    b = failover.replicated
    # The commit tried while the replica was paused was not acknowledged.
    assert isinstance(b.cut_off_error, sqlkv.OutcomeUnknownError)
    assert b.cut_off_error.committed is None
    assert isinstance(b.cut_off_error.__cause__, NotReplicatedError)
    # The store found the new primary by itself, and as it has no replica, nothing is
    # acknowledged: each try fails cleanly, the last because no replica holds it.
    assert all(isinstance(tried, sqlkv.Error) for tried in b.after), b.after
    assert _not_replicated(b.after[-1]), b.after
    assert b.integrity == [("ok",)]
    assert b.acked == failover.before
    # Every acknowledged commit is there; others it tried may be (the primaries applied
    # them before their WAIT found too few replicas).
    assert set(b.acked) <= set(b.rows) <= set(b.tried)


def test_after_a_failover_the_store_finds_the_new_primary_by_itself(failover):
    # Sentinel: the next connection asks the Sentinels, so the first write gets there.
    # Cluster: the first write fails on the dead node, and the next asks the cluster
    # where the slot went. Either way the write reaches the new primary, which applies
    # it and, lacking a replica, does not acknowledge it.
    *first, last = failover.probe
    assert isinstance(last, NotReplicatedError), failover.probe
    assert len(first) <= 1 and all(isinstance(e, redis.ConnectionError) for e in first), failover.probe


def test_without_replicas_a_failover_loses_only_unreplicated_commits_and_never_corrupts(failover):
    """NEEDS THE fence-head BRANCH (every commit conditional on its head, RewoundError):
    on a branch without it this test fails, because the writer builds on a state the
    promoted replica never had."""
    a = failover.plain
    first = a.after[0]
    # The writer heard of the failover on its first call there, before any commit of
    # it was acknowledged: RewoundError (the Sentinel case, where the client reconnects
    # to the new primary silently), or the failed call that made the client look for
    # the new primary (the Cluster case).
    assert isinstance(first, (RewoundError, sqlkv.StoreError)), f"a commit on the rewound state: {a.after}"
    assert a.integrity == [("ok",)]
    acked_after = [i for i in a.after if isinstance(i, int)]
    assert acked_after, f"the writer never committed again after the failover: {a.after}"
    assert set(failover.before) | set(acked_after) <= set(a.rows), "an acknowledged commit is missing"
    # What is lost is only what the old primary alone acknowledged.
    assert set(a.rows) <= set(failover.before) | set(failover.unreplicated) | set(acked_after)


@pytest.mark.slow
def test_a_writer_under_load_keeps_every_acknowledged_commit_through_a_sentinel_failover(tmp_path):
    """A writer commits without pause (replicas=1) while the replica is paused, the
    primary killed, the replica promoted and the old primary brought back as its
    replica; commits resume by themselves, and none acknowledged is lost."""
    topology = SentinelTopology(tmp_path).start()
    store = sqlkv.open_store(topology.store_url() + f"&replicas=1&replica_timeout={REPLICA_TIMEOUT}")
    db = sqlkv.connect(store, "app.db", lease_seconds=LONG_LEASE)
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    writer = Writer("app.db", db)
    errors: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 120
        for i in range(1_000_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            failed = writer.commit(i)
            if failed is not None:
                errors.append(failed)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_until("100 commits", lambda: len(writer.acked) >= 100)
        servers = topology.servers
        assert servers.replica is not None
        topology.pause_replica()
        wait_until("a commit refused for want of a replica", lambda: any(map(_not_replicated, errors)))
        topology.drop_replica()
        acked_before = len(writer.acked)
        topology.fail_over()
        servers.primary.start()  # back on its port, empty: the Sentinels make it the new replica
        wait_until("100 commits after the failover", lambda: len(writer.acked) >= acked_before + 100, 60)
    finally:
        stop.set()
        thread.join(timeout=60)
        db.close()
        store.close()
        try:
            assert not thread.is_alive()
            writer.integrity, writer.rows = content(topology.store_url(), "app.db")
        finally:
            topology.stop()
    assert writer.integrity == [("ok",)]
    assert all(isinstance(e, sqlkv.Error) for e in errors)
    assert set(writer.acked) <= set(writer.rows) <= set(writer.tried)

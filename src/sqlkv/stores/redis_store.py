"""RedisStore and AsyncRedisStore: databases in Redis, standalone or Cluster.

Both classes store the same keys the same way; :class:`RedisStore` has
synchronous calls (it serves the sync and the async API alike, since the
engine calls its store from a worker thread), :class:`AsyncRedisStore` has
``async`` ones for callers whose Redis traffic must run on their event loop.

**Keys.** A store key ``k`` is kept in Redis as ``{TAG}k``. The part in braces
is a Redis Cluster hash tag, so every key with the same tag lives in one hash
slot. By default (``hash_tag="database"``) the tag names the namespace and the
database a key belongs to, as the layout tells it (:func:`sqlkv.format.layout.database_of`:
for layout ``seed``, the prefix and the main file's name), so a database and
the files SQLite keeps beside it share a slot, and different databases spread
over a cluster. Keys that name no database (layout ``rivet-v2``, which holds
one database per key space) get the namespace's own tag ``{NAMESPACE}``;
``hash_tag="namespace"`` puts every key there.
Applications sharing a server are kept apart by their ``namespace``.

**Writes.** ``write_batch`` (and ``put_batch``/``delete_batch``, which use it)
is one Lua script: it checks the expected values, then deletes and sets, in
one atomic step and one round trip, on a cluster too (all its keys are in one
slot; a batch spanning slots is refused). Scripts are sent by their SHA1 and
loaded on the first ``NOSCRIPT``. Connection errors are not retried: a
command whose answer was lost may have been applied, and only the caller may
decide what to do then (the engine reopens the database on its next call).

**Replicas.** With ``replicas=N`` every write is followed, in the same
pipeline (one round trip), by ``WAIT N timeout``: a write is acknowledged
only once N replicas hold it; one the primary applied that fewer replicas
acknowledged in ``replica_timeout`` seconds raises :class:`NotReplicatedError`
(a commit's caller hears :class:`~sqlkv.OutcomeUnknownError`). Every write
waits, the lease's takes and renewals too: replication keeps the primary's
order, so a replica promoted after any acknowledged write holds the writer's
lease as of that write, and does not hand it to another writer sooner than
the old primary would have. (Fencing itself does not rest on this, but on
the lease's generation and random token, which no failover can make repeat.)

**Sentinel.** ``redis+sentinel://`` opens the primary a set of Sentinels
names (redis-py's ``Sentinel.master_for``); after a failover the next
connection asks them again, so the store follows the new primary by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
import weakref
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, AbstractConnection, SSLConnection, parse_url
from redis.exceptions import NoScriptError
from redis.retry import Retry

from ..errors import ConfigError, StoreError
from ..format.layout import database_of
from .contract import StoreLimits

DEFAULT_NAMESPACE = "sqlkv"
HASH_TAG_MODES = ("database", "namespace")
#: How long a write waits for its replicas (``replica_timeout``), in seconds.
DEFAULT_REPLICA_TIMEOUT = 1.0
#: The port a Sentinel listens on when its address names none.
SENTINEL_PORT = 26379

#: Redis's defaults: 512 MB per string (proto-max-bulk-len) and 1 GB per
#: request (client-query-buffer-limit); a batch of 512 MiB with its keys and
#: framing stays well inside one request.
REDIS_LIMITS = StoreLimits(
    atomic_batches=True, max_batch_bytes=512 * 1024 * 1024, max_value_bytes=512 * 1024 * 1024
)

# KEYS: the expected keys, then the deleted keys, then the put keys.
# ARGV: how many expected and deleted keys, then one expectation per expected
# key ("0" for absent, "1" and the value), then one value per put key.
# The checks come before any write, so a refused or failing script wrote nothing.
WRITE_BATCH_LUA = """
local n_expect = tonumber(ARGV[1])
local n_delete = tonumber(ARGV[2])
for i = 1, n_expect do
  local want = ARGV[2 + i]
  local have = redis.call('GET', KEYS[i])
  if want == '0' then
    if have then return 0 end
  elseif have ~= string.sub(want, 2) then
    return 0
  end
end
for i = n_expect + 1, n_expect + n_delete do
  redis.call('DEL', KEYS[i])
end
local first_put = n_expect + n_delete
for i = first_put + 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 + n_expect + i - first_put])
end
return 1
"""
WRITE_BATCH_SHA = hashlib.sha1(WRITE_BATCH_LUA.encode()).hexdigest()


class KeySpace:
    """Maps store keys to Redis keys (``{TAG}key``) and back, for one namespace."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, hash_tag: str = "database") -> None:
        if not isinstance(namespace, str) or not namespace:
            raise ConfigError("RedisStore namespace must be a non-empty str")
        if any(c in namespace for c in "{}") or not namespace.isprintable():
            raise ConfigError(
                f"RedisStore namespace {namespace!r} must be printable and hold no braces"
            )
        if hash_tag not in HASH_TAG_MODES:
            raise ConfigError(
                f"RedisStore hash_tag must be one of {', '.join(HASH_TAG_MODES)}, not {hash_tag!r}"
            )
        self.namespace = namespace
        self.hash_tag = hash_tag
        self._ns = namespace.encode("utf-8")
        self._namespace_tag = b"{" + self._ns + b"}"
        self._tags: dict[bytes, bytes] = {}

    def tag(self, raw: bytes) -> bytes:
        """The hash tag (braces included) the key ``raw`` is stored under."""
        if self.hash_tag == "namespace":
            return self._namespace_tag
        database = database_of(raw)
        if database is None:
            return self._namespace_tag
        tag = self._tags.get(database)
        if tag is None:
            tag = self._tags[database] = b"{" + self._ns + b"/" + database.hex().encode() + b"}"
        return tag

    def key(self, raw: bytes) -> bytes:
        """The Redis key of the store key ``raw``."""
        return self.tag(raw) + raw

    def keys(self, raws: Iterable[bytes]) -> list[bytes]:
        return [self.tag(raw) + raw for raw in raws]

    @staticmethod
    def raw(key: bytes) -> bytes:
        """The store key of a Redis key made by :meth:`key`."""
        return key[key.index(b"}") + 1 :]

    def scan_pattern(self) -> bytes:
        """A SCAN ``MATCH`` pattern for every key of this namespace."""
        escaped = b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in self._ns)
        return b"{" + escaped + b"[}/]*"


class NotReplicatedError(StoreError):
    """The primary applied a write, but fewer replicas than ``replicas`` acknowledged
    it within ``replica_timeout``: a failover now could lose it. For a commit the
    caller hears :class:`~sqlkv.OutcomeUnknownError` (``committed is None``) with
    this as its ``__cause__``."""


def check_replication(replicas: object, replica_timeout: object) -> tuple[int, float]:
    """``replicas`` and ``replica_timeout`` as the store keeps them; a
    :class:`ConfigError` naming the bad one."""
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ConfigError(f"RedisStore replicas must be an int >= 0, not {replicas!r}")
    if (
        not isinstance(replica_timeout, (int, float))
        or isinstance(replica_timeout, bool)
        or not math.isfinite(replica_timeout)
        or replica_timeout <= 0
    ):
        raise ConfigError(
            f"RedisStore replica_timeout must be a positive number of seconds, not {replica_timeout!r}"
        )
    return replicas, float(replica_timeout)


class _RedisKeys:
    """What both store classes share: the key space, limits, replication, and
    turning a ``write_batch`` into the script's keys and arguments."""

    def __init__(
        self,
        namespace: str,
        hash_tag: str,
        cluster: bool,
        limits: StoreLimits | None,
        replicas: int = 0,
        replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
    ) -> None:
        self.keyspace = KeySpace(namespace, hash_tag)
        self.cluster = cluster
        self.limits = REDIS_LIMITS if limits is None else limits
        self.replicas, self.replica_timeout = check_replication(replicas, replica_timeout)
        #: WAIT's timeout, in milliseconds (0 would wait for ever).
        self._wait_ms = max(1, round(self.replica_timeout * 1000))

    def _wait_command(self) -> tuple[str, int, int]:
        return ("WAIT", self.replicas, self._wait_ms)

    def _check_replies(self, replies: list[Any], wrote: bool) -> Any:
        """The write's reply from ``[write's reply, WAIT's reply]``; a
        :class:`NotReplicatedError` when it wrote and too few replicas hold it."""
        reply, acked = replies
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acked, Exception):
            if wrote:
                raise NotReplicatedError(
                    f"the primary applied the write, but WAIT failed: {acked}"
                ) from acked
            return reply
        if wrote and acked < self.replicas:
            raise NotReplicatedError(
                f"the primary applied the write, but {acked} of the {self.replicas} replica(s) "
                f"asked for acknowledged it within {self.replica_timeout:g} s (replica_timeout); "
                "a failover now could lose it"
            )
        return reply

    @property
    def namespace(self) -> str:
        return self.keyspace.namespace

    def _script_call(
        self,
        puts: list[tuple[bytes, bytes]],
        deletes: list[bytes],
        expect: dict[bytes, bytes | None] | None,
    ) -> list[Any] | None:
        """``[numkeys, *keys, *args]`` for the write script, or ``None`` when there is nothing to do."""
        expect = expect or {}
        if not (puts or deletes or expect):
            return None
        tag = self.keyspace.tag
        tags: list[bytes] = []
        keys: list[bytes] = []
        args: list[Any] = [len(expect), len(deletes)]
        for raws in (expect, deletes, (k for k, _ in puts)):
            for raw in raws:
                t = tag(raw)
                tags.append(t)
                keys.append(t + raw)
        args.extend(b"0" if v is None else b"1" + v for v in expect.values())
        args.extend(v for _, v in puts)
        if self.cluster and len(set(tags)) > 1:
            raise StoreError(
                "a Redis Cluster cannot apply one batch to keys of different databases "
                "atomically (they live in different hash slots); write each database apart"
            )
        return [len(keys), *keys, *args]

    def _scan_raw(self, found: Iterable[bytes], prefix: bytes) -> Iterator[bytes]:
        raws = sorted(r for r in (self.keyspace.raw(k) for k in found) if r.startswith(prefix))
        return iter(raws)


def _applied(reply: object) -> bool:
    """Whether the write script's reply says it wrote (its expectations held)."""
    return reply == 1


def _always(reply: object) -> bool:
    return True


#: The socket timeout of a redis-py connection not given one (5 s in redis-py 5 to 8).
_DEFAULT_SOCKET_TIMEOUT = inspect.signature(AbstractConnection.__init__).parameters["socket_timeout"].default


def _sentinels_of(client: object) -> list[Any]:
    """The Sentinel clients behind a ``master_for`` client (none for another client)."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    return list(getattr(manager, "sentinels", ()))


def _check_client(client: object, replicas: int = 0, replica_timeout: float = 0.0) -> None:
    kwargs = getattr(client, "get_connection_kwargs", None)
    if not callable(kwargs):  # a cluster client: its nodes' options are not at hand
        return
    options = kwargs()
    if options.get("decode_responses"):
        raise ConfigError("RedisStore needs a Redis client with decode_responses=False (values are bytes)")
    socket_timeout = options.get("socket_timeout", _DEFAULT_SOCKET_TIMEOUT)
    if replicas and socket_timeout is not None and replica_timeout >= socket_timeout:
        raise ConfigError(
            f"RedisStore replica_timeout ({replica_timeout:g} s) must be shorter than the "
            f"client's socket_timeout ({socket_timeout:g} s), which would cut every wait short"
        )


class RedisStore(_RedisKeys):
    """A store in Redis (synchronous calls), on a ``redis.Redis`` or
    ``redis.cluster.RedisCluster`` client. See the module docstring for keys
    and atomicity; :meth:`from_url` builds one from a URL.

    ``namespace`` separates applications sharing a server; ``hash_tag`` is
    ``"database"`` (one hash slot per database) or ``"namespace"`` (one for all).
    ``limits`` overrides :data:`REDIS_LIMITS` for a server configured otherwise.
    ``replicas`` (default 0: none) is how many replicas must hold each write
    before it is acknowledged, waiting up to ``replica_timeout`` seconds (see
    the module docstring); keep it below the client's ``socket_timeout``.
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        hash_tag: str = "database",
        limits: StoreLimits | None = None,
        replicas: int = 0,
        replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
    ) -> None:
        cluster = isinstance(client, redis.cluster.RedisCluster)
        super().__init__(namespace, hash_tag, cluster, limits, replicas, replica_timeout)
        _check_client(client, self.replicas, self.replica_timeout)
        self.client = client
        # After a failed write to a cluster node, ask the cluster where the slots are again.
        self._refresh_slots = False

    @classmethod
    def from_url(cls, url: str, **client_kwargs: Any) -> RedisStore:
        """A store from ``redis://``, ``rediss://``, ``redis+cluster://``,
        ``rediss+cluster://``, ``redis+sentinel://`` or ``rediss+sentinel://``
        (see :func:`parse_redis_url` for the options)."""
        target = parse_redis_url(url)
        client_kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        try:
            if target.sentinels:
                client = target.sentinel_master(redis.sentinel.Sentinel, client_kwargs)
            else:
                client_cls = redis.cluster.RedisCluster if target.cluster else redis.Redis
                client = client_cls.from_url(target.client_url, **client_kwargs)
        except (redis.RedisError, redis.cluster.RedisClusterException) as exc:
            raise StoreError(f"cannot reach Redis at {target.safe_url}: {exc}") from exc
        return cls(client, **target.store_kwargs)

    def _replicated(self, route_key: bytes, command: tuple[Any, ...], wrote: Any) -> Any:
        """``command``'s reply, sent with ``WAIT`` in one pipeline (one round trip) to
        the primary of ``route_key``; ``wrote(reply)`` says whether it wrote, and so
        whether too few replicas is a :class:`NotReplicatedError`."""
        client = self.client
        if self.cluster:
            if self._refresh_slots:
                client.nodes_manager.initialize()
                self._refresh_slots = False
            client = client.get_redis_connection(client.get_node_from_key(route_key))
        try:
            with client.pipeline(transaction=False) as pipe:
                pipe.execute_command(*command)
                pipe.execute_command(*self._wait_command())
                replies = pipe.execute(raise_on_error=False)
        except redis.RedisError:
            self._refresh_slots = self.cluster
            raise
        if self.cluster and any(isinstance(r, Exception) for r in replies):
            self._refresh_slots = True  # MOVED, CLUSTERDOWN, ...: the slot may have moved
        reply = replies[0]
        return self._check_replies(replies, not isinstance(reply, Exception) and wrote(reply))

    # -- the store calls ----------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        return self.client.get(self.keyspace.key(key))

    def get_batch(self, keys: list[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        rkeys = self.keyspace.keys(keys)
        if self.cluster:
            return self.client.mget_nonatomic(rkeys)
        return self.client.mget(rkeys)

    def put(self, key: bytes, value: bytes) -> None:
        rkey = self.keyspace.key(key)
        if self.replicas:
            self._replicated(rkey, ("SET", rkey, value), _always)
        else:
            self.client.set(rkey, value)

    def put_batch(self, entries: list[tuple[bytes, bytes]]) -> None:
        self.write_batch(entries, [])

    def delete_batch(self, keys: list[bytes]) -> None:
        self.write_batch([], keys)

    def write_batch(
        self,
        puts: list[tuple[bytes, bytes]],
        deletes: list[bytes],
        expect: dict[bytes, bytes | None] | None = None,
    ) -> bool:
        """Apply ``puts`` and ``deletes`` in one atomic script if every expectation
        holds (and, with ``replicas``, once that many replicas hold them)."""
        call = self._script_call(puts, deletes, expect)
        if call is None:
            return True
        if self.replicas:
            try:
                applied = self._replicated(call[1], ("EVALSHA", WRITE_BATCH_SHA, *call), _applied)
            except NoScriptError:
                applied = self._replicated(call[1], ("EVAL", WRITE_BATCH_LUA, *call), _applied)
            return _applied(applied)
        try:
            applied = self.client.evalsha(WRITE_BATCH_SHA, *call)
        except NoScriptError:
            applied = self.client.eval(WRITE_BATCH_LUA, *call)
        return _applied(applied)

    def scan(self, prefix: bytes = b"") -> Iterator[bytes]:
        """The store keys of this namespace that start with ``prefix``, in byte order."""
        found = self.client.scan_iter(match=self.keyspace.scan_pattern(), count=1000)
        return self._scan_raw(found, prefix)

    def close(self) -> None:
        """Close the client's connections (and its Sentinels', for a ``+sentinel`` URL's)."""
        self.client.close()
        for sentinel in _sentinels_of(self.client):
            sentinel.close()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRedisStore(_RedisKeys):
    """A store in Redis with ``async`` calls, on ``redis.asyncio`` clients.

    A redis.asyncio client belongs to the event loop it first ran on, so this
    store keeps one client per event loop, each made by ``client_factory``
    (a function of no arguments): the same store serves the async API on the
    caller's loop and the sync API on a private one.

    ``replicas`` and ``replica_timeout`` are :class:`RedisStore`'s; on a Redis
    Cluster they are refused (use :class:`RedisStore` there).
    """

    def __init__(
        self,
        client_factory: Any,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        hash_tag: str = "database",
        limits: StoreLimits | None = None,
        replicas: int = 0,
        replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
    ) -> None:
        if not callable(client_factory):
            raise ConfigError("AsyncRedisStore takes a function that makes a redis.asyncio client")
        self._factory = client_factory
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        # Whether the clients are cluster clients is known once the first is made.
        super().__init__(namespace, hash_tag, False, limits, replicas, replica_timeout)

    @classmethod
    def from_url(cls, url: str, **client_kwargs: Any) -> AsyncRedisStore:
        """An async store from the same URLs as :meth:`RedisStore.from_url`."""
        target = parse_redis_url(url)
        if target.cluster and target.store_kwargs.get("replicas"):
            raise ConfigError(_NO_ASYNC_CLUSTER_REPLICAS)

        def factory() -> Any:
            kwargs = dict(client_kwargs)
            kwargs.setdefault("retry", AsyncRetry(NoBackoff(), 0))
            if target.sentinels:
                return target.sentinel_master(redis.asyncio.sentinel.Sentinel, kwargs)
            client_cls = redis.asyncio.cluster.RedisCluster if target.cluster else redis.asyncio.Redis
            return client_cls.from_url(target.client_url, **kwargs)

        return cls(factory, **target.store_kwargs)

    @property
    def client(self) -> Any:
        """The client of the running event loop (made on first use)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # Clients of loops that have ended cannot be closed any more; let them go.
            for ended in [other for other in self._clients if other.is_closed()]:
                del self._clients[ended]
            client = self._factory()
            _check_client(client, self.replicas, self.replica_timeout)
            self.cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
            if self.cluster and self.replicas:
                raise ConfigError(_NO_ASYNC_CLUSTER_REPLICAS)
            self._clients[loop] = client
        return client

    async def get(self, key: bytes) -> bytes | None:
        return await self.client.get(self.keyspace.key(key))

    async def get_batch(self, keys: list[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        client = self.client
        rkeys = self.keyspace.keys(keys)
        if self.cluster:
            return await client.mget_nonatomic(rkeys)
        return await client.mget(rkeys)

    async def _replicated(self, command: tuple[Any, ...], wrote: Any) -> Any:
        """:meth:`RedisStore._replicated`, on this loop's client (never a cluster's)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.execute_command(*command)
            pipe.execute_command(*self._wait_command())
            replies = await pipe.execute(raise_on_error=False)
        reply = replies[0]
        return self._check_replies(replies, not isinstance(reply, Exception) and wrote(reply))

    async def put(self, key: bytes, value: bytes) -> None:
        rkey = self.keyspace.key(key)
        if self.replicas:
            await self._replicated(("SET", rkey, value), _always)
        else:
            await self.client.set(rkey, value)

    async def put_batch(self, entries: list[tuple[bytes, bytes]]) -> None:
        await self.write_batch(entries, [])

    async def delete_batch(self, keys: list[bytes]) -> None:
        await self.write_batch([], keys)

    async def write_batch(
        self,
        puts: list[tuple[bytes, bytes]],
        deletes: list[bytes],
        expect: dict[bytes, bytes | None] | None = None,
    ) -> bool:
        """Apply ``puts`` and ``deletes`` in one atomic script if every expectation holds."""
        client = self.client
        call = self._script_call(puts, deletes, expect)
        if call is None:
            return True
        if self.replicas:
            try:
                applied = await self._replicated(("EVALSHA", WRITE_BATCH_SHA, *call), _applied)
            except NoScriptError:
                applied = await self._replicated(("EVAL", WRITE_BATCH_LUA, *call), _applied)
            return _applied(applied)
        try:
            applied = await client.evalsha(WRITE_BATCH_SHA, *call)
        except NoScriptError:
            applied = await client.eval(WRITE_BATCH_LUA, *call)
        return _applied(applied)

    async def scan(self, prefix: bytes = b"") -> Iterator[bytes]:
        """The store keys of this namespace that start with ``prefix``, in byte order."""
        found = [k async for k in self.client.scan_iter(match=self.keyspace.scan_pattern(), count=1000)]
        return self._scan_raw(found, prefix)

    async def close(self) -> None:
        """Close the running loop's client (clients of other loops close with their loop)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
            for sentinel in _sentinels_of(client):
                await sentinel.aclose()


_NO_ASYNC_CLUSTER_REPLICAS = (
    "AsyncRedisStore cannot wait for replicas on a Redis Cluster; use RedisStore "
    "(sqlkv.open_store) there, which serves the async API too"
)


# -- URLs -------------------------------------------------------------------------

STORE_URL_OPTIONS = ("namespace", "hash_tag", "replicas", "replica_timeout")
#: Options of ``redis+sentinel://`` only: how to log in to the Sentinels themselves.
SENTINEL_URL_OPTIONS = ("sentinel_username", "sentinel_password")
#: The URL option that bounds every Redis call: seconds, for both of redis-py's
#: socket timeouts unless the URL gives one of them itself.
TIMEOUT_URL_OPTION = "timeout"
SOCKET_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")


def _timeout_seconds(value: str) -> str:
    """The URL's ``timeout`` checked: a positive number of seconds (as given)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"Redis URL option timeout must be a positive number of seconds, not {value!r}")
    return value


class RedisTarget:
    """A parsed store URL: what the redis client gets, and what the store gets.

    For ``+sentinel`` URLs ``sentinels`` holds the Sentinels' addresses and
    ``service_name`` the primary they watch; ``client_url`` then carries only the
    primary's login, database and options (its host is a placeholder).
    """

    def __init__(
        self,
        client_url: str,
        safe_url: str,
        cluster: bool,
        store_kwargs: dict[str, Any],
        sentinels: list[tuple[str, int]] | None = None,
        service_name: str = "",
        sentinel_login: dict[str, str] | None = None,
    ) -> None:
        self.client_url = client_url
        self.safe_url = safe_url
        self.cluster = cluster
        self.store_kwargs = store_kwargs
        self.sentinels = sentinels or []
        self.service_name = service_name
        self.sentinel_login = sentinel_login or {}

    def sentinel_master(self, sentinel_cls: Any, client_kwargs: dict[str, Any]) -> Any:
        """A client of the primary the Sentinels name, made with ``sentinel_cls``
        (redis-py's sync or asyncio ``Sentinel``): it asks them again for the primary
        whenever it connects, so it follows a failover. TLS (``rediss+sentinel``) and
        the socket and TLS options apply to the Sentinels too."""
        kwargs = parse_url(self.client_url)
        tls = kwargs.pop("connection_class", None) is SSLConnection
        kwargs.pop("host", None)
        kwargs.pop("port", None)
        kwargs.update(client_kwargs)
        sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith(("socket_", "ssl_"))}
        if tls:
            kwargs["ssl"] = sentinel_kwargs["ssl"] = True
        sentinel_kwargs.update(self.sentinel_login)
        sentinel = sentinel_cls(self.sentinels, sentinel_kwargs=sentinel_kwargs, **kwargs)
        return sentinel.master_for(self.service_name)


def _client_options() -> set[str]:
    """The keyword options a redis client accepts, which the URL may carry."""
    names = set(URL_QUERY_ARGUMENT_PARSERS)
    names.update(inspect.signature(redis.Redis.__init__).parameters)
    names -= {"self", "host", "port", "connection_pool", "decode_responses", "retry", "kwargs"}
    return names


def _store_option(url: str, name: str, value: str) -> Any:
    """A store option of the URL as the store takes it; a :class:`ConfigError` naming it."""
    if name == "replicas":
        if not value.isdigit():
            raise ConfigError(f"Redis URL option replicas must be a whole number >= 0, not {value!r}")
        return int(value)
    if name == "replica_timeout":
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(
                f"Redis URL option replica_timeout must be a positive number of seconds, not {value!r}"
            )
        return seconds
    return value


def _sentinel_addresses(url: str, hosts: str) -> list[tuple[str, int]]:
    """``host[:port],host[:port]...`` as addresses (port 26379 when none is given)."""
    addresses = []
    for text in hosts.split(","):
        one = urlsplit("//" + text.strip())
        try:
            port = one.port
        except ValueError as exc:
            raise ConfigError(f"Redis Sentinel URL {url!r}: {exc}") from None
        if not one.hostname:
            raise ConfigError(
                f"Redis Sentinel URL {url!r} has an empty Sentinel address; "
                "list them as host:port,host:port"
            )
        addresses.append((one.hostname, port or SENTINEL_PORT))
    return addresses


def parse_redis_url(url: str) -> RedisTarget:
    """Split a store URL into the redis client's URL and the store's options.

    ``redis://[[user]:password@]host[:port][/db][?option=value&...]``, with
    ``rediss`` for TLS and ``+cluster`` for Redis Cluster (database 0 only);
    ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]``
    for a primary that Redis Sentinels watch (the login is the primary's; the
    Sentinels' own is ``sentinel_username``/``sentinel_password``).
    Options: ``namespace``, ``hash_tag``, ``replicas`` and ``replica_timeout``
    (the store's), ``timeout`` (seconds any one Redis call may take: both
    socket timeouts, unless one is given itself; redis-py's default is 5 s),
    and redis-py's connection options such as ``socket_timeout``,
    ``socket_connect_timeout``, ``client_name``, ``ssl_cert_reqs``. An unknown
    option is a :class:`ConfigError` naming it.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    base, plus, variant = scheme.partition("+")
    if base not in ("redis", "rediss") or (plus and variant not in ("cluster", "sentinel")):
        raise ConfigError(
            f"not a Redis store URL: {url!r} (use redis://, rediss://, redis+cluster://, "
            "rediss+cluster://, redis+sentinel:// or rediss+sentinel://)"
        )
    cluster = variant == "cluster"
    sentinel = variant == "sentinel"
    login, _, hosts = parts.netloc.rpartition("@")
    path = parts.path
    sentinels: list[tuple[str, int]] | None = None
    service_name = ""
    if sentinel:
        sentinels = _sentinel_addresses(url, hosts)
        service_name, _, path = path.lstrip("/").partition("/")
        if not service_name:
            raise ConfigError(
                f"Redis Sentinel URL {url!r} names no service, as in "
                "redis+sentinel://127.0.0.1:26379/mymaster"
            )
        path = "/" + path
        host = hosts
    else:
        if not parts.hostname:
            raise ConfigError(f"Redis URL {url!r} names no host, as in redis://127.0.0.1:6379/0")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"Redis URL {url!r}: {exc}") from None
        host = parts.hostname + (f":{port}" if port else "")
    store_kwargs: dict[str, Any] = {}
    sentinel_login: dict[str, str] = {}
    client_query = []
    allowed = _client_options() - {TIMEOUT_URL_OPTION}
    timeout: str | None = None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in STORE_URL_OPTIONS:
            store_kwargs[name] = _store_option(url, name, value)
        elif name == TIMEOUT_URL_OPTION:
            timeout = _timeout_seconds(value)
        elif sentinel and name in SENTINEL_URL_OPTIONS:
            sentinel_login[name.removeprefix("sentinel_")] = value
        elif name in allowed:
            client_query.append((name, value))
        else:
            extra = f", {', '.join(SENTINEL_URL_OPTIONS)}" if sentinel else ""
            raise ConfigError(
                f"unknown option {name!r} in Redis URL; the store takes "
                f"{', '.join(STORE_URL_OPTIONS)}{extra}, {TIMEOUT_URL_OPTION} and redis-py's connection options "
                "(socket_timeout, socket_connect_timeout, client_name, ...)"
            )
    if timeout is not None:
        given = {name for name, _ in client_query}
        client_query += [(name, timeout) for name in SOCKET_TIMEOUTS if name not in given]
    if cluster and path.strip("/") not in ("", "0"):
        raise ConfigError(f"Redis Cluster has only database 0, not {path.strip('/')!r}")
    netloc = f"{login}@localhost" if sentinel and login else "localhost" if sentinel else parts.netloc
    client_url = urlunsplit((base, netloc, path, urlencode(client_query), ""))

    try:
        parse_url(client_url)  # the client's own check of every value, before any connection
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {url!r}: {exc}") from None
    safe_url = f"{scheme}://{host}{parts.path}"
    return RedisTarget(
        client_url, safe_url, cluster, store_kwargs, sentinels, service_name, sentinel_login
    )

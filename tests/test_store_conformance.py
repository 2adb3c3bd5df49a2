"""One conformance suite for every store, as Litestream runs one suite against
every replica client.

Each test runs against every store kind sqlkv ships or tests with: MemoryStore,
LmdbStore, RedisStore (standalone and cluster), AsyncRedisStore, and the
wrappers (FaultyStore without faults, MeteredStore, the tests' CountingStore
and AsyncMemoryStore). A store that breaks the contract here would break the
engine in ways far harder to see, so the contract is pinned down in one place:
the five calls, ``None`` for a missing key, batch answers in key order,
bytes in and bytes out, the capabilities each store declares (what
:func:`sqlkv.store_capabilities` finds is what the store does), and, for
stores that have it, the atomic conditional ``write_batch``.

The keys are those of one database of layout ``seed`` (a Redis Cluster keeps
one database's keys in one hash slot, so its batches can be atomic).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import AsyncMemoryStore, CountingStore, FiveCallStore, unique_namespace

import sqlkv
from sqlkv.format.layout import SeedLayout
from sqlkv.stores.latency import MeteredStore
from sqlkv.testing import FaultyStore

KINDS = [
    "memory",
    "lmdb",
    "redis",
    "redis-cluster",
    "async-redis",
    "faulty",
    "metered",
    "counting",
    "async-memory",
]

LAYOUT = SeedLayout(9)
NAME = "conformance.db"
META = LAYOUT.meta_key(NAME)


def chunk(i: int) -> bytes:
    return LAYOUT.chunk_key(NAME, i)


#: What each kind of store offers beyond the five calls: (is_async, write_batch, scan, close).
CAPABILITIES = {
    "memory": (False, True, True, True),
    "lmdb": (False, True, True, True),
    "redis": (False, True, True, True),
    "redis-cluster": (False, True, True, True),
    "async-redis": (True, True, True, True),
    "faulty": (False, True, True, True),
    "metered": (False, True, False, True),
    "counting": (False, False, False, True),
    "async-memory": (True, False, False, True),
}


class Sync:
    """Calls a store's methods the same way whether they are sync or ``async``."""

    def __init__(self, kind: str, store: object, run: Callable[[Any], Any]) -> None:
        self.kind = kind
        self.store = store
        self.capabilities = sqlkv.store_capabilities(store)
        self._run = run

    def __getattr__(self, method: str) -> Callable[..., Any]:
        fn = getattr(self.store, method)

        def call(*args: Any) -> Any:
            result = fn(*args)
            return self._run(result) if inspect.isawaitable(result) else result

        return call


@pytest.fixture(params=KINDS)
def store(request, tmp_path, event_loop_runner) -> Iterator[Sync]:
    kind = request.param
    if kind in ("redis", "redis-cluster", "async-redis"):
        server = request.getfixturevalue("redis_cluster" if kind == "redis-cluster" else "redis_server")
        url = f"{server.url}?namespace={unique_namespace()}"
        made: object = (
            sqlkv.AsyncRedisStore.from_url(url) if kind == "async-redis" else sqlkv.open_store(url)
        )
    elif kind == "lmdb":
        made = sqlkv.LmdbStore(str(tmp_path / "lmdb"))
    elif kind == "faulty":
        made = FaultyStore(sqlkv.MemoryStore())
    elif kind == "metered":
        made = MeteredStore(sqlkv.MemoryStore())
    elif kind == "counting":
        made = CountingStore()
    elif kind == "async-memory":
        made = AsyncMemoryStore()
    else:
        made = sqlkv.MemoryStore()
    sync = Sync(kind, made, event_loop_runner)
    yield sync
    if sync.capabilities.close:
        sync.close()


@pytest.fixture
def event_loop_runner() -> Iterator[Callable[[Any], Any]]:
    """Runs an awaitable to completion on one event loop kept for the whole test
    (AsyncRedisStore keeps one client per loop)."""
    import asyncio

    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


def test_missing_key_is_none(store: Sync) -> None:
    assert store.get(META) is None
    assert store.get_batch([META, chunk(0)]) == [None, None]


def test_put_then_get_returns_bytes(store: Sync) -> None:
    store.put(META, b"\x01\x00" + bytes(8))
    value = store.get(META)
    assert value == b"\x01\x00" + bytes(8)
    assert type(value) is bytes


def test_put_overwrites(store: Sync) -> None:
    store.put(chunk(0), b"first")
    store.put(chunk(0), b"second")
    assert store.get(chunk(0)) == b"second"


def test_get_batch_answers_in_key_order_with_repeats(store: Sync) -> None:
    store.put_batch([(chunk(i), bytes([i]) * (i + 1)) for i in range(5)])
    keys = [chunk(3), META, chunk(0), chunk(3), chunk(9)]
    assert store.get_batch(keys) == [b"\x03" * 4, None, b"\x00", b"\x03" * 4, None]


def test_put_batch_and_delete_batch(store: Sync) -> None:
    store.put_batch([(chunk(i), b"v%d" % i) for i in range(10)])
    store.delete_batch([chunk(i) for i in range(0, 10, 2)] + [chunk(99)])  # 99 was never there
    assert store.get_batch([chunk(i) for i in range(10)]) == [
        None if i % 2 == 0 else b"v%d" % i for i in range(10)
    ]


def test_keys_and_values_keep_every_byte(store: Sync) -> None:
    """NUL and 0xFF bytes in keys and values, an empty value, a 1 MiB value."""
    odd_key = LAYOUT.chunk_key(NAME, 0xFF00FF00)
    values = {odd_key: bytes(range(256)) * 4, chunk(1): b"", chunk(2): b"\xff" * (1 << 20)}
    store.put_batch(list(values.items()))
    assert store.get_batch(list(values)) == list(values.values())


def test_empty_batches_are_fine(store: Sync) -> None:
    assert list(store.get_batch([])) == []
    store.put_batch([])
    store.delete_batch([])


def test_limits_are_store_limits(store: Sync) -> None:
    limits = getattr(store.store, "limits", None)
    assert limits is None or isinstance(limits, sqlkv.StoreLimits)
    assert store.capabilities.limits == (limits or sqlkv.StoreLimits())


# -- capabilities --------------------------------------------------------------------


def test_capabilities_are_what_the_store_offers(store: Sync) -> None:
    caps = store.capabilities
    assert (caps.is_async, caps.write_batch, caps.scan, caps.close) == CAPABILITIES[store.kind]
    assert isinstance(store.store, sqlkv.AsyncKvStore if caps.is_async else sqlkv.KvStore)
    assert sqlkv.store_capabilities(store.store) == caps  # found alike every time


def test_an_async_store_answers_with_awaitables_and_a_sync_one_does_not(store: Sync) -> None:
    answer = store.store.get(META)
    assert inspect.isawaitable(answer) is store.capabilities.is_async
    if inspect.isawaitable(answer):
        answer = store._run(answer)
    assert answer is None


def test_a_missing_optional_call_is_really_missing(store: Sync) -> None:
    """A capability the check does not find is one the store does not have at all,
    so nothing can call it by mistake."""
    for name in ("write_batch", "scan", "close"):
        assert hasattr(store.store, name) is getattr(store.capabilities, name)


@pytest.mark.parametrize(
    "wrap, keeps_limits, offers_write_batch",
    [
        (FaultyStore, True, True),
        (MeteredStore, True, True),
        (CountingStore, False, False),  # the five calls only, and the limits it is given
        (AsyncMemoryStore, True, False),
    ],
    ids=["faulty", "metered", "counting", "async-memory"],
)
def test_wrappers_offer_an_optional_call_only_when_the_wrapped_store_has_it(
    wrap, keeps_limits, offers_write_batch
) -> None:
    bare = sqlkv.store_capabilities(wrap(FiveCallStore()))
    assert not (bare.write_batch or bare.scan)
    assert bare.close  # a wrapper can always be closed; it closes what it wraps if that can be
    assert sqlkv.store_capabilities(wrap(sqlkv.MemoryStore())).write_batch is offers_write_batch
    limited = sqlkv.StoreLimits(max_batch_keys=8)
    declared = sqlkv.store_capabilities(wrap(CountingStore(limits=limited))).limits
    assert declared == (limited if keeps_limits else sqlkv.StoreLimits())


def test_write_batch_applies_puts_and_deletes_together(store: Sync) -> None:
    if not store.capabilities.write_batch:
        pytest.skip(f"{type(store.store).__name__} has only the five calls (no write_batch)")
    store.put_batch([(chunk(0), b"a"), (chunk(1), b"b")])
    assert store.write_batch([(chunk(2), b"c"), (META, b"m")], [chunk(0)], None) is True
    assert store.get_batch([chunk(0), chunk(1), chunk(2), META]) == [None, b"b", b"c", b"m"]


def test_write_batch_expectations(store: Sync) -> None:
    """Applied only when every expected value is what the store holds (None: absent)."""
    if not store.capabilities.write_batch:
        pytest.skip(f"{type(store.store).__name__} has only the five calls (no write_batch)")
    store.put(META, b"gen1")
    assert store.write_batch([(chunk(0), b"x")], [META], {META: b"gen2"}) is False
    assert store.write_batch([(chunk(0), b"x")], [], {chunk(5): b"anything"}) is False
    assert store.get_batch([META, chunk(0)]) == [b"gen1", None]
    assert store.write_batch([(chunk(0), b"x")], [], {META: b"gen1", chunk(5): None}) is True
    assert store.get_batch([META, chunk(0)]) == [b"gen1", b"x"]
    assert store.write_batch([], [META], {META: b"gen1"}) is True
    assert store.get(META) is None


# -- scan ------------------------------------------------------------------------------
# The contract of scan(prefix) (the keys starting with prefix, in any order) goes
# here, for every store whose capabilities say it has scan.


def _scan(store: Sync, prefix: bytes) -> list[bytes]:
    return sorted(store.scan(prefix))


def test_scan_lists_exactly_the_keys_under_a_prefix(store: Sync) -> None:
    if not store.capabilities.scan:
        pytest.skip(f"{type(store.store).__name__} does not offer scan")
    other = SeedLayout(9).meta_key("other.db")
    chunks = [chunk(i) for i in (0, 1, 0x0100)]
    store.put_batch([(META, b"m"), *((k, b"c") for k in chunks)])
    store.put(other, b"o")  # another database: a batch of its own (a cluster keeps it elsewhere)
    chunk_prefix = chunk(0)[:-4]
    assert _scan(store, chunk_prefix) == sorted(chunks)
    assert _scan(store, META) == [META]
    assert set(_scan(store, bytes([9]))) >= {META, other, *chunks}
    assert _scan(store, bytes([9, 0x01]) + b"nosuch") == []
    store.delete_batch([chunks[0]])
    assert _scan(store, chunk_prefix) == sorted(chunks[1:])

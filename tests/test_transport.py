"""The transport (StoreClient) batches within the store's limits, so no layer above does."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from helpers import AsyncWritesIgnored, CountingStore

import sqlkv
from sqlkv.stores.contract import DEFAULT_RUN_KEYS, KEY_BYTES_ALLOWANCE, READ_BYTES_BOUND, StoreClient
from sqlkv.stores.redis_store import REDIS_LIMITS
from sqlkv.testing import FaultyStore

LIMITS = sqlkv.StoreLimits(atomic_batches=True, max_batch_keys=10, max_batch_bytes=1000)


def keys(n: int, start: int = 0) -> list[bytes]:
    return [b"k%05d" % i for i in range(start, start + n)]


def limited(limits: sqlkv.StoreLimits = LIMITS) -> tuple[sqlkv.MemoryStore, FaultyStore, CountingStore]:
    """A MemoryStore behind a wrapper that enforces ``limits`` (LimitViolation on a call over
    them), behind one that counts the calls."""
    base = sqlkv.MemoryStore()
    enforcing = FaultyStore(base, limits=limits)
    return base, enforcing, CountingStore(enforcing, limits=limits, write_batch=True)


def test_get_many_reads_in_as_few_calls_as_the_key_limit_allows() -> None:
    base, _, counting = limited()
    base.put_batch([(k, b"v") for k in keys(25)])
    client = StoreClient(counting)
    assert client.get_many(keys(25)) == [b"v"] * 25
    assert counting.calls == {"get_batch": 3}  # 10 + 10 + 5
    assert client.get_many([]) == [] and counting.calls == {"get_batch": 3}


def test_get_many_counts_the_values_against_the_byte_limit() -> None:
    base, _, counting = limited()
    base.put_batch([(k, bytes(200)) for k in keys(9)])
    client = StoreClient(counting)
    # 1000 bytes per call over (200 + 64) bytes per key: 3 keys a call.
    assert client.keys_per_read(200) == 3
    assert client.get_many(keys(9), value_bytes=200) == [bytes(200)] * 9
    assert counting.calls == {"get_batch": 3}


def test_get_many_on_a_store_without_limits_is_one_call() -> None:
    counting = CountingStore()
    client = StoreClient(counting)
    assert client.get_many(keys(5000)) == [None] * 5000
    assert counting.calls == {"get_batch": 1}


def test_read_lazily_reads_no_further_than_the_caller_goes() -> None:
    base, _, counting = limited()
    base.put_batch([(k, b"v") for k in keys(15)])
    client = StoreClient(counting)
    endless = (b"k%05d" % i for i in itertools.count())
    for count, (_, value) in enumerate(client.read_lazily(endless)):  # noqa: B007 (the count is the result)
        if value is None:
            break
    assert count == 15
    assert counting.calls == {"get_batch": 2}  # keys 0-9, then 10-19


def test_read_lazily_takes_runs_on_a_store_without_limits() -> None:
    counting = CountingStore()
    found = list(StoreClient(counting).read_lazily(iter(keys(DEFAULT_RUN_KEYS + 1)), run=DEFAULT_RUN_KEYS))
    assert len(found) == DEFAULT_RUN_KEYS + 1
    assert counting.calls == {"get_batch": 2}


class Sizes(CountingStore):
    """Counts calls and remembers how many keys each ``get_batch`` asked for."""

    def __init__(self, limits: sqlkv.StoreLimits) -> None:
        super().__init__(limits=limits)
        self.sizes: list[int] = []

    def _call(self, kind, *args):
        if kind == "get_batch":
            self.sizes.append(len(args[0]))
        return super()._call(kind, *args)


def test_read_lazily_asks_for_its_run_not_for_what_the_store_allows() -> None:
    """Under Redis's 512 MiB batch limit the store allows 8,388,608 keys a call;
    a caller that expects to need 64 must ask for 64 (issue 20, item 3)."""
    store = Sizes(REDIS_LIMITS)
    endless = (b"k%05d" % i for i in itertools.count())
    found = list(itertools.islice(StoreClient(store).read_lazily(endless, run=64), 100))
    assert len(found) == 100
    assert store.sizes == [64, 64]


def test_reads_are_bounded_in_memory_whatever_the_store_allows() -> None:
    """One get_batch carries at most READ_BYTES_BOUND of keys and expected values."""
    for limits in (sqlkv.StoreLimits(), REDIS_LIMITS):
        store = Sizes(limits)
        client = StoreClient(store)
        most = READ_BYTES_BOUND // (4096 + KEY_BYTES_ALLOWANCE)
        assert client.get_many(keys(most + 1), value_bytes=4096) == [None] * (most + 1)
        assert store.sizes == [most, 1]
        store.sizes.clear()
        assert len(list(client.read_lazily(iter(keys(most + 1)), run=10**9, value_bytes=4096))) == most + 1
        assert store.sizes == [most, 1]


def test_a_write_that_fits_is_one_atomic_call() -> None:
    _, _, counting = limited()
    client = StoreClient(counting)
    puts = [(k, b"v") for k in keys(6)]
    assert client.fits_one_write(puts, keys(4, 100))
    assert client.write(puts, keys(4, 100))
    assert counting.calls == {"write_batch": 1}
    assert client.write((), ()) and counting.calls == {"write_batch": 1}  # nothing: no call


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "not-atomic"])
def test_a_write_over_the_limits_is_split_puts_then_deletes(atomic: bool) -> None:
    limits = sqlkv.StoreLimits(atomic_batches=atomic, max_batch_keys=10, max_batch_bytes=1000)
    base, _, counting = limited(limits)
    base.put_batch([(k, b"old") for k in keys(12, 100)])
    client = StoreClient(counting)
    puts = [(k, bytes(300)) for k in keys(7)]  # 3 a call by bytes
    assert not client.fits_one_write(puts, keys(12, 100))
    assert client.write(puts, keys(12, 100))
    calls = counting.calls["write_batch"] + counting.calls["put_batch"] + counting.calls["delete_batch"]
    assert calls == 3 + 2  # puts of 3 + 3 + 1 keys, deletes of 10 + 2 keys
    assert all(base.get(k) == bytes(300) for k in keys(7))
    assert all(base.get(k) is None for k in keys(12, 100))


def test_a_split_write_stops_at_the_first_refused_call() -> None:
    base, _, counting = limited()
    client = StoreClient(counting)
    fence = {b"gen": b"mine"}
    base.put(b"gen", b"mine")
    puts = [(k, b"v") for k in keys(25)]
    assert client.write(puts, (), fence)
    base.put(b"gen", b"theirs")
    counting.reset()
    assert not client.write([(k, b"w") for k in keys(25)], (), fence)
    assert counting.calls == {"write_batch": 1}
    assert base.get(keys(1)[0]) == b"v"


def test_entry_batches_leave_room_for_what_the_caller_adds() -> None:
    _, _, counting = limited()
    client = StoreClient(counting)
    batches = list(client.entry_batches([(k, b"v") for k in keys(20)], reserve_keys=1))
    assert [len(b) for b in batches] == [9, 9, 2]
    assert [e for b in batches for e in b] == [(k, b"v") for k in keys(20)]


def test_a_lazy_delete_range_on_a_store_without_limits_goes_in_runs() -> None:
    counting = CountingStore()
    client = StoreClient(counting)
    assert client.write((), (b"x%08d" % i for i in range(DEFAULT_RUN_KEYS * 2 + 1)))
    assert counting.calls == {"delete_batch": 3}


class _AsyncAnswers(AsyncWritesIgnored):
    """An async store of fixed answers: ``get`` returns at once, waits on the loop
    first, raises, or is cancelled, by the key asked for."""

    async def get(self, key: bytes) -> bytes | None:
        if key == b"wait":
            await asyncio.sleep(0.01)
            return b"waited"
        if key == b"raise":
            raise KeyError("no such thing")
        if key == b"cancel":
            raise asyncio.CancelledError
        return b"at once"

    async def get_batch(self, keys):
        return [await self.get(k) for k in keys]


def test_an_async_stores_calls_are_awaited_on_its_loop_with_their_outcomes() -> None:
    async def main() -> None:
        client = StoreClient(_AsyncAnswers(), loop=asyncio.get_running_loop())
        run = asyncio.get_running_loop().run_in_executor
        assert await run(None, client.get, b"now") == b"at once"
        assert await run(None, client.get, b"wait") == b"waited"
        with pytest.raises(sqlkv.StoreError, match="KeyError") as raised:
            await run(None, client.get, b"raise")
        assert isinstance(raised.value.__cause__, KeyError)
        with pytest.raises(sqlkv.StoreError, match="cancelled"):
            await run(None, client.get, b"cancel")

    asyncio.run(main())

"""A store wrapper that meters every round trip and can add latency to it.

    store = metered(sqlkv.MemoryStore(), latency_ms=1)
    ... use the database ...
    store.meter.round_trips, store.meter.bytes_written, store.meter.store_seconds

It counts at the store's door, independently of the database's own
:class:`~sqlkv.metrics.Stats`, so a benchmark does not take the engine's word
for what it cost. With ``latency_ms`` each call first sleeps that long, as a
call to a remote store would. The wrapped store keeps its ``limits`` and, only
when the inner store has it, its ``write_batch`` call.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .errors import ConfigError
from .metrics import Stats
from .store import store_capabilities


@dataclass
class Meter(Stats):
    """What crossed the store's door, counted as :class:`~sqlkv.metrics.Stats` counts
    it (``store_seconds`` is wall time inside store calls, the added latency
    included), plus the chunks among the keys written."""

    #: Keys written that are chunks of the metered file (not its FileMeta).
    chunks_written: int = 0


class MeteredStore:
    """A synchronous store behind a :class:`Meter` and an optional sleep per call."""

    def __init__(self, inner: object, latency_ms: float = 0.0, chunk_prefix: bytes = b"") -> None:
        self.inner = inner
        self.latency = latency_ms / 1000.0
        self.chunk_prefix = chunk_prefix
        self.meter = Meter()
        self.inner_capabilities = capabilities = store_capabilities(inner)
        self.limits = capabilities.limits
        if capabilities.write_batch:
            self.write_batch = self._write_batch

    def _call(self, kind: str, *args: object) -> object:
        start = time.perf_counter()
        if self.latency:
            time.sleep(self.latency)
        try:
            result = getattr(self.inner, kind)(*args)
        finally:
            self.meter.store_seconds += time.perf_counter() - start
        self._count(kind, args, result)
        return result

    def _count(self, kind: str, args: tuple, result: object) -> None:
        """Account for one finished call of ``kind`` with ``args`` that returned ``result``."""
        meter = self.meter
        meter.calls[kind] += 1
        if kind == "get":
            meter.count_read(1, (result,))
        elif kind == "get_batch":
            meter.count_read(len(args[0]), result)
        elif kind == "delete_batch":
            meter.keys_deleted += len(args[0])
        elif kind != "write_batch" or result is not False:
            puts = [args] if kind == "put" else args[0]
            meter.count_written(puts)
            if self.chunk_prefix:
                meter.chunks_written += sum(1 for k, _ in puts if k.startswith(self.chunk_prefix))
            if kind == "write_batch":
                meter.keys_deleted += len(args[1])

    def get(self, key: bytes) -> bytes | None:
        return self._call("get", key)

    def get_batch(self, keys: list[bytes]) -> list[bytes | None]:
        return self._call("get_batch", keys)

    def put(self, key: bytes, value: bytes) -> None:
        self._call("put", key, value)

    def put_batch(self, entries: list[tuple[bytes, bytes]]) -> None:
        self._call("put_batch", entries)

    def delete_batch(self, keys: list[bytes]) -> None:
        self._call("delete_batch", keys)

    def _write_batch(self, puts: list, deletes: list, expect: dict | None = None) -> bool:
        return self._call("write_batch", puts, deletes, expect)

    def close(self) -> None:
        if self.inner_capabilities.close:
            self.inner.close()


class AsyncMeteredStore(MeteredStore):
    """The same for an ``async`` store: the sleep is ``asyncio.sleep``."""

    async def _call(self, kind: str, *args: object) -> object:  # type: ignore[override]
        start = time.perf_counter()
        if self.latency:
            await asyncio.sleep(self.latency)
        try:
            result = await getattr(self.inner, kind)(*args)
        finally:
            self.meter.store_seconds += time.perf_counter() - start
        self._count(kind, args, result)
        return result

    async def get(self, key: bytes) -> bytes | None:
        return await self._call("get", key)

    async def get_batch(self, keys: list[bytes]) -> list[bytes | None]:
        return await self._call("get_batch", keys)

    async def put(self, key: bytes, value: bytes) -> None:
        await self._call("put", key, value)

    async def put_batch(self, entries: list[tuple[bytes, bytes]]) -> None:
        await self._call("put_batch", entries)

    async def delete_batch(self, keys: list[bytes]) -> None:
        await self._call("delete_batch", keys)

    async def _write_batch(self, puts: list, deletes: list, expect: dict | None = None) -> bool:
        return await self._call("write_batch", puts, deletes, expect)


def metered(store: object, latency_ms: float = 0.0, chunk_prefix: bytes = b"") -> MeteredStore:
    """``store`` behind a :class:`Meter`, each call first sleeping ``latency_ms``.

    ``chunk_prefix``: the start of the chunk keys to count in ``chunks_written``.
    """
    if latency_ms < 0:
        raise ConfigError(f"latency_ms must not be negative, not {latency_ms}")
    is_async = store_capabilities(store).is_async
    return (AsyncMeteredStore if is_async else MeteredStore)(store, latency_ms, chunk_prefix)

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
from typing import Any, cast

from ..errors import ConfigError
from ..metrics import Stats
from .contract import AnyKvStore, AsyncKvStore, KvStore, store_capabilities
from .wrapper import AsyncStoreWrapper, StoreWrapper, call_parts


@dataclass
class Meter(Stats):
    """What crossed the store's door, counted as :class:`~sqlkv.metrics.Stats` counts
    it (``store_seconds`` is wall time inside store calls, the added latency
    included), plus the chunks among the keys written."""

    #: Keys written that are chunks of the metered file (not its FileMeta).
    chunks_written: int = 0


class _Metering:
    """What the sync and the async metered store share: the meter and its counting."""

    meter: Meter
    latency: float
    chunk_prefix: bytes

    def _start_metering(self, latency_ms: float, chunk_prefix: bytes) -> None:
        self.latency = latency_ms / 1000.0
        self.chunk_prefix = chunk_prefix
        self.meter = Meter()

    def _stop_clock(self, start: float) -> None:
        """Add the time since ``start`` (a ``perf_counter``) to ``store_seconds``: called
        in a ``finally``, so failed calls count too. (Not a context manager: it
        would cost five Python calls per store call, inside the time measured.)"""
        self.meter.store_seconds += time.perf_counter() - start

    def _count(self, kind: str, args: tuple[Any, ...], result: Any) -> None:
        """Account for one finished call of ``kind`` with ``args`` that returned ``result``."""
        meter = self.meter
        meter.calls[kind] += 1
        if kind == "write_batch" and result is False:
            return  # refused: nothing was written
        reads, puts, deletes = call_parts(kind, args)
        if reads:
            meter.count_read(len(reads), (result,) if kind == "get" else result)
        meter.count_written(puts)
        prefix = self.chunk_prefix
        if prefix:
            chunks = 0
            for key, _ in puts:  # a loop, not a generator: no call per entry
                if key.startswith(prefix):
                    chunks += 1
            meter.chunks_written += chunks
        meter.keys_deleted += len(deletes)


class MeteredStore(_Metering, StoreWrapper):
    """A synchronous store behind a :class:`Meter` and an optional sleep per call."""

    def __init__(self, inner: KvStore, latency_ms: float = 0.0, chunk_prefix: bytes = b"") -> None:
        super().__init__(inner, write_batch=True)
        self._start_metering(latency_ms, chunk_prefix)

    def _call(self, kind: str, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            if self.latency:
                time.sleep(self.latency)
            result = super()._call(kind, *args)
        finally:
            self._stop_clock(start)
        self._count(kind, args, result)
        return result


class AsyncMeteredStore(_Metering, AsyncStoreWrapper):
    """The same for an ``async`` store: the sleep is ``asyncio.sleep``."""

    def __init__(self, inner: AsyncKvStore, latency_ms: float = 0.0, chunk_prefix: bytes = b"") -> None:
        super().__init__(inner, write_batch=True)
        self._start_metering(latency_ms, chunk_prefix)

    async def _call(self, kind: str, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            result = await super()._call(kind, *args)
        finally:
            self._stop_clock(start)
        self._count(kind, args, result)
        return result


def metered(
    store: AnyKvStore, latency_ms: float = 0.0, chunk_prefix: bytes = b""
) -> MeteredStore | AsyncMeteredStore:
    """``store`` behind a :class:`Meter`, each call first sleeping ``latency_ms``.

    ``chunk_prefix``: the start of the chunk keys to count in ``chunks_written``.
    """
    if latency_ms < 0:
        raise ConfigError(f"latency_ms must not be negative, not {latency_ms}")
    if store_capabilities(store).is_async:
        return AsyncMeteredStore(cast(AsyncKvStore, store), latency_ms, chunk_prefix)
    return MeteredStore(cast(KvStore, store), latency_ms, chunk_prefix)

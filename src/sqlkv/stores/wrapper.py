"""One base for stores that wrap another store, so each wrapper says only what it adds.

Fault injection (:class:`sqlkv.testing.FaultyStore`), metering
(:class:`sqlkv.stores.latency.MeteredStore`) and the tests' counting stores all sit
in front of a store and look at every call on its way. :class:`StoreWrapper`
(synchronous) and :class:`AsyncStoreWrapper` (``async``) have the five calls
and route each through one method, ``_call(kind, *args)``, which forwards it
to the wrapped store; a wrapper overrides ``_call`` and nothing else.
:func:`call_parts` tells, for any call, the keys it reads, the entries it
writes and the keys it deletes, so a wrapper that counts or checks them
needs no branch per call.

The optional capabilities are a wrapper's choice, since forwarding one it
does not understand could bypass what it adds: it passes ``write_batch=True``
or ``scan=True`` to offer that call when the wrapped store has it (and only
then, so :func:`~sqlkv.stores.contract.store_capabilities` sees the truth). A
``write_batch`` goes through ``_call`` like the five calls (it is a round
trip of the database's); ``scan`` is passed straight through (tools list
keys, databases never do). ``limits`` are what the wrapper declares: the
wrapped store's unless it says otherwise. ``close()`` closes the wrapped
store when it has a ``close``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, cast

from .contract import (
    AnyKvStore,
    StoreLimits,
    SupportsClose,
    SupportsScan,
    store_capabilities,
)


class CallParts(NamedTuple):
    """What one store call touches."""

    #: The keys it reads (``get``, ``get_batch``).
    reads: Sequence[bytes]
    #: The (key, value) entries it writes (``put``, ``put_batch``, ``write_batch``).
    puts: Sequence[tuple[bytes, bytes]]
    #: The keys it deletes (``delete_batch``, ``write_batch``).
    deletes: Sequence[bytes]


def call_parts(kind: str, args: Sequence[Any]) -> CallParts:
    """The keys the store call ``kind(*args)`` reads, the entries it writes, the keys it deletes."""
    if kind == "get":
        return CallParts((args[0],), (), ())
    if kind == "get_batch":
        return CallParts(args[0], (), ())
    if kind == "put":
        return CallParts((), ((args[0], args[1]),), ())
    if kind == "put_batch":
        return CallParts((), args[0], ())
    if kind == "delete_batch":
        return CallParts((), (), args[0])
    if kind == "write_batch":
        return CallParts((), args[0], args[1])
    raise ValueError(f"{kind!r} is not a store call")


class _Wrapping:
    """What both wrapper bases share: the wrapped store, its capabilities, what is offered."""

    _write_batch: Callable[..., Any]  # the sync or the async one, by the subclass

    def __init__(
        self,
        inner: AnyKvStore,
        *,
        limits: StoreLimits | None = None,
        write_batch: bool = False,
        scan: bool = False,
    ) -> None:
        self.inner = inner
        #: What the wrapped store can do (found once, at construction).
        self.inner_capabilities = capabilities = store_capabilities(inner)
        self.limits = limits if limits is not None else capabilities.limits
        # Instance attributes, so that a wrapper has the optional call exactly
        # when it offers it.
        if write_batch and capabilities.write_batch:
            self.write_batch = self._write_batch
        if scan and capabilities.scan:
            self.scan = self._scan

    def _forward(self, kind: str, args: Sequence[Any]) -> Any:
        """Make the call ``kind(*args)`` on the wrapped store (its answer may be awaitable)."""
        return getattr(self.inner, kind)(*args)

    def _scan(self, prefix: bytes) -> Iterator[bytes] | Any:
        return cast(SupportsScan, self.inner).scan(prefix)

    def _close_inner(self) -> Any:
        """Close the wrapped store if it can be; its answer (awaitable for an async close)."""
        if self.inner_capabilities.close:
            return cast(SupportsClose, self.inner).close()
        return None


class StoreWrapper(_Wrapping):
    """A synchronous store in front of ``inner``; subclasses override :meth:`_call`."""

    def _call(self, kind: str, *args: Any) -> Any:
        """One store call on its way to the wrapped store: forward it."""
        return self._forward(kind, args)

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

    def _write_batch(
        self,
        puts: list[tuple[bytes, bytes]],
        deletes: list[bytes],
        expect: dict[bytes, bytes | None] | None = None,
    ) -> bool:
        return self._call("write_batch", puts, deletes, expect)

    def close(self) -> None:
        """Close the wrapped store, if it has a ``close``."""
        self._close_inner()


class AsyncStoreWrapper(_Wrapping):
    """An ``async`` store in front of ``inner``, which may be sync or ``async``;
    subclasses override :meth:`_call`."""

    async def _call(self, kind: str, *args: Any) -> Any:
        """One store call on its way to the wrapped store: forward it, awaiting its answer."""
        result = self._forward(kind, args)
        return await result if inspect.isawaitable(result) else result

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

    async def _write_batch(
        self,
        puts: list[tuple[bytes, bytes]],
        deletes: list[bytes],
        expect: dict[bytes, bytes | None] | None = None,
    ) -> bool:
        return await self._call("write_batch", puts, deletes, expect)

    async def close(self) -> None:
        """Close the wrapped store, if it has a ``close`` (awaited when it is ``async``)."""
        result = self._close_inner()
        if inspect.isawaitable(result):
            await result

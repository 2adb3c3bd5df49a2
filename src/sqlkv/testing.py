"""Fault injection for stores, for sqlkv's tests and for yours.

:class:`FaultyStore` wraps any synchronous store and, counting every call
(one call = one round trip):

- ``fail_at=N``: the Nth call raises :class:`InjectedFault` without reaching
  the store; later calls work (a transient failure).
- ``crash_at=N``: the Nth call and every later one raise :class:`StoreCrashed`
  and never reach the store, as if the process died there. Reopen the
  *wrapped* store to see what survived.
- ``limits=StoreLimits(atomic_batches=False, ...)``: the wrapper declares
  these limits (instead of the wrapped store's) and enforces them: a batch
  over them raises :class:`LimitViolation`. When batches are declared
  non-atomic, the crashing call applies a random part of its batch first, as
  a store that is not atomic may.
- ``lose_reply=True``: the faulty call (``fail_at`` or ``crash_at``) is
  applied in full by the store before it raises: the write happened, but the
  caller never heard (a reply lost on the network).
- ``latency_ms=X``: every call first sleeps X ms, as a remote store would.

Example: prove your code survives a crash at every point::

    for n in range(1, 1000):
        base = sqlkv.MemoryStore()
        faulty = FaultyStore(base, crash_at=n)
        try:
            run_my_workload(faulty)
        except sqlkv.StoreError:
            pass
        with sqlkv.connect(base, "app.db") as db:   # what survived
            assert db.query("PRAGMA integrity_check").rows == [("ok",)]
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

from .stores.contract import KvStore, StoreLimits, store_capabilities
from .stores.wrapper import CallParts, StoreWrapper, call_parts


class InjectedFault(Exception):
    """A failure injected by :class:`FaultyStore` (``fail_at``)."""


class StoreCrashed(Exception):
    """The store "crashed" (``crash_at``): this call and every later one fail."""


class LimitViolation(Exception):
    """A call broke the limits the store declares: a bug in the caller."""


class FaultyStore(StoreWrapper):
    """A store wrapper that injects faults (see the module docstring)."""

    def __init__(
        self,
        inner: KvStore,
        *,
        fail_at: int | None = None,
        crash_at: int | None = None,
        limits: StoreLimits | None = None,
        latency_ms: float = 0.0,
        lose_reply: bool = False,
        seed: int = 0,
    ) -> None:
        limits = limits if limits is not None else store_capabilities(inner).limits
        # A conditional write_batch is atomic by contract: offered only where batches are.
        super().__init__(inner, limits=limits, write_batch=limits.atomic_batches, scan=True)
        self.lose_reply = lose_reply
        self.fail_at = fail_at
        self.crash_at = crash_at
        self.latency = latency_ms / 1000.0
        self.calls = 0
        self.crashed = False
        self._random = random.Random(seed)

    def _call(self, kind: str, *args: Any) -> Any:
        """Check the call against the declared limits, then send it, fail it or crash at it."""
        if kind != "get":
            self._check(kind, call_parts(kind, args))
        if self._enter(kind):
            landed = self._landed(kind, args)
            if landed is not None:
                super()._call(kind, *landed)
            raise self._crash(kind)
        return super()._call(kind, *args)

    # -- fault plumbing ----------------------------------------------------------

    def _enter(self, call: str) -> bool:
        """Count the call; raise a fault that keeps the call from the store.

        True: this call is the fault, but the store is to apply (part of) it first.
        """
        if self.latency:
            time.sleep(self.latency)
        self.calls += 1
        if self.crashed:
            raise StoreCrashed(f"store crashed earlier; {call} (call {self.calls}) not sent")
        if self.crash_at is not None and self.calls >= self.crash_at:
            self.crashed = True
            return True
        if self.fail_at is not None and self.calls == self.fail_at:
            if self.lose_reply:
                return True
            raise InjectedFault(f"injected failure of {call} (call {self.calls})")
        return False

    def _crash(self, call: str) -> Exception:
        if not self.crashed:
            return InjectedFault(f"injected failure of {call} (call {self.calls}), reply lost")
        return StoreCrashed(f"store crashed at {call} (call {self.calls})")

    def _landed(self, kind: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The arguments of what of a faulty call reaches the store, or ``None`` for nothing.

        A single ``put`` and a ``write_batch`` are atomic: all of them when
        the reply is lost, else nothing. A batch of ``put_batch`` or
        ``delete_batch``: see :meth:`_partial`. Reads change nothing.
        """
        if kind in ("put_batch", "delete_batch"):
            part = self._partial(args[0])
            return (part,) if part else None
        if kind in ("put", "write_batch") and self.lose_reply:
            return args
        return None

    def _partial(self, items: Sequence[Any]) -> list[Any]:
        """What of a faulty batch call reaches the store: all of it when the
        reply is lost, a random part when batches are not atomic, else nothing."""
        if self.lose_reply:
            return list(items)
        if self.limits.atomic_batches or not items:
            return []
        return [item for item in items if self._random.random() < 0.5]

    def _check(self, call: str, parts: CallParts) -> None:
        """Raise :class:`LimitViolation` if the call carries more than the declared limits."""
        limits = self.limits
        keys = len(parts.reads) + len(parts.puts) + len(parts.deletes)
        if limits.max_batch_keys is not None and keys > limits.max_batch_keys:
            raise LimitViolation(f"{call} of {keys} keys; the store takes {limits.max_batch_keys}")
        nbytes = (
            sum(map(len, parts.reads))
            + sum(len(k) + len(v) for k, v in parts.puts)
            + sum(map(len, parts.deletes))
        )
        if limits.max_batch_bytes is not None and nbytes > limits.max_batch_bytes:
            raise LimitViolation(f"{call} of {nbytes} bytes; the store takes {limits.max_batch_bytes}")
        if limits.max_value_bytes is not None:
            for _, value in parts.puts:
                if len(value) > limits.max_value_bytes:
                    raise LimitViolation(
                        f"{call} with a {len(value)}-byte value; the store takes {limits.max_value_bytes}"
                    )

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

from .store import StoreLimits, store_capabilities


class InjectedFault(Exception):
    """A failure injected by :class:`FaultyStore` (``fail_at``)."""


class StoreCrashed(Exception):
    """The store "crashed" (``crash_at``): this call and every later one fail."""


class LimitViolation(Exception):
    """A call broke the limits the store declares: a bug in the caller."""


class FaultyStore:
    """A store wrapper that injects faults (see the module docstring)."""

    def __init__(
        self,
        inner: object,
        *,
        fail_at: int | None = None,
        crash_at: int | None = None,
        limits: StoreLimits | None = None,
        latency_ms: float = 0.0,
        lose_reply: bool = False,
        seed: int = 0,
    ) -> None:
        self.inner = inner
        self.lose_reply = lose_reply
        self.fail_at = fail_at
        self.crash_at = crash_at
        capabilities = store_capabilities(inner)
        self.limits = limits if limits is not None else capabilities.limits
        self.latency = latency_ms / 1000.0
        self.calls = 0
        self.crashed = False
        self._random = random.Random(seed)
        if self.limits.atomic_batches and capabilities.write_batch:
            self.write_batch = self._write_batch

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

    def _partial(self, items: Sequence) -> list:
        """What of a faulty batch call reaches the store: all of it when the
        reply is lost, a random part when batches are not atomic, else nothing."""
        if self.lose_reply:
            return list(items)
        if self.limits.atomic_batches or not items:
            return []
        return [item for item in items if self._random.random() < 0.5]

    def _check(self, call: str, keys: int, nbytes: int, values: Sequence[bytes] = ()) -> None:
        limits = self.limits
        if limits.max_batch_keys is not None and keys > limits.max_batch_keys:
            raise LimitViolation(f"{call} of {keys} keys; the store takes {limits.max_batch_keys}")
        if limits.max_batch_bytes is not None and nbytes > limits.max_batch_bytes:
            raise LimitViolation(f"{call} of {nbytes} bytes; the store takes {limits.max_batch_bytes}")
        if limits.max_value_bytes is not None:
            for value in values:
                if len(value) > limits.max_value_bytes:
                    raise LimitViolation(
                        f"{call} with a {len(value)}-byte value; the store takes {limits.max_value_bytes}"
                    )

    # -- the store calls -------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if self._enter("get"):
            raise self._crash("get")
        return self.inner.get(key)

    def get_batch(self, keys: list[bytes]) -> list[bytes | None]:
        self._check("get_batch", len(keys), sum(map(len, keys)))
        if self._enter("get_batch"):
            raise self._crash("get_batch")
        return self.inner.get_batch(keys)

    def put(self, key: bytes, value: bytes) -> None:
        self._check("put", 1, len(key) + len(value), [value])
        if self._enter("put"):
            if self.lose_reply:  # a single put is atomic: all of it or nothing
                self.inner.put(key, value)
            raise self._crash("put")
        self.inner.put(key, value)

    def put_batch(self, entries: list[tuple[bytes, bytes]]) -> None:
        self._check("put_batch", len(entries), sum(len(k) + len(v) for k, v in entries), [v for _, v in entries])
        if self._enter("put_batch"):
            part = self._partial(entries)
            if part:
                self.inner.put_batch(part)
            raise self._crash("put_batch")
        self.inner.put_batch(entries)

    def delete_batch(self, keys: list[bytes]) -> None:
        self._check("delete_batch", len(keys), sum(map(len, keys)))
        if self._enter("delete_batch"):
            part = self._partial(keys)
            if part:
                self.inner.delete_batch(part)
            raise self._crash("delete_batch")
        self.inner.delete_batch(keys)

    def _write_batch(
        self,
        puts: list[tuple[bytes, bytes]],
        deletes: list[bytes],
        expect: dict[bytes, bytes | None] | None = None,
    ) -> bool:
        nbytes = sum(len(k) + len(v) for k, v in puts) + sum(map(len, deletes))
        self._check("write_batch", len(puts) + len(deletes), nbytes, [v for _, v in puts])
        if self._enter("write_batch"):
            if self.lose_reply:  # atomic: all of it or nothing
                self.inner.write_batch(puts, deletes, expect)
            raise self._crash("write_batch")
        return self.inner.write_batch(puts, deletes, expect)

    def scan(self, prefix: bytes):
        return self.inner.scan(prefix)

"""Keeping every lease of a process alive together: one renewer per store.

A host with ten thousand open databases holds ten thousand leases; renewing
each on a thread of its own cost a thread and a round trip per lease per
interval. Here every :class:`~sqlkv.storage.lease.Lease` a
:class:`~sqlkv.storage.lease.Leaser` takes is registered with the :class:`Renewer`
of its store (one per store object and event loop), and one
thread renews them all, every third of the shortest lease time, in as few
round trips as the store allows: one conditional ``write_batch`` that pushes
every expiry key ahead and expects every generation key to still be ours.

Where the store cannot apply one batch to all of them the leases are split:
into batches within the store's ``max_batch_keys``/``max_batch_bytes``, and
on a Redis Cluster into one batch per hash slot the keys live in (a cluster
applies a batch atomically only within one slot; with ``hash_tag="namespace"``
that is one batch for all).

Such a batch is all or nothing. When it is refused, one of its leases was
taken over by another writer (or released meanwhile): each lease of that
batch is then renewed alone, so exactly the leases lost are marked lost, and
only their writers are refused at their next commit (:class:`FencedError`,
by the fence every commit carries, as before). A store error is logged on the
``sqlkv`` logger and the batch is tried again at the next interval.

The thread starts with the store's first lease and ends with its last.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Protocol

from ..errors import Error
from ..stores.contract import AnyKvStore, StoreClient, StoreLimits


class Renewable(Protocol):
    """What the renewer needs of a lease (:class:`~sqlkv.storage.lease.Lease` is one), declared
    here so that this module does not import the one that imports it."""

    @property
    def name(self) -> str: ...
    @property
    def gen_key(self) -> bytes: ...
    @property
    def expiry_key(self) -> bytes: ...
    @property
    def seconds(self) -> float: ...
    @property
    def fence(self) -> dict[bytes, bytes | None]: ...
    def renewed_expiry(self) -> tuple[bytes, bytes]: ...
    def renewal_bytes(self) -> int: ...

_log = logging.getLogger("sqlkv")

_renewers: dict[tuple[int, int], Renewer] = {}
_renewers_lock = threading.Lock()


#: Called with a lease a renewal found taken over by another writer.
OnLost = Callable[[Renewable], None]

#: Which renewer renews a lease (registered and not yet unregistered).
_renewer_of: dict[int, Renewer] = {}


def register(lease: Renewable, transport: StoreClient, on_lost: OnLost) -> None:
    """Have ``lease`` renewed by the renewer of ``transport``'s store (made if it
    has none), through ``transport`` (its holder's, open as long as the lease is
    registered); ``on_lost(lease)`` when a renewal finds another writer's generation."""
    key = (id(transport.store), id(transport.loop))
    with _renewers_lock:
        renewer = _renewers.get(key)
        if renewer is None:
            renewer = _renewers[key] = Renewer(key)
        renewer.add(lease, transport, on_lost)
        _renewer_of[id(lease)] = renewer


def renewer_of(lease: Renewable) -> Renewer | None:
    """The renewer that renews ``lease`` now, if any."""
    with _renewers_lock:
        return _renewer_of.get(id(lease))


def unregister(lease: Renewable) -> None:
    """Stop renewing ``lease`` (waiting for a round in flight); nothing if it is not renewed."""
    with _renewers_lock:
        renewer = _renewer_of.pop(id(lease), None)
    if renewer is not None:
        renewer.remove(lease)


def renewer_count() -> int:
    """How many renewers (threads) run now."""
    with _renewers_lock:
        return len(_renewers)


class Renewer:
    """Renews every lease the process holds on one store (see the module docstring)."""

    def __init__(self, key: tuple[int, int]) -> None:
        self._key = key
        self._leases: dict[int, Renewable] = {}
        self._on_lost: dict[int, OnLost] = {}
        #: Each lease's holder's transport: a round goes through any one of them,
        #: so renewing adds no store client and no event loop.
        self._transports: dict[int, StoreClient] = {}
        #: How many leases last each number of seconds: the interval is a third of
        #: the shortest, found without a pass over every lease.
        self._durations: Counter[float] = Counter()
        self._wake = threading.Event()
        #: Held while a round of renewals runs, so a lease leaves between rounds.
        self._round = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sqlkv-lease-renewer", daemon=True)
        self._thread.start()

    def add(self, lease: Renewable, transport: StoreClient, on_lost: OnLost) -> None:
        """(Under the registry's lock.) Renew ``lease`` from now on."""
        self._leases[id(lease)] = lease
        self._on_lost[id(lease)] = on_lost
        # Its calls are not the database's: a stuck renewal must not make it give up.
        self._transports[id(lease)] = transport.unwatched()
        shortest = min(self._durations, default=None)
        self._durations[lease.seconds] += 1
        if shortest is None or lease.seconds < shortest:
            self._wake.set()  # a shorter lease needs an earlier round

    def remove(self, lease: Renewable) -> None:
        """Stop renewing ``lease`` (waiting for a round in flight); the last one ends the thread.

        The wait for a round, and for the thread, is bounded by the store's
        timeout (``store_timeout``): a round stuck on a store that does not
        answer must not hold up a close. A renewal that lands after that finds
        the lease released (it is conditional on the generation, which the
        release deleted), and a lease forgotten here is never reported lost.
        """
        with _renewers_lock:
            transport = self._transports.get(id(lease))
        wait = None if transport is None else transport.timeout
        in_round = self._round.acquire(timeout=-1 if wait is None else wait)
        try:
            with _renewers_lock:
                self._forget(lease)
                if self._leases:
                    return
                if _renewers.get(self._key) is self:
                    del _renewers[self._key]
        finally:
            if in_round:
                self._round.release()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=30 if wait is None else wait)

    def _forget(self, lease: Renewable) -> OnLost | None:
        """(Under the registry's lock.) Drop ``lease``; its ``on_lost``, if it was here."""
        if self._leases.pop(id(lease), None) is None:
            return None
        self._transports.pop(id(lease), None)
        self._durations[lease.seconds] -= 1
        if not self._durations[lease.seconds]:
            del self._durations[lease.seconds]
        return self._on_lost.pop(id(lease))

    def _interval(self) -> float | None:
        with _renewers_lock:
            if not self._leases:
                return None
            return min(self._durations) / 3

    def _run(self) -> None:
        while True:
            # Cleared before the leases are looked at, never after: a lease that
            # comes or goes once they were read sets it again, and the wait
            # below returns at once instead of sleeping a whole interval.
            self._wake.clear()
            interval = self._interval()
            if interval is None:
                return
            if self._wake.wait(interval):
                continue  # a lease came or went: look at the interval again
            with self._round:
                with _renewers_lock:
                    leases = list(self._leases.values())
                self.renew(leases)  # none, when the last one left since the wait

    def renew(self, leases: list[Renewable]) -> None:
        """One round: renew ``leases`` in as few batches as the store allows
        (nothing when there are none)."""
        transport = self._transport()
        if not leases or transport is None:
            return
        for batch in self._batches(leases, transport):
            try:
                if self._write(batch, transport):
                    continue
                # Some lease of the batch is no longer ours: find which, one by one.
                for lease in batch:
                    if not self._write([lease], transport):
                        self._lost(lease)
            except Error as exc:
                # The store is unreachable: try again next time. Should another
                # writer take over meanwhile, these writers' commits are refused anyway.
                _log.warning(
                    "renewing the lease of %s failed (retrying in %.1f s): %s",
                    _databases(batch), min(lease.seconds for lease in batch) / 3, exc,
                )

    def _lost(self, lease: Renewable) -> None:
        """Tell ``lease``'s leaser that another writer has it, and stop renewing it."""
        with _renewers_lock:
            on_lost = self._forget(lease)
            if not self._leases and _renewers.get(self._key) is self:
                del _renewers[self._key]  # its thread ends; the next lease makes a new renewer
        if on_lost is not None:
            on_lost(lease)

    @staticmethod
    def _write(batch: list[Renewable], transport: StoreClient) -> bool:
        puts = [lease.renewed_expiry() for lease in batch]
        expect: dict[bytes, bytes | None] = {}
        for lease in batch:
            expect.update(lease.fence)
        return transport.write_batch(puts, [], expect)

    def _transport(self) -> StoreClient | None:
        """The transport of any lease renewed here (``None``: no lease is). A round
        uses the one it took first throughout, since a lease lost in the round
        takes its own transport out of the registry."""
        with _renewers_lock:
            return next(iter(self._transports.values()), None)

    @staticmethod
    def _batches(leases: list[Renewable], transport: StoreClient) -> Iterator[list[Renewable]]:
        """``leases`` split by slot group, then within the store's batch limits."""
        group_of = _slot_grouper(transport.store)
        groups: dict[bytes, list[Renewable]] = {}
        for lease in leases:
            groups.setdefault(group_of(lease.expiry_key), []).append(lease)
        for group in groups.values():
            yield from _within_limits(group, transport.limits)


def _databases(leases: list[Renewable], shown: int = 3) -> str:
    """``database 'a.db'``, or ``12 databases ('a.db', 'b.db', 'c.db', ...)`` for a log line."""
    if len(leases) == 1:
        return f"database {leases[0].name!r}"
    names = ", ".join(repr(lease.name) for lease in leases[:shown])
    return f"{len(leases)} databases ({names}{', ...' if len(leases) > shown else ''})"


def _within_limits(leases: list[Renewable], limits: StoreLimits) -> Iterator[list[Renewable]]:
    """Consecutive runs of ``leases`` whose renewal batch fits ``limits``
    (two keys each: the expiry written, the generation expected)."""
    batch: list[Renewable] = []
    size = 0
    for lease in leases:
        cost = lease.renewal_bytes()
        full_keys = limits.max_batch_keys is not None and 2 * (len(batch) + 1) > limits.max_batch_keys
        full_bytes = limits.max_batch_bytes is not None and size + cost > limits.max_batch_bytes
        if batch and (full_keys or full_bytes):
            yield batch
            batch, size = [], 0
        batch.append(lease)
        size += cost
    if batch:
        yield batch


def _slot_grouper(store: AnyKvStore) -> Callable[[bytes], bytes]:
    """How ``store`` groups keys that one atomic batch may hold: a Redis
    Cluster by hash tag (slot); every other store holds any keys in one batch."""
    keyspace = getattr(store, "keyspace", None)
    if getattr(store, "cluster", False) and keyspace is not None:
        return keyspace.tag
    return _one_group


def _one_group(key: bytes) -> bytes:
    return b""

"""Writer leases and fencing: one writer per database at a time, enforced by the store.

Opening a database for writing takes its lease; every commit is conditional
on it. Two keys of sqlkv's own sit beside the database (``Layout.ext_key``):

- the generation key (kind ``l``): a u64 generation and the holder's random
  16-byte token. It changes only when a writer takes the lease: the
  generation goes up by one at each takeover.
- the expiry key (kind ``l``, suffix ``e``): the moment the lease ends (Unix
  time in ms, u64) and the holder's token.

Both are absent while nobody holds the lease, so a database that is closed
holds only its layout's keys (and a failed open leaves the store as it was).

Taking: both keys are read in the database's first ``get_batch`` at open
(see :meth:`Storage.open`); if the expiry key is absent or past, one
conditional ``write_batch`` sets generation + 1 and a new expiry, expecting
both values just read, so of two writers racing for it one wins. When the
expiry key was absent, nobody could commit between that read and the take
(every committer holds the lease), so what the same batch read is current;
when it was there but past, its holder may still have committed until the
take, so the database is read again. Renewing (every third of the lease, by
the store's one renewer with every other lease of the process, see
renewer.py): rewrite the expiry, expecting the generation key to still be
ours. Releasing (at close, or when the open fails): delete
both keys, same expectation; the next writer starts again at generation 1,
with a token of its own, so a writer fenced before never matches again.

Unreadable values: a lease key whose value is not a lease value (garbled
bytes) names no holder and no expiry, so no open can tell whether a writer
holds it, and a normal open refuses it (:class:`CorruptError` naming the key).
Only a tool asked for it explicitly (``check --repair``, ``rm``; a
:class:`LeaseRequest` with ``replace_unreadable``) takes such a lease over,
with the same conditional write as an expired one: it expects the very bytes
it read, so a valid lease written meanwhile is never overwritten. Should a
live writer's expiry be what was garbled, that writer is fenced as usual
(:class:`FencedError` at its next commit): nothing it wrote is lost.

Unknown outcomes: a lease write whose reply is lost may have landed. A take
that fails that way deletes what it sent at once (expecting exactly those
values, so it never touches another writer's lease); when that fails too, or
a release at close fails, the token goes on this process's list of orphans
(:func:`_orphan`). No :class:`Lease` holds an orphan token, so nothing in this
process commits under it, and the next open in this process takes such a
lease over at once (generation + 1, as for an expired one) instead of waiting
``lease_seconds`` for it to run out. Other processes wait for the expiry, as
they must: they cannot know the holder is gone. Failed renewals and releases
are logged on the ``sqlkv`` logger, never swallowed.

A :class:`Lease` is a plain value (name, keys, generation, token, length);
the :class:`Leaser` of a store takes, renews and releases leases, and can
hold several (one per database open for writing). A :class:`LeaseRequest` is
one writer's handle: what its open asks for, and the lease it then holds.

Fencing: every commit expects the generation key to hold ours
(:attr:`Lease.fence`, handed to the commit code explicitly). A writer that lost its lease (paused past the expiry,
cut off from the store) while another took it over is refused at its next
commit with :class:`FencedError`, and nothing of that commit is written.
Every commit also expects the database's head (commit.py): a store that went
back in time to a state without this writer's lease refuses it with
:class:`RewoundError`, and the writer forgets the lease
(:meth:`LeaseRequest.forget`) so that its next open takes it again.

Clocks: the expiry is written in the holder's wall clock and read in a
contender's. Skew between hosts makes a lease end early or late, so keep it
well below the lease time, but it never lets two writers commit: that rests
on the generation key alone. Its value holds a random token beside the
number, so a writer whose lease was released by another and taken anew never
finds its own value there again.

Only stores with the atomic conditional ``write_batch`` can fence. On a store
with just the five calls a database opens without a lease: the caller must
make sure there is one writer (as an actor runtime does).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeGuard

from ..errors import ConfigError, CorruptError, Error, LockedError
from ..format.layout import EXT_LEASE, Layout
from ..stores.contract import StoreClient
from . import renewer

DEFAULT_LEASE_SECONDS = 10.0
#: The longest a writer waiting for a lease sleeps before looking again.
POLL_SECONDS = 0.1
#: Most conditional writes a writer loses to others while taking one lease.
MAX_TAKE_RACES = 1000

#: The most orphan tokens remembered; past it the oldest are forgotten (and simply expire).
MAX_ORPHANS = 1024

_VALUE = struct.Struct(">Q16s")
_log = logging.getLogger("sqlkv")

# Tokens of leases this process wrote, or may have written, and holds no Lease
# for (see the module docstring). Insertion-ordered so the oldest go first.
_orphans: OrderedDict[bytes, None] = OrderedDict()
_orphans_lock = threading.Lock()


def _orphan(token: bytes) -> None:
    """Remember that a lease under ``token`` may be in a store with no holder."""
    with _orphans_lock:
        _orphans[token] = None
        while len(_orphans) > MAX_ORPHANS:
            _orphans.popitem(last=False)


def _adopt(token: bytes) -> None:
    """Forget ``token``: its lease is known to be gone from the store."""
    with _orphans_lock:
        _orphans.pop(token, None)


def _is_orphan(token: bytes) -> bool:
    with _orphans_lock:
        return token in _orphans


def _encode(number: int, token: bytes) -> bytes:
    return _VALUE.pack(number, token)


def decode_lease_value(value: bytes, key: bytes) -> tuple[int, bytes]:
    """The number and token a lease value holds (inventory reads them too);
    :class:`CorruptError` naming ``key`` for a value of the wrong length."""
    if len(value) != _VALUE.size:
        raise CorruptError(
            f"lease value at key {key.hex()} is {len(value)} bytes long, expected {_VALUE.size}"
        )
    return _VALUE.unpack(value)


def _read(value: bytes | None, key: bytes, name: str, replace_unreadable: bool) -> tuple[int, bytes] | None:
    """The number and token of the lease value ``value`` at ``key`` (``(0, b"")``:
    absent), or ``None`` when it is unreadable and ``replace_unreadable`` allows
    taking it over; otherwise an unreadable value is a :class:`CorruptError`
    saying how to repair it."""
    if value is None:
        return 0, b""
    try:
        return decode_lease_value(value, key)
    except CorruptError as exc:
        if replace_unreadable:
            return None
        raise CorruptError(
            f"database {name!r} has an unreadable lease: {exc}; `sqlkv check --repair` "
            "(check_database(..., repair=True)) replaces it"
        ) from exc


def _now_ms() -> int:
    return int(time.time() * 1000)


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_lease_seconds(lease_seconds: object) -> None:
    """Raise :class:`ConfigError` naming a bad ``lease_seconds`` (a positive number or ``None``)."""
    if lease_seconds is not None and (not _number(lease_seconds) or not 0 < lease_seconds < 2**31):
        raise ConfigError(f"lease_seconds must be a positive number or None, not {lease_seconds!r}")


def check_lock_timeout(lock_timeout: object) -> None:
    """Raise :class:`ConfigError` naming a bad ``lock_timeout`` (seconds, 0 or more)."""
    if not _number(lock_timeout) or not 0 <= lock_timeout < 2**31:
        raise ConfigError(f"lock_timeout must be a number of seconds >= 0, not {lock_timeout!r}")


@dataclass(frozen=True)
class Lease:
    """A write lease as a plain value: whose it is (``token``), which take of the
    database it is (``generation``), where it lives (``gen_key``,
    ``expiry_key``) and how long it lasts unrenewed (``seconds``)."""

    name: str
    gen_key: bytes
    expiry_key: bytes
    generation: int
    token: bytes
    seconds: float

    @property
    def fence(self) -> dict[bytes, bytes | None]:
        """What every write under this lease expects: the generation key still ours."""
        return {self.gen_key: _encode(self.generation, self.token)}

    def renewed_expiry(self) -> tuple[bytes, bytes]:
        """The expiry entry that pushes this lease a lease length ahead from now."""
        return self.expiry_key, _encode(_now_ms() + int(self.seconds * 1000), self.token)

    def renewal_bytes(self) -> int:
        """Key and value bytes this lease adds to a renewal batch (expiry written, generation expected)."""
        return len(self.expiry_key) + len(self.gen_key) + 2 * _VALUE.size


class Leaser:
    """Takes and releases the write leases of databases in one store, and has
    them renewed.

    It talks to the store through the database's transport (a view of it
    counting apart: a lease's round trips are not in the database's
    ``stats``), so it adds no store client and no event loop. Every lease it
    holds is renewed by the one renewer of its store (renewer.py), with every
    other lease the process holds there, in as few round trips as the store
    allows.
    """

    def __init__(self, transport: StoreClient) -> None:
        self.transport = transport.apart()
        self._lost: set[bytes] = set()  # generation keys of leases another writer took
        self._lock = threading.Lock()

    @property
    def can_fence(self) -> bool:
        """Whether the store can fence writers (it has the conditional ``write_batch``)."""
        return self.transport.can_write_batch

    def lost(self, lease: Lease) -> bool:
        """Whether a renewal found another writer's generation: ``lease``'s commits are refused."""
        with self._lock:
            return lease.gen_key in self._lost

    def take(
        self,
        layout: Layout,
        name: str,
        seconds: float,
        values: list[bytes | None],
        wait: float = 0.0,
        replace_unreadable: bool = False,
    ) -> tuple[Lease, bool]:
        """Take the lease of database ``name``, given the values of :func:`lease_keys` just read.

        Returns the lease and whether what was read beside those values is
        still current. Raises :class:`LockedError` if another writer still
        holds the lease after ``wait`` seconds, and :class:`CorruptError` if
        a lease value is unreadable, unless ``replace_unreadable`` (see the
        module docstring).
        """
        gen_key, expiry_key = lease_keys(layout, name)
        token = os.urandom(16)
        deadline = time.monotonic() + wait
        gen_value, expiry_value = values
        first = True
        for _ in range(MAX_TAKE_RACES):
            if not first:
                gen_value, expiry_value = self.transport.get_batch([gen_key, expiry_key])
            held = _read(gen_value, gen_key, name, replace_unreadable)
            ends = _read(expiry_value, expiry_key, name, replace_unreadable)
            unreadable = held is None or ends is None
            generation, holder = held if held is not None else (0, b"")
            now = _now_ms()
            # Unreadable: over. Nothing says when it ends, and a generation
            # nobody can read fences every writer anyway.
            expiry = ends[0] if ends is not None and not unreadable else 0
            if expiry <= now or _is_orphan(holder):
                puts = [
                    (gen_key, _encode(generation + 1, token)),
                    (expiry_key, _encode(now + int(seconds * 1000), token)),
                ]
                if self._write(name, seconds, puts, {gen_key: gen_value, expiry_key: expiry_value}):
                    _adopt(holder)
                    lease = Lease(name, gen_key, expiry_key, generation + 1, token, seconds)
                    self._hold(lease)
                    # An expired, orphaned or unreadable lease's holder may have
                    # committed until now: only an absent one vouches for what was read.
                    return lease, first and expiry_value is None and not unreadable
                first = False
                continue  # another writer wrote first: look again
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockedError(
                    f"database {name!r} is open for writing elsewhere (lease generation "
                    f"{generation}, ends in {(expiry - now) / 1000:.1f} s)",
                    "open it with readonly=True, or pass lock_timeout to wait for the lease",
                )
            time.sleep(min(left, (expiry - now) / 1000, POLL_SECONDS))
            first = False
        raise LockedError(f"database {name!r}: lost {MAX_TAKE_RACES} races for its lease to other writers")

    def _write(
        self, name: str, seconds: float, puts: list[tuple[bytes, bytes]], expect: dict[bytes, bytes | None]
    ) -> bool:
        """The conditional lease write of a take; on a store error, undo what may have landed.

        The reply of a write that failed may have been lost after the store
        applied it: then the lease is ours, held by nobody. Delete exactly
        what was sent (the expectation is those values, so another writer's
        lease is never touched), and when even that fails, leave the token
        to be taken over by this process's next open (:func:`_orphan`).
        """
        transport = self.transport
        try:
            return transport.write_batch(puts, [], expect)
        except Error as exc:
            token = decode_lease_value(puts[0][1], puts[0][0])[1]
            _orphan(token)
            try:
                if transport.write_batch([], [key for key, _ in puts], dict(puts)):
                    _adopt(token)
            except Error as undo:
                _log.warning(
                    "database %r: the lease write failed (%s) and so did its undo (%s); "
                    "this process takes the lease over at its next open, others after "
                    "%.1f s", name, exc, undo, seconds,
                )
            raise

    def _hold(self, lease: Lease) -> None:
        """Keep ``lease`` renewed by its store's renewer."""
        renewer.register(lease, self.transport, self._lost_to_another_writer)

    def renew(self, lease: Lease) -> bool:
        """Push ``lease``'s expiry a lease length ahead now; ``False`` if another writer took it."""
        return self.transport.write_batch([lease.renewed_expiry()], [], lease.fence)

    def _lost_to_another_writer(self, lease: renewer.Renewable) -> None:
        """A renewal found another writer's generation: ``lease``'s commits will be refused."""
        with self._lock:
            self._lost.add(lease.gen_key)
        _log.warning(
            "database %r: another writer took over its lease; this writer's "
            "commits will be refused (FencedError)", lease.name,
        )

    def forget(self, lease: Lease) -> None:
        """Stop renewing ``lease`` and forget it, without touching the store (it no
        longer holds the lease: see :meth:`LeaseRequest.forget`)."""
        renewer.unregister(lease)
        with self._lock:
            self._lost.discard(lease.gen_key)

    def release(self, lease: Lease) -> None:
        """Stop renewing ``lease`` and free it.

        Best effort: a lease the store did not release expires after
        ``seconds``, and this process takes it over at once (see :func:`_orphan`).
        """
        renewer.unregister(lease)
        with self._lock:
            lost = lease.gen_key in self._lost
            self._lost.discard(lease.gen_key)
        if lost:
            return
        try:
            self.transport.write_batch([], [lease.gen_key, lease.expiry_key], lease.fence)
        except Error as exc:
            _orphan(lease.token)
            _log.warning(
                "releasing the lease of database %r failed; it ends in at most %.1f s: %s",
                lease.name, lease.seconds, exc,
            )


def release_and_close(lease: LeaseRequest | None, transport: StoreClient) -> None:
    """Release ``lease`` (if any) through ``transport``, then close ``transport``,
    even when the release fails: the end of every writer's open."""
    try:
        if lease is not None:
            lease.release()
    finally:
        transport.close()


def lease_keys(layout: Layout, name: str) -> list[bytes]:
    """The generation key and the expiry key of database ``name``'s lease."""
    return [layout.ext_key(name, EXT_LEASE), layout.ext_key(name, EXT_LEASE, b"e")]


class LeaseRequest:
    """A writer's lease on database ``name``: asked for at open, held until :meth:`release`.

    :meth:`Storage.open` reads :meth:`keys` in its first batch and hands the
    values to :meth:`take` (only while no lease is held: a database reopened
    after a store failure keeps its lease). ``wait`` is how long to wait for
    another writer's lease to end. ``replace_unreadable``: take over a lease
    whose value cannot be read, instead of refusing it (for the tools that
    were asked to: repair, remove).
    """

    def __init__(
        self,
        leaser: Leaser,
        layout: Layout,
        name: str,
        seconds: float,
        wait: float = 0.0,
        replace_unreadable: bool = False,
    ) -> None:
        self.leaser = leaser
        self.layout = layout
        self.name = name
        self.seconds = seconds
        self.wait = wait
        self.replace_unreadable = replace_unreadable
        #: The lease, once taken.
        self.lease: Lease | None = None
        #: Whether a commit found the lease another writer's (FencedError): this
        #: writer stays fenced until it is closed.
        self.fenced = False

    @property
    def wanted(self) -> bool:
        """Whether the open must take the lease: none is held yet, and the store can fence.

        On a store without ``write_batch`` a database opens without a lease.
        """
        return self.lease is None and self.leaser.can_fence

    @property
    def fence(self) -> dict[bytes, bytes | None] | None:
        """What every commit expects of the store (``None``: no lease held)."""
        return self.lease.fence if self.lease is not None else None

    def keys(self) -> list[bytes]:
        return lease_keys(self.layout, self.name)

    def take(self, values: list[bytes | None]) -> bool:
        """Take the lease, given the values of :meth:`keys` just read; return
        whether what was read beside them is still current (see :meth:`Leaser.take`)."""
        self.lease, current = self.leaser.take(
            self.layout, self.name, self.seconds, values, self.wait, self.replace_unreadable
        )
        return current

    def forget(self) -> None:
        """Let go of the lease without releasing it: the store went back to a state
        in which it is not this writer's (see commit.py), so the next open takes
        it again, as any writer would."""
        lease, self.lease = self.lease, None
        if lease is not None:
            self.leaser.forget(lease)

    def release(self) -> None:
        """Free the lease, if one is held."""
        lease, self.lease = self.lease, None
        if lease is not None:
            self.leaser.release(lease)

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
the store's renewer, with every other lease of the process: see renewer.py): rewrite the expiry, expecting the generation
key to still be ours. Releasing (at close, or when the open fails): delete
both keys, same expectation; the next writer starts again at generation 1,
with a token of its own, so a writer fenced before never matches again.

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

Fencing: every commit expects the generation key to hold ours
(:attr:`StoreClient.fence`). A writer that lost its lease (paused past the expiry,
cut off from the store) while another took it over is refused at its next
commit with :class:`FencedError`, and nothing of that commit is written.

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

import asyncio
import logging
import os
import struct
import threading
import time
from collections import OrderedDict

from .errors import ConfigError, CorruptError, Error, LockedError
from .layout import EXT_LEASE, Layout
from .renewer import Renewer, register
from .store import AnyKvStore, StoreClient

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


def _decode(value: bytes, key: bytes) -> tuple[int, bytes]:
    if len(value) != _VALUE.size:
        raise CorruptError(
            f"lease value at key {key.hex()} is {len(value)} bytes long, expected {_VALUE.size}"
        )
    return _VALUE.unpack(value)


def _now_ms() -> int:
    return int(time.time() * 1000)


def check_lease_options(lease_seconds: object, lock_timeout: object) -> None:
    """Raise :class:`ConfigError` naming a bad ``lease_seconds`` or ``lock_timeout``."""

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if lease_seconds is not None and (not number(lease_seconds) or not 0 < lease_seconds < 2**31):
        raise ConfigError(f"lease_seconds must be a positive number or None, not {lease_seconds!r}")
    if not number(lock_timeout) or not 0 <= lock_timeout < 2**31:
        raise ConfigError(f"lock_timeout must be a number of seconds >= 0, not {lock_timeout!r}")


class Lease:
    """The write lease of one database, held by this process while it is open.

    Renewed by its store's :class:`~sqlkv.renewer.Renewer` together with every
    other lease of the process on that store, from construction to :meth:`release`.
    """

    def __init__(
        self,
        client: StoreClient,
        gen_key: bytes,
        expiry_key: bytes,
        generation: int,
        token: bytes,
        seconds: float,
        name: str,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.generation = generation
        self.seconds = seconds
        self._token = token
        self._gen_key = gen_key
        self.expiry_key = expiry_key
        self._mine = _encode(generation, token)
        #: Set when a renewal found another writer's generation: commits will be refused.
        self.lost = False
        self._renewer: Renewer | None = register(self, client.store, loop)

    @property
    def fence(self) -> dict[bytes, bytes | None]:
        """What every commit expects: the generation key still ours."""
        return {self._gen_key: self._mine}

    def renewed_expiry(self) -> tuple[bytes, bytes]:
        """The expiry entry a renewal writes now: a lease length ahead."""
        return self.expiry_key, _encode(_now_ms() + int(self.seconds * 1000), self._token)

    def renewal_bytes(self) -> int:
        """The key and value bytes this lease adds to a renewal batch."""
        return len(self.expiry_key) + len(self._gen_key) + 2 * _VALUE.size

    def renew(self) -> bool:
        """Push the expiry a lease length ahead; ``False`` if another writer took the lease."""
        return self.client.write_batch([self.renewed_expiry()], [], self.fence)

    def lost_to_another_writer(self) -> None:
        """A renewal found the generation key no longer ours: its commits will be refused."""
        if self.lost:
            return
        self.lost = True
        _log.warning(
            "database %r: another writer took over its lease; this writer's "
            "commits will be refused (FencedError)", self.name,
        )

    def release(self) -> None:
        """Stop renewing and free the lease.

        Best effort: a lease the store did not release expires after
        ``seconds``, and this process takes it over at once (see :func:`_orphan`).
        """
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.remove(self)
        try:
            if not self.lost:
                self.client.write_batch([], [self._gen_key, self.expiry_key], self.fence)
        except Error as exc:
            _orphan(self._token)
            _log.warning(
                "releasing the lease of database %r failed; it ends in at most %.1f s: %s",
                self.name, self.seconds, exc,
            )
        finally:
            self.client.close()


class LeaseRequest:
    """A writer's wish to take the lease of database ``name`` at open.

    :meth:`Storage.open` reads :meth:`keys` in its first batch and hands the
    values to :meth:`take`. ``wait`` is how long to wait for another writer's
    lease to end; ``loop`` runs an async store's calls.
    """

    def __init__(
        self,
        store: AnyKvStore,
        layout: Layout,
        name: str,
        seconds: float,
        wait: float = 0.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.seconds = seconds
        self.wait = wait
        self.loop = loop
        self.gen_key = layout.ext_key(name, EXT_LEASE)
        self.expiry_key = layout.ext_key(name, EXT_LEASE, b"e")

    def keys(self) -> list[bytes]:
        return [self.gen_key, self.expiry_key]

    def take(self, values: list[bytes | None]) -> tuple["Lease | None", bool]:
        """Take the lease, given the values of :meth:`keys` just read.

        Returns the lease (``None`` for a store without ``write_batch``: it
        cannot fence) and whether what was read beside those values is still
        current. Raises :class:`LockedError` if another writer still holds the
        lease after ``wait`` seconds. The lease has a store client of its own,
        so its round trips (renewals) are not in the database's ``stats``.
        """
        client = StoreClient(self.store, loop=self.loop)
        if not client.can_write_batch:
            return None, True
        try:
            return self._take(client, values)
        except BaseException:
            client.close()
            raise

    def _take(self, client: StoreClient, values: list[bytes | None]) -> tuple["Lease", bool]:
        gen_key, expiry_key, name = self.gen_key, self.expiry_key, self.name
        token = os.urandom(16)
        deadline = time.monotonic() + self.wait
        gen_value, expiry_value = values
        first = True
        for _ in range(MAX_TAKE_RACES):
            if not first:
                gen_value, expiry_value = client.get_batch([gen_key, expiry_key])
            generation, holder = _decode(gen_value, gen_key) if gen_value is not None else (0, b"")
            now = _now_ms()
            expiry = _decode(expiry_value, expiry_key)[0] if expiry_value is not None else 0
            if expiry <= now or _is_orphan(holder):
                puts = [
                    (gen_key, _encode(generation + 1, token)),
                    (expiry_key, _encode(now + int(self.seconds * 1000), token)),
                ]
                if self._write(client, puts, {gen_key: gen_value, expiry_key: expiry_value}):
                    _adopt(holder)
                    lease = Lease(
                        client, gen_key, expiry_key, generation + 1, token, self.seconds, name, self.loop
                    )
                    # An expired or orphaned lease's holder may have committed
                    # until now: only an absent one vouches for what was read.
                    return lease, first and expiry_value is None
                first = False
                continue  # another writer wrote first: look again
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockedError(
                    f"database {name!r} is open for writing elsewhere (lease generation "
                    f"{generation}, ends in {(expiry - now) / 1000:.1f} s); open it with "
                    "readonly=True, or pass lock_timeout to wait for the lease"
                )
            time.sleep(min(left, (expiry - now) / 1000, POLL_SECONDS))
            first = False
        raise LockedError(f"database {name!r}: lost {MAX_TAKE_RACES} races for its lease to other writers")

    def _write(
        self, client: StoreClient, puts: list[tuple[bytes, bytes]], expect: dict[bytes, bytes | None]
    ) -> bool:
        """The conditional lease write of a take; on a store error, undo what may have landed.

        The reply of a write that failed may have been lost after the store
        applied it: then the lease is ours, held by nobody. Delete exactly
        what was sent (the expectation is those values, so another writer's
        lease is never touched), and when even that fails, leave the token
        to be taken over by this process's next open (:func:`_orphan`).
        """
        try:
            return client.write_batch(puts, [], expect)
        except Error as exc:
            token = _decode(puts[0][1], puts[0][0])[1]
            _orphan(token)
            try:
                if client.write_batch([], [key for key, _ in puts], dict(puts)):
                    _adopt(token)
            except Error as undo:
                _log.warning(
                    "database %r: the lease write failed (%s) and so did its undo (%s); "
                    "this process takes the lease over at its next open, others after "
                    "%.1f s", self.name, exc, undo, self.seconds,
                )
            raise

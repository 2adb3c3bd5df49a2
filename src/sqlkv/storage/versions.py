"""Versions: every commit's number, which chunks it changed, and how a reader
that holds no lease validates what it reads against them.

**What is stored** (sqlkv's own keys beside the database file, see layout.py's
``ext_key`` and docs/layout.md):

- the *version record*, kind ``v``, no suffix: the version as a u64be without
  its leading zero bytes (1 to 8 bytes: the value stays small), then the
  commit's random 8-byte *head id*, then a 4-byte checksum over the key, the
  FileMeta value written with it and the version and id. The version starts at
  1 with the first versioned commit and grows by one per commit; a database
  whose record is absent is at version 0. The number and the id together are
  the *head*: after the store went back in time (a failover, a restored
  backup) a version number may be written again, but never with the same id.
  A record of 5 to 12 bytes has no id (the format written before heads had
  ids, still read: its head id is taken as absent); new writers always write
  the id (13 to 20 bytes). A record whose checksum
  fails against the FileMeta stored beside it was garbled, or the file was
  changed since by a writer that knows no versions: either way the reader
  cannot tell what changed and drops its cache (see below).
- the *log entry* of version ``n``, kind ``g``, suffix one byte ``n % 256``: each
  chunk index the commit changed as u32be (or the single index ``FFFFFFFF``,
  "every chunk", for a commit that changed more than
  :data:`MAX_LOGGED_CHUNKS`), then the head id of version ``n - 1`` (the head
  the commit was built on; 8 zero bytes for a head without id), then the
  format byte ``01``, then a 4-byte checksum over the key, ``n`` and all
  before it. (An entry without the parent id and format byte, whose length
  less the checksum is a multiple of 4, is the earlier format: still read,
  its parent taken as unknown.) 256 slots are overwritten in turn, so the log of the last 256
  commits is kept without any delete; a slot whose checksum fails for ``n``
  holds another version's entry (or was garbled), and a reader that needed it
  drops its cache.

Per commit that is at most 58 bytes of keys and values plus 4 per changed
chunk beyond the first (for a database named ``app.db`` in layout ``seed``, 52
while the version is below 2^16; 2 more per character of a longer name): the
head ids cost 17 bytes of it. A one-batch commit writes both in
its one batch; a staged commit writes them with the apply step's last write
(the new FileMeta), so the version moves exactly when the new state is whole.
A staged commit's head id is its commit record's commit id, so an apply done
again (recovery) writes the same head.

**Writers are fenced on the head** (commit.py): every write of a writer
expects the version record to hold exactly the value the writer last wrote or
read at open, in the same atomic ``write_batch``; so a store that went back in
time, or was written by another branch, refuses the commit whole
(:class:`~sqlkv.errors.RewoundError`) instead of taking chunks built on pages
it no longer has.

**Readers** (:class:`VersionPin`). A reader's cache holds one version's chunks.
At the start of each read transaction (at most every ``max_staleness``
seconds) one ``get_batch`` reads the version record, the FileMeta, the commit
record of a staged commit in flight, and the next few log entries: the reader
drops exactly the chunks changed since its version (all of them when the log
no longer reaches back that far) and moves to the new one. The pinned head
must be an ancestor of the store's: when the store shows the same number with
another id, a lower number, or a log whose first entry past the pinned
version was built on another head, the store went back in time and wrote
another branch, and the reader drops its whole cache. Every later read
carries the version record and the commit record along in the same
``get_batch``: if they still say the pinned state, the chunks read belong to
it (a store's ``get_batch`` reads one state: LMDB's read transaction, Redis'
MGET on one hash slot, the memory store's lock); if a commit landed
meanwhile, the log says whether it changed any chunk just read. If it did,
the read cannot be served from the pinned state: :class:`ConflictError`
(the engine retries a single statement; an explicit read transaction gets it).

A staged commit whose commit record is stored but whose apply is not done
(or whose writer died there) is read *through*: the chunks it staged are
read from the staging area, falling back to their place once the apply has
moved them; the apply changes no other chunk, so this is one whole state.

**Writers that know nothing of versions** (other implementations of the
layouts) write no version record. Against such a database a reader drops its
whole cache at the start of every read transaction and reads the store as
its ``get_batch`` calls find it: each round trip sees one state, but a read
transaction that needs several round trips can mix two of such a writer's
commits. Where a versioned database is later written by such a writer, the
FileMeta no longer matching the version record's size tells the reader to
drop its cache; a change that keeps the size is not seen until the next
versioned commit (documented in the README).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from ..errors import ConflictError, CorruptError
from ..format.layout import Layout, record_key
from ..format.sealed import seal, unseal
from ..stores.contract import Entry, StoreClient

EXT_VERSION = b"v"
EXT_VERSION_LOG = b"g"
#: Log entries kept: a reader more commits behind than this drops its whole cache.
LOG_SLOTS = 256
#: A commit that changed more chunks than this is logged as "every chunk".
MAX_LOGGED_CHUNKS = 1024
#: Log entries read speculatively with the version record at a read transaction's start.
LOGS_AHEAD = 4
_EVERY_CHUNK = 0xFFFFFFFF
_CHECK = 4
#: Bytes of a head id: random, so a version number written again after the store
#: went back in time is another head.
HEAD_ID_BYTES = 8
#: What a log entry names as its parent when the parent head has no id.
_NO_ID = bytes(HEAD_ID_BYTES)
#: The last body byte of a log entry that names its parent head.
_LOG_WITH_PARENT = 1
_WITH_PARENT = bytes([_LOG_WITH_PARENT])
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


def version_key(layout: Layout, name: str) -> bytes:
    return layout.ext_key(name, EXT_VERSION)


def log_key(layout: Layout, name: str, version: int) -> bytes:
    return layout.ext_key(name, EXT_VERSION_LOG, bytes([version % LOG_SLOTS]))


@dataclass(frozen=True)
class Head:
    """A head: a version number and its id (``None``: a record of the format without ids)."""

    number: int
    id: bytes | None


def encode_version(key: bytes, version: int, meta_value: bytes, head_id: bytes) -> bytes:
    """The version record of head (``version``, ``head_id``), written with the FileMeta ``meta_value``."""
    body = (_U64.pack(version).lstrip(b"\0") or b"\0") + head_id
    return body + seal(key + meta_value, body, _CHECK)[len(body) :]


def read_head(value: bytes | None, key: bytes) -> Head | None:
    """The head a version record names (``None``: absent), its checksum not checked."""
    if value is None:
        return None
    shortest, longest = 1 + _CHECK, _U64.size + HEAD_ID_BYTES + _CHECK
    if not shortest <= len(value) <= longest:
        raise CorruptError(
            f"version record at key {key.hex()} is {len(value)} bytes long, not "
            f"{shortest} to {longest}"
        )
    body = value[:-_CHECK]
    if len(body) <= _U64.size:  # the format without a head id
        return Head(int.from_bytes(body, "big"), None)
    return Head(int.from_bytes(body[:-HEAD_ID_BYTES], "big"), body[-HEAD_ID_BYTES:])


def read_version(value: bytes | None, key: bytes) -> int | None:
    """The version a version record names (``None``: absent), its checksum not checked."""
    head = read_head(value, key)
    return head.number if head is not None else None


def version_holds(value: bytes, key: bytes, meta_value: bytes | None) -> bool:
    """Whether a version record was written with the FileMeta ``meta_value``
    (else it is garbled, or a writer that knows no versions changed the file)."""
    try:
        unseal(key + (meta_value or b""), value, "version record", _CHECK)
    except CorruptError:
        return False
    return True


def encode_log(
    key: bytes, version: int, changed: Collection[int] | None, parent: bytes | None = None
) -> bytes:
    """The log entry of ``version``: the chunks it changed (``None``: every chunk),
    built on the head whose id is ``parent`` (``None``: a head without id)."""
    if changed is None or len(changed) > MAX_LOGGED_CHUNKS:
        packed = _U32.pack(_EVERY_CHUNK)
    elif len(changed) == 1:  # the usual commit of one page: no sort, no format string
        (only,) = changed
        packed = _U32.pack(only)
    else:
        indices = sorted(changed)
        packed = struct.pack(f">{len(indices)}I", *indices)
    body = packed + (parent or _NO_ID) + _WITH_PARENT
    return body + seal(key + _U64.pack(version), body, _CHECK)[len(body) :]


@dataclass(frozen=True)
class LogEntry:
    """A log entry read: the chunks its commit changed (``None``: every chunk) and
    the id of the head it was built on (``None``: unknown, an entry of the
    format without it; :data:`_NO_ID`: a head without id)."""

    changed: frozenset[int] | None
    parent: bytes | None


def read_log(value: bytes, key: bytes, version: int) -> LogEntry | None:
    """The log entry of ``version`` in ``value``; ``None`` when the slot holds
    another version's entry (or a garbled one)."""
    body = value[:-_CHECK]
    if len(value) < _CHECK:
        return None
    parent = None
    indices_end = len(body)
    if len(body) % _U32.size == 1:  # the format naming the parent head
        if body[-1] != _LOG_WITH_PARENT or len(body) < HEAD_ID_BYTES + 1:
            return None
        indices_end -= HEAD_ID_BYTES + 1
        parent = body[indices_end:-1]
    elif len(body) % _U32.size:
        return None
    try:
        unseal(key + _U64.pack(version), value, "version log entry", _CHECK)
    except CorruptError:
        return None
    indices = frozenset(i for (i,) in _U32.iter_unpack(body[:indices_end]))
    return LogEntry(None if _EVERY_CHUNK in indices else indices, parent)


def decode_log(value: bytes, key: bytes, version: int) -> frozenset[int] | None:
    """The chunks the log entry of ``version`` says it changed; ``None`` for every
    chunk, or when the slot holds another version's entry (or a garbled one)."""
    entry = read_log(value, key, version)
    return entry.changed if entry is not None else None


@dataclass(frozen=True)
class WrittenHead:
    """A head as this writer knows it: the number, its id, and the version record's
    value as stored (``None``: absent), which every write of the writer expects."""

    number: int
    id: bytes | None
    value: bytes | None


class VersionLog:
    """A writer's side: the database's current head, and what a commit adds to its batch."""

    def __init__(self, layout: Layout, name: str, version_value: bytes | None) -> None:
        self.layout = layout
        self.name = name
        self.key = version_key(layout, name)
        head = read_head(version_value, self.key) or Head(0, None)
        #: The head of the last commit this writer made or found at open.
        self.head = WrittenHead(head.number, head.id, version_value)
        #: The log's keys by slot, made once each: a commit asks for one.
        self._log_keys: dict[int, bytes] = {}

    @property
    def version(self) -> int:
        """The version of the last commit this writer made or found at open."""
        return self.head.number

    def entries(
        self,
        version: int,
        meta_value: bytes,
        changed: Collection[int] | None,
        head_id: bytes | None = None,
        parent: bytes | None = None,
    ) -> tuple[list[Entry], WrittenHead]:
        """The log entry and version record of commit ``version``, which writes the
        FileMeta ``meta_value`` (the record last: a store that writes a batch in
        order shows the version only with its log), and the head they make.

        ``head_id``: the new head's id (default: random); ``parent``: the id of
        the head it is built on (default: this writer's head's)."""
        log = self._log_keys.get(version % LOG_SLOTS)
        if log is None:
            log = self._log_keys[version % LOG_SLOTS] = log_key(self.layout, self.name, version)
        head_id = head_id if head_id is not None else os.urandom(HEAD_ID_BYTES)
        record = encode_version(self.key, version, meta_value, head_id)
        parent = parent if parent is not None else self.head.id
        entries = [(log, encode_log(log, version, changed, parent)), (self.key, record)]
        return entries, WrittenHead(version, head_id, record)


@dataclass(frozen=True)
class Refresh:
    """What a reader's file must do at the start of a read transaction."""

    #: Chunks to drop from the cache (``None``: every one).
    dropped: frozenset[int] | None
    meta_value: bytes | None
    #: The commit record of a staged commit in flight (read through it), or ``None``.
    record_value: bytes | None


class VersionPin:
    """A reader's pinned state of one database file (see the module docstring)."""

    def __init__(
        self,
        transport: StoreClient,
        layout: Layout,
        name: str,
        chunk_size: int,
        max_staleness: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.layout = layout
        self.name = name
        self.chunk_size = chunk_size
        self.max_staleness = max_staleness
        self._clock = clock
        self.version_key = version_key(layout, name)
        self.meta_key = layout.meta_key(name)
        self.record_key = record_key(layout, name)
        #: The version the cache holds (``None``: no version record, an unversioned writer).
        self.version: int | None = None
        #: The id of the head the cache holds (``None``: none, or a record without id).
        self.head_id: bytes | None = None
        self.record: bytes | None = None
        #: (head, commit record) pairs a read may meet and still be of the pinned state.
        self._accept: set[tuple[Head | None, bytes | None]] = {(None, None)}
        #: Grows whenever the pinned state changed: SQLite's page cache must go too.
        self.generation = 0
        self._checked_at: float | None = None
        self._must_check = True
        self._skip_next = False
        #: Chunks of the last :meth:`fetch` not of the pinned state (read ahead only, left out).
        self.left_out: set[int] = set()
        #: The values of the chunk keys the last :meth:`begin` read along.
        self.prefetched: list[bytes | None] = []

    # -- the state at open ---------------------------------------------------------

    def start(self, version_value: bytes | None, record_value: bytes | None) -> None:
        """The state the open read (in its one round trip): the cache holds it."""
        self._pin(read_head(version_value, self.version_key))
        self.record = record_value
        self._accept = {(self._head(), record_value)}
        self._checked_at = self._clock()  # the open's read counts as a check
        self._must_check = False

    def _pin(self, head: Head | None) -> None:
        self.version = head.number if head is not None else None
        self.head_id = head.id if head is not None else None

    def _head(self) -> Head | None:
        return Head(self.version, self.head_id) if self.version is not None else None

    def read_through(self, base_version: int | None, head_id: bytes | None = None) -> None:
        """The pinned state is a staged commit read through its record: reads may
        meet its base head with the record, or its own head with or without it.

        ``head_id``: the id its apply gives its head (the record's commit id); a
        head without id is met when a writer of the format without ids applies it."""
        if base_version is None:
            return
        record = self.record
        pinned = self._head()
        pinned_number = pinned.number if pinned is not None else 0
        self._accept = set()
        if pinned_number == base_version:  # the apply has not moved the version yet
            self._accept.add((pinned, record))
        for own in {Head(base_version + 1, head_id), Head(base_version + 1, None)}:
            self._accept |= {(own, record), (own, None)}
        self._pin(Head(base_version + 1, head_id))

    # -- the start of a read transaction ---------------------------------------------

    def must_check(self) -> None:
        """The next read transaction checks the version, whatever ``max_staleness`` allows."""
        self._must_check = True

    def skip_next_check(self) -> None:
        """The state was checked just now (waiting for a version): the next read
        transaction need not check again."""
        self._skip_next = True

    def begin(self, force: bool = False, chunk_keys: Sequence[bytes] = ()) -> Refresh | None:
        """Learn the current version (one ``get_batch``), unless checked within
        ``max_staleness``; what to drop, or ``None`` when nothing changed.

        ``chunk_keys`` are read in the same ``get_batch``, so their values
        (in :attr:`prefetched`, empty when nothing was read) are of the state
        pinned from here on: a reader whose read conflicted gets again what it
        needs without a second round trip for a commit to land in.
        """
        now = self._clock()
        self.prefetched = []
        if self._skip_next and not force:
            self._skip_next = False
            return None
        if (
            not force
            and not self._must_check
            and self._checked_at is not None
            and now - self._checked_at < self.max_staleness
        ):
            return None
        old = self.version
        old_id = self.head_id
        ahead = range(old + 1, old + 1 + LOGS_AHEAD) if old is not None else range(0)
        keys = [self.version_key, self.meta_key, self.record_key]
        keys += [log_key(self.layout, self.name, v) for v in ahead]
        values = self.transport.get_batch(keys + list(chunk_keys))
        self.prefetched = values[len(keys) :]
        values = values[: len(keys)]
        self._checked_at = now
        self._must_check = False
        meta, record = values[1], values[2]
        logs = dict(zip(ahead, values[3:]))
        head = read_head(values[0], self.version_key)
        dropped: frozenset[int] | None
        if values[0] is None or head is None or old is None or head.number < old:
            dropped = None  # no versions, or the store went back in time
        elif record is None and not version_holds(values[0], self.version_key, meta):
            dropped = None  # a writer that knows no versions changed the file
        elif head.number == old and head.id != old_id:
            dropped = None  # the same number on another branch: the store went back in time
        elif head.number == old and record == self.record:
            return None
        else:
            dropped = self._changes(old, head.number, logs)
        self._pin(head)
        self.record = record
        self._accept = {(head, record)}
        self.generation += 1
        return Refresh(dropped, meta, record)

    def _changes(self, old: int, new: int, logs: dict[int, bytes | None]) -> frozenset[int] | None:
        """The chunks commits ``old+1 .. new`` changed (``None``: unknown, or every
        one, or the first of them was not built on the pinned head: another branch)."""
        if new - old > LOG_SLOTS:
            return None
        wanted = [v for v in range(old + 1, new + 1) if v not in logs]
        if wanted:
            keys = [log_key(self.layout, self.name, v) for v in wanted]
            logs = {**logs, **dict(zip(wanted, self.transport.get_many(keys)))}
        changed: set[int] = set()
        for v in range(old + 1, new + 1):
            value = logs.get(v)
            if value is None:
                return None
            entry = read_log(value, log_key(self.layout, self.name, v), v)
            if entry is None or entry.changed is None:
                return None  # every chunk, or overwritten by a later commit: this reader fell behind
            if v == old + 1 and entry.parent is not None and entry.parent != (self.head_id or _NO_ID):
                return None  # built on another head than the pinned one: the store went back in time
            changed |= entry.changed
        return frozenset(changed)

    # -- reads inside a read transaction -------------------------------------------

    def fetch(
        self, keys: Sequence[bytes], indices: Sequence[int], needed: Collection[int] | None = None
    ) -> list[bytes | None]:
        """The values of chunk keys ``keys`` (chunk ``indices``), each ``get_batch``
        carrying the version and commit records along to prove what it read.

        ``needed``: the chunks the caller must have (default: all); the others
        are read ahead, and one that a commit since the pinned version changed
        is left out (listed in :attr:`left_out`) instead of failing the read.
        """
        most = self.transport.keys_per_read(self.chunk_size)
        step = max(1, most - 2) if most is not None else max(1, len(keys))
        out: list[bytes | None] = []
        self.left_out = set()
        for start in range(0, len(keys), step):
            batch = list(keys[start : start + step])
            values = self.transport.get_batch(batch + [self.version_key, self.record_key])
            part = indices[start : start + step]
            self._validate(values[-2], values[-1], part, part if needed is None else needed)
            out += values[:-2]
        return out

    def _validate(
        self,
        version_value: bytes | None,
        record: bytes | None,
        indices: Sequence[int],
        needed: Collection[int],
    ) -> None:
        head = read_head(version_value, self.version_key)
        if (head, record) in self._accept:
            return
        old = self.version
        now = head.number if head is not None else None
        self.must_check()
        if record is None and self.record is None and old is not None and now is not None and now > old:
            changed = self._changes(old, now, {})
            if changed is not None:
                stale = changed.intersection(indices)
                if stale.isdisjoint(needed):
                    self.left_out |= stale  # read ahead only: the commits since changed them
                    return
        raise ConflictError(
            f"a commit to {self.name!r} (version {now}) changed what this read transaction, "
            f"pinned at version {old}, still needed; retry the transaction"
        )

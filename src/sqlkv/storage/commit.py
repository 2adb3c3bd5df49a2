"""The commit protocol: how a file's buffered changes become one committed state.

A commit is: the chunks that changed, the new file size, and the range of old
chunks that are no longer part of the file (past a shrunken end).

**One batch.** When the store applies batches atomically and the whole commit
fits its limits (keys, bytes), it is one round trip: one ``write_batch``
(or ``put_batch``, plus ``delete_batch`` only when the file shrank, on a store
without ``write_batch``). The FileMeta is in the same batch as the chunks.

**Staged.** Otherwise (the store's limits, a store without atomic batches, or
a transaction whose changed chunks outgrew the memory bound and were spilled
while it ran) the commit takes four steps, each safe to interrupt:

1. *stage* the chunks under staging keys of their own, in batches; before
   each batch (in it, when batches are atomic) a *manifest piece* lists the
   chunk indices the batch holds, each with a digest of its staged bytes.
   Pieces are numbered 0, 1, 2, ...
2. *commit point*: one single-key put of the *commit record* (new size, the
   range of old chunks to drop, number of pieces). Once it is stored, the
   transaction is committed.
3. *apply*: copy every staged chunk into place, delete the old chunks past
   the new end, write the new FileMeta. Idempotent, so it can be redone.
   (Every chunk inside the new size that no longer holds committed bytes is
   staged, zeros included: see ``KvFile.sync``. So only chunks past the new
   end are ever deleted.)
4. *finish*: delete the commit record, then the staging keys, last piece first.

Opening a file calls :meth:`Committer.recover`: a commit record means a
commit was interrupted after its commit point, so it is applied and finished
(rolled forward); manifest pieces without a record mean one was interrupted
before it, so the staging keys are deleted (rolled back). Readers therefore
only ever see the old state or the new one. Any store whose single-key put is
atomic gets atomic commits of any size this way.

Every write here carries the fence the :class:`Committer` was given (the
writer's lease, see lease.py) when the store has ``write_batch``, so a writer
that lost its lease can neither commit nor disturb the staging area of the
writer that replaced it. It also expects the database's head (its version
record, see versions.py) to be the one this writer last wrote or read, so a
writer never commits on top of a state the store no longer has (the store
went back in time: a failover to a replica that was behind, a restored
backup): the write is refused whole and the commit raises
:class:`RewoundError`. Within a staged commit the head does not move until
its apply's last write, so its writes also expect what the write before them
left: staging writes and the commit point, no commit record in flight and
the last manifest piece written; every write of the apply, its commit record
and the chunks the write before it put; the clean-up, the record gone. A
restored copy (or a promoted replica) is the store at one moment of its past,
so each of these proves the writes it builds on are still there.

The store's limits are the transport's business
(:class:`~sqlkv.stores.contract.StoreClient`): this module says what to write, in what
order, and which writes must each be one atomic call.

**Checked before trusted.** A commit record and every manifest piece carry a
checksum over their key and content (BLAKE2b, 8 bytes), and a random commit
id ties the pieces to their record. Before recovery deletes or overwrites
anything on a record's word, the record's checksum, every field against the
file's real state (its FileMeta, the layout's 2^32 chunks) and every piece
are checked; any failure is :class:`CorruptError` naming the key, and nothing
is changed. So a garbled record can neither wipe a database nor make it
allocate or loop without bound. Every staged chunk read back (by the
transaction itself, by the apply step, by recovery, by a reader's view of an
interrupted commit) is checked against the digest its piece recorded, so a
chunk the store answers short or garbled is never moved into place: before
the commit point the transaction fails; after it the error says committed,
and the next open finishes the commit from the intact copy.

**Outcomes.** A failure of the write that commits (the one batch, or the
commit record) leaves the outcome unknown; any failure after it (the
store's, a lost lease, a damaged answer such as a garbled manifest piece)
leaves the transaction committed but not yet moved into place. Both are
:class:`OutcomeUnknownError` (with ``committed`` ``None`` or ``True``), never
a plain :class:`StoreError` or :class:`FencedError`, which say that nothing
of the transaction is visible.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import (
    ConcurrentCommitError,
    CorruptError,
    Error,
    FencedError,
    OutcomeUnknownError,
    RewoundError,
    StoreError,
    StoreLimitError,
)
from ..format.layout import (
    EXT_STAGED_CHUNK,
    EXT_STAGED_MANIFEST,
    MAX_CHUNKS,
    Layout,
    chunk_count,
    decode_file_meta,
    encode_file_meta,
    record_key,
)
from ..format.sealed import DIGEST_BYTES as _DIGEST_BYTES
from ..format.sealed import digest, seal, unseal
from ..stores.contract import Entry, StoreClient
from .lease import LeaseRequest
from .versions import VersionLog, WrittenHead, read_head

_log = logging.getLogger("sqlkv")

_INDEX = struct.Struct(">I")
_RECORD = struct.Struct(">4s8sQQQQ")
_RECORD_MAGIC = b"SKV2"
#: A record that names its base state (BaseState): version, size, digests of chunk 0.
_RECORD_MAGIC_BASED = b"SKV3"
_BASE = struct.Struct(">QQ8s8s")
_COMMIT_ID_BYTES = 8
#: What a manifest piece begins with when it lists a digest per chunk (see encode_piece).
_PIECE_MAGIC = b"SKP2"
#: One chunk a manifest piece lists: its index, and the digest of its staged bytes.
_LISTED = struct.Struct(">I8s")
#: Manifest pieces read per ``get_batch`` at most (fewer where they are long: see
#: ``Committer._piece_bytes``), whatever the store's batch limit.
_PIECES_PER_READ = 256
#: Pieces read per ``get_batch`` while how many there are is not known (discarding
#: a commit that has no record): rarely more, and never millions of absent keys.
_PIECES_PER_COUNT = 64


def _cause(exc: BaseException) -> BaseException:
    """What an :class:`OutcomeUnknownError` is caused by: the store's own
    exception behind a :class:`StoreError`, else ``exc`` itself."""
    return exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ is not None else exc


@dataclass(frozen=True)
class BaseState:
    """The state a staged commit was made on, named in its record (mixed writers).

    Recovery rolls the commit forward only onto this state (or the state its
    own apply step leads to); a writer that ignores sqlkv's keys (another
    implementation of the layout) may have committed over it, and rolling
    forward would then mix two states. Such a writer's every commit rewrites
    SQLite's header page (chunk 0: the file change counter, page count,
    freelist, schema cookie), so a digest of chunk 0 before the commit and in
    the commit tells its commits apart from this one's.
    """

    version: int  # the version record's version (0: none)
    size: int  # the FileMeta's file size
    first: bytes  # digest of chunk 0 before the commit (first_chunk_digest)
    new_first: bytes  # digest of the commit's own chunk 0

    def holds(self, record: CommitRecord, version: int, size: int, first: bytes) -> bool:
        """Whether the stored state is this one, or part way to the commit's own."""
        return (
            version in (self.version, self.version + 1)
            and size in (self.size, record.new_size)
            and first in (self.first, self.new_first)
        )


def first_chunk_digest(chunk: bytes | None) -> bytes:
    """The 8-byte digest of a file's chunk 0 that a :class:`BaseState` names."""
    return hashlib.blake2b(chunk or b"", digest_size=8).digest()


@dataclass(frozen=True)
class CommitRecord:
    """The commit point of a staged commit."""

    commit_id: bytes  # ties the manifest pieces to this record
    new_size: int
    first_gone: int  # old chunks from here ...
    old_chunks: int  # ... to here are dropped, unless staged anew
    pieces: int  # manifest pieces 0 .. pieces-1
    base: BaseState | None = None  # None: a record of an earlier sqlkv (format SKV2)

    def encode(self, key: bytes) -> bytes:
        base = self.base
        body = _RECORD.pack(
            _RECORD_MAGIC if base is None else _RECORD_MAGIC_BASED,
            self.commit_id,
            self.new_size,
            self.first_gone,
            self.old_chunks,
            self.pieces,
        )
        if base is not None:
            body += _BASE.pack(base.version, base.size, base.first, base.new_first)
        return seal(key, body)

    @classmethod
    def decode(cls, value: bytes, key: bytes) -> CommitRecord:
        sizes = (_RECORD.size + _DIGEST_BYTES, _RECORD.size + _BASE.size + _DIGEST_BYTES)
        if len(value) not in sizes:
            raise CorruptError(
                f"commit record at key {key.hex()} is {len(value)} bytes long, not "
                f"{sizes[0]} or {sizes[1]}: not one this version of sqlkv wrote; "
                "nothing was changed"
            )
        body = unseal(key, value, "commit record")
        magic, commit_id, new_size, first_gone, old_chunks, pieces = _RECORD.unpack_from(body)
        if magic not in (_RECORD_MAGIC, _RECORD_MAGIC_BASED) or (magic == _RECORD_MAGIC) != (
            len(body) == _RECORD.size
        ):
            raise CorruptError(f"commit record at key {key.hex()} has unknown magic {magic!r}")
        base = None
        if magic == _RECORD_MAGIC_BASED:
            base = BaseState(*_BASE.unpack_from(body, _RECORD.size))
        return cls(commit_id, new_size, first_gone, old_chunks, pieces, base)


def readable_record(value: bytes, key: bytes) -> bool:
    """Whether ``value`` stored at ``key`` reads as a commit record (for audits)."""
    try:
        CommitRecord.decode(value, key)
    except CorruptError:
        return False
    return True


def encode_piece(
    key: bytes, commit_id: bytes, indices: Iterable[int], digests: Iterable[bytes] | None = None
) -> bytes:
    """A manifest piece, sealed: which chunks its batch of staged chunks holds.

    With ``digests`` (what sqlkv writes): ``SKP2``, the commit id, then per
    chunk its index (u32be) and the 8-byte digest of its staged bytes (see
    :func:`staged_digest`). Without (what an earlier sqlkv wrote, kept for
    its interrupted commits and for tests): the commit id, then the indices.
    """
    if digests is None:
        return seal(key, commit_id + b"".join(_INDEX.pack(i) for i in indices))
    listed = b"".join(_LISTED.pack(i, d) for i, d in zip(indices, digests, strict=True))
    return seal(key, _PIECE_MAGIC + commit_id + listed)


def decode_piece(value: bytes, key: bytes, commit_id: bytes | None) -> list[tuple[int, bytes | None]]:
    """The chunks a manifest piece lists, checked (and its commit id, when known):
    each index with the digest of its staged bytes (``None``: a piece of an
    earlier sqlkv, which recorded none)."""
    body = unseal(key, value, "manifest piece")
    head = len(_PIECE_MAGIC) + _COMMIT_ID_BYTES
    digests = body[: len(_PIECE_MAGIC)] == _PIECE_MAGIC and len(body) > head and not (len(body) - head) % _LISTED.size
    if not digests:
        head = _COMMIT_ID_BYTES
        if len(body) <= head or (len(body) - head) % _INDEX.size:
            raise CorruptError(f"manifest piece at key {key.hex()} lists no whole chunk index")
    if commit_id is not None and body[head - _COMMIT_ID_BYTES : head] != commit_id:
        raise CorruptError(
            f"manifest piece at key {key.hex()} belongs to another commit than its commit record"
        )
    listed = memoryview(body)[head:]
    if digests:
        return [(i, bytes(d)) for i, d in _LISTED.iter_unpack(listed)]
    return [(i, None) for (i,) in _INDEX.iter_unpack(listed)]


def staged_digest(key: bytes, value: bytes) -> bytes:
    """The digest a manifest piece records of a chunk staged under ``key``: a
    chunk answered short or garbled when read back is told apart by it."""
    return digest(key, value)


def piece_key(layout: Layout, name: str, piece: int) -> bytes:
    """Where manifest piece ``piece`` of a staged commit of file ``name`` is kept."""
    return layout.ext_key(name, EXT_STAGED_MANIFEST, _INDEX.pack(piece))


def recovery_keys(layout: Layout, name: str) -> list[bytes]:
    """Keys to read at open that tell whether a commit of ``name`` was interrupted."""
    return [record_key(layout, name), piece_key(layout, name, 0)]


class StagedChunk(NamedTuple):
    """Where a chunk of a commit is staged, and the digest its manifest piece
    recorded of it (``None``: a piece of an earlier sqlkv, which recorded none)."""

    key: bytes
    digest: bytes | None

    def holds(self, value: bytes) -> bool:
        """Whether ``value``, read from :attr:`key`, is what was staged there
        (unknown, and so taken, for a piece that recorded no digest)."""
        return self.digest is None or staged_digest(self.key, value) == self.digest


class Staging:
    """The staging area of one file during one transaction: what was spilled so far."""

    def __init__(self) -> None:
        self.pieces = 0
        self.indices: set[int] = set()
        #: The digest of each staged chunk's bytes, as its last piece lists it.
        self.digests: dict[int, bytes] = {}
        self.commit_id = os.urandom(_COMMIT_ID_BYTES)
        #: The last manifest piece written: the commit point expects it still stored.
        self.last_piece: Entry | None = None

    def __bool__(self) -> bool:
        return self.pieces > 0


class Committer:
    """Writes commits of one database's files (see the module docstring)."""

    def __init__(
        self,
        transport: StoreClient,
        layout: Layout,
        chunk_size: int,
        fence: dict[bytes, bytes | None] | None = None,
        versions: VersionLog | None = None,
        lease: LeaseRequest | None = None,
    ) -> None:
        self.transport = transport
        #: The version record and log of the database file (see versions.py), if versioned.
        self.versions = versions
        self.layout = layout
        self.chunk_size = chunk_size
        #: What every write expects of the store: the writer's lease (``None``: no lease).
        self.fence = fence
        #: The writer's lease (whose fence is ``fence``): forgotten when the store went
        #: back to a state without it, so that the next open takes it again.
        self.lease = lease if fence is not None else None
        self.atomic = transport.limits.atomic_batches
        self.max_value = transport.limits.max_value_bytes
        #: Per-database constants, asked for at every commit: whether a write can be
        #: conditional, and each file's FileMeta key.
        self._conditional = transport.can_write_batch
        self._meta_keys: dict[str, bytes] = {}

    # -- keys ------------------------------------------------------------------

    def record_key(self, name: str) -> bytes:
        return record_key(self.layout, name)

    def piece_key(self, name: str, piece: int) -> bytes:
        return piece_key(self.layout, name, piece)

    def staged_key(self, name: str, index: int) -> bytes:
        return self.layout.ext_key(name, EXT_STAGED_CHUNK, _INDEX.pack(index))

    # -- the store calls, fenced -------------------------------------------------

    def expectations(self, more: dict[bytes, bytes | None] | None = None) -> dict[bytes, bytes | None] | None:
        """What a write expects of the store: the lease, the head this writer last
        wrote or read (where the store can make a write conditional), and ``more``."""
        if not self._conditional:
            return self.fence  # no conditional writes: nothing can be fenced
        expected = dict(self.fence) if self.fence else {}
        versions = self.versions
        if versions is not None:
            expected[versions.key] = versions.head.value
        if more:
            expected.update(more)
        return expected or None

    def write(
        self,
        puts: Sequence[Entry],
        deletes: Iterable[bytes] = (),
        expect: dict[bytes, bytes | None] | None = None,
        one_call: bool = False,
    ) -> None:
        """Write and delete, fenced (and expecting ``expect``), in as few calls as
        the store allows (see :meth:`StoreClient.write`); :class:`FencedError` if
        the lease failed, :class:`RewoundError` if the store's state is not the
        one this writer built on. ``one_call``: the caller knows they fit one
        atomic ``write_batch`` (a commit point), so it is made at once."""
        expected = self.expectations(expect)
        transport = self.transport
        if one_call:
            applied = transport.write_batch(puts, deletes, expected)
        else:
            applied = transport.write(puts, deletes, expected)
        if not applied:
            raise self._refused(expected or {})

    def check_state(self, more: dict[bytes, bytes | None] | None = None) -> None:
        """Raise what a write would be refused with now (:class:`FencedError`,
        :class:`RewoundError`), if anything: for a writer's read that found the
        store not as it left it (a chunk or a staged chunk gone). One round
        trip, on such an error path only."""
        expected = self.expectations(more)
        if not expected:
            return
        keys = list(expected)
        if any(value != expected[key] for key, value in zip(keys, self.transport.get_batch(keys))):
            raise self._refused(expected)

    def _refused(self, expected: dict[bytes, bytes | None]) -> FencedError:
        """Why a write was refused: the lease another writer took (:class:`FencedError`),
        or a store whose state is not the one this writer built on
        (:class:`RewoundError`). Reads what was expected again to tell."""
        lost = FencedError("commit refused: this writer no longer holds the database's lease")
        versions = self.versions
        if versions is None or versions.key not in expected:
            return lost
        keys = list(expected)
        try:
            found = dict(zip(keys, self.transport.get_batch(keys)))
        except StoreError:
            return lost  # which fence failed is unknown; either way the database reopens
        lease = self.fence or {}
        lease_held = all(found[key] == value for key, value in lease.items())
        # Absent: the store went back to before it was taken (or its taker let it go).
        lease_taken = any(found[key] is not None for key in lease) and not lease_held
        head_value = found[versions.key]
        try:
            head = read_head(head_value, versions.key)
        except CorruptError:
            head = None
        number = head.number if head is not None else 0
        request = self.lease
        if not lease_held and (
            (request is not None and request.fenced)  # fenced once: fenced until closed
            or number > versions.version  # another writer committed since
            or (lease_taken and head_value == versions.head.value)  # another writer holds it
        ):
            if request is not None:
                request.fenced = True
            return lost
        self._rewound(lease_held)
        return RewoundError(
            f"commit refused: the store's state is not the one this writer built on (it "
            f"committed or read version {versions.version}, the store holds version {number} "
            f"{'of the same head' if head_value == versions.head.value else 'of another head'}"
            f"{'' if lease_held else ' and not its lease'}): it went back in time or another "
            "branch was written. Nothing of the transaction was written; the database "
            "reopens at the store's state on the next call: retry the transaction then"
        )

    def _check_values(self, chunks: dict[int, bytes]) -> None:
        if self.max_value is None:
            return
        for index, value in chunks.items():
            if len(value) > self.max_value:
                raise StoreLimitError(
                    f"chunk {index} of {len(value)} bytes exceeds the store's largest value "
                    f"({self.max_value} bytes)"
                )

    def _versions_of(self, name: str) -> VersionLog | None:
        """The version log of ``name``, if it is the versioned database file."""
        versions = self.versions
        return versions if versions is not None and versions.name == name else None

    # -- committing ------------------------------------------------------------

    def commit(
        self,
        name: str,
        chunks: dict[int, bytes],
        new_size: int,
        first_gone: int,
        old_chunks: int,
        staging: Staging | None,
        base: Callable[[], tuple[int, bytes | None]] | None = None,
    ) -> None:
        """Make ``chunks`` (final values) and ``new_size`` the committed state of ``name``.

        Old chunks in ``[first_gone, old_chunks)`` not in ``chunks`` (nor staged)
        are dropped. ``staging`` holds what was spilled during the transaction.
        ``base``: the file's committed size and chunk 0 before this commit,
        asked for only by a staged commit's record.
        """
        if self.max_value is not None:
            self._check_values(chunks)
        layout = self.layout
        meta_key = self._meta_keys.get(name)
        if meta_key is None:
            meta_key = self._meta_keys[name] = layout.meta_key(name)
        meta = (meta_key, encode_file_meta(new_size))
        versions = self.versions
        if versions is not None and versions.name != name:  # _versions_of, inline
            versions = None
        if not staging:
            puts = list(zip(layout.chunk_keys(name, chunks), chunks.values()))
            puts.append(meta)
            head: WrittenHead | None = None
            if versions is not None:  # in the same batch: the version moves with the chunks
                entries, head = versions.entries(versions.version + 1, meta[1], chunks.keys())
                puts += entries
            deletes = (
                [layout.chunk_key(name, i) for i in range(first_gone, old_chunks) if i not in chunks]
                if first_gone < old_chunks
                else []
            )
            if self.transport.unbounded or self.transport.fits_one_write(puts, deletes):
                if self._conditional or not deletes:
                    self._commit_point(puts, deletes, one_call=True)
                else:  # put_batch commits; the delete_batch after it only cleans up
                    self._commit_point(puts, one_call=True)
                    with self._committed(f"FileMeta at key {meta[0].hex()}"):
                        self.write([], deletes)
                if versions is not None and head is not None:
                    versions.head = head
                return
        staging = staging if staging is not None else Staging()
        self.stage(name, staging, chunks)
        record = CommitRecord(
            staging.commit_id,
            new_size,
            first_gone,
            old_chunks,
            staging.pieces,
            self._base_state(name, chunks, staging, base) if versions is not None else None,
        )
        record_key = self.record_key(name)
        record_value = record.encode(record_key)
        self._commit_point([(record_key, record_value)], expect=self.staging_expectations(name, staging))
        base_version = record.base.version if record.base is not None else None
        with self._committed(
            f"commit record at key {record_key.hex()}", (record_key, record_value), base_version
        ):
            listed = self._apply(name, record, chunks, record_value)
            self._finish(name, record.pieces, listed)

    def _commit_point(
        self,
        puts: Sequence[Entry],
        deletes: Sequence[bytes] = (),
        expect: dict[bytes, bytes | None] | None = None,
        one_call: bool = False,
    ) -> None:
        """The write that commits: refused (FencedError, or a StoreLimitError the
        store raised before writing anything: nothing of it is visible), done, or
        failed with its outcome unknown. ``expect``: what it expects beyond the
        fence (a staged commit: its last manifest piece); ``one_call``: see :meth:`write`."""
        try:
            self.write(puts, deletes, expect, one_call)
        except (FencedError, StoreLimitError):
            raise  # refused before the store wrote anything: nothing of it is visible
        except StoreError as exc:
            raise OutcomeUnknownError(
                "commit outcome unknown: the store failed on the write that commits "
                f"({exc}); the store may have applied it. The next call reopens the "
                "database and shows which: look before retrying the transaction",
                committed=None,
            ) from _cause(exc)
        self.transport.stats.commits += 1

    def _rewound(self, lease_held: bool) -> None:
        """The store went back in time: if to before this writer's lease, the next open takes it again."""
        if not lease_held and self.lease is not None and not self.lease.fenced:
            self.lease.forget()

    def _rewound_past(self, record: Entry, base_version: int | None) -> bool:
        """After a staged commit's commit point: whether the store went back to before it
        (its record is gone, and the version was not moved past its base by the
        commit's apply or by the writer that finished it). One round trip, on
        this failure path only; ``False`` when it cannot be told."""
        versions = self.versions
        if versions is None or base_version is None:
            return False
        record_key, record_value = record
        lease = self.fence or {}
        try:
            stored, head_value, *held = self.transport.get_batch([record_key, versions.key, *lease])
            head = read_head(head_value, versions.key)
        except (StoreError, CorruptError):
            return False
        if stored == record_value or (head.number if head is not None else 0) > base_version:
            return False
        self._rewound(held == list(lease.values()))
        return True

    def _base_state(
        self,
        name: str,
        chunks: dict[int, bytes],
        staging: Staging,
        base: Callable[[], tuple[int, bytes | None]] | None,
    ) -> BaseState:
        """What a staged commit's record names as the state it was made on."""
        size, old_first = base() if base is not None else (0, None)
        first = chunks.get(0)
        if first is None and 0 in staging.indices:
            try:
                first = self.read_staged(name, [0], staging.digests)[0]
            except CorruptError:  # gone or changed: the store may have gone back in time
                self.check_state(self.staging_expectations(name, staging))
                raise
        version = self.versions.version if self.versions is not None else 0
        before = first_chunk_digest(old_first)
        return BaseState(version, size, before, first_chunk_digest(first) if first is not None else before)

    @contextmanager
    def _committed(
        self, commit_point: str, record: Entry | None = None, base_version: int | None = None
    ) -> Iterator[None]:
        """Around the steps after the commit point: their failure leaves the
        transaction committed, which the caller must hear; unless the store
        went back to before the commit point (see :meth:`_rewound_past`)."""
        try:
            yield
        except Error as exc:  # a store failure, a lost lease, a damaged answer: all alike
            if (
                isinstance(exc, (RewoundError, ConcurrentCommitError))
                and record is not None
                and self._rewound_past(record, base_version)
            ):
                raise RewoundError(
                    f"the store went back to before this transaction's commit point (its "
                    f"{commit_point} is gone and the version is not past the one it was made "
                    f"on): nothing of it is in the store. {exc}"
                ) from exc
            raise OutcomeUnknownError(
                f"the transaction is committed (its {commit_point} is stored), but this "
                f"writer could not finish it ({type(exc).__name__}: {exc}); the next open "
                "finishes it (or says what in the store keeps it from doing so). Do not "
                "retry the transaction",
                committed=True,
            ) from _cause(exc)

    def stage(self, name: str, staging: Staging, chunks: dict[int, bytes]) -> None:
        """Write ``chunks`` to the staging area (step 1); nothing becomes visible."""
        self._check_values(chunks)
        index_of = {self.staged_key(name, i): i for i in chunks}  # the key's index, not its bytes
        entries = list(zip(index_of, chunks.values()))
        piece_key_len = len(self.piece_key(name, 0))
        most = self.transport.limits.max_batch_keys or 1024
        head = len(_PIECE_MAGIC) + _COMMIT_ID_BYTES + _DIGEST_BYTES
        reserve_bytes = piece_key_len + head + _LISTED.size * most
        for batch in self.transport.entry_batches(entries, reserve_keys=1, reserve_bytes=reserve_bytes):
            indices = [index_of[k] for k, _ in batch]
            digests = [staged_digest(k, v) for k, v in batch]
            piece_key = self.piece_key(name, staging.pieces)
            piece = (piece_key, encode_piece(piece_key, staging.commit_id, indices, digests))
            expect = self.staging_expectations(name, staging)
            if self.atomic:
                self.write([piece, *batch], (), expect)
            else:
                self.write([piece], (), expect)  # the piece first: whatever lands of the batch is known
                self.write(batch, (), expect)
            staging.last_piece = piece
            staging.pieces += 1
            staging.indices.update(indices)
            staging.digests.update(zip(indices, digests))

    def _piece_bytes(self) -> int:
        """About how long a manifest piece is, to bound how many one read takes:
        it lists the chunks of one staged batch (see :meth:`stage`)."""
        listed = self.transport.keys_per_call(self.chunk_size)
        return len(_PIECE_MAGIC) + _COMMIT_ID_BYTES + _DIGEST_BYTES + _LISTED.size * listed

    def staging_expectations(self, name: str, staging: Staging) -> dict[bytes, bytes | None]:
        """What a write of a staged commit before its commit point expects beyond
        the fence: no commit record (none is in flight), and the last manifest
        piece written (a store gone back to between two staging writes, with the
        same head, must not take the rest of the commit)."""
        expect: dict[bytes, bytes | None] = {self.record_key(name): None}
        if staging.last_piece is not None:
            expect.update([staging.last_piece])
        return expect

    def drop_staged(self, name: str, staging: Staging, indices: Iterable[int]) -> None:
        """Forget staged chunks (the file shrank below them during the transaction)."""
        indices = [i for i in indices if i in staging.indices]
        self.write([], [self.staged_key(name, i) for i in indices], self.staging_expectations(name, staging))
        staging.indices.difference_update(indices)
        for i in indices:
            staging.digests.pop(i, None)

    def read_staged(
        self, name: str, indices: Sequence[int], digests: Mapping[int, bytes | None]
    ) -> dict[int, bytes]:
        """The staged chunks ``indices`` of ``name``, each checked (see
        :meth:`check_staged`) against its digest in ``digests``."""
        keys = [self.staged_key(name, i) for i in indices]
        values = self.transport.get_many(keys, self.chunk_size)
        return {
            i: self.check_staged(name, i, key, value, digests.get(i))
            for i, key, value in zip(indices, keys, values)
        }

    def check_staged(
        self, name: str, index: int, key: bytes, value: bytes | None, expected: bytes | None
    ) -> bytes:
        """A staged chunk of ``name`` as read back from ``key``: present, no longer
        than a chunk, and, where its manifest piece recorded a digest
        (``expected``), the very bytes that were staged. It may be shorter than
        a chunk (it is zero-padded when read or applied), so a short answer
        is told apart only by the digest. Else :class:`CorruptError` naming the key."""
        if value is not None and len(value) <= self.chunk_size and StagedChunk(key, expected).holds(value):
            return value
        if value is None:
            problem = "is missing"
        elif len(value) > self.chunk_size:
            problem = f"is {len(value)} bytes, longer than the chunk size {self.chunk_size}"
        else:
            problem = (
                f"was answered {len(value)} bytes long that fail the digest its manifest piece "
                "recorded (answered short or garbled, or damaged in the store)"
            )
        raise CorruptError(f"staged chunk {index} of {name!r} at key {key.hex()} {problem}")

    def _manifest(
        self, name: str, record: CommitRecord, record_value: bytes | None = None
    ) -> Iterator[list[tuple[int, bytes | None]]]:
        """The chunks each manifest piece of ``record`` lists (index, digest),
        checked, last piece first: a chunk staged again later in the
        transaction is listed again by a later piece, with the digest of the
        bytes its staging key holds, so the first listing seen is the one that counts.

        A missing piece (or one of another commit) is damage, unless the record
        itself changed meanwhile (``record_value``: the record as this open
        read or wrote it): then another writer finished the commit under it
        (this one lost its lease, or reads without one), or the store went
        back to before it.
        """
        pieces = record.pieces
        keys = (self.piece_key(name, p) for p in reversed(range(pieces)))
        record_key = self.record_key(name)
        reads = self.transport.read_lazily(keys, run=_PIECES_PER_READ, value_bytes=self._piece_bytes())
        for key, value in reads:
            try:
                if value is None:
                    raise CorruptError(
                        f"manifest piece at key {key.hex()} is missing, though the commit "
                        f"record at key {record_key.hex()} lists {pieces} pieces"
                    )
                listed = decode_piece(value, key, record.commit_id)
            except CorruptError:
                self._check_record(name, record_value)
                raise
            yield listed

    def _check_record(self, name: str, record_value: bytes | None) -> None:
        """Raise :class:`ConcurrentCommitError` if the commit record of ``name`` is no
        longer ``record_value`` (as this open read or wrote it): what a staged
        commit lists being gone is then no damage."""
        record_key = self.record_key(name)
        if record_value is not None and self.transport.get(record_key) != record_value:
            raise ConcurrentCommitError(
                f"a writer finished the commit of {name!r} (record at key "
                f"{record_key.hex()}) while this open read it, or the store went "
                "back to before it; reopen"
            )

    def verify(self, name: str, record_value: bytes, meta_value: bytes | None) -> CommitRecord:
        """The commit record of ``name``, checked against the file's real state.

        ``meta_value``: the file's FileMeta as stored. The record must be sealed
        for its key; within the layout's 2^32 chunks; say the file had as many
        chunks as its FileMeta does (unless the apply step already wrote the new
        FileMeta); and list pieces that exist and belong to it. Anything else is
        :class:`CorruptError` naming the key, before anything is changed.
        """
        key = self.record_key(name)
        record = self._decode_record(name, record_value)
        cs = self.chunk_size
        meta_key = self.layout.meta_key(name)
        size = decode_file_meta(meta_value, cs, meta_key) if meta_value is not None else 0
        new_chunks = chunk_count(record.new_size, cs)
        problem = None
        if max(new_chunks, record.old_chunks, record.pieces) > MAX_CHUNKS:
            problem = (
                f"gives new size {record.new_size}, {record.old_chunks} old chunks and "
                f"{record.pieces} pieces: beyond the layout's 2^32 chunks"
            )
        elif record.first_gone > min(record.old_chunks, new_chunks):
            problem = (
                f"drops chunks from {record.first_gone}, past the old ({record.old_chunks}) "
                f"or new ({new_chunks}) end of the file"
            )
        elif record.old_chunks != chunk_count(size, cs) and size != record.new_size:
            problem = (
                f"says the file had {record.old_chunks} chunks, but its FileMeta at key "
                f"{meta_key.hex()} gives {size} bytes"
            )
        if problem is not None:
            raise CorruptError(f"commit record at key {key.hex()} {problem}; nothing was changed")
        for _ in self._manifest(name, record, record_value):
            pass
        return record

    def _apply(
        self, name: str, record: CommitRecord, in_memory: dict[int, bytes], record_value: bytes
    ) -> list[list[int]]:
        """Step 3: copy staged chunks into place, drop old chunks past the new end, write FileMeta.

        Returns the chunk indices each manifest piece lists, by piece number
        (what :meth:`_finish` deletes)."""
        layout, cs = self.layout, self.chunk_size
        new_chunks = chunk_count(record.new_size, cs)
        # Every write of the apply is the commit's only while its record is stored,
        # and expects what the write before it put: a store gone back to between
        # two of them (same head, same record) refuses the rest.
        record_entry: dict[bytes, bytes | None] = {self.record_key(name): record_value}
        expect = record_entry
        changed: set[int] = set()
        by_piece: list[list[int]] = []
        for listed in self._manifest(name, record, record_value):
            by_piece.append([i for i, _ in listed])
            # Each chunk once, as the last piece listing it has it; none past the new end.
            wanted = {i: d for i, d in reversed(listed) if i < new_chunks and i not in changed}
            changed.update(wanted)
            missing = [i for i in wanted if i not in in_memory]
            try:
                staged = self.read_staged(name, missing, wanted) if missing else {}
            except CorruptError:  # gone or changed: no damage if the record went meanwhile
                self._check_record(name, record_value)
                raise
            entries = []
            for i in wanted:
                value = in_memory[i] if i in in_memory else staged[i]
                want = min(cs, record.new_size - i * cs)
                value = value[:want] if len(value) >= want else value + bytes(want - len(value))
                entries.append((layout.chunk_key(name, i), value))
            self.write(entries, (), expect)
            expect = {**record_entry, **dict(entries)}
        gone = range(max(record.first_gone, new_chunks), record.old_chunks)
        self.write([], (layout.chunk_key(name, i) for i in gone), expect)  # lazily: the range may be huge
        last: list[Entry] = []
        head: WrittenHead | None = None
        versions = self._versions_of(name)
        if versions is not None:  # the version moves with the FileMeta, once every chunk is in place
            version = (record.base.version if record.base is not None else versions.version) + 1
            # The head's id is the commit's: an apply done again writes the same head.
            if (versions.version, versions.head.id) != (version, record.commit_id):
                last, head = versions.entries(
                    version, encode_file_meta(record.new_size), changed, head_id=record.commit_id
                )
        self.write([*last, (layout.meta_key(name), encode_file_meta(record.new_size))], (), expect)
        if versions is not None and head is not None:
            versions.head = head
        by_piece.reverse()  # the manifest is read last piece first
        return by_piece

    def _finish(self, name: str, pieces: int, by_piece: list[list[int]]) -> None:
        """Step 4: the commit is complete once its record is gone; then its
        staging area goes (see :meth:`_delete_staging`). ``by_piece``: the
        chunk indices each piece lists, as the apply step read them: nothing
        is read again, so no answer here can fail a complete commit."""
        record_key = self.record_key(name)
        self.write([], [record_key])
        # A store gone back to before the record's delete must keep the pieces it lists.
        self._delete_staging(
            name,
            [(self.piece_key(name, p), listed) for p, listed in zip(range(pieces), by_piece, strict=True)],
            {record_key: None},
        )

    def _discard(self, name: str, pieces: int | None = None) -> None:
        """Delete the staging area of ``name``: pieces ``pieces-1`` down to 0
        (``None``: as many as are stored, numbered from 0), each after the
        chunks it lists. Every piece is read before the first delete.

        No commit record refers to what is deleted here (it was never written,
        was deleted, or is being discarded): it is garbage by definition. So a
        piece that fails its checks stops nothing: it is deleted, with a
        warning, and the staged chunks it listed, which it can no longer tell,
        are left to ``check --repair`` (which removes every staging key)."""
        numbers: Iterable[int] = range(pieces) if pieces is not None else itertools.count()
        run = _PIECES_PER_READ if pieces is not None else _PIECES_PER_COUNT
        keys = (self.piece_key(name, p) for p in numbers)
        listed: list[tuple[bytes, list[int]]] = []
        for key, value in self.transport.read_lazily(keys, run=run, value_bytes=self._piece_bytes()):
            if value is None and pieces is None:
                break
            indices: list[int] = []
            if value is not None:
                try:
                    indices = [i for i, _ in decode_piece(value, key, None)]
                except CorruptError as exc:
                    _log.warning(
                        "deleting manifest piece at key %s of %r, which belongs to no commit: %s; "
                        "the staged chunks it listed stay until `sqlkv check --repair` removes them",
                        key.hex(), name, exc,
                    )
            listed.append((key, indices))
        self._delete_staging(name, listed)

    def _delete_staging(
        self,
        name: str,
        listed: list[tuple[bytes, list[int]]],
        expect: dict[bytes, bytes | None] | None = None,
    ) -> None:
        """Delete each piece (key, the chunk indices it lists), last first, each
        after the staged chunks it lists: interrupted anywhere, what is left is
        pieces 0 to some k, each listing what is left of its chunks. Each write
        expects ``expect`` too."""
        for key, indices in reversed(listed):
            staged = [self.staged_key(name, i) for i in indices]
            if self.transport.fits_one_write((), [*staged, key]):
                self.write([], [*staged, key], expect)
            else:  # the piece only after every chunk it lists is gone
                self.write([], staged, expect)
                self.write([], [key], expect)

    # -- recovery at open --------------------------------------------------------

    def recover(
        self,
        name: str,
        record_value: bytes | None,
        piece0: bytes | None,
        meta_value: bytes | None,
        first_chunk: bytes | None = None,
        discard_unreadable: bool = False,
    ) -> bool:
        """Finish (roll forward) or discard (roll back) an interrupted commit of ``name``.

        ``meta_value`` is the file's FileMeta as stored, to check the record
        against (see :meth:`verify`); ``first_chunk`` its chunk 0 as stored.
        A record that names a base state the store no longer holds (another
        implementation wrote over it, see :class:`BaseState`) is discarded,
        and the discard logged. Pieces without a record are discarded, even
        garbled ones (see :meth:`_discard`).

        A record that cannot be read (it fails its checksum, or is not a
        record at all) cannot be told from the record of a committed
        transaction: it is :class:`CorruptError` naming the key and the way
        out, unless ``discard_unreadable`` (``check --repair``): then it is
        discarded with its staging area, once a second read gives the same
        bytes (a damaged answer is not a damaged record), and the discard logged.
        Returns whether anything was done, so the caller re-reads the file.
        """
        if record_value is not None:
            try:
                self._decode_record(name, record_value)
            except CorruptError:
                if not discard_unreadable:
                    raise
                self._discard_unreadable(name, record_value)
                return True
            if not self.record_applies(name, record_value, meta_value, first_chunk):
                self.write([], [self.record_key(name)])
                self._discard(name)
                return True
            record = self.verify(name, record_value, meta_value)
            listed = self._apply(name, record, {}, record_value)
            self._finish(name, record.pieces, listed)
            return True
        if piece0 is not None:
            self._discard(name)
            return True
        return False

    def _decode_record(self, name: str, record_value: bytes) -> CommitRecord:
        """The commit record of ``name``, decoded; if it cannot be, a
        :class:`CorruptError` that names its key and says how to discard it."""
        key = self.record_key(name)
        try:
            return CommitRecord.decode(record_value, key)
        except CorruptError as exc:
            raise CorruptError(
                f"{exc}. It cannot be told from the record of a committed transaction not yet "
                f"moved into place, so it is neither finished nor discarded, and {name!r} cannot "
                "be written until `sqlkv check --repair` (check_database(..., repair=True)) "
                "discards it, and with it the transaction it records, if that was committed"
            ) from exc

    def _discard_unreadable(self, name: str, record_value: bytes) -> None:
        """Discard a commit record that cannot be read, and its staging area (repair)."""
        key = self.record_key(name)
        if self.transport.get(key) != record_value:
            raise CorruptError(
                f"commit record at key {key.hex()} of {name!r} was answered differently by two "
                "reads: the store's answers, not the record, may be damaged; nothing was discarded"
            )
        _log.warning(
            "discarding the unreadable commit record at key %s of %r and its staging area; the "
            "transaction it recorded, if it was committed, is lost", key.hex(), name,
        )
        self.write([], [key])
        self._discard(name)

    def record_applies(
        self, name: str, record_value: bytes, meta_value: bytes | None, first_chunk: bytes | None
    ) -> bool:
        """Whether the store still holds the state the staged commit of
        ``record_value`` was made on (always, for a record naming none)."""
        key = self.record_key(name)
        record = self._decode_record(name, record_value)
        base = record.base
        if base is None:
            return True
        meta_key = self.layout.meta_key(name)
        size = decode_file_meta(meta_value, self.chunk_size, meta_key) if meta_value is not None else 0
        version = self.versions.version if self.versions is not None else 0
        first = first_chunk_digest(first_chunk)
        if base.holds(record, version, size, first):
            return True
        _log.warning(
            "discarding the staged commit of %r (record at key %s): it was made on version %d, "
            "size %d, chunk 0 digest %s, but the store holds version %d, size %d, chunk 0 digest "
            "%s (another writer committed over it); that transaction was never acknowledged",
            name, key.hex(), base.version, base.size, base.first.hex(), version, size, first.hex(),
        )
        return False

    def pending_record(
        self, name: str, record_value: bytes, meta_value: bytes | None
    ) -> tuple[CommitRecord, dict[int, StagedChunk]]:
        """For a read-only open: the interrupted commit's state, without writing.

        Returns the record (checked as :meth:`verify` does) and, per chunk
        index, where its new value is staged and the digest to check it by.
        """
        record = self.verify(name, record_value, meta_value)
        overlay: dict[int, StagedChunk] = {}
        for listed in self._manifest(name, record, record_value):
            for i, expected in reversed(listed):
                if i not in overlay:  # the last piece listing a chunk has its digest
                    overlay[i] = StagedChunk(self.staged_key(name, i), expected)
        return record, overlay

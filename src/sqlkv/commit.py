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
   chunk indices the batch holds. Pieces are numbered 0, 1, 2, ...
2. *commit point*: one single-key put of the *commit record* (new size, the
   range of old chunks to drop, number of pieces). Once it is stored, the
   transaction is committed.
3. *apply*: delete the dropped range, copy every staged chunk into place,
   write the new FileMeta. Idempotent, so it can be redone.
4. *finish*: delete the commit record, then the staging keys, last piece first.

Opening a file calls :meth:`Committer.recover`: a commit record means a
commit was interrupted after its commit point, so it is applied and finished
(rolled forward); manifest pieces without a record mean one was interrupted
before it, so the staging keys are deleted (rolled back). Readers therefore
only ever see the old state or the new one. Any store whose single-key put is
atomic gets atomic commits of any size this way.

Every write here carries the storage's fence (writer lease) when the store has
``write_batch``, so a writer that lost its lease can neither commit nor
disturb the staging area of the writer that replaced it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from .errors import CorruptError, FencedError, StoreLimitError
from .layout import (
    EXT_COMMIT_RECORD,
    EXT_STAGED_CHUNK,
    EXT_STAGED_MANIFEST,
    Layout,
    encode_file_meta,
)
from .store import StoreClient

_INDEX = struct.Struct(">I")
_RECORD = struct.Struct(">4sQQQQ")
_RECORD_MAGIC = b"SKVc"

Entry = tuple[bytes, bytes]


@dataclass(frozen=True)
class CommitRecord:
    """The commit point of a staged commit."""

    new_size: int
    first_gone: int  # old chunks from here ...
    old_chunks: int  # ... to here are dropped, unless staged anew
    pieces: int  # manifest pieces 0 .. pieces-1

    def encode(self) -> bytes:
        return _RECORD.pack(_RECORD_MAGIC, self.new_size, self.first_gone, self.old_chunks, self.pieces)

    @classmethod
    def decode(cls, value: bytes, key: bytes) -> "CommitRecord":
        if len(value) != _RECORD.size or value[:4] != _RECORD_MAGIC:
            raise CorruptError(f"commit record at key {key.hex()} is not one sqlkv wrote")
        _, new_size, first_gone, old_chunks, pieces = _RECORD.unpack(value)
        return cls(new_size, first_gone, old_chunks, pieces)


def encode_indices(indices: Iterable[int]) -> bytes:
    return b"".join(_INDEX.pack(i) for i in indices)


def decode_indices(value: bytes, key: bytes) -> list[int]:
    if len(value) % 4:
        raise CorruptError(f"manifest piece at key {key.hex()} has a length not a multiple of 4")
    return [i for (i,) in _INDEX.iter_unpack(value)]


class Staging:
    """The staging area of one file during one transaction: what was spilled so far."""

    def __init__(self) -> None:
        self.pieces = 0
        self.indices: set[int] = set()

    def __bool__(self) -> bool:
        return self.pieces > 0


class Committer:
    """Writes commits of one database's files (see the module docstring)."""

    def __init__(
        self,
        client: StoreClient,
        layout: Layout,
        chunk_size: int,
        fence: Callable[[], dict[bytes, bytes | None] | None],
    ) -> None:
        self.client = client
        self.layout = layout
        self.chunk_size = chunk_size
        self._fence = fence
        limits = client.limits
        self.atomic = limits.atomic_batches
        self.max_keys = limits.max_batch_keys
        self.max_bytes = limits.max_batch_bytes
        self.max_value = limits.max_value_bytes

    # -- keys ------------------------------------------------------------------

    def record_key(self, name: str) -> bytes:
        return self.layout.ext_key(name, EXT_COMMIT_RECORD)

    def piece_key(self, name: str, piece: int) -> bytes:
        return self.layout.ext_key(name, EXT_STAGED_MANIFEST, _INDEX.pack(piece))

    def staged_key(self, name: str, index: int) -> bytes:
        return self.layout.ext_key(name, EXT_STAGED_CHUNK, _INDEX.pack(index))

    # -- the store calls, fenced -------------------------------------------------

    def write(self, puts: Sequence[Entry], deletes: Sequence[bytes] = ()) -> None:
        """One store call (two on a store without write_batch that must also delete)."""
        fence = self._fence()
        if self.client.can_write_batch:
            if not self.client.write_batch(puts, deletes, fence):
                raise FencedError(
                    "commit refused: this writer no longer holds the database's lease"
                )
        else:
            self.client.put_batch(puts)
            self.client.delete_batch(deletes)

    def _batches(self, entries: Sequence[Entry], reserve_keys: int = 0, reserve_bytes: int = 0) -> Iterator[list[Entry]]:
        """Split ``entries`` into runs that fit one batch, leaving room for reserved keys."""
        max_keys = None if self.max_keys is None else max(1, self.max_keys - reserve_keys)
        max_bytes = None if self.max_bytes is None else self.max_bytes - reserve_bytes
        batch: list[Entry] = []
        nbytes = 0
        for key, value in entries:
            size = len(key) + len(value)
            if batch and (
                (max_keys is not None and len(batch) >= max_keys)
                or (max_bytes is not None and nbytes + size > max_bytes)
            ):
                yield batch
                batch, nbytes = [], 0
            batch.append((key, value))
            nbytes += size
        if batch:
            yield batch

    def key_batches(self, keys: Sequence[bytes]) -> Iterator[list[bytes]]:
        step = self.max_keys or max(1, len(keys))
        for start in range(0, len(keys), step):
            yield list(keys[start : start + step])

    def fits_one_batch(self, puts: Sequence[Entry], deletes: Sequence[bytes]) -> bool:
        if not self.atomic:
            return False
        with_deletes = self.client.can_write_batch
        keys = len(puts) + (len(deletes) if with_deletes else 0)
        if self.max_keys is not None and (keys > self.max_keys or len(deletes) > self.max_keys):
            return False
        if self.max_bytes is not None:
            nbytes = sum(len(k) + len(v) for k, v in puts)
            if with_deletes:
                nbytes += sum(len(k) for k in deletes)
            if nbytes > self.max_bytes:
                return False
        return True

    def _check_values(self, chunks: dict[int, bytes]) -> None:
        if self.max_value is None:
            return
        for index, value in chunks.items():
            if len(value) > self.max_value:
                raise StoreLimitError(
                    f"chunk {index} of {len(value)} bytes exceeds the store's largest value "
                    f"({self.max_value} bytes)"
                )

    # -- committing ------------------------------------------------------------

    def commit(
        self,
        name: str,
        chunks: dict[int, bytes],
        new_size: int,
        first_gone: int,
        old_chunks: int,
        staging: Staging | None,
    ) -> None:
        """Make ``chunks`` (final values) and ``new_size`` the committed state of ``name``.

        Old chunks in ``[first_gone, old_chunks)`` not in ``chunks`` (nor staged)
        are dropped. ``staging`` holds what was spilled during the transaction.
        """
        self._check_values(chunks)
        layout = self.layout
        meta = (layout.meta_key(name), encode_file_meta(new_size))
        if not staging:
            puts = [(layout.chunk_key(name, i), v) for i, v in chunks.items()]
            puts.append(meta)
            deletes = [layout.chunk_key(name, i) for i in range(first_gone, old_chunks) if i not in chunks]
            if self.fits_one_batch(puts, deletes):
                self.write(puts, deletes)
                self.client.stats.commits += 1
                return
        staging = staging if staging is not None else Staging()
        self.stage(name, staging, chunks)
        record = CommitRecord(new_size, first_gone, old_chunks, staging.pieces)
        self.write([(self.record_key(name), record.encode())])
        self.client.stats.commits += 1
        self._apply(name, record, chunks)
        self._finish(name, record.pieces)

    def stage(self, name: str, staging: Staging, chunks: dict[int, bytes]) -> None:
        """Write ``chunks`` to the staging area (step 1); nothing becomes visible."""
        self._check_values(chunks)
        entries = [(self.staged_key(name, i), v) for i, v in chunks.items()]
        piece_key_len = len(self.piece_key(name, 0))
        reserve_bytes = piece_key_len + 4 * (self.max_keys or 1024)
        for batch in self._batches(entries, reserve_keys=1, reserve_bytes=reserve_bytes):
            indices = [_INDEX.unpack(k[-4:])[0] for k, _ in batch]
            piece = (self.piece_key(name, staging.pieces), encode_indices(indices))
            if self.atomic:
                self.write([piece, *batch])
            else:
                self.write([piece])  # the piece first: whatever lands of the batch is known
                self.write(batch)
            staging.pieces += 1
            staging.indices.update(indices)

    def drop_staged(self, name: str, staging: Staging, indices: Iterable[int]) -> None:
        """Forget staged chunks (the file shrank below them during the transaction)."""
        indices = [i for i in indices if i in staging.indices]
        for batch in self.key_batches([self.staged_key(name, i) for i in indices]):
            self.write([], batch)
        staging.indices.difference_update(indices)

    def read_staged(self, name: str, indices: Sequence[int]) -> dict[int, bytes | None]:
        """The staged values of ``indices`` (``None`` where not staged)."""
        out: dict[int, bytes | None] = {}
        for batch in self.key_batches([self.staged_key(name, i) for i in indices]):
            values = self.client.get_batch(batch)
            out.update(zip((_INDEX.unpack(k[-4:])[0] for k in batch), values))
        return out

    def _manifest(self, name: str, pieces: int) -> Iterator[list[int]]:
        step = self.max_keys or max(1, pieces)
        for start in range(0, pieces, step):
            keys = [self.piece_key(name, p) for p in range(start, min(pieces, start + step))]
            for key, value in zip(keys, self.client.get_batch(keys)):
                if value is None:
                    raise CorruptError(f"manifest piece at key {key.hex()} is missing")
                yield decode_indices(value, key)

    def _apply(self, name: str, record: CommitRecord, in_memory: dict[int, bytes]) -> None:
        """Step 3: drop the old range, copy staged chunks into place, write FileMeta."""
        layout, cs = self.layout, self.chunk_size
        new_chunks = -(-record.new_size // cs)
        gone = [layout.chunk_key(name, i) for i in range(record.first_gone, record.old_chunks)]
        for batch in self.key_batches(gone):
            self.write([], batch)
        for indices in self._manifest(name, record.pieces):
            indices = [i for i in dict.fromkeys(indices) if i < new_chunks]
            missing = [i for i in indices if i not in in_memory]
            staged = self.read_staged(name, missing) if missing else {}
            entries = []
            for i in indices:
                value = in_memory[i] if i in in_memory else staged[i]
                if value is None:
                    continue  # dropped from staging before the commit point
                want = min(cs, record.new_size - i * cs)
                value = value[:want] if len(value) >= want else value + bytes(want - len(value))
                entries.append((layout.chunk_key(name, i), value))
            for batch in self._batches(entries):
                self.write(batch)
        self.write([(layout.meta_key(name), encode_file_meta(record.new_size))])

    def _finish(self, name: str, pieces: int) -> None:
        """Step 4: the commit is complete once its record is gone; then clean staging."""
        self.write([], [self.record_key(name)])
        self._discard(name, pieces)

    def _discard(self, name: str, pieces: int) -> None:
        """Delete staging pieces ``pieces-1`` down to 0, each after the chunks it lists."""
        keys = [self.piece_key(name, p) for p in range(pieces)]
        values = {}
        for batch in self.key_batches(keys):
            values.update(zip(batch, self.client.get_batch(batch)))
        for piece in reversed(range(pieces)):
            key = keys[piece]
            value = values.get(key)
            staged = [self.staged_key(name, i) for i in decode_indices(value, key)] if value else []
            if self.atomic and (self.max_keys is None or len(staged) < self.max_keys):
                self.write([], [*staged, key])
            else:
                for batch in self.key_batches(staged):
                    self.write([], batch)
                self.write([], [key])

    # -- recovery at open --------------------------------------------------------

    def recovery_keys(self, name: str) -> list[bytes]:
        """Keys to read at open that tell whether a commit of ``name`` was interrupted."""
        return [self.record_key(name), self.piece_key(name, 0)]

    def recover(self, name: str, record_value: bytes | None, piece0: bytes | None) -> bool:
        """Finish (roll forward) or discard (roll back) an interrupted commit of ``name``.

        Returns whether anything was done, so the caller re-reads the file.
        """
        if record_value is not None:
            record = CommitRecord.decode(record_value, self.record_key(name))
            self._apply(name, record, {})
            self._finish(name, record.pieces)
            return True
        if piece0 is not None:
            self._discard(name, self._count_pieces(name))
            return True
        return False

    def pending_record(self, name: str, record_value: bytes) -> tuple[CommitRecord, dict[int, bytes]]:
        """For a read-only open: the interrupted commit's state, without writing.

        Returns the record and, per chunk index, the staging key of its new value.
        """
        record = CommitRecord.decode(record_value, self.record_key(name))
        overlay = {}
        for indices in self._manifest(name, record.pieces):
            for i in indices:
                overlay[i] = self.staged_key(name, i)
        return record, overlay

    def _count_pieces(self, name: str) -> int:
        count = 0
        step = self.max_keys or 64
        while True:
            keys = [self.piece_key(name, p) for p in range(count, count + step)]
            values = self.client.get_batch(keys)
            for value in values:
                if value is None:
                    return count
                count += 1

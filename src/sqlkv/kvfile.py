"""One file (a database, or a journal beside it) living in the store as chunks.

A :class:`KvFile` offers what SQLite asks of a file: read, write, truncate,
size, and :meth:`KvFile.sync`, which commits every change since the last
commit through the storage's :class:`~sqlkv.commit.Committer` (one atomic
round trip when the store allows). Until then the store only ever holds
committed states.

The current bytes of chunk ``i`` are, in order of precedence: its buffered
write (``dirty``), its spilled copy in the staging area (a transaction whose
changes outgrew the memory bound), its committed value (cache, then store),
or zeros. Every cache miss fetches its chunks and some read-ahead in one
``get_batch``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .chunkcache import ChunkCache, ReadAhead
from .commit import Staging
from .errors import CorruptError, UnusableError
from .layout import decode_file_meta

if TYPE_CHECKING:
    from .storage import Storage


class KvFile:
    """A file's bytes over fixed-size chunks in the store (see the module docstring)."""

    def __init__(self, storage: "Storage", name: str, meta_value: bytes | None) -> None:
        self.storage = storage
        self.committer = storage.committer
        self.name = name
        self.chunk_size = cs = storage.chunk_size
        layout = storage.layout
        self.meta_key = layout.meta_key(name)
        self._chunk_keys = lambda indices: layout.chunk_keys(name, indices)
        self._chunk_key = lambda index: layout.chunk_key(name, index)
        self.exists = meta_value is not None
        self.committed_size = (
            decode_file_meta(meta_value, cs, self.meta_key) if meta_value is not None else 0
        )
        self.size = self.committed_size
        # Lowest size the file had since the last commit: chunks wholly past it
        # no longer hold committed bytes (they read as zeros unless rewritten).
        self._low_water = self.committed_size
        self.dirty: dict[int, bytes | bytearray] = {}
        self.staging = Staging()
        self._max_dirty_chunks = max(1, storage.max_dirty_bytes // cs)
        self.cache = ChunkCache(storage.cache_bytes)
        self.read_ahead = ReadAhead(storage.max_read_chunks)
        self.failed: BaseException | None = None
        # Read-only view of an interrupted commit: chunk index -> staging key.
        self._overlay: dict[int, bytes] = {}

    def view_pending_commit(self, new_size: int, first_gone: int, overlay: dict[int, bytes]) -> None:
        """Read-only: show the state an interrupted (committed) commit leads to."""
        self.committed_size = self.size = new_size
        self._low_water = min(new_size, first_gone * self.chunk_size)
        self._overlay = overlay
        self.exists = True

    # -- where a chunk's bytes are ---------------------------------------------

    def _check(self) -> None:
        if self.failed is not None:
            raise UnusableError(
                f"file {self.name!r} is unusable after a store failure; the database reopens it"
            ) from self.failed

    def _has_committed_bytes(self, index: int) -> bool:
        """Whether chunk ``index`` may hold committed bytes that are still part of the file."""
        return index in self._overlay or index * self.chunk_size < min(
            self.committed_size, self._low_water
        )

    def _checked(self, index: int, value: bytes | None) -> bytes:
        """A chunk value from the store, checked; a missing chunk reads as zeros."""
        if value is None:
            return b""
        if len(value) > self.chunk_size:
            raise CorruptError(
                f"chunk {index} of {self.name!r} is {len(value)} bytes, longer than the "
                f"chunk size {self.chunk_size}"
            )
        return value

    def prefetched(self, values: dict[int, bytes | None]) -> None:
        """Take chunks read ahead of time (at open) into the cache."""
        for i, value in values.items():
            if self._has_committed_bytes(i) and i not in self._overlay:
                self.cache.put(i, self._checked(i, value))

    def _fetch(self, missing: list[int]) -> dict[int, bytes]:
        """Fetch committed chunks ``missing``, with read-ahead, in as few round trips as allowed."""
        self.storage.stats.cache_misses += len(missing)
        out: dict[int, bytes] = {}
        overlaid = [i for i in missing if i in self._overlay]
        if overlaid:
            values = self.storage.client.get_batch([self._overlay[i] for i in overlaid])
            out.update((i, self._checked(i, v)) for i, v in zip(overlaid, values))
            missing = [i for i in missing if i not in self._overlay]
            if not missing:
                return out
        file_chunks = -(-self.committed_size // self.chunk_size)
        fits = self.committed_size <= self.cache.capacity
        wanted = dict.fromkeys(missing)
        for i in self.read_ahead.plan(missing[0], file_chunks, fits):
            if (
                i not in wanted
                and i not in self.cache
                and i not in self.dirty
                and i not in self.staging.indices
                and i not in self._overlay
                and self._has_committed_bytes(i)
            ):
                wanted[i] = None
        indices = list(wanted)
        step = self.storage.max_read_chunks
        for start in range(0, len(indices), step):
            part = indices[start : start + step]
            values = self.storage.client.get_batch(self._chunk_keys(part))
            for i, value in zip(part, values):
                value = self._checked(i, value)
                self.cache.put(i, value)
                if i in wanted:
                    out[i] = value
        return out

    def _load(self, indices) -> dict[int, bytes]:
        """The current bytes of every chunk in ``indices`` that is not buffered; one fetch per kind."""
        out: dict[int, bytes] = {}
        missing = []
        staged = []
        cache = self.cache
        for i in indices:
            if i in self.dirty:
                continue
            if i in self.staging.indices:
                staged.append(i)
                continue
            if not self._has_committed_bytes(i):
                continue
            chunk = cache.get(i)
            if chunk is None:
                missing.append(i)
            else:
                out[i] = chunk
        self.storage.stats.cache_hits += len(out)
        if staged:
            for i, value in self.committer.read_staged(self.name, staged).items():
                out[i] = self._checked(i, value)
        if missing:
            out.update(self._fetch(missing))
        return out

    def _chunk(self, index: int, loaded: dict[int, bytes]) -> bytes | bytearray:
        chunk = self.dirty.get(index)
        if chunk is not None:
            return chunk
        return loaded.get(index, b"")

    def _current(self, indices: list[int]) -> dict[int, bytes | bytearray]:
        loaded = self._load(indices)
        return {i: self._chunk(i, loaded) for i in indices}

    # -- what SQLite asks of a file ---------------------------------------------

    def read(self, amount: int, offset: int) -> bytes:
        """Up to ``amount`` bytes at ``offset``; fewer at the end of the file."""
        self._check()
        end = min(offset + amount, self.size)
        if offset >= end:
            return b""
        cs = self.chunk_size
        first, last = offset // cs, (end - 1) // cs
        loaded = self._load(range(first, last + 1))
        if first == last:
            chunk = self._chunk(first, loaded)
            start = offset - first * cs
            data = bytes(chunk[start : start + (end - offset)])
        else:
            parts = []
            for i in range(first, last + 1):
                chunk = self._chunk(i, loaded)
                lo = max(offset, i * cs) - i * cs
                hi = min(end, (i + 1) * cs) - i * cs
                part = chunk[lo:hi]
                if len(part) < hi - lo and i != last:
                    part = bytes(part) + bytes(hi - lo - len(part))
                parts.append(part)
            data = b"".join(parts)
        if len(data) < end - offset:  # a short or missing chunk inside the file reads as zeros
            data += bytes(end - offset - len(data))
        return data

    def read_all(self) -> bytes:
        """The whole file, fetched in as few round trips as the store's batch limits allow.

        For an engine that loads a whole image at once (backend ``snapshot``):
        chunks buffered or cached are used as they are, the others are fetched
        without the read-ahead cap, and are not cached (a whole-file read would
        only push out what the cache holds). Short or missing chunks read as zeros.
        """
        self._check()
        cs = self.chunk_size
        count = -(-self.size // cs)
        loaded: dict[int, bytes] = {}
        wanted: dict[int, bytes] = {}  # chunk index -> the key its current bytes are under
        for i in range(count):
            if i in self.dirty:
                continue
            if i in self.staging.indices:
                wanted[i] = self.committer.staged_key(self.name, i)
            elif i in self._overlay:
                wanted[i] = self._overlay[i]
            elif self._has_committed_bytes(i):
                chunk = self.cache.get(i)
                if chunk is None:
                    wanted[i] = self._chunk_key(i)
                else:
                    loaded[i] = chunk
        stats = self.storage.stats
        stats.cache_hits += len(loaded)
        stats.cache_misses += len(wanted)
        indices = list(wanted)
        step = self.storage.max_batch_chunks or len(indices) or 1
        for start in range(0, len(indices), step):
            part = indices[start : start + step]
            values = self.storage.client.get_batch([wanted[i] for i in part])
            for i, value in zip(part, values):
                loaded[i] = self._checked(i, value)
        parts = []
        for i in range(count):
            chunk = self._chunk(i, loaded)
            want = min(cs, self.size - i * cs)
            parts.append(chunk[:want] if len(chunk) >= want else bytes(chunk) + bytes(want - len(chunk)))
        return b"".join(parts)

    def write(self, data: bytes, offset: int) -> None:
        """Buffer ``data`` at ``offset``; nothing becomes visible before :meth:`sync`."""
        self._check()
        cs = self.chunk_size
        end = offset + len(data)
        first, last = offset // cs, (end - 1) // cs
        # Chunks the write covers only in part need their current bytes first.
        partial = []
        for i in range(first, last + 1):
            start = i * cs
            kept_end = min(start + cs, self.size)
            if i not in self.dirty and (i in self.staging.indices or self._has_committed_bytes(i)):
                if offset > start or end < kept_end:
                    partial.append(i)
        base = self._current(partial) if partial else {}
        for i in range(first, last + 1):
            start = i * cs
            lo, hi = max(offset, start), min(end, start + cs)
            piece = data[lo - offset : hi - offset]
            if lo == start and hi == start + cs:
                self.dirty[i] = piece if type(piece) is bytes else bytes(piece)
                continue
            chunk = base[i] if i in base else self.dirty.get(i, b"")
            if type(chunk) is not bytearray:
                chunk = bytearray(chunk)
            if len(chunk) < lo - start:
                chunk.extend(bytes(lo - start - len(chunk)))
            chunk[lo - start : hi - start] = piece
            self.dirty[i] = chunk
        if end > self.size:
            self.size = end
        if len(self.dirty) > self._max_dirty_chunks:
            self._spill()

    def _spill(self) -> None:
        """Move the buffered chunks to the staging area: memory stays within the bound."""
        try:
            self.committer.stage(self.name, self.staging, {i: bytes(c) for i, c in self.dirty.items()})
        except BaseException as exc:
            self.failed = exc
            raise
        self.dirty.clear()

    def truncate(self, size: int) -> None:
        """Set the file's size; bytes past a shrunken end are gone, growth reads as zeros."""
        self._check()
        cs = self.chunk_size
        if size < self.size:
            tail = size // cs
            if size % cs and tail not in self.dirty and (
                tail in self.staging.indices or self._has_committed_bytes(tail)
            ):
                # The new last chunk keeps only its bytes before the end.
                self.dirty[tail] = bytearray(self._current([tail])[tail])
            for i in [i for i in self.dirty if i * cs >= size]:
                del self.dirty[i]
            chunk = self.dirty.get(tail)
            if chunk is not None and len(chunk) > size - tail * cs:
                self.dirty[tail] = chunk[: size - tail * cs]
            gone = [i for i in self.staging.indices if i * cs >= size or i == tail]
            if gone:
                self.committer.drop_staged(self.name, self.staging, gone)
            self._low_water = min(self._low_water, size)
        self.size = size

    def file_size(self) -> int:
        self._check()
        return self.size

    @property
    def pending(self) -> bool:
        """Whether there are changes not yet committed."""
        return (
            bool(self.dirty)
            or bool(self.staging)
            or self.size != self.committed_size
            or self._low_water < self.committed_size
        )

    def sync(self) -> None:
        """Commit every change since the last commit, atomically."""
        self._check()
        if not self.pending:
            return
        cs = self.chunk_size
        size = self.size
        new_chunks = -(-size // cs)
        # The buffer is moved, not copied, into the commit: memory stays at one copy.
        chunks: dict[int, bytes] = {}
        dirty = self.dirty
        for i in sorted(dirty):
            chunk = dirty.pop(i)
            if i >= new_chunks:
                continue
            want = min(cs, size - i * cs)
            if len(chunk) > want:
                chunk = chunk[:want]
            elif len(chunk) < want and i == new_chunks - 1:
                chunk = bytes(chunk) + bytes(want - len(chunk))
            chunks[i] = chunk if type(chunk) is bytes else bytes(chunk)
        old_chunks = -(-self.committed_size // cs)
        first_gone = -(-min(self._low_water, size) // cs)
        staged = set(self.staging.indices)
        try:
            self.committer.commit(
                self.name, chunks, size, first_gone, old_chunks, self.staging if self.staging else None
            )
        except BaseException as exc:
            self.failed = exc
            raise
        for i in range(first_gone, old_chunks):
            self.cache.discard(i)
        for i in staged:
            self.cache.discard(i)
        self.committed_size = self._low_water = size
        self.exists = True
        self.dirty.clear()
        self.staging = Staging()
        for i, value in chunks.items():
            self.cache.put(i, value)

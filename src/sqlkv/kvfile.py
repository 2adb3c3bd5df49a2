"""One file (a database, or a journal beside it) living in the store as chunks.

A :class:`KvFile` offers what SQLite asks of a file: read, write, truncate,
size, sync. Writes are buffered in memory; :meth:`KvFile.sync` turns them into
one commit: the changed chunks, the new FileMeta and the deletion of chunks
past the new end, handed to the storage's commit step (one atomic round trip
when the store allows). Until then the store only ever holds committed states.

Reads are served from the write buffer, then the chunk cache, then the store;
every miss fetches its chunks and some read-ahead in one ``get_batch``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .chunkcache import ChunkCache, ReadAhead
from .errors import CorruptError, UnusableError
from .layout import decode_file_meta, encode_file_meta

if TYPE_CHECKING:
    from .storage import Storage


class KvFile:
    """A file's bytes over fixed-size chunks in the store (see the module docstring)."""

    def __init__(self, storage: "Storage", name: str, meta_value: bytes | None) -> None:
        self.storage = storage
        self.name = name
        self.chunk_size = cs = storage.chunk_size
        layout = storage.layout
        self.meta_key = layout.meta_key(name)
        self._chunk_key = lambda i: layout.chunk_key(name, i)
        self._chunk_keys = lambda indices: layout.chunk_keys(name, indices)
        self.exists = meta_value is not None
        self.committed_size = (
            decode_file_meta(meta_value, cs, self.meta_key) if meta_value is not None else 0
        )
        self.size = self.committed_size
        # Lowest size the file had since the last commit: chunks wholly past it
        # no longer hold committed bytes (they read as zeros unless rewritten).
        self._low_water = self.committed_size
        self.dirty: dict[int, bytes | bytearray] = {}
        self.cache = ChunkCache(storage.cache_bytes)
        self.read_ahead = ReadAhead(storage.max_read_chunks)
        self.failed: BaseException | None = None

    # -- helpers ---------------------------------------------------------------

    def _check(self) -> None:
        if self.failed is not None:
            raise UnusableError(
                f"file {self.name!r} is unusable after a store failure; the database reopens it"
            ) from self.failed

    def _has_committed_bytes(self, index: int) -> bool:
        """Whether chunk ``index`` may hold committed bytes that are still part of the file."""
        return index * self.chunk_size < min(self.committed_size, self._low_water)

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
            if self._has_committed_bytes(i):
                self.cache.put(i, self._checked(i, value))

    def _fetch(self, missing: list[int]) -> dict[int, bytes]:
        """Fetch ``missing`` chunks, with read-ahead, in as few round trips as the store allows."""
        self.storage.stats.cache_misses += len(missing)
        file_chunks = -(-self.committed_size // self.chunk_size)
        fits = self.committed_size <= self.cache.capacity
        wanted = dict.fromkeys(missing)
        for i in self.read_ahead.plan(missing[0], file_chunks, fits):
            if i not in wanted and i not in self.cache and i not in self.dirty:
                if self._has_committed_bytes(i):
                    wanted[i] = None
        indices = list(wanted)
        out: dict[int, bytes] = {}
        step = self.storage.max_read_chunks
        for start in range(0, len(indices), step):
            part = indices[start : start + step]
            values = self.storage.client.get_batch(self._chunk_keys(part))
            for i, value in zip(part, values):
                value = self._checked(i, value)
                self.cache.put(i, value)
                out[i] = value
        return {i: out[i] for i in missing}

    def _load(self, indices) -> dict[int, bytes]:
        """The committed bytes of every chunk in ``indices`` not rewritten since; one fetch for all misses."""
        out: dict[int, bytes] = {}
        missing = []
        cache = self.cache
        for i in indices:
            if i in self.dirty or not self._has_committed_bytes(i):
                continue
            chunk = cache.get(i)
            if chunk is None:
                missing.append(i)
            else:
                out[i] = chunk
        self.storage.stats.cache_hits += len(out)
        if missing:
            out.update(self._fetch(missing))
        return out

    def _chunk(self, index: int, loaded: dict[int, bytes]) -> bytes | bytearray:
        chunk = self.dirty.get(index)
        if chunk is not None:
            return chunk
        return loaded.get(index, b"")

    # -- what SQLite asks of a file ---------------------------------------------

    def read(self, amount: int, offset: int) -> bytes:
        """Up to ``amount`` bytes at ``offset``; fewer at the end of the file."""
        self._check()
        end = min(offset + amount, self.size)
        if offset >= end:
            return b""
        cs = self.chunk_size
        first, last = offset // cs, (end - 1) // cs
        fetched = self._load(range(first, last + 1))
        if first == last:
            chunk = self._chunk(first, fetched)
            start = offset - first * cs
            data = bytes(chunk[start : start + (end - offset)])
        else:
            parts = []
            for i in range(first, last + 1):
                chunk = self._chunk(i, fetched)
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
        missing = []
        for i in range(count):
            if i in self.dirty or not self._has_committed_bytes(i):
                continue
            chunk = self.cache.get(i)
            if chunk is None:
                missing.append(i)
            else:
                loaded[i] = chunk
        stats = self.storage.stats
        stats.cache_hits += len(loaded)
        stats.cache_misses += len(missing)
        step = self.storage.max_batch_chunks or len(missing) or 1
        for start in range(0, len(missing), step):
            part = missing[start : start + step]
            values = self.storage.client.get_batch(self._chunk_keys(part))
            for i, value in zip(part, values):
                loaded[i] = self._checked(i, value)
        parts = []
        for i in range(count):
            chunk = self._chunk(i, loaded)
            want = min(cs, self.size - i * cs)
            parts.append(chunk[:want] if len(chunk) >= want else bytes(chunk) + bytes(want - len(chunk)))
        return b"".join(parts)

    def write(self, data: bytes, offset: int) -> None:
        """Buffer ``data`` at ``offset``; nothing reaches the store before :meth:`sync`."""
        self._check()
        cs = self.chunk_size
        end = offset + len(data)
        first, last = offset // cs, (end - 1) // cs
        # Chunks the write covers only in part need their current bytes first.
        partial = []
        for i in range(first, last + 1):
            start = i * cs
            kept_end = min(start + cs, self.size)  # bytes of this chunk before the write
            if i not in self.dirty and self._has_committed_bytes(i):
                if offset > start or end < kept_end:
                    partial.append(i)
        fetched = self._load_list(partial)
        for i in range(first, last + 1):
            start = i * cs
            lo, hi = max(offset, start), min(end, start + cs)
            piece = data[lo - offset : hi - offset]
            if lo == start and hi == start + cs:
                self.dirty[i] = piece if type(piece) is bytes else bytes(piece)
                continue
            chunk = fetched[i] if i in fetched else self.dirty.get(i, b"")
            if type(chunk) is not bytearray:
                chunk = bytearray(chunk)
            if len(chunk) < lo - start:
                chunk.extend(bytes(lo - start - len(chunk)))
            chunk[lo - start : hi - start] = piece
            self.dirty[i] = chunk
        if end > self.size:
            self.size = end

    def _load_list(self, indices: list[int]) -> dict[int, bytes | bytearray]:
        loaded = self._load(indices)
        return {i: self._chunk(i, loaded) for i in indices}

    def truncate(self, size: int) -> None:
        """Set the file's size; bytes past a shrunken end are gone, growth reads as zeros."""
        self._check()
        cs = self.chunk_size
        if size < self.size:
            tail = size // cs
            for i in [i for i in self.dirty if i * cs >= size]:
                del self.dirty[i]
            if size % cs:
                # The new last chunk keeps only its bytes before the end.
                if tail not in self.dirty and self._has_committed_bytes(tail):
                    self.dirty[tail] = bytearray(self._load_list([tail])[tail])
                chunk = self.dirty.get(tail)
                if chunk is not None and len(chunk) > size - tail * cs:
                    self.dirty[tail] = chunk[: size - tail * cs]
            self._low_water = min(self._low_water, size)
        self.size = size

    def file_size(self) -> int:
        self._check()
        return self.size

    @property
    def pending(self) -> bool:
        """Whether there are changes not yet committed."""
        return bool(self.dirty) or self.size != self.committed_size or (
            self._low_water < self.committed_size
        )

    def sync(self) -> None:
        """Commit the buffered changes: changed chunks, FileMeta, deletions, atomically."""
        self._check()
        if not self.pending:
            return
        cs = self.chunk_size
        size = self.size
        new_chunks = -(-size // cs)
        old_chunks = -(-self.committed_size // cs)
        puts = []
        written: dict[int, bytes] = {}
        for i in sorted(self.dirty):
            if i >= new_chunks:
                continue
            want = min(cs, size - i * cs)
            chunk = self.dirty[i]
            if len(chunk) > want:
                chunk = chunk[:want]
            elif len(chunk) < want and i == new_chunks - 1:
                chunk = bytes(chunk) + bytes(want - len(chunk))
            value = bytes(chunk)
            written[i] = value
            puts.append((self._chunk_key(i), value))
        puts.append((self.meta_key, encode_file_meta(size)))
        first_gone = -(-min(self._low_water, size) // cs)
        gone = [i for i in range(first_gone, old_chunks) if i not in written]
        try:
            self.storage.commit(self, puts, self._chunk_keys(gone))
        except BaseException as exc:
            self.failed = exc
            raise
        for i in gone:
            self.cache.discard(i)
        self.committed_size = self._low_water = size
        self.exists = True
        self.dirty.clear()
        for i, value in written.items():
            self.cache.put(i, value)

    def rollback(self) -> None:
        """Drop every buffered change (nothing was sent to the store)."""
        self.dirty.clear()
        self.size = self._low_water = self.committed_size

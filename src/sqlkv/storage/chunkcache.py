"""A byte-bounded LRU cache of committed chunks, and the read-ahead policy.

The cache only ever holds chunks as they are committed in the store, so a
failed commit can never leave one of its chunks here.
"""

from __future__ import annotations

from collections import OrderedDict


class ChunkCache:
    """Least-recently-used chunks of one file, at most ``capacity`` bytes in all."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0

    def get(self, index: int) -> bytes | None:
        chunk = self._chunks.get(index)
        if chunk is not None:
            self._chunks.move_to_end(index)
        return chunk

    def __contains__(self, index: int) -> bool:
        return index in self._chunks

    def put(self, index: int, chunk: bytes) -> None:
        old = self._chunks.pop(index, None)
        if old is not None:
            self._bytes -= len(old)
        self._chunks[index] = chunk
        self._bytes += len(chunk)
        while self._bytes > self.capacity and self._chunks:
            _, evicted = self._chunks.popitem(last=False)
            self._bytes -= len(evicted)

    def discard(self, index: int) -> None:
        old = self._chunks.pop(index, None)
        if old is not None:
            self._bytes -= len(old)

    def clear(self) -> None:
        self._chunks.clear()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._chunks)


class ReadAhead:
    """How many chunks to fetch around a cache miss.

    Every miss is a round trip, so on a miss we fetch a window of chunks
    instead of one. The window starts at one chunk and doubles at each miss
    while read-ahead pays: when the misses are sequential (a scan), or when the
    whole file fits in the cache (whatever we fetch will be used or kept). A
    random miss in a file larger than the cache resets it to one chunk, so
    random point reads on a huge database do not fetch what they will not use.
    """

    def __init__(self, max_window: int) -> None:
        self.max_window = max(1, max_window)
        self.window = 1
        self._next_sequential = -1

    def widen(self) -> None:
        """Start from the widest window (a reader that dropped its whole cache
        reads much of the file again, and each round trip is a chance for a
        writer's commit to land in the middle of its read)."""
        self.window = self.max_window

    def plan(self, index: int, file_chunks: int, fits_in_cache: bool) -> range:
        """The chunk indices to fetch for a miss at ``index`` (always includes it)."""
        sequential = index == self._next_sequential
        if sequential or fits_in_cache:
            window = self.window
            self.window = min(self.window * 2, self.max_window)
        else:
            window = self.window = 1
        if sequential:
            start = index
        else:
            start = index - index % window
        stop = min(start + window, max(file_chunks, index + 1))
        self._next_sequential = stop
        return range(start, stop)

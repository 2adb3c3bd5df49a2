"""One file (a database, or a journal beside it) living in the store as chunks.

A :class:`KvFile` offers what SQLite asks of a file: read, write, truncate,
size, and :meth:`KvFile.sync`, which commits every change since the last
commit through the :class:`~sqlkv.storage.commit.Committer` it was given (one atomic
round trip when the store allows). Until then the store only ever holds
committed states. It gets all it needs at construction (the transport, the
committer, its keys, its sizes) and knows nothing of who opened it; which
chunks a read or write touches is :func:`~sqlkv.format.layout.chunk_spans`' answer.

The current bytes of chunk ``i`` are, in order of precedence: its buffered
write (``dirty``), its spilled copy in the staging area (a transaction whose
changes outgrew the memory bound), its committed value (cache, then store),
or zeros past the committed end. A reader reading through an interrupted
commit (the overlay) reads an overlaid chunk's committed value from the
staging area; its place then holds the value from before that commit, which
is never cached (see ``KvFile._keep``). Every cache miss fetches its chunks
and some read-ahead in one ``get_batch`` (the transport splits it only where
the store's limits make it).

Missing chunks. LAYOUT.md lets a chunk inside the file size be missing and
read as zeros. For the database file itself sqlkv does not take that word:
a missing key is indistinguishable from a lost or torn write, and reading it
as zeros, then writing those zeros back with the next change to the chunk,
turns store damage into lasting, silent corruption. SQLite never leaves a
hole in a committed database file, and sqlkv commits every chunk inside the
file, zero-filled ones included (see :meth:`KvFile.sync`), so a missing or
short committed chunk of the database is damage: :class:`CorruptError`
naming its key (or :class:`ConcurrentCommitError` when the FileMeta changed
under a reader meanwhile). Files beside it (a hot journal another
implementation left) keep the layout's rule: SQLite's journal records carry
their own checksums, so zeros there can never pass for data.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from ..errors import ConcurrentCommitError, ConflictError, CorruptError, FencedError, UnusableError
from ..format.layout import Layout, chunk_count, chunk_spans, decode_file_meta, encode_file_meta
from ..stores.contract import StoreClient
from .chunkcache import ChunkCache, ReadAhead
from .commit import BaseState, Committer, StagedChunk, Staging
from .versions import VersionPin

#: Read transactions in a row that conflicted before a reader reads every chunk
#: it lacks along with the version check (see ``KvFile._to_read_again``).
CONFLICTS_BEFORE_WHOLE = 2


@dataclass
class _Deferred:
    """What a deferred :meth:`KvFile.sync` left: a state committed for SQLite
    and not yet in the store (group commit, a script's statements).

    ``chunks`` is the buffer as it was at that sync (the same chunk objects as
    ``dirty`` until the next transaction rewrites them, which copies before
    changing one); ``size`` and ``low_water`` the file's then. The staging
    area, if it holds anything, is this state's too: a transaction that would
    spill to it, or drop from it, lands this state first.
    """

    chunks: dict[int, bytes | bytearray]
    size: int
    low_water: int


class KvFile:
    """A file's bytes over fixed-size chunks in the store (see the module docstring)."""

    def __init__(
        self,
        transport: StoreClient,
        committer: Committer,
        layout: Layout,
        name: str,
        meta_value: bytes | None,
        *,
        cache_bytes: int,
        read_ahead_chunks: int,
        max_dirty_bytes: int,
        strict: bool,
    ) -> None:
        """The file ``name`` whose FileMeta is ``meta_value`` (``None``: absent).

        ``committer`` commits its changes (it knows the writer's fence);
        ``cache_bytes`` bounds its chunk cache, ``read_ahead_chunks`` one
        miss's read-ahead, ``max_dirty_bytes`` the changes it buffers before
        spilling them to the staging area. ``strict``: missing or short
        committed chunks are damage (the database file; see the module docstring).
        """
        self.transport = transport
        self.stats = transport.stats
        self.committer = committer
        self.name = name
        self.chunk_size = cs = committer.chunk_size
        self.meta_key = layout.meta_key(name)
        self._chunk_keys = lambda indices: layout.chunk_keys(name, indices)
        self.exists = meta_value is not None
        self.strict = strict
        self._meta_value = meta_value
        self.committed_size = (
            decode_file_meta(meta_value, cs, self.meta_key) if meta_value is not None else 0
        )
        self.size = self.committed_size
        # Lowest size the file had since the last commit: chunks wholly past it
        # no longer hold committed bytes (they read as zeros unless rewritten).
        self._low_water = self.committed_size
        self.dirty: dict[int, bytes | bytearray] = {}
        self.staging = Staging()
        self._max_dirty_chunks = max(1, max_dirty_bytes // cs)
        self.cache = ChunkCache(cache_bytes)
        self.read_ahead = ReadAhead(read_ahead_chunks)
        self.failed: BaseException | None = None
        # Read-only view of an interrupted commit: chunk index -> where it is staged.
        self._overlay: dict[int, StagedChunk] = {}
        # -- versions (a reader's database file; see versions.py) --
        #: Proves every read of a reader against its pinned version; ``None`` for a writer.
        self.pin: VersionPin | None = None
        #: The version a staged commit read through was made on (``None``: none, or unknown).
        self.pending_base: int | None = None
        # Chunks dropped at a read transaction's start that were cached: fetched
        # again along with the next miss, as they are likely to be read.
        self._refetch: set[int] = set()
        #: Chunks a read needed when it conflicted: read along with the next version check.
        self._conflicted: set[int] = set()
        self._conflict_streak = 0
        #: The chunks the last :meth:`begin_read` that changed anything dropped (``None``: all).
        self.last_dropped: frozenset[int] | None = None
        # -- group commit (see group.py) --
        #: Asked at each :meth:`sync`: whether to leave the commit to a later one
        #: (``None``: never; a database's group sets it).
        self.defer: Callable[[], bool] | None = None
        #: The state of the last deferred :meth:`sync`, while it is not in the store.
        self._deferred: _Deferred | None = None
        #: The lowest size the file had since that sync (a transaction still open
        #: may have shrunk it).
        self._low_since_deferred = self.committed_size

    def view_pending_commit(
        self, new_size: int, first_gone: int, overlay: dict[int, StagedChunk], base: BaseState | None = None
    ) -> None:
        """Read-only: show the state an interrupted (committed) commit leads to.

        The overlay takes precedence over the chunks' places, so no value read
        from their places before it may stay cached, nor be read again there.
        """
        self.committed_size = self.size = new_size
        self._low_water = min(new_size, first_gone * self.chunk_size)
        self._overlay = overlay
        for i in overlay:
            self.cache.discard(i)
        self._refetch.difference_update(overlay)
        self.exists = True
        self.pending_base = base.version if base is not None else None

    # -- versions: a reader's read transactions (see versions.py) ------------------

    def begin_read(self, force: bool = False) -> bool:
        """Start a read transaction: learn the current version (unless within
        ``max_staleness``) and drop exactly the chunks changed since the pinned
        one. Returns whether the pinned state changed."""
        pin = self.pin
        if pin is None:
            return False
        again = self._to_read_again()
        refresh = pin.begin(force, self._chunk_keys(again))
        if refresh is None:
            self._take_prefetched(again, pin.prefetched)
            return False
        cached = self.cache
        self.last_dropped = refresh.dropped
        if refresh.dropped is None:
            self._refetch = set()
            cached.clear()
            self.read_ahead.widen()  # read the file again in as few round trips as allowed
        else:
            self._refetch = {i for i in refresh.dropped if i in cached}
            for i in refresh.dropped:
                cached.discard(i)
        self._overlay = {}
        self.pending_base = None
        meta = refresh.meta_value
        self._meta_value = meta
        self.exists = meta is not None
        self.committed_size = self.size = self._low_water = (
            decode_file_meta(meta, self.chunk_size, self.meta_key) if meta is not None else 0
        )
        if refresh.record_value is not None:
            try:
                pending, overlay = self.committer.pending_record(self.name, refresh.record_value, meta)
            except ConcurrentCommitError as exc:
                pin.must_check()
                raise ConflictError(f"{exc}; retry the transaction") from exc
            self.view_pending_commit(pending.new_size, pending.first_gone, overlay, pending.base)
            if self.last_dropped is not None:
                self.last_dropped = self.last_dropped | frozenset(overlay)
            pin.read_through(self.pending_base, pending.commit_id)
        self._take_prefetched(again, pin.prefetched)
        return True

    def _to_read_again(self) -> list[int]:
        """The chunks to read along with the version at a read transaction's start:
        none, unless the last read transaction conflicted; then the chunks it
        needed, and after :data:`CONFLICTS_BEFORE_WHOLE` conflicts in a row
        every chunk of the file, so that the transaction needs no later round
        trip at all. Never more than the cache holds (what it cannot keep would
        be read for nothing, and the answer is memory), nor than one
        ``get_batch`` takes beside the version's few keys."""
        if not self._conflicted:
            self._conflict_streak = 0
            return []
        self._conflict_streak += 1
        room = self.cache.capacity // self.chunk_size
        most = self.transport.keys_per_read(self.chunk_size)
        if most is not None:
            room = min(room, most - 16)
        room = max(1, room)
        wanted = sorted(self._conflicted)
        self._conflicted.clear()
        if self._conflict_streak >= CONFLICTS_BEFORE_WHOLE:
            # Cached ones too: which of them the commits since changed is known only after.
            count = chunk_count(self.committed_size, self.chunk_size)
            listed = set(wanted)
            wanted += [i for i in range(count) if i not in listed]
        return wanted[:room]

    def _take_prefetched(self, indices: list[int], values: list[bytes | None]) -> None:
        """Cache chunks read with the version at a read transaction's start: of its state."""
        for i, value in zip(indices, values):
            if value is not None and self._has_committed_bytes(i) and self._intact(i, value) and self._keep(i, value):
                self._refetch.discard(i)

    def _get(
        self, keys: list[bytes], indices: list[int], needed: Collection[int] | None = None
    ) -> list[bytes | None]:
        """The values of chunk (or staged chunk) ``keys``; a reader's reads proved by
        its pin (a read-ahead chunk not of the pinned state comes back as ``None``
        when ``needed`` names the others)."""
        if self.pin is None:
            return self.transport.get_many(keys, self.chunk_size)
        values = self.pin.fetch(keys, indices, needed)
        left_out = self.pin.left_out
        return [None if i in left_out else v for i, v in zip(indices, values)] if left_out else values

    def read_chunks(self, indices: list[int]) -> dict[int, bytes]:
        """The current bytes of chunks ``indices``, fetched without read-ahead and not
        cached: for an engine that keeps the whole image itself (backend snapshot)."""
        self._check()
        overlaid = [i for i in indices if i in self._overlay]
        wanted = [i for i in indices if i not in self._overlay and self._has_committed_bytes(i)]
        self.stats.cache_misses += len(overlaid) + len(wanted)
        keys = self._chunk_keys(wanted)
        out = {i: self._committed(i, k, v) for i, k, v in zip(wanted, keys, self._get(keys, wanted))}
        if overlaid:
            out.update(self._fetch_overlaid(overlaid))
        return out

    def _base_state(self) -> tuple[int, bytes | None]:
        """The committed size and chunk 0 this file's next commit is made on:
        named by a staged commit's record (see commit.BaseState)."""
        first = None
        if self._has_committed_bytes(0):  # the committed chunk, not a spilled change of it
            first = self.cache.get(0) or self._fetch([0])[0]
        return self.committed_size, first

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

    def _committed_length(self, index: int) -> int:
        """How long committed chunk ``index`` must be: the file size says."""
        return min(self.chunk_size, self.committed_size - index * self.chunk_size)

    def _too_long(self, index: int, key: bytes, value: bytes) -> CorruptError:
        return CorruptError(
            f"chunk {index} of {self.name!r} at key {key.hex()} is {len(value)} bytes, "
            f"longer than the chunk size {self.chunk_size}"
        )

    def _intact(self, index: int, value: bytes | None) -> bool:
        """Whether committed chunk ``index`` passes :meth:`_committed` as it is."""
        return value is not None and self._committed_length(index) <= len(value) <= self.chunk_size

    def _committed(self, index: int, key: bytes, value: bytes | None) -> bytes:
        """Committed chunk ``index`` as the store holds it under ``key``, checked
        against the file size (see the module docstring)."""
        if value is not None and len(value) > self.chunk_size:
            raise self._too_long(index, key, value)
        want = self._committed_length(index)
        if value is not None and len(value) >= want:
            return value
        if not self.strict:
            return value or b""  # the layout's rule: reads as zeros
        raise self._damaged(index, key, value, want)

    def _damaged(self, index: int, key: bytes, value: bytes | None, want: int) -> Exception:
        """The error for a missing or short committed chunk: a writer's change
        under a reader, a store gone back in time under a writer (raised:
        :meth:`_check_writer_state`), or damage. Costs a round trip or two, on
        this error path only."""
        if self.pin is None:
            self._check_writer_state()
        now = self.transport.get(self.meta_key)
        if now != self._meta_value:
            return ConcurrentCommitError(
                f"the FileMeta of {self.name!r} (key {self.meta_key.hex()}) changed while "
                f"this open read chunk {index} (key {key.hex()}): another writer committed; "
                "reopen the database"
            )
        found = "missing" if value is None else f"{len(value)} bytes long"
        return CorruptError(
            f"chunk {index} of {self.name!r} at key {key.hex()} is {found}, but the file "
            f"size {self.committed_size} (FileMeta at key {self.meta_key.hex()}) needs "
            f"{want} bytes there; nothing was written"
        )

    def prefetched(self, values: dict[int, bytes | None]) -> None:
        """Take chunks read ahead of time (at open) into the cache.

        A chunk that fails its check is left out: reading it raises the error,
        so a damaged chunk the caller never reads does not keep it from opening.
        """
        for i, value in values.items():
            if value is not None and self._has_committed_bytes(i) and self._intact(i, value):
                self._keep(i, value)

    def _keep(self, index: int, value: bytes) -> bool:
        """Cache chunk ``index`` as read from its place; whether it was cached.

        The one way a chunk read from its place enters the cache: never while
        an interrupted commit's overlay covers it (its place then holds the
        value from before that commit, and nothing would drop it once the
        apply makes the overlay's value the committed one).
        """
        if index in self._overlay:
            return False
        self.cache.put(index, value)
        return True

    def _worth_reading(self, index: int) -> bool:
        """Whether chunk ``index`` may be read from its place along with a miss
        (read-ahead, or a chunk dropped at a read transaction's start)."""
        return (
            index not in self.cache
            and index not in self.dirty
            and index not in self.staging.indices
            and index not in self._overlay
            and self._has_committed_bytes(index)
        )

    def _fetch(self, missing: list[int]) -> dict[int, bytes]:
        """Fetch committed chunks ``missing``, with read-ahead, in as few round trips as allowed."""
        self.stats.cache_misses += len(missing)
        out: dict[int, bytes] = {}
        overlaid = [i for i in missing if i in self._overlay]
        if overlaid:
            out.update(self._fetch_overlaid(overlaid))
            missing = [i for i in missing if i not in self._overlay]
            if not missing:
                return out
        file_chunks = -(-self.committed_size // self.chunk_size)
        fits = self.committed_size <= self.cache.capacity
        wanted = dict.fromkeys(missing)
        # A chunk a commit of another changed is read again with the others it
        # changed, and no read-ahead: what was around it is still cached.
        ahead = range(0) if self._refetch.intersection(missing) else self.read_ahead.plan(
            missing[0], file_chunks, fits
        )
        for i in ahead:
            if i not in wanted and self._worth_reading(i):
                wanted[i] = None
        for i in sorted(self._refetch):
            if len(wanted) >= self.read_ahead.max_window:
                break
            if self._worth_reading(i):
                wanted[i] = None
        indices = list(wanted)
        requested = set(missing)
        keys = self._chunk_keys(indices)
        try:
            values = self._get(keys, indices, requested)
        except ConflictError:
            # The retry reads what it asked for with the version, the rest with its first miss.
            self._conflicted.update(missing)
            self._refetch.update(indices)
            raise
        self._refetch.difference_update(indices)
        cs, size, overlay, cache = self.chunk_size, self.committed_size, self._overlay, self.cache
        for i, key, value in zip(indices, keys, values):
            # The usual chunk, at the length the file size asks (what _intact and
            # _committed check) and not overlaid (_keep's rule): cached without a call.
            if value is not None and min(cs, size - i * cs) <= len(value) <= cs and i not in overlay:
                cache.put(i, value)
                out[i] = value
                continue
            if i not in requested and not self._intact(i, value):
                continue  # a damaged chunk read ahead fails when it is read
            value = self._committed(i, key, value)
            self._keep(i, value)
            out[i] = value
        return out

    def _fetch_overlaid(self, indices: list[int]) -> dict[int, bytes]:
        """Read-only view of an interrupted commit: the staged values of ``indices``.

        A staged key that is gone means the writer finished that commit
        meanwhile (staged keys are deleted only after the chunks were moved
        into place): the chunk is then read where the layout keeps it. So it
        is when the key holds other bytes than its manifest piece recorded
        and the commit record this view was made from is gone: a later
        transaction of the writer spilled to the same key. With the record
        still there, such bytes are damage (:class:`CorruptError`).
        """
        staged = [self._overlay[i] for i in indices]
        values = self._get([chunk.key for chunk in staged], indices)
        finished: bool | None = None  # asked once, and only when a value fails its digest
        out: dict[int, bytes] = {}
        for i, chunk, value in zip(indices, staged, values):
            if value is None:
                continue
            if not chunk.holds(value):
                if finished is None:
                    finished = self._pending_commit_finished()
                if finished:
                    continue
            out[i] = self.committer.check_staged(self.name, i, chunk.key, value, chunk.digest)
        moved = [i for i in indices if i not in out]
        if moved:
            keys = self._chunk_keys(moved)
            values = self._get(keys, moved)
            out.update((i, self._committed(i, k, v)) for i, k, v in zip(moved, keys, values))
        return out

    def _pending_commit_finished(self) -> bool:
        """Whether the commit record this read-only view was made from is gone
        or replaced (one read): its writer finished that commit meanwhile."""
        if self.pin is None:
            return False
        return self.transport.get(self.committer.record_key(self.name)) != self.pin.record

    def _load(self, indices: Iterable[int]) -> dict[int, bytes]:
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
            chunk = None if i in self._overlay else cache.get(i)
            if chunk is None:
                missing.append(i)
            else:
                out[i] = chunk
        self.stats.cache_hits += len(out)
        if staged:
            out.update(self._read_staged(staged))
        if missing:
            out.update(self._fetch(missing))
        return out

    def _read_staged(self, indices: list[int]) -> dict[int, bytes]:
        """This transaction's spilled chunks ``indices``, checked against what it staged."""
        try:
            return self.committer.read_staged(self.name, indices, self.staging.digests)
        except CorruptError:  # gone or changed: the store may have gone back in time
            self._check_writer_state(self.committer.staging_expectations(self.name, self.staging))
            raise

    def _check_writer_state(self, more: dict[bytes, bytes | None] | None = None) -> None:
        """A writer that found a chunk gone: :class:`RewoundError` (or :class:`FencedError`)
        if the store is not the state it built on; the file is then unusable
        (the database reopens it)."""
        try:
            self.committer.check_state(more)
        except FencedError as exc:
            self.failed = exc
            raise

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
        if self.failed is not None:  # _check, called only when it raises
            self._check()
        end = min(offset + amount, self.size)
        if offset >= end:
            return b""
        spans = list(chunk_spans(offset, end - offset, self.chunk_size))
        loaded = self._load([i for i, _, _ in spans])
        if len(spans) == 1:
            i, lo, hi = spans[0]
            data = bytes(self._chunk(i, loaded)[lo:hi])
        else:
            last = spans[-1][0]
            parts = []
            for i, lo, hi in spans:
                part = self._chunk(i, loaded)[lo:hi]
                if len(part) < hi - lo and i != last:
                    part = bytes(part) + bytes(hi - lo - len(part))
                parts.append(part)
            data = b"".join(parts)
        if len(data) < end - offset:  # bytes never written since the file grew read as zeros
            data += bytes(end - offset - len(data))
        return data

    def read_all(self) -> bytes:
        """The whole file, fetched in as few round trips as the store's batch limits allow.

        For an engine that loads a whole image at once (backend ``snapshot``):
        chunks buffered or cached are used as they are, the others are fetched
        without the read-ahead cap, and are not cached (a whole-file read would
        only push out what the cache holds). The last chunk comes in the first
        batch, so a size the store does not hold fails before the rest is read
        (for a size too large to list its chunks, call :meth:`check_end` first).
        """
        self._check()
        cs = self.chunk_size
        count = -(-self.size // cs)
        loaded: dict[int, bytes] = {}
        staged: list[int] = []
        overlaid: list[int] = []
        wanted: list[int] = []  # committed chunks to fetch
        for i in range(count):
            if i in self.dirty:
                continue
            if i in self.staging.indices:
                staged.append(i)
            elif i in self._overlay:
                overlaid.append(i)
            elif self._has_committed_bytes(i):
                chunk = self.cache.get(i)
                if chunk is None:
                    wanted.append(i)
                else:
                    loaded[i] = chunk
        stats = self.stats
        stats.cache_hits += len(loaded)
        stats.cache_misses += len(staged) + len(overlaid) + len(wanted)
        if len(wanted) > 1:
            wanted.insert(0, wanted.pop())
        keys = self._chunk_keys(wanted)
        for i, key, value in zip(wanted, keys, self._get(keys, wanted)):
            loaded[i] = self._committed(i, key, value)
        if overlaid:
            loaded.update(self._fetch_overlaid(overlaid))
        if staged:
            loaded.update(self._read_staged(staged))
        parts = []
        for i in range(count):
            current = self._chunk(i, loaded)
            want = min(cs, self.size - i * cs)
            parts.append(current[:want] if len(current) >= want else bytes(current) + bytes(want - len(current)))
        return b"".join(parts)

    def check_end(self) -> None:
        """Read the file's last committed chunk now, so that a size the store does
        not hold (a damaged FileMeta) fails at once, before anything is
        allocated for the whole file."""
        self._check()
        last = chunk_count(self.committed_size, self.chunk_size) - 1
        if last >= 0 and self._has_committed_bytes(last) and last not in self.cache:
            self._load([last])

    def write(self, data: bytes, offset: int) -> None:
        """Buffer ``data`` at ``offset``; nothing becomes visible before :meth:`sync`."""
        if self.failed is not None:  # _check, called only when it raises
            self._check()
        cs = self.chunk_size
        end = offset + len(data)
        spans = list(chunk_spans(offset, len(data), cs))
        # Chunks the write covers only in part need their current bytes first (whether
        # it covers a chunk whole asked first: SQLite's page writes need no more).
        partial = [
            i
            for i, lo, hi in spans
            if (lo > 0 or hi < min(cs, self.size - i * cs))
            and i not in self.dirty
            and (i in self.staging.indices or self._has_committed_bytes(i))
        ]
        base = self._current(partial) if partial else {}
        for i, lo, hi in spans:
            at = i * cs - offset  # where chunk i starts in ``data``
            piece = data[at + lo : at + hi]
            if lo == 0 and hi == cs:
                self.dirty[i] = piece if type(piece) is bytes else bytes(piece)
                continue
            chunk = base[i] if i in base else self.dirty.get(i, b"")
            if type(chunk) is not bytearray or self._shared(i, chunk):
                chunk = bytearray(chunk)
            if len(chunk) < lo:
                chunk.extend(bytes(lo - len(chunk)))
            chunk[lo:hi] = piece
            self.dirty[i] = chunk
        if end > self.size:
            self.size = end
        if len(self.dirty) > self._max_dirty_chunks:
            self._make_room()

    def _shared(self, index: int, chunk: bytes | bytearray) -> bool:
        """Whether ``chunk``, buffered for chunk ``index``, is the deferred state's too."""
        deferred = self._deferred
        return deferred is not None and deferred.chunks.get(index) is chunk

    def _make_room(self) -> None:
        """Move buffered chunks to the staging area: memory stays within the bound.

        The staging area holds the chunks of one commit. With a deferred state
        (see :class:`_Deferred`), that commit is the deferred one: its chunks
        are staged first, and the buffer keeps those the open transaction
        wrote; should they alone outgrow the bound, the deferred state lands
        first, and they are staged for the next commit. (The deferred state's
        own copies of chunks the open transaction rewrote are not counted
        until then: at most as many again as the bound.)
        """
        deferred = self._deferred
        if deferred is not None and deferred.chunks:
            self._stage(deferred.chunks)
            self.dirty = {i: c for i, c in self.dirty.items() if deferred.chunks.get(i) is not c}
            deferred.chunks = {}
            if len(self.dirty) <= self._max_dirty_chunks:
                return
        self.commit_deferred()
        self._stage(self.dirty)
        self.dirty = {}

    def _stage(self, chunks: dict[int, bytes | bytearray]) -> None:
        try:
            self.committer.stage(self.name, self.staging, {i: bytes(c) for i, c in chunks.items()})
        except BaseException as exc:
            self.failed = exc
            raise

    def truncate(self, size: int) -> None:
        """Set the file's size; bytes past a shrunken end are gone, growth reads as zeros."""
        self._check()
        cs = self.chunk_size
        if size < self.size:
            if self.staging:
                self.commit_deferred()  # its staged chunks are not this transaction's to drop
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
                try:
                    self.committer.drop_staged(self.name, self.staging, gone)
                except BaseException as exc:  # the staging area is now unknown: reopen
                    self.failed = exc
                    raise
            self._low_water = min(self._low_water, size)
            self._low_since_deferred = min(self._low_since_deferred, size)
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

    @property
    def deferred(self) -> bool:
        """Whether a :meth:`sync` was deferred: committed for SQLite, not yet in the store."""
        return self._deferred is not None

    def sync(self) -> None:
        """Commit every change since the last commit, atomically, unless :attr:`defer`
        says to leave it to a later commit (group commit: the changes stay
        buffered, and the next commit carries them with its own, or
        :meth:`commit_deferred` lands them)."""
        if self.failed is not None:  # _check, called only when it raises
            self._check()
        if not self.pending:
            return
        if self.defer is not None and self.defer():
            self._deferred = _Deferred(dict(self.dirty), self.size, self._low_water)
            self._low_since_deferred = self.size
            return
        self._land(self.dirty, self.size, self._low_water)  # commit_now, checked above

    def commit_now(self) -> None:
        """Commit every change since the last commit (deferred ones included), atomically."""
        self._check()
        if self.pending:
            self._land(self.dirty, self.size, self._low_water)

    def commit_deferred(self) -> None:
        """Commit the state the last deferred :meth:`sync` left, and nothing
        written since: those writes are a transaction's still open (SQLite
        writes pages of a large one before it ends, when its cache spills, and
        writes the old ones back if it rolls back), so they stay buffered, on
        top of the state committed now."""
        deferred = self._deferred
        if deferred is None:
            return
        self._check()
        since = {i: c for i, c in self.dirty.items() if deferred.chunks.get(i) is not c}
        self._land(deferred.chunks, deferred.size, deferred.low_water)
        self.dirty = since
        self._low_water = self._low_since_deferred

    def _land(self, dirty: dict[int, bytes | bytearray], size: int, low_water: int) -> None:
        """Commit the buffered chunks ``dirty`` (moved out of it), the staging area,
        and the file size ``size``; ``low_water``: the lowest size since the last commit.

        Every chunk inside the new size that holds no committed bytes any more
        (past where the file shrank, or grew without being written) and was not
        written is committed as zeros, and every chunk at its full length: the
        store never holds a hole or a short chunk inside the file, so one there
        is damage (see the module docstring).
        """
        cs = self.chunk_size
        self._low_water = low_water  # for _base_state: the state this commit is made on
        new_chunks = -(-size // cs)
        # The buffer is moved, not copied, into the commit: memory stays at one copy.
        chunks: dict[int, bytes] = {}
        for i in sorted(dirty) if len(dirty) > 1 else list(dirty):
            chunk = dirty.pop(i)
            if i >= new_chunks:
                continue
            want = min(cs, size - i * cs)
            if len(chunk) > want:
                chunk = chunk[:want]
            elif len(chunk) < want:
                chunk = bytes(chunk) + bytes(want - len(chunk))
            chunks[i] = chunk if type(chunk) is bytes else bytes(chunk)
        old_chunks = -(-self.committed_size // cs)  # chunk_count, inline: once per commit
        first_gone = -(-min(low_water, size) // cs)
        staging = self.staging
        staged = staging.indices
        if first_gone < new_chunks:
            zeros = bytes(cs)
            for i in range(first_gone, new_chunks):
                if i not in chunks and i not in staged:
                    chunks[i] = zeros if i < new_chunks - 1 else bytes(size - i * cs)
        try:
            self.committer.commit(
                self.name,
                chunks,
                size,
                first_gone,
                old_chunks,
                staging if staging.pieces else None,  # pieces: Staging.__bool__, without its call
                self._base_state,
            )
        except BaseException as exc:
            self.failed = exc
            raise
        cache = self.cache
        for i in range(first_gone, old_chunks):
            cache.discard(i)
        for i in staged:
            cache.discard(i)
        self.committed_size = self._low_water = size
        self._meta_value = encode_file_meta(size)
        self.exists = True
        if staging.pieces or staged:
            # A staging area never written to is kept: its random commit id was never
            # stored, so the next commit may use it (no os.urandom per commit).
            self.staging = Staging()
        self._deferred = None
        for i, value in chunks.items():
            cache.put(i, value)

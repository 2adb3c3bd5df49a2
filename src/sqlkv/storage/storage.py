"""Storage: the files of one database in one store.

The one object both engines talk to. It holds the transport, the layout,
the chunk files (the database and, rarely, a journal beside it) and the
commit step, and hands each file what it needs when it opens it. Opening
costs one round trip: the database's FileMeta, its journal's FileMeta, its
first chunks (and a writer's lease keys) come back in a single ``get_batch``;
a writer then takes its lease in one conditional write, and its commits carry
that lease's fence from then on.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConcurrentCommitError, ConfigError, Error, StoreLimitError
from ..format.layout import JOURNAL, SIDECARS, Layout, check_database_name, chunk_count, decode_file_meta
from ..stores.contract import StoreClient
from . import journal as hot_journal
from .commit import Committer, recovery_keys
from .kvfile import KvFile
from .lease import LeaseRequest
from .options import DEFAULT_MAX_DIRTY_BYTES, OPEN_DEFAULTS, OpenParams
from .versions import VersionLog, VersionPin, version_key

#: Bytes of the database read ahead at open, in the same round trip as its FileMeta:
#: page 1 and the first root pages, enough for most queries' schema look-up.
OPEN_PREFETCH_BYTES = 16 * 1024
#: The most chunks one read-ahead fetch asks for.
MAX_READ_AHEAD_CHUNKS = 256
#: How often a read-only open reads again when writers keep finishing staged
#: commits under it, before it gives up with ConcurrentCommitError.
OPEN_RETRIES = 3
#: The first bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: The length of a SQLite database header (SQLite's file format document, section 1.3).
SQLITE_HEADER_BYTES = 100


@dataclass(frozen=True)
class SqliteHeader:
    """What a SQLite database's header says of its size: ``page_size`` bytes per page and
    ``page_count`` pages, or ``None`` when the header's count is not valid (its
    version-valid-for field differs from the change counter, or it is zero: SQLite
    then takes the size from the file itself)."""

    page_size: int
    page_count: int | None

    @property
    def size(self) -> int | None:
        """The database's size in bytes by its header, or ``None`` when it does not say."""
        return None if self.page_count is None else self.page_count * self.page_size


def sqlite_header(head: bytes) -> SqliteHeader | None:
    """The header at the start of ``head`` (the first bytes of a database file), or
    ``None`` if it is not a SQLite database header: no magic, too short, or a page
    size SQLite would not take (a power of two from 512 to 65536)."""
    if len(head) < SQLITE_HEADER_BYTES or not head.startswith(SQLITE_MAGIC):
        return None
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return None
    count = int.from_bytes(head[28:32], "big")
    valid = count > 0 and head[92:96] == head[24:28]
    return SqliteHeader(page_size, count if valid else None)


class Storage:
    """The files of the database ``main_name`` in the store behind ``transport``."""

    def __init__(
        self,
        transport: StoreClient,
        layout: Layout,
        main_name: str,
        chunk_size: int,
        cache_bytes: int,
        params: OpenParams = OPEN_DEFAULTS,
        max_dirty_bytes: int = DEFAULT_MAX_DIRTY_BYTES,
        salvage: bool = False,
    ) -> None:
        self.transport = transport
        self.layout = layout
        self.main_name = main_name
        self.chunk_size = chunk_size
        self.cache_bytes = cache_bytes
        self.readonly = params.readonly
        self.max_dirty_bytes = max_dirty_bytes
        self.max_staleness = params.max_staleness
        #: Opened by ``check --repair`` to mend the database: a FileMeta whose size its
        #: chunks do not bear out is taken as it is instead of refused (see :meth:`open`),
        #: and an unreadable commit record is discarded (see Committer.recover).
        self.salvage = salvage
        limits = transport.limits
        # Before any store call: one check of the name for both backends and the tools.
        check_database_name(main_name, layout, limits.max_key_bytes)
        if limits.max_value_bytes is not None and chunk_size > limits.max_value_bytes:
            raise StoreLimitError(
                f"chunk_size {chunk_size} exceeds the store's largest value "
                f"({limits.max_value_bytes} bytes)"
            )
        #: The most chunks one read-ahead fetches: within one ``get_batch`` and a
        #: quarter of the cache.
        max_read = min(MAX_READ_AHEAD_CHUNKS, transport.keys_per_read(chunk_size) or MAX_READ_AHEAD_CHUNKS)
        self.max_read_chunks = max(1, min(max_read, cache_bytes // (4 * chunk_size)))
        #: Commits without a fence until :meth:`open` takes the writer's lease.
        self.committer = Committer(transport, layout, chunk_size)
        self.main: KvFile | None = None
        self._files: dict[str, KvFile] = {}
        self._known_meta: dict[str, bytes | None] = {}
        # Files SQLite must not see (a journal already dealt with at open).
        self._hidden: set[str] = set()

    def open(self, lease: LeaseRequest | None = None, retries_left: int = OPEN_RETRIES) -> KvFile:
        """Open the database file: one round trip when nothing was left half done.

        Reads, in one ``get_batch``, the FileMeta of the database and of the
        files SQLite looks for beside it (journal, WAL), the keys that tell
        whether a commit was interrupted, and the database's first chunks.
        An interrupted commit is then finished or discarded (see commit.py);
        a read-only open, which must not write, shows the state it leads to.

        A writer's ``lease`` request is served in the same round trip: the
        lease keys are read with the rest and the lease is taken (one
        conditional write) before anything is recovered (see lease.py); every
        commit from then on carries its fence.

        The one place that decides whether a database whose FileMeta claims
        more than its chunks hold opens: it does not (:meth:`_check_size`),
        except for :attr:`salvage`, the repair that rewrites that FileMeta from
        the keys present and the SQLite header, never from the size claimed.
        """
        layout, name = self.layout, self.main_name
        names = [name, *(name + sidecar for sidecar in SIDECARS)]
        keys = [layout.meta_key(n) for n in names] + recovery_keys(layout, name)
        keys.append(version_key(layout, name))  # versions: in the same round trip
        # A store without write_batch cannot fence: it opens without a lease.
        take_lease = lease is not None and lease.wanted
        lease_keys = lease.keys() if lease is not None and take_lease else []
        keys += lease_keys
        prefetch = range(max(1, min(16, OPEN_PREFETCH_BYTES // self.chunk_size)))
        most = self.transport.keys_per_read(self.chunk_size)
        if most is not None:  # stay within one batch when the store allows
            prefetch = range(min(len(prefetch), max(0, most - len(keys))))
        keys += layout.chunk_keys(name, prefetch)
        values = self.transport.get_many(keys, self.chunk_size)
        metas, (record, piece0, version_value) = values[:3], values[3:6]
        chunks = values[6 + len(lease_keys):]
        if lease is not None and take_lease and not lease.take(values[6:8]):
            return self.open(lease)  # its last holder could have committed until now
        versions = None if self.readonly else VersionLog(layout, name, version_value)
        # Taken now, or before this reopen, the lease fences every commit.
        fence = lease.fence if lease is not None else None
        self.committer = Committer(self.transport, layout, self.chunk_size, fence, versions, lease)
        committer = self.committer
        self._known_meta.update(zip(names, metas))
        main = None
        pending_id = None
        if record is not None or piece0 is not None:
            if self.readonly:
                if record is not None:
                    try:
                        pending, overlay = committer.pending_record(name, record, metas[0])
                    except ConcurrentCommitError:
                        if retries_left == 0:
                            raise
                        # The writer finished that commit meanwhile: read it as it is now.
                        return self.open(lease, retries_left - 1)
                    main = self.file(name)
                    main.view_pending_commit(
                        pending.new_size, pending.first_gone, overlay, pending.base
                    )
                    pending_id = pending.commit_id
            else:
                first = chunks[0] if chunks else None
                if record is not None and first is None:
                    first = self.transport.get(layout.chunk_key(name, 0))
                if committer.recover(name, record, piece0, metas[0], first, self.salvage):
                    main = self._reopen_main(prefetch)
        if main is None:
            main = self.file(name)
            main.prefetched(dict(zip(prefetch, chunks)))
        try:
            if not self.salvage:
                self._check_size(main)
        except ConcurrentCommitError:
            if not self.readonly or retries_left == 0:
                raise
            self._files.pop(name, None)
            return self.open(lease, retries_left - 1)  # a writer shrank the file meanwhile
        self.main = main
        if self.readonly:  # versions: the reader's pinned state is the one just read
            main.pin = VersionPin(self.transport, layout, name, self.chunk_size, self.max_staleness)
            main.pin.start(version_value, record)
            if main.pending_base is not None:
                main.pin.read_through(main.pending_base, pending_id)
        if metas[1] is not None:
            self._roll_back_hot_journal(main, name + JOURNAL)
        return main

    def _check_size(self, main: KvFile) -> None:
        """Fail now (:class:`CorruptError`) when the database's FileMeta claims a size
        its chunks do not bear out: when its last chunk is missing or short.

        Otherwise such a size is taken as the file's and every later step
        that walks the file (a commit that shrinks it, an export) pays for
        the size claimed, not the size stored. The check costs no round trip
        when the last chunk was among those the open read, or when SQLite's
        header in chunk 0 records exactly the FileMeta's size (as it does
        after every commit SQLite makes); otherwise it reads the last chunk:
        one more read.
        """
        size = main.committed_size
        if not size:
            return
        if chunk_count(size, self.chunk_size) - 1 in main.cache:
            return
        first = main.cache.get(0)
        header = sqlite_header(first) if first is not None else None
        if header is not None and header.size == size:
            return
        main.check_end()

    def _roll_back_hot_journal(self, main: KvFile, journal_name: str) -> None:
        """Roll back a journal another implementation left (see journal.py)."""
        journal = self.file(journal_name)
        self._hidden.add(journal_name)
        if not hot_journal.is_hot(journal, main):
            return
        super_name = hot_journal.super_journal_name(journal)
        if super_name and not self.exists(super_name):
            return  # its multi-file transaction committed: nothing to undo
        hot_journal.play_back(journal, main)
        if not self.readonly:
            main.sync()
            self.delete(journal_name)

    def _reopen_main(self, prefetch: range) -> KvFile:
        """Read the database's FileMeta and first chunks again (after a recovery)."""
        layout, name = self.layout, self.main_name
        values = self.transport.get_batch([layout.meta_key(name)] + layout.chunk_keys(name, prefetch))
        self._known_meta[name] = values[0]
        self._files.pop(name, None)
        main = self.file(name)
        main.prefetched(dict(zip(prefetch, values[1:])))
        self.main = main
        return main

    def file(self, name: str) -> KvFile:
        """The open :class:`KvFile` called ``name`` (the database or a file beside it)."""
        kvfile = self._files.get(name)
        if kvfile is None:
            if name in self._known_meta:
                meta = self._known_meta[name]
            else:
                meta = self.transport.get(self.layout.meta_key(name))
            kvfile = self._files[name] = KvFile(
                self.transport,
                self.committer,
                self.layout,
                name,
                meta,
                cache_bytes=self.cache_bytes,
                read_ahead_chunks=self.max_read_chunks,
                max_dirty_bytes=self.max_dirty_bytes,
                strict=name == self.main_name,
            )
        return kvfile

    def exists(self, name: str) -> bool:
        """Whether the file ``name`` exists in the store with a size above zero."""
        if name in self._hidden:
            return False
        kvfile = self._files.get(name)
        if kvfile is not None:
            return kvfile.size > 0
        key = self.layout.meta_key(name)
        if name not in self._known_meta:
            self._known_meta[name] = self.transport.get(key)
        meta = self._known_meta[name]
        return meta is not None and decode_file_meta(meta, self.chunk_size, key) > 0

    def delete(self, name: str) -> None:
        """Remove the file ``name`` (its chunks, then its FileMeta) from the store."""
        if name == self.main_name:
            raise ConfigError("the database file itself cannot be deleted through SQLite")
        self._check_writable()
        kvfile = self.file(name)
        chunks = chunk_count(kvfile.committed_size, self.chunk_size)
        self.committer.write([], self.layout.chunk_keys(name, range(chunks)) + [kvfile.meta_key])
        self._files.pop(name, None)
        self._known_meta[name] = None

    def _check_writable(self) -> None:
        if self.readonly:
            raise Error(f"database {self.main_name!r} was opened read-only")

    def close(self) -> None:
        self._files.clear()

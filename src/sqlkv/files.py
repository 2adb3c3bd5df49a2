"""A database's file in a store, opened without SQLite: for moving whole files.

Import, export, copy, check and remove work on a database's bytes and keys,
not on SQL. They open its :class:`~sqlkv.storage.Storage` the way an engine
does (one round trip; an interrupted commit or a hot journal is dealt with;
a writer takes the lease, waiting up to ``lock_timeout`` seconds), and then
read or write its :class:`~sqlkv.kvfile.KvFile` directly. A write through it
commits as one transaction, staged when it outgrows the store's batch limits
or ``max_dirty_bytes``, so it is atomic at any size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .kvfile import KvFile
from .layout import check_file_name
from .lease import Leaser, LeaseRequest, check_lease_options, release_and_close
from .options import Options
from .storage import Storage
from .store import AnyKvStore, StoreClient

#: Called with (bytes done, bytes in all) as a long operation goes on.
Progress = Callable[[int, int], None]

#: Bytes moved per read or write while streaming a file (a multiple of any chunk size up to 1 MiB).
BLOCK_BYTES = 1024 * 1024

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


def make_options(options: dict[str, Any]) -> Options:
    """:class:`Options` from the keywords the maintenance functions pass on
    (``kv_prefix``, ``chunk_size``, ``layout``, ``cache_bytes``,
    ``max_dirty_bytes``, ``lease_seconds``); a bad one is a :class:`ConfigError`."""
    return Options(**options)


@contextmanager
def open_file(
    store: AnyKvStore,
    name: str,
    options: Options,
    *,
    readonly: bool,
    lock_timeout: float = 0.0,
) -> Iterator[KvFile]:
    """The database ``name`` in ``store`` as a :class:`KvFile`, open for this block.

    A writer (``readonly=False``) holds the database's lease for the whole
    block (when the store can fence), so no other writer commits meanwhile;
    it is released at the end.
    """
    check_file_name(name)
    check_lease_options(options.lease_seconds, lock_timeout)
    layout = options.make_layout(name)
    transport = StoreClient(store)
    lease = None
    if not readonly and options.lease_seconds is not None:
        lease = LeaseRequest(Leaser(transport), layout, name, options.lease_seconds, lock_timeout)
    try:
        storage = Storage(
            transport, layout, name, options.chunk_size, options.cache_bytes,
            readonly=readonly, max_dirty_bytes=options.max_dirty_bytes,
        )
        yield storage.open(lease)
        storage.close()
    finally:
        release_and_close(lease, transport)


def stream(
    read: Callable[[int, int], bytes], size: int, progress: Progress | None = None
) -> Iterator[tuple[int, bytes]]:
    """``(offset, block)`` over ``size`` bytes, ``read(amount, offset)`` giving each block."""
    done = 0
    if progress is not None:
        progress(0, size)
    while done < size:
        block = read(min(BLOCK_BYTES, size - done), done)
        if not block:
            break
        yield done, block
        done += len(block)
        if progress is not None:
            progress(done, size)


def write_whole(target: KvFile, blocks: Iterator[tuple[int, bytes]], size: int) -> None:
    """Make ``target`` hold exactly the bytes of ``blocks`` and commit it as one transaction."""
    for offset, block in blocks:
        target.write(block, offset)
    target.truncate(size)
    target.sync()

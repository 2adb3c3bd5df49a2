"""A database's file in a store, opened without SQLite: for moving whole files.

Import, export, copy, check and remove work on a database's bytes and keys,
not on SQL. They open its :class:`~sqlkv.storage.storage.Storage` the way an engine
does (one round trip; an interrupted commit or a hot journal is dealt with;
a writer takes the lease, waiting up to ``lock_timeout`` seconds), and then
read or write its :class:`~sqlkv.storage.kvfile.KvFile` directly. A write through it
commits as one transaction, staged when it outgrows the store's batch limits
or ``max_dirty_bytes``, so it is atomic at any size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..format.layout import Layout, check_database_name, check_file_name
from ..stores.contract import AnyKvStore, StoreClient
from .kvfile import KvFile
from .lease import Leaser, LeaseRequest, release_and_close
from .options import OPEN_DEFAULTS, OpenParams, Options, options_from
from .storage import Storage

#: Called with (bytes done, bytes in all) as a long operation goes on.
Progress = Callable[[int, int], None]

#: Bytes moved per read or write while streaming a file (a multiple of any chunk size up to 1 MiB).
BLOCK_BYTES = 1024 * 1024

def make_options(options: dict[str, Any]) -> Options:
    """:class:`Options` from the keywords the maintenance functions pass on
    (``kv_prefix``, ``chunk_size``, ``layout``, ``cache_bytes``,
    ``max_dirty_bytes``, ``lease_seconds``), checked as every API checks them
    (:func:`~sqlkv.storage.options.options_from`): an unknown name or a bad value is
    a :class:`ConfigError` naming it."""
    return options_from(options)


@contextmanager
def _writer_parts(
    store: AnyKvStore,
    name: str,
    options: Options,
    params: OpenParams,
    replace_unreadable: bool = False,
) -> Iterator[tuple[StoreClient, Layout, LeaseRequest | None]]:
    """A client of ``store`` for database ``name``, its layout, and a writer's lease
    request (``None`` for a reader, or with ``lease_seconds=None``); the lease, if
    taken, is released and the client closed at the end of the block.
    ``replace_unreadable``: see :class:`LeaseRequest`."""
    check_file_name(name)
    layout = options.make_layout(name)
    transport = StoreClient(store, timeout=options.store_timeout)
    lease = None
    if not params.readonly and options.lease_seconds is not None:
        lease = LeaseRequest(
            Leaser(transport), layout, name, options.lease_seconds, params.lock_timeout, replace_unreadable
        )
    try:
        yield transport, layout, lease
    finally:
        release_and_close(lease, transport)


@contextmanager
def open_file(
    store: AnyKvStore,
    name: str,
    options: Options,
    *,
    readonly: bool,
    lock_timeout: float = OPEN_DEFAULTS.lock_timeout,
    salvage: bool = False,
) -> Iterator[KvFile]:
    """The database ``name`` in ``store`` as a :class:`KvFile`, open for this block.

    A writer (``readonly=False``) holds the database's lease for the whole
    block (when the store can fence), so no other writer commits meanwhile;
    it is released at the end. ``salvage``: see :class:`Storage` (for the
    repair alone: an unreadable commit record is discarded at open instead of
    refused); it also takes over a lease whose value cannot be read,
    which every other open refuses (see lease.py).
    """
    params = OpenParams(readonly=readonly, lock_timeout=lock_timeout)
    with _writer_parts(store, name, options, params, salvage) as (transport, layout, lease):
        storage = Storage(
            transport, layout, name, options.chunk_size, options.cache_bytes,
            params, max_dirty_bytes=options.max_dirty_bytes, salvage=salvage,
        )
        yield storage.open(lease)
        storage.close()


@contextmanager
def writer_lease(
    store: AnyKvStore, name: str, options: Options, lock_timeout: float = OPEN_DEFAULTS.lock_timeout
) -> Iterator[tuple[StoreClient, dict[bytes, bytes | None] | None]]:
    """The writer's lease on database ``name``, held for this block, without opening
    the database: a client of ``store`` and the fence every write must carry
    (``None`` where the store cannot fence, or with ``lease_seconds=None``).

    For removing a database, which works on the keys a scan finds and so must
    not depend on its FileMeta (unreadable, or claiming more than is stored):
    the one thing it needs of an open is that no other writer commits meanwhile.
    So a lease whose value cannot be read is taken over too (see lease.py).
    """
    with _writer_parts(store, name, options, OpenParams(lock_timeout=lock_timeout), True) as (transport, layout, lease):
        check_database_name(name, layout, transport.limits.max_key_bytes)
        if lease is not None and lease.wanted:
            lease.take(transport.get_batch(lease.keys()))  # nothing else read yet: always current
        yield transport, lease.fence if lease is not None else None


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

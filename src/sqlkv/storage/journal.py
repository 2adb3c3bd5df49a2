"""Rolling back a hot journal that another implementation of the layout left behind.

sqlkv itself never writes a rollback journal (it runs ``journal_mode=MEMORY``
and commits atomically). Other implementations of the ``seed`` layout may
run SQLite in a journal mode that keeps ``<name>-journal`` in the store; if
one crashed mid-transaction, its journal holds the original content of the
pages it had started to overwrite. SQLite on a file system would roll that
back on the next open, so we do the same, for both backends, before SQLite
sees the database.

The journal format is SQLite's (see "The Rollback Journal" in SQLite's file
format document): segments, each a header padded to the sector size
(magic, record count, checksum nonce, original size in pages, sector size,
page size) followed by records (page number, original page, checksum). A
record whose checksum does not match was never synced: playback stops there.

Rollback writes the original pages back into the database's write buffer,
truncates it to its original size, commits that (atomically, like any commit)
and only then deletes the journal, so a crash at any point leaves a journal
that is still hot and replays to the same result. A read-only open applies
the rollback to its buffer only and commits nothing.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..format.layout import MAX_CHUNKS, chunk_count

if TYPE_CHECKING:
    from .kvfile import KvFile

MAGIC = bytes.fromhex("d9d505f920a163d7")
_HEADER = struct.Struct(">8sIIIII")
_U32 = struct.Struct(">I")
PENDING_BYTE = 0x40000000
#: Longest super-journal name taken from a journal (SQLite's own limit on a
#: path is far below it): a damaged length is never read at its word.
MAX_SUPER_JOURNAL_NAME = 65536


def _power_of_two(n: int, low: int, high: int) -> bool:
    return low <= n <= high and n & (n - 1) == 0


def _checksum(nonce: int, page: bytes) -> int:
    total = nonce
    i = len(page) - 200
    while i > 0:
        total += page[i]
        i -= 200
    return total & 0xFFFFFFFF


def super_journal_name(journal: KvFile) -> str | None:
    """The super-journal named at the end of a journal, if any."""
    size = journal.size
    if size < 16:
        return None
    tail = journal.read(16, size - 16)
    length, _checksum_value = struct.unpack(">II", tail[:8])
    if tail[8:] != MAGIC or length == 0 or length > min(size - 16, MAX_SUPER_JOURNAL_NAME):
        return None
    return journal.read(length, size - 16 - length).split(b"\x00")[0].decode("utf-8", "replace")


def is_hot(journal: KvFile, database: KvFile) -> bool:
    """Whether ``journal`` must be rolled back into ``database``: it holds a
    valid first header and the database is not empty."""
    if journal.size < _HEADER.size or database.size == 0:
        return False
    return journal.read(8, 0) == MAGIC


def play_back(journal: KvFile, database: KvFile) -> int:
    """Write the journal's original pages into ``database``'s buffer and truncate
    it to its original size. Returns the number of pages restored. Does not commit."""
    journal_size = journal.size
    offset = 0
    restored = 0
    first = True
    page_size = sector_size = 0
    while offset + _HEADER.size <= journal_size:
        magic, records, nonce, original_pages, sector, page = _HEADER.unpack(
            journal.read(_HEADER.size, offset)
        )
        if magic != MAGIC:
            break
        if first:
            if page == 0 or not _power_of_two(page, 512, 65536) or not _power_of_two(sector, 32, 65536):
                break
            if chunk_count(original_pages * page, database.chunk_size) > MAX_CHUNKS:
                break  # a size no layout can address: no journal SQLite wrote
            page_size, sector_size = page, sector
            database.truncate(original_pages * page_size)
            first = False
        record_size = 4 + page_size + 4
        offset += sector_size
        if records == 0xFFFFFFFF:
            records = (journal_size - offset) // record_size
        lock_page = PENDING_BYTE // page_size + 1
        done = False
        for _ in range(records):
            if offset + record_size > journal_size:
                done = True
                break
            record = journal.read(record_size, offset)
            (pgno,) = _U32.unpack_from(record, 0)
            data = record[4 : 4 + page_size]
            (checksum,) = _U32.unpack_from(record, 4 + page_size)
            if pgno == 0 or pgno == lock_page or checksum != _checksum(nonce, data):
                done = True
                break
            offset += record_size
            if pgno <= original_pages:
                database.write(data, (pgno - 1) * page_size)
                restored += 1
        if done or records == 0:
            break
        offset = -(-offset // sector_size) * sector_size
    return restored

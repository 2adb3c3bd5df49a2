"""An APSW VFS that serves one database's files from its :class:`Storage`.

SQLite runs with ``locking_mode=EXCLUSIVE`` and ``journal_mode=MEMORY``. A
write transaction writes the pages it changed, syncs the database once, may
then truncate it (VACUUM shrinks the file after the sync), and finally sends
``SQLITE_FCNTL_COMMIT_PHASETWO``. The file buffers every write and truncation
and commits them all at that file control: one atomic round trip. A rollback
that had spilled pages writes the old pages back and syncs, but sends no
COMMIT_PHASETWO: what it wrote back equals the committed bytes and stays
buffered. Locks are this process's alone (fencing between processes is the
lease's job), so the lock calls succeed at once.

A reader (``readonly=True``) runs SQLite with ``locking_mode=NORMAL`` instead,
so that SQLite takes a shared lock at the start of every read transaction and
drops it at the end: :class:`ReaderVfsFile` starts the file's read transaction
there (versions.py: learn the current version, drop the chunks changed
since). SQLite itself keeps pages in its own cache across read transactions
while the file change counter (header bytes 24..27) stays the same, but a
sqlkv writer, in exclusive mode, does not move that counter at every commit:
so a reader shows SQLite, in place of those bytes (and of the
"version-valid-for" bytes 92..95 that must equal them), a number that moves
whenever its pinned state changed. A reader never writes, so the changed
bytes never reach the store.

Temporary files (sorts, temp tables; rare with ``temp_store=MEMORY``) go to
the default VFS. A second database file (``ATTACH`` of a name) is refused.
"""

from __future__ import annotations

from collections.abc import Callable

import apsw

from .engine import attach_refused
from .errors import Error
from .kvfile import KvFile
from .storage import Storage

_LOCAL_FILES = (
    apsw.SQLITE_OPEN_TEMP_DB
    | apsw.SQLITE_OPEN_TEMP_JOURNAL
    | apsw.SQLITE_OPEN_TRANSIENT_DB
    | apsw.SQLITE_OPEN_SUBJOURNAL
)

#: SQLite sees each file as "/" + its name, so that names such as ":memory:"
#: or "file:x" reach the VFS as plain names.
PATH_PREFIX = "/"


def sqlite_path(name: str) -> str:
    return PATH_PREFIX + name


def _store_name(path: str) -> str:
    return path[len(PATH_PREFIX):] if path.startswith(PATH_PREFIX) else path


class KvVfsFile:
    """What SQLite calls on an open file, handed to a :class:`KvFile`."""

    def __init__(
        self,
        kvfile: KvFile,
        on_pragma: Callable[[apsw.VFSFcntlPragma], bool] | None,
        commit_on_sync: bool = False,
    ) -> None:
        self.kvfile = kvfile
        self._commit_on_sync = commit_on_sync
        self.xRead = kvfile.read
        self.xWrite = kvfile.write
        self.xTruncate = kvfile.truncate
        self.xFileSize = kvfile.file_size
        self._on_pragma = on_pragma

    def xSync(self, flags: int) -> None:
        if self._commit_on_sync:
            self.kvfile.sync()

    def xLock(self, level: int) -> None:
        pass

    def xUnlock(self, level: int) -> None:
        pass

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        if op == apsw.SQLITE_FCNTL_COMMIT_PHASETWO:
            self.kvfile.sync()
            return True
        if op == apsw.SQLITE_FCNTL_PRAGMA and self._on_pragma is not None:
            return self._on_pragma(apsw.VFSFcntlPragma(ptr))
        return False

    def xSectorSize(self) -> int:
        return 4096

    def xDeviceCharacteristics(self) -> int:
        return 0

    def xClose(self) -> None:
        pass


#: Header fields a reader shows its own state counter in (see the module docstring).
_COUNTER_FIELDS = (24, 92)
_SHARED = 1


def patch_counter(data: bytes, offset: int, counter: int) -> bytes:
    """``data`` read at ``offset`` of the database, with the change counter and
    version-valid-for fields replaced by ``counter`` where it covers them."""
    end = offset + len(data)
    if offset >= _COUNTER_FIELDS[-1] + 4 or end <= _COUNTER_FIELDS[0]:
        return data
    value = (counter & 0xFFFFFFFF).to_bytes(4, "big")
    patched = bytearray(data)
    for field in _COUNTER_FIELDS:
        lo, hi = max(field, offset), min(field + 4, end)
        if lo < hi:
            patched[lo - offset : hi - offset] = value[lo - field : hi - field]
    return bytes(patched)


class ReaderVfsFile(KvVfsFile):
    """A reader's database file: each shared lock starts a read transaction."""

    def __init__(self, kvfile: KvFile, on_pragma: Callable[[apsw.VFSFcntlPragma], bool] | None) -> None:
        super().__init__(kvfile, on_pragma)
        self._pin = kvfile.pin
        self._level = 0
        self.xRead = self._read

    def _read(self, amount: int, offset: int) -> bytes:
        data = self.kvfile.read(amount, offset)
        pin = self._pin
        return patch_counter(data, offset, pin.generation) if pin is not None else data

    def xLock(self, level: int) -> None:
        if level >= _SHARED and self._level < _SHARED:
            self.kvfile.begin_read()
        self._level = max(self._level, level)

    def xUnlock(self, level: int) -> None:
        self._level = level


class KvVfs(apsw.VFS):
    """A VFS registered under ``vfs_name`` for one database; unregister it at close."""

    def __init__(
        self,
        vfs_name: str,
        storage: Storage,
        on_pragma: Callable[[apsw.VFSFcntlPragma], bool] | None,
        commit_on_sync: bool = False,
    ) -> None:
        """``commit_on_sync``: commit at every ``xSync`` instead of at
        COMMIT_PHASETWO, for a connection that only rolls back a hot journal
        (a rollback syncs but never sends COMMIT_PHASETWO)."""
        super().__init__(vfs_name, "")
        self.storage = storage
        self._on_pragma = on_pragma
        self._commit_on_sync = commit_on_sync

    def xOpen(self, name, flags):
        wanted = flags[0]
        if name is None or wanted & _LOCAL_FILES:
            return apsw.VFSFile("", name, flags)
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        store_name = _store_name(path)
        storage = self.storage
        if wanted & apsw.SQLITE_OPEN_MAIN_DB and store_name != storage.main_name:
            raise attach_refused(path, storage.main_name)  # the path as given: its leading / kept
        if wanted & apsw.SQLITE_OPEN_WAL:
            raise Error("WAL files are not supported: journal_mode is pinned to MEMORY")
        kvfile = storage.file(store_name)
        if storage.readonly:
            flags[1] = apsw.SQLITE_OPEN_READONLY
        else:
            flags[1] = wanted
        on_pragma = self._on_pragma if store_name == storage.main_name else None
        if kvfile.pin is not None:
            return ReaderVfsFile(kvfile, on_pragma)
        return KvVfsFile(kvfile, on_pragma, self._commit_on_sync)

    def xAccess(self, pathname: str, flags: int) -> bool:
        return self.storage.exists(_store_name(pathname))

    def xDelete(self, pathname: str, syncdir: bool) -> None:
        self.storage.delete(_store_name(pathname))

    def xFullPathname(self, name: str) -> str:
        return name

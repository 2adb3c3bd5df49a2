"""The APSW VFS that serves every open database's files from its :class:`Storage`.

One VFS serves the whole process: each open database is *mounted* on it
(:meth:`KvVfs.mount`), which gives it a path of its own, ``/<token>/<name>``, that
SQLite opens; the VFS finds the database's storage by the token. Registering a
VFS per database cost SQLite a walk of its whole VFS list at every open and
close, which made opening slower the more databases were open. The token is
random and a database's main file opens only once per mount (by its own
connection), so no ``ATTACH`` can reach another database's files.

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

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import apsw

from ..errors import Error
from ..format.layout import MAX_NAME_BYTES
from ..storage.kvfile import KvFile
from ..storage.storage import Storage
from .common import attach_refused

_LOCAL_FILES = (
    apsw.SQLITE_OPEN_TEMP_DB
    | apsw.SQLITE_OPEN_TEMP_JOURNAL
    | apsw.SQLITE_OPEN_TRANSIENT_DB
    | apsw.SQLITE_OPEN_SUBJOURNAL
)

#: What the VFS is registered as.
VFS_NAME = "sqlkv"
#: Random bytes in a mount's token (written in hex in the path).
_TOKEN_BYTES = 8
#: Bytes a path adds to a database name: ``/``, the token, ``/``, ``-journal``.
_PATH_OVERHEAD = 1 + 2 * _TOKEN_BYTES + 1 + len("-journal")
#: The longest path the VFS takes: the longest database name (checked at open,
#: for both backends, see layout.check_database_name), the mount's ``/<token>/``
#: and SQLite's ``-journal`` must fit.
MAX_PATH_BYTES = MAX_NAME_BYTES + _PATH_OVERHEAD

OnPragma = Callable[[apsw.VFSFcntlPragma], bool]


@dataclass
class _Mount:
    """One open database on the VFS."""

    storage: Storage
    on_pragma: OnPragma | None
    main_opened: bool = False


def _split(path: str) -> tuple[str, str]:
    """``/<token>/<name>`` as ``(token, name)``; ``("", path)`` for any other path."""
    token, slash, name = path[1:].partition("/")
    return (token, name) if path.startswith("/") and slash else ("", path)


class KvVfsFile:
    """What SQLite calls on an open file, handed to a :class:`KvFile`."""

    def __init__(self, kvfile: KvFile, on_pragma: OnPragma | None) -> None:
        self.kvfile = kvfile
        self.xRead = kvfile.read
        self.xWrite = kvfile.write
        self.xTruncate = kvfile.truncate
        self.xFileSize = kvfile.file_size
        self._on_pragma = on_pragma

    def xSync(self, flags: int) -> None:
        pass  # the commit is at COMMIT_PHASETWO

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

    def __init__(self, kvfile: KvFile, on_pragma: OnPragma | None) -> None:
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
    """The process's one VFS (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(VFS_NAME, "", maxpathname=MAX_PATH_BYTES)
        self._mounts: dict[str, _Mount] = {}

    def mount(self, storage: Storage, on_pragma: OnPragma | None) -> str:
        """Serve ``storage``'s files; the path SQLite is to open its main file as."""
        token = secrets.token_hex(_TOKEN_BYTES)
        self._mounts[token] = _Mount(storage, on_pragma)
        return f"/{token}/{storage.main_name}"

    def unmount(self, path: str) -> None:
        """Stop serving the files of the database opened as ``path`` (after its connection closed)."""
        self._mounts.pop(_split(path)[0], None)

    def _find(self, path: str) -> tuple[_Mount | None, str]:
        token, name = _split(path)
        return self._mounts.get(token), name

    # APSW takes any object with the file methods; its stub names only its own VFSFile.
    def xOpen(  # type: ignore[override]
        self, name: str | apsw.URIFilename | None, flags: list[int]
    ) -> apsw.VFSFile | KvVfsFile:
        wanted = flags[0]
        if name is None or wanted & _LOCAL_FILES:
            return apsw.VFSFile("", name, flags)
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        mount, store_name = self._find(path)
        if mount is None:
            raise attach_refused(path)  # the path as given
        storage = mount.storage
        if wanted & apsw.SQLITE_OPEN_MAIN_DB:
            if store_name != storage.main_name or mount.main_opened:
                raise attach_refused(store_name, storage.main_name)
            mount.main_opened = True
        if wanted & apsw.SQLITE_OPEN_WAL:
            raise Error("WAL files are not supported: journal_mode is pinned to MEMORY")
        kvfile = storage.file(store_name)
        if storage.readonly:
            flags[1] = apsw.SQLITE_OPEN_READONLY
        else:
            flags[1] = wanted
        on_pragma = mount.on_pragma if store_name == storage.main_name else None
        if kvfile.pin is not None:
            return ReaderVfsFile(kvfile, on_pragma)
        return KvVfsFile(kvfile, on_pragma)

    def xAccess(self, pathname: str, flags: int) -> bool:
        mount, store_name = self._find(pathname)
        return mount is not None and mount.storage.exists(store_name)

    def xDelete(self, pathname: str, syncdir: bool) -> None:
        mount, store_name = self._find(pathname)
        if mount is not None:
            mount.storage.delete(store_name)

    def xFullPathname(self, name: str) -> str:
        return name


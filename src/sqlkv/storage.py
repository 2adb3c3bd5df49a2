"""Storage: the files of one database in one store.

The one object both engines talk to. It owns the store client, the layout,
the chunk files (the database and, rarely, a journal beside it) and the commit
step. Opening costs one round trip: the database's FileMeta, its journal's
FileMeta and its first chunks come back in a single ``get_batch``.
"""

from __future__ import annotations

from . import commit as commit_step
from .errors import ConfigError, Error, StoreLimitError
from .kvfile import KvFile
from .layout import Layout, decode_file_meta
from .metrics import Stats
from .store import StoreClient

#: Bytes of the database read ahead at open, in the same round trip as its FileMeta:
#: page 1 and the first root pages, enough for most queries' schema look-up.
OPEN_PREFETCH_BYTES = 16 * 1024
#: The most chunks one read-ahead fetch asks for.
MAX_READ_AHEAD_CHUNKS = 256


class Storage:
    """The files of the database ``main_name`` in the store behind ``client``."""

    def __init__(
        self,
        client: StoreClient,
        layout: Layout,
        main_name: str,
        chunk_size: int,
        cache_bytes: int,
        readonly: bool = False,
    ) -> None:
        self.client = client
        self.stats: Stats = client.stats
        self.layout = layout
        self.main_name = main_name
        self.chunk_size = chunk_size
        self.cache_bytes = cache_bytes
        self.readonly = readonly
        #: Expected store values that make every commit conditional (writer fencing).
        self.fence: dict[bytes, bytes | None] | None = None
        self.failure: BaseException | None = None
        limits = client.limits
        if limits.max_value_bytes is not None and chunk_size > limits.max_value_bytes:
            raise StoreLimitError(
                f"chunk_size {chunk_size} exceeds the store's largest value "
                f"({limits.max_value_bytes} bytes)"
            )
        #: The most chunks one ``get_batch`` may ask for within the store's limits
        #: (``None``: no limit), for reading a whole file at once.
        self.max_batch_chunks: int | None = None
        if limits.max_batch_keys is not None:
            self.max_batch_chunks = limits.max_batch_keys
        if limits.max_batch_bytes is not None:
            by_bytes = max(1, limits.max_batch_bytes // (chunk_size + 64))
            self.max_batch_chunks = min(self.max_batch_chunks or by_bytes, by_bytes)
        max_read = min(MAX_READ_AHEAD_CHUNKS, self.max_batch_chunks or MAX_READ_AHEAD_CHUNKS)
        self.max_read_chunks = max(1, min(max_read, cache_bytes // (4 * chunk_size)))
        self.main: KvFile | None = None
        self._files: dict[str, KvFile] = {}
        self._known_meta: dict[str, bytes | None] = {}

    def open(self) -> KvFile:
        """Read the FileMeta of the database and of the files SQLite looks for beside
        it (journal, WAL), and the database's first chunks: one round trip."""
        layout, name = self.layout, self.main_name
        prefetch = range(max(1, min(16, OPEN_PREFETCH_BYTES // self.chunk_size)))
        names = [name, name + "-journal", name + "-wal"]
        keys = [layout.meta_key(n) for n in names] + layout.chunk_keys(name, prefetch)
        values = self.client.get_batch(keys)
        self._known_meta.update(zip(names, values))
        main = self.file(name)
        main.prefetched(dict(zip(prefetch, values[len(names):])))
        self.main = main
        return main

    def file(self, name: str) -> KvFile:
        """The open :class:`KvFile` called ``name`` (the database or a file beside it)."""
        kvfile = self._files.get(name)
        if kvfile is None:
            if name in self._known_meta:
                meta = self._known_meta[name]
            else:
                meta = self.client.get(self.layout.meta_key(name))
            kvfile = self._files[name] = KvFile(self, name, meta)
        return kvfile

    def exists(self, name: str) -> bool:
        """Whether the file ``name`` exists in the store with a size above zero."""
        kvfile = self._files.get(name)
        if kvfile is not None:
            return kvfile.size > 0
        if name not in self._known_meta:
            self._known_meta[name] = self.client.get(self.layout.meta_key(name))
        meta = self._known_meta[name]
        return meta is not None and decode_file_meta(meta, self.chunk_size) > 0

    def delete(self, name: str) -> None:
        """Remove the file ``name`` (its chunks, then its FileMeta) from the store."""
        if name == self.main_name:
            raise ConfigError("the database file itself cannot be deleted through SQLite")
        self._check_writable()
        kvfile = self.file(name)
        chunks = -(-kvfile.committed_size // self.chunk_size)
        keys = self.layout.chunk_keys(name, range(chunks)) + [kvfile.meta_key]
        step = self.client.limits.max_batch_keys or len(keys)
        for start in range(0, len(keys), step):
            self.client.delete_batch(keys[start : start + step])
        self._files.pop(name, None)
        self._known_meta[name] = None

    def _check_writable(self) -> None:
        if self.readonly:
            raise Error(f"database {self.main_name!r} was opened read-only")

    def commit(self, kvfile: KvFile, puts: list, deletes: list) -> None:
        """Commit one file's changes (called by :meth:`KvFile.sync`)."""
        self._check_writable()
        commit_step.commit(self.client, puts, deletes, self.fence)

    def close(self) -> None:
        self._files.clear()

"""Where a file's bytes live in the key-value store, byte for byte.

Two layouts are supported (see docs/layout.md):

``seed`` (default)
    meta  ``prefix 00 name``
    chunk ``prefix 01 name 00 index(u32be)``

``rivet-v2``
    One database per key space, with no prefix byte; the file name is not
    part of any key: the main name only labels the database, and a file's
    suffix beside it selects a tag (main 0, journal 1, WAL 2, shared memory 3).
    ``kv_prefix`` cannot be honoured and is refused (options.py).
    meta  ``08 01 00 tag``
    chunk ``08 01 01 tag index(u32be)``

sqlkv also keeps a few keys of its own next to a file (the commit record of a
staged commit, staged chunks, the writer lease). They live in a key range no
layout uses for its own data, so other implementations never see them:

``seed``      ``prefix 02 name 00 kind suffix``
``rivet-v2``  ``08 01 F0 tag kind suffix``

The FileMeta value is 10 bytes: u16le version (1) and u64le file size.

Which database a key belongs to is decided here too (:func:`database_of`), so
that a store that groups keys by database (Redis Cluster hash tags) needs no
knowledge of the layouts' bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import ConfigError, CorruptError

FILE_META_VERSION = 1
MAX_CHUNKS = 2**32

_META = struct.Struct("<HQ")
_INDEX = struct.Struct(">I")

# Kinds of sqlkv's own keys (one byte after the file's part of the key).
EXT_COMMIT_RECORD = b"c"
EXT_STAGED_CHUNK = b"d"
EXT_STAGED_MANIFEST = b"m"
EXT_LEASE = b"l"

#: What a store key is (:attr:`KeyInfo.what`): a file's FileMeta, one of its
#: chunks, or one of sqlkv's own keys beside it.
META, CHUNK, EXT = "meta", "chunk", "ext"

#: The suffixes of SQLite's rollback journal and WAL: the files beside a database
#: whose keys hold its data (the open, the inventory and the transfer look for
#: these). SQLite's ``-shm`` has a place in both layouts (:data:`RIVET_TAGS`) but
#: is only an index SQLite rebuilds from the WAL.
JOURNAL, WAL = "-journal", "-wal"
SIDECARS = (JOURNAL, WAL)


@dataclass(frozen=True)
class KeyInfo:
    """What a key of a layout is (:meth:`Layout.classify`): ``what`` is :data:`META`,
    :data:`CHUNK` (with its ``index``) or :data:`EXT` (sqlkv's own key, with its
    ``kind`` byte and the ``suffix`` after it), of file ``file_name``."""

    what: str
    file_name: str
    index: int | None = None
    kind: bytes = b""
    suffix: bytes = b""


def record_key(layout: Layout, name: str) -> bytes:
    """Where the commit record of a staged commit of file ``name`` is kept."""
    return layout.ext_key(name, EXT_COMMIT_RECORD)


def encode_file_meta(size: int) -> bytes:
    """The FileMeta value for a file of ``size`` bytes."""
    return _META.pack(FILE_META_VERSION, size)


def chunk_count(size: int, chunk_size: int) -> int:
    """How many chunks a file of ``size`` bytes has."""
    return -(-size // chunk_size)


def last_chunk(size: int, chunk_size: int) -> tuple[int, int] | None:
    """The index of the last chunk of a file of ``size`` bytes and how many of
    its bytes lie inside the file, the length sqlkv stores it at (``None``: an
    empty file has no chunk). A database whose last chunk is not there at that
    length does not open (storage.py); ``check`` and ``ls`` name it."""
    if size <= 0:
        return None
    index = (size - 1) // chunk_size
    return index, size - index * chunk_size


def chunk_spans(offset: int, length: int, chunk_size: int) -> Iterator[tuple[int, int, int]]:
    """The chunks that bytes ``[offset, offset + length)`` of a file touch, in order:
    ``(index, lo, hi)`` per chunk, ``lo:hi`` being the touched slice within the chunk.

    The one place that does this arithmetic, for reads and writes alike.
    """
    end = offset + length
    first = offset // chunk_size
    if length > 0 and (end - 1) // chunk_size == first:  # within one chunk: SQLite's page writes
        start = first * chunk_size
        return iter(((first, offset - start, end - start),))
    return iter([
        (index, max(offset, index * chunk_size) - index * chunk_size,
         min(end, (index + 1) * chunk_size) - index * chunk_size)
        for index in range(first, (end - 1) // chunk_size + 1 if length > 0 else 0)
    ])


def decode_file_meta(value: bytes, chunk_size: int, key: bytes) -> int:
    """The file size a FileMeta value holds; :class:`CorruptError` if it is not one."""
    if len(value) != _META.size:
        raise CorruptError(
            f"FileMeta at key {key.hex()} is {len(value)} bytes long, expected {_META.size}"
        )
    version, size = _META.unpack(value)
    if version != FILE_META_VERSION:
        raise CorruptError(f"FileMeta at key {key.hex()} has unknown version {version}")
    if chunk_count(size, chunk_size) > MAX_CHUNKS:
        raise CorruptError(
            f"FileMeta at key {key.hex()} gives size {size}, beyond 2^32 chunks of {chunk_size} bytes"
        )
    return size


#: The longest database name, in UTF-8 bytes, on either backend (so that a database
#: made on one opens on the other): backend ``pages`` hands SQLite a path of at most
#: 4096 bytes that holds the name and 26 bytes more (see vfs.py).
MAX_NAME_BYTES = 4070
#: The longest suffix of sqlkv's own keys: a manifest piece's or staged chunk's u32 index.
_EXT_SUFFIX_BYTES = _INDEX.size


def longest_key_bytes(layout: Layout, name: str) -> int:
    """The length of the longest key sqlkv writes for database ``name`` in ``layout``:
    its FileMeta, its chunks and sqlkv's own keys beside it (staging, lease,
    versions: one kind byte and at most a u32 after the file's part of the key)."""
    return max(
        len(layout.meta_key(name)),
        len(layout.chunk_key(name, 0)),
        len(layout.ext_key(name, EXT_STAGED_CHUNK, bytes(_EXT_SUFFIX_BYTES))),
    )


def check_database_name(name: str, layout: Layout, max_key_bytes: int | None) -> None:
    """:class:`ConfigError` if database ``name`` is longer than sqlkv (:data:`MAX_NAME_BYTES`)
    or a store whose keys end at ``max_key_bytes`` takes (its longest key, see
    :func:`longest_key_bytes`, would not fit): checked at open, before any store call,
    so that no commit fails on it later."""
    size = len(check_file_name(name).encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise ConfigError(f"database name is {size} bytes long (UTF-8); sqlkv takes at most {MAX_NAME_BYTES}")
    if max_key_bytes is None:
        return
    longest = longest_key_bytes(layout, name)
    if longest > max_key_bytes:
        raise ConfigError(
            f"database name is {size} bytes long (UTF-8): its longest key in layout {layout.name} "
            f"would be {longest} bytes, and the store takes keys of at most {max_key_bytes} bytes "
            f"(a name of at most {size - (longest - max_key_bytes)} bytes fits)"
        )


def check_file_name(name: object) -> str:
    """Return ``name`` if it can name a file in the store, else raise a clear error."""
    if not isinstance(name, str):
        raise ConfigError(f"file name must be a str, not {type(name).__name__}")
    if not name:
        raise ConfigError("file name must not be empty")
    if "\x00" in name:
        raise ConfigError("file name must not contain a NUL character")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"file name is not valid Unicode: {exc}") from None
    return name


class Layout:
    """Turns (file name, chunk index) into store keys for one layout."""

    name = ""

    def meta_key(self, file_name: str) -> bytes:
        raise NotImplementedError

    def chunk_key(self, file_name: str, index: int) -> bytes:
        raise NotImplementedError

    def ext_key(self, file_name: str, kind: bytes, suffix: bytes = b"") -> bytes:
        """A key of sqlkv's own beside ``file_name`` (see the module docstring)."""
        raise NotImplementedError

    def chunk_keys(self, file_name: str, indices: Iterable[int]) -> list[bytes]:
        return [self.chunk_key(file_name, i) for i in indices]

    def chunk_prefix(self, file_name: str) -> bytes:
        """The bytes every chunk key of ``file_name`` starts with (for a scan)."""
        return self.chunk_key(file_name, 0)[: -_INDEX.size]

    def ext_prefix(self, file_name: str) -> bytes:
        """The bytes every key of sqlkv's own beside ``file_name`` starts with (for a scan)."""
        return self.ext_key(file_name, b"")

    def classify(self, key: bytes) -> KeyInfo | None:
        """What ``key`` is in this layout, or ``None`` for a key this layout does
        not make. The one place that reads a key back, so that no caller counts bytes."""
        raise NotImplementedError


class SeedLayout(Layout):
    """Layout ``seed``: the file name is part of every key."""

    name = "seed"

    def __init__(self, kv_prefix: int) -> None:
        self.prefix = bytes([kv_prefix])
        self._names: dict[str, bytes] = {}

    def _name(self, file_name: str) -> bytes:
        encoded = self._names.get(file_name)
        if encoded is None:
            encoded = check_file_name(file_name).encode("utf-8")
            self._names[file_name] = encoded
        return encoded

    def meta_key(self, file_name: str) -> bytes:
        return self.prefix + b"\x00" + self._name(file_name)

    def chunk_key(self, file_name: str, index: int) -> bytes:
        return self.prefix + b"\x01" + self._name(file_name) + b"\x00" + _INDEX.pack(index)

    def chunk_keys(self, file_name: str, indices: Iterable[int]) -> list[bytes]:
        head = self.prefix + b"\x01" + self._name(file_name) + b"\x00"
        pack = _INDEX.pack
        return [head + pack(i) for i in indices]

    def ext_key(self, file_name: str, kind: bytes, suffix: bytes = b"") -> bytes:
        return self.prefix + b"\x02" + self._name(file_name) + b"\x00" + kind + suffix

    def kind_prefix(self, what: str) -> bytes:
        """The bytes every key of kind ``what`` (:data:`META`, :data:`CHUNK`,
        :data:`EXT`) of every file with this prefix starts with (for a scan)."""
        return self.prefix + bytes([_SEED_KINDS.index(what)])

    def classify(self, key: bytes) -> KeyInfo | None:
        """See :meth:`Layout.classify`. A name that is not UTF-8 (no sqlkv key has
        one) is read with replacement characters."""
        parts = _seed_parts(key) if key[:1] == self.prefix else None
        if parts is None:
            return None
        what, raw, rest = parts
        index, kind, suffix = None, b"", b""
        if what == CHUNK:
            index = _INDEX.unpack(rest)[0]
        elif what == EXT:
            if not rest:
                return None
            kind, suffix = rest[:1], rest[1:]
        return KeyInfo(what, raw.decode("utf-8", "replace"), index, kind, suffix)

    @staticmethod
    def database_of(key: bytes) -> bytes | None:
        """The database a key of this layout belongs to: its prefix byte and the
        main file's name (a sidecar's suffix taken off), or ``None`` for a key
        of another shape."""
        parts = _seed_parts(key)
        if parts is None:
            return None
        name = parts[1]
        for suffix in SIDECAR_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                return key[:1] + name[: -len(suffix)]
        return key[:1] + name


_SEED_KINDS = (META, CHUNK, EXT)  # by the byte after the prefix


def _seed_parts(key: bytes) -> tuple[str, bytes, bytes] | None:
    """A key of layout ``seed`` taken apart: what it is, the file's name (bytes)
    and what follows the name (a chunk's index bytes; sqlkv's own key's kind and
    suffix), or ``None`` for a key of another shape."""
    if len(key) < 3 or key[1] >= len(_SEED_KINDS):
        return None
    what = _SEED_KINDS[key[1]]
    if what == META:  # prefix 00 name
        name, rest = key[2:], b""
    elif what == CHUNK:  # prefix 01 name 00 index(4)
        if len(key) < 8 or key[-5] != 0:
            return None
        name, rest = key[2:-5], key[-4:]
    else:  # sqlkv's own: prefix 02 name 00 kind suffix
        end = key.find(b"\x00", 2)
        if end < 3:
            return None
        name, rest = key[2:end], key[end + 1 :]
    if b"\x00" in name:
        return None
    return what, name, rest

RIVET_TAGS = {"": 0, JOURNAL: 1, WAL: 2, "-shm": 3}
#: The files SQLite keeps beside a database, by the suffix of their name (where
#: :func:`database_of` places their keys: with the database's).
SIDECAR_SUFFIXES = tuple(suffix.encode() for suffix in RIVET_TAGS if suffix)


class RivetV2Layout(Layout):
    """Layout ``rivet-v2``: one database per key space, files told apart by a tag."""

    name = "rivet-v2"

    def __init__(self, main_name: str) -> None:
        self.main_name = check_file_name(main_name)

    def tag(self, file_name: str) -> int:
        if file_name.startswith(self.main_name):
            tag = RIVET_TAGS.get(file_name[len(self.main_name):])
            if tag is not None:
                return tag
        raise ConfigError(
            f"layout rivet-v2 holds one database per key space ({self.main_name!r} "
            f"and its journal); it has no place for file {file_name!r}"
        )

    def meta_key(self, file_name: str) -> bytes:
        return bytes((0x08, 0x01, 0x00, self.tag(file_name)))

    def chunk_key(self, file_name: str, index: int) -> bytes:
        return bytes((0x08, 0x01, 0x01, self.tag(file_name))) + _INDEX.pack(index)

    def ext_key(self, file_name: str, kind: bytes, suffix: bytes = b"") -> bytes:
        return bytes((0x08, 0x01, 0xF0, self.tag(file_name))) + kind + suffix

    def classify(self, key: bytes) -> KeyInfo | None:
        """See :meth:`Layout.classify`: the file is the main name with the tag's suffix."""
        if not self.is_key(key):
            return None
        file_name = self.main_name + _RIVET_SUFFIXES[key[3]]
        if key[2] == 0x00:
            return KeyInfo(META, file_name)
        if key[2] == 0x01:
            return KeyInfo(CHUNK, file_name, _INDEX.unpack(key[4:])[0])
        return KeyInfo(EXT, file_name, None, key[4:5], key[5:])

    @staticmethod
    def is_key(key: bytes) -> bool:
        """Whether ``key`` has a shape of this layout (``08 01`` then meta, chunk
        or sqlkv's own key of file tag 0..3). Bytes ``F0`` then ``00``..``03``
        are not UTF-8, so no ``seed`` key reads this way except a chunk key
        of a ``seed`` file named ``"\\x01"``, which is taken for this layout's."""
        if len(key) < 4 or key[0] != 0x08 or key[1] != 0x01 or key[3] > 3:
            return False
        kind = key[2]
        return (kind == 0x00 and len(key) == 4) or (kind == 0x01 and len(key) == 8) or (
            kind == 0xF0 and len(key) > 4
        )


_RIVET_SUFFIXES = {tag: suffix for suffix, tag in RIVET_TAGS.items()}

LAYOUTS = ("seed", "rivet-v2")


def database_of(key: bytes) -> bytes | None:
    """The part of any store key that names the database it belongs to, or ``None``.

    For a key of layout ``seed``: its prefix byte and the main file's name,
    the same for the database's sidecars (journal, WAL, shared memory) and
    for sqlkv's own keys beside them, so a store can keep one database's keys
    together (Redis Cluster hash tags). ``None`` for a key of layout
    ``rivet-v2``, whose key space is the database (no byte of the key names
    it), and for a key of no layout. The answer for a key never changes:
    stores place existing data by it.
    """
    if RivetV2Layout.is_key(key):
        return None
    return SeedLayout.database_of(key)


def make_layout(layout: str, kv_prefix: int, main_name: str) -> Layout:
    """The :class:`Layout` called ``layout`` for a database file named ``main_name``."""
    if layout == "seed":
        return SeedLayout(kv_prefix)
    if layout == "rivet-v2":
        return RivetV2Layout(main_name)
    raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")

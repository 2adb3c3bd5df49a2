"""Where a file's bytes live in the key-value store, byte for byte.

Two layouts are supported (see the project's LAYOUT.md):

``seed`` (default)
    meta  ``prefix 00 name``
    chunk ``prefix 01 name 00 index(u32be)``

``rivet-v2``
    One database per key space; the file name only selects a tag
    (main 0, journal 1, WAL 2, shared memory 3).
    meta  ``08 01 00 tag``
    chunk ``08 01 01 tag index(u32be)``

sqlkv also keeps a few keys of its own next to a file (the commit record of a
staged commit, staged chunks, the writer lease). They live in a key range no
layout uses for its own data, so other implementations never see them:

``seed``      ``prefix 02 name 00 kind suffix``
``rivet-v2``  ``08 01 F0 tag kind suffix``

The FileMeta value is 10 bytes: u16le version (1) and u64le file size.
"""

from __future__ import annotations

import struct

from .errors import ConfigError, CorruptError

FILE_META_VERSION = 1
MAX_CHUNKS = 2**32

_META = struct.Struct("<HQ")
_INDEX = struct.Struct(">I")

# Kinds of sqlkv's own keys (one byte after the file's part of the key).
EXT_COMMIT_RECORD = b"c"
EXT_STAGED_CHUNK = b"d"
EXT_STAGED_MANIFEST = b"m"
EXT_LEASE = b"l"


def encode_file_meta(size: int) -> bytes:
    """The FileMeta value for a file of ``size`` bytes."""
    return _META.pack(FILE_META_VERSION, size)


def chunk_count(size: int, chunk_size: int) -> int:
    """How many chunks a file of ``size`` bytes has."""
    return -(-size // chunk_size)


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

    def chunk_keys(self, file_name: str, indices) -> list[bytes]:
        return [self.chunk_key(file_name, i) for i in indices]


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

    def chunk_keys(self, file_name: str, indices) -> list[bytes]:
        head = self.prefix + b"\x01" + self._name(file_name) + b"\x00"
        pack = _INDEX.pack
        return [head + pack(i) for i in indices]

    def ext_key(self, file_name: str, kind: bytes, suffix: bytes = b"") -> bytes:
        return self.prefix + b"\x02" + self._name(file_name) + b"\x00" + kind + suffix


RIVET_TAGS = {"": 0, "-journal": 1, "-wal": 2, "-shm": 3}


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


LAYOUTS = ("seed", "rivet-v2")


def make_layout(layout: str, kv_prefix: int, main_name: str) -> Layout:
    """The :class:`Layout` called ``layout`` for a database file named ``main_name``."""
    if layout == "seed":
        return SeedLayout(kv_prefix)
    if layout == "rivet-v2":
        return RivetV2Layout(main_name)
    raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")

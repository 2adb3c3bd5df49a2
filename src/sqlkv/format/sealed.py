"""Values of sqlkv's own that carry a checksum bound to the key they are stored under.

A commit record, a manifest piece, a version record and a version-log entry
are each stored as their body followed by a BLAKE2b digest over the key and
the body, so a garbled value, or a value copied under another key, is told
apart from a real one before anything is done on its word.
"""

from __future__ import annotations

import hashlib

from ..errors import CorruptError

#: Digest bytes of a value whose word decides what is overwritten (commit records, pieces).
DIGEST_BYTES = 8


def digest(key: bytes, body: bytes, size: int = DIGEST_BYTES) -> bytes:
    """The ``size``-byte BLAKE2b digest of ``body`` bound to ``key``: what :func:`seal` appends."""
    # One call over the joined bytes: the same digest as an update per part, fewer calls.
    return hashlib.blake2b(len(key).to_bytes(4, "big") + key + body, digest_size=size).digest()


def seal(key: bytes, body: bytes, size: int = DIGEST_BYTES) -> bytes:
    """``body`` followed by its ``size``-byte checksum, bound to the key it is stored under."""
    return body + digest(key, body, size)


def unseal(key: bytes, value: bytes, what: str, size: int = DIGEST_BYTES) -> bytes:
    """The body of a value :func:`seal` made for ``key``; :class:`CorruptError` if it is not one."""
    body, check = value[:-size], value[-size:]
    if len(value) < size or check != digest(key, body, size):
        raise CorruptError(
            f"{what} at key {key.hex()} fails its checksum (garbled, or not written by "
            "this version of sqlkv)"
        )
    return body

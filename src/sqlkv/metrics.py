"""Counters of what a database costs: store round trips, keys, bytes, cache use.

One :class:`Stats` per open database. The store client counts round trips and
traffic, the chunk cache counts hits and misses, the commit path counts
commits. Read them with ``db.stats()`` or ``PRAGMA sqlkv_stats``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

ROUND_TRIP_KINDS = ("get", "get_batch", "put", "put_batch", "delete_batch", "write_batch")


@dataclass
class Stats:
    """Counters since the database was opened (or since :meth:`reset`)."""

    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROUND_TRIP_KINDS, 0))
    keys_read: int = 0
    bytes_read: int = 0
    keys_written: int = 0
    bytes_written: int = 0
    keys_deleted: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    commits: int = 0
    store_seconds: float = 0.0

    @property
    def round_trips(self) -> int:
        """Store calls of every kind: each one is one round trip."""
        return sum(self.calls.values())

    def reset(self) -> None:
        """Set every counter back to zero."""
        self.__dict__.update(type(self)().__dict__)

    def count_read(self, keys: int, values: Iterable[bytes | None]) -> None:
        """Account for ``keys`` keys read, answered with ``values`` (their bytes count)."""
        self.keys_read += keys
        size = 0
        for value in values:  # a loop, not a generator: no call per value
            if value is not None:
                size += len(value)
        self.bytes_read += size

    def count_written(self, entries: Iterable[tuple[bytes, bytes]]) -> None:
        """Account for ``entries`` written: their keys, and key plus value bytes."""
        n = size = 0
        for key, value in entries:
            n += 1
            size += len(key) + len(value)
        self.keys_written += n
        self.bytes_written += size

    def as_dict(self) -> dict:
        """A plain dict of the counters, with ``round_trips`` added."""
        out = asdict(self)
        out["round_trips"] = self.round_trips
        return out

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

"""MemoryStore: a store in a Python dict, for tests and throwaway databases."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from .contract import StoreLimits, expectations_hold


class MemoryStore:
    """A thread-safe in-memory store with atomic batches and no limits.

    It has the five store calls, the atomic conditional ``write_batch`` and
    ``scan`` (keys by prefix). Nothing survives the process.
    """

    limits = StoreLimits()

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def get_batch(self, keys: list[bytes]) -> list[bytes | None]:
        with self._lock:
            data = self._data
            return [data.get(k) for k in keys]

    def put(self, key: bytes, value: bytes) -> None:
        with self._lock:
            self._data[key] = bytes(value)

    def put_batch(self, entries: list[tuple[bytes, bytes]]) -> None:
        with self._lock:
            self._data.update((k, bytes(v)) for k, v in entries)

    def delete_batch(self, keys: list[bytes]) -> None:
        with self._lock:
            for k in keys:
                self._data.pop(k, None)

    def write_batch(
        self,
        puts: list[tuple[bytes, bytes]],
        deletes: list[bytes],
        expect: dict[bytes, bytes | None] | None = None,
    ) -> bool:
        """Apply ``puts`` and ``deletes`` at once if every expectation holds."""
        with self._lock:
            data = self._data
            if not expectations_hold(data.get, expect):
                return False
            for k in deletes:
                data.pop(k, None)
            for k, v in puts:  # a loop, not a generator: no call per entry
                data[k] = v if type(v) is bytes else bytes(v)
            return True

    def scan(self, prefix: bytes) -> Iterator[bytes]:
        """The keys that start with ``prefix``, in byte order."""
        with self._lock:
            keys = sorted(k for k in self._data if k.startswith(prefix))
        return iter(keys)

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        """Nothing to release; present so every store can be closed alike."""

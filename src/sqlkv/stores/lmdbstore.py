"""LmdbStore: the embedded, persistent default store, on LMDB.

Every batch is one LMDB write transaction, so it is atomic and durable once
the call returns. The memory map grows by doubling whenever it fills, in this
process or another, so a user never meets LMDB's "map full" error. LMDB allows
one environment per file per process; stores opened on the same path share it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

try:
    import lmdb
except ImportError as exc:  # sqlkv imports and works without it; only this store needs it
    lmdb = None  # type: ignore[assignment]
    _LMDB_MISSING = str(exc)

from ..errors import ConfigError, StoreError, StoreLimitError
from .contract import StoreLimits, expectations_hold

_T = TypeVar("_T")

_INITIAL_MAP_SIZE = 64 * 1024 * 1024
_MAX_KEY_SIZE = 511  # LMDB's default compile-time key limit


class _SharedEnv:
    """One LMDB environment per real path (and mode) in this process, reference counted."""

    _lock = threading.Lock()
    _envs: dict[tuple[str, bool], _SharedEnv] = {}

    def __init__(self, path: str, readonly: bool, map_size: int) -> None:
        self.path = path
        self.readonly = readonly
        # A read-only environment takes no lock file (its directory may be read-only):
        # it reads what writers committed, as any LMDB reader does.
        self.env = lmdb.open(
            path, map_size=map_size, subdir=True, max_dbs=0, readahead=False,
            readonly=readonly, lock=not readonly, create=False,
        )
        self.refs = 0
        # LMDB resizes the map only while no transaction of this process is
        # active: transactions are counted, and wait while a resize runs.
        self.cond = threading.Condition()
        self.active = 0
        self.resizing = False

    @classmethod
    def acquire(cls, path: str, readonly: bool, create: bool, map_size: int) -> _SharedEnv:
        real = os.path.realpath(path)
        with cls._lock:
            shared = cls._envs.get((real, readonly))
            if shared is None:
                _make_directory(path, real, readonly, create)
                try:
                    shared = _SharedEnv(real, readonly, map_size)
                except lmdb.Error as exc:
                    raise StoreError(f"cannot open the LMDB store at {path}: {exc}") from exc
                cls._envs[(real, readonly)] = shared
            shared.refs += 1
            return shared

    def release(self) -> None:
        with _SharedEnv._lock:
            self.refs -= 1
            if self.refs == 0:
                del _SharedEnv._envs[(self.path, self.readonly)]
                self.env.close()


def _make_directory(path: str, real: str, readonly: bool, create: bool) -> None:
    """Make the store's directory if it is missing, as far as asked (see :class:`LmdbStore`)."""
    if os.path.exists(real):
        # Asked in this order, a directory another process makes meanwhile is no error.
        if os.path.isdir(real):
            return
        raise ConfigError(f"LMDB store path {path} exists and is not a directory")
    if readonly:
        raise StoreError(f"there is no LMDB store at {path} (opened read-only, so none is made)")
    parent = os.path.dirname(real)
    if not create and not os.path.isdir(parent):
        raise ConfigError(
            f"LMDB store directory {path} does not exist, nor does its parent {parent}; "
            "ask for it to be created (create=True, or --create on the command line)"
        )
    try:
        os.makedirs(real, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot make the LMDB store directory {path}: {exc.strerror or exc}") from exc


class LmdbStore:
    """A store in an LMDB environment (a directory) at ``path``.

    Every batch is durable (synced to disk) when the call returns. Keys longer
    than LMDB's 511-byte limit are refused with a :class:`StoreLimitError`
    before anything is written (``limits.max_key_bytes`` declares the limit, so
    a database name too long for it is refused at open).

    A missing directory is made when its parent exists, or with all missing
    parents when ``create`` is true; otherwise a :class:`ConfigError` says so
    (a typo in a path must not make a new, empty store somewhere else).
    ``readonly=True`` opens an existing store for reading only, without a lock
    file, so it works in a directory this process cannot write; every write
    then fails with a :class:`StoreError`. ``map_size`` is the initial map size
    in bytes (the map grows by itself as needed). Failures to open (permissions,
    not an LMDB directory) are :class:`StoreError` with LMDB's own as the cause.
    """

    limits = StoreLimits(atomic_batches=True, max_key_bytes=_MAX_KEY_SIZE)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        create: bool = False,
        map_size: int = _INITIAL_MAP_SIZE,
    ) -> None:
        if lmdb is None:
            raise ConfigError(
                f"LmdbStore needs the lmdb package, which cannot be imported ({_LMDB_MISSING}); "
                "pip install lmdb"
            )
        if not isinstance(map_size, int) or isinstance(map_size, bool) or map_size < 4096:
            raise ConfigError(f"LmdbStore map_size must be an int of at least 4096 bytes, not {map_size!r}")
        self.path = os.fspath(path)
        self.readonly = readonly
        self._shared = _SharedEnv.acquire(self.path, readonly, create, map_size)
        self._env = self._shared.env
        self._closed = False

    # -- transactions that survive map growth ----------------------------------

    def _run(self, write: bool, body: Callable[[Any], _T]) -> _T:
        shared = self._shared
        if self._closed:
            raise StoreError(f"LmdbStore at {self.path} is closed")
        if write and self.readonly:
            raise StoreError(f"the LMDB store at {self.path} was opened read-only")
        for _attempt in range(64):
            with shared.cond:
                while shared.resizing:
                    shared.cond.wait()
                shared.active += 1
            try:
                with self._env.begin(write=write) as txn:
                    return body(txn)
            except lmdb.BadValsizeError as exc:
                # Raised by a put inside the transaction, which is then aborted: nothing was written.
                raise StoreLimitError(f"LMDB refused a key or value of this batch, and wrote nothing: {exc}") from exc
            except lmdb.MapFullError:
                grow = True
            except lmdb.MapResizedError:
                grow = False
            finally:
                with shared.cond:
                    shared.active -= 1
                    shared.cond.notify_all()
            self._resize(grow)
        raise StoreError(f"LMDB at {self.path} could not grow its map")

    def _resize(self, grow: bool) -> None:
        shared = self._shared
        with shared.cond:
            if shared.resizing:  # another thread is at it; retry after it
                while shared.resizing:
                    shared.cond.wait()
                return
            shared.resizing = True
            try:
                while shared.active:
                    shared.cond.wait()
                if grow:
                    self._env.set_mapsize(self._env.info()["map_size"] * 2)
                else:
                    self._env.set_mapsize(0)  # adopt the size another process set
            finally:
                shared.resizing = False
                shared.cond.notify_all()

    @staticmethod
    def _check_key(key: bytes) -> None:
        if len(key) > _MAX_KEY_SIZE:
            raise StoreLimitError(
                f"key of {len(key)} bytes is longer than LMDB's {_MAX_KEY_SIZE}-byte limit "
                "(use a shorter file name); nothing was written"
            )

    # -- the store calls -------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        return self._run(False, lambda txn: txn.get(key))

    def get_batch(self, keys: list[bytes]) -> list[bytes | None]:
        return self._run(False, lambda txn: [txn.get(k) for k in keys])

    def put(self, key: bytes, value: bytes) -> None:
        self._check_key(key)
        self._run(True, lambda txn: txn.put(key, value))

    def put_batch(self, entries: list[tuple[bytes, bytes]]) -> None:
        for k, _ in entries:
            self._check_key(k)

        def body(txn: Any) -> None:
            for k, v in entries:
                txn.put(k, v)

        self._run(True, body)

    def delete_batch(self, keys: list[bytes]) -> None:
        def body(txn: Any) -> None:
            for k in keys:
                txn.delete(k)

        self._run(True, body)

    def write_batch(
        self,
        puts: list[tuple[bytes, bytes]],
        deletes: list[bytes],
        expect: dict[bytes, bytes | None] | None = None,
    ) -> bool:
        """Apply ``puts`` and ``deletes`` in one transaction if every expectation holds."""
        for k, _ in puts:
            self._check_key(k)

        def body(txn: Any) -> bool:
            if not expectations_hold(txn.get, expect):
                return False
            for k in deletes:
                txn.delete(k)
            for k, v in puts:
                txn.put(k, v)
            return True

        return self._run(True, body)

    def scan(self, prefix: bytes) -> Iterator[bytes]:
        """The keys that start with ``prefix``, in byte order."""

        def body(txn: Any) -> list[bytes]:
            keys = []
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for key in cursor.iternext(keys=True, values=False):
                    if not key.startswith(prefix):
                        break
                    keys.append(bytes(key))
            return keys

        return iter(self._run(False, body))

    def close(self) -> None:
        """Release this store's hold on the environment."""
        if not self._closed:
            self._closed = True
            self._shared.release()

    def __enter__(self) -> LmdbStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

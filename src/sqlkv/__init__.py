"""sqlkv: real SQLite databases whose files live in a key-value store.

Async API (the shape of RivetKit's SQLite VFS)::

    vfs = sqlkv.SqliteVfs(kv_prefix=9, chunk_size=4096)
    db = await vfs.open("app.db", store)

Sync twin::

    db = sqlkv.connect(store, "app.db")
"""

from .backends import resolve_backend
from .database import Database, SqliteVfs
from .engine import QueryResult, RunResult
from .errors import (
    ClosedError,
    ConfigError,
    CorruptError,
    Error,
    FencedError,
    LockedError,
    PinnedSettingError,
    SqlError,
    StoreError,
    StoreLimitError,
    StoreProtocolError,
    TransactionError,
    UnusableError,
)
from .lmdbstore import LmdbStore
from .memory import MemoryStore
from .metrics import Stats
from .store import RIVET_ACTOR_LIMITS, KvStore, StoreLimits
from .sync import Connection, connect
from .transaction import AsyncTransaction, Transaction
from .urls import open_store

__version__ = "0.1.0"

_REDIS_NAMES = ("AsyncRedisStore", "RedisStore")


def __getattr__(name: str):
    # The Redis stores import redis (the optional extra [redis]) only when asked for.
    if name in _REDIS_NAMES:
        from . import redis_store

        return getattr(redis_store, name)
    raise AttributeError(f"module 'sqlkv' has no attribute {name!r}")

__all__ = [
    "AsyncRedisStore",
    "AsyncTransaction",
    "ClosedError",
    "ConfigError",
    "Connection",
    "CorruptError",
    "Database",
    "Error",
    "FencedError",
    "KvStore",
    "LmdbStore",
    "LockedError",
    "MemoryStore",
    "PinnedSettingError",
    "QueryResult",
    "RIVET_ACTOR_LIMITS",
    "RedisStore",
    "RunResult",
    "SqlError",
    "SqliteVfs",
    "Stats",
    "StoreError",
    "StoreLimitError",
    "StoreLimits",
    "StoreProtocolError",
    "Transaction",
    "TransactionError",
    "UnusableError",
    "connect",
    "open_store",
    "resolve_backend",
]

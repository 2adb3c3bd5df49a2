"""sqlkv: real SQLite databases whose files live in a key-value store.

Async API (the shape of RivetKit's SQLite VFS)::

    vfs = sqlkv.SqliteVfs(kv_prefix=9, chunk_size=4096)
    db = await vfs.open("app.db", store)

Sync twin::

    db = sqlkv.connect(store, "app.db")
"""

from .engine.backends import resolve_backend
from .engine.common import QueryResult, RunResult
from .errors import (
    ClosedError,
    ConcurrentCommitError,
    ConfigError,
    ConflictError,
    CorruptError,
    Error,
    ExistsError,
    FencedError,
    LockedError,
    NotFoundError,
    OutcomeUnknownError,
    PinnedSettingError,
    RewoundError,
    SqlError,
    StaleError,
    StoreError,
    StoreLimitError,
    StoreProtocolError,
    StoreTimeoutError,
    TransactionError,
    UnusableError,
)
from .metrics import Stats
from .runtime.connection import Connection, connect
from .runtime.database import Database, SqliteVfs
from .runtime.transaction import AsyncTransaction, Transaction
from .stores.contract import (
    RIVET_ACTOR_LIMITS,
    AnyKvStore,
    AsyncKvStore,
    KvStore,
    StoreCapabilities,
    StoreLimits,
    store_capabilities,
)
from .stores.lmdbstore import LmdbStore
from .stores.memory import MemoryStore
from .stores.urls import open_store
from .stores.wrapper import AsyncStoreWrapper, StoreWrapper
from .tools.inventory import (
    CheckReport,
    DatabaseInfo,
    LeaseInfo,
    Problem,
    check_database,
    lease_info,
    list_databases,
    remove_database,
)
from .tools.transfer import SourceFileError, TransferResult, copy_database, export_database, import_database
from .version import __version__ as __version__

_REDIS_NAMES = ("AsyncRedisStore", "RedisStore")


def __getattr__(name: str) -> object:
    # The Redis stores import redis (the optional extra [redis]) only when asked for.
    if name in _REDIS_NAMES:
        from .stores import redis_store

        return getattr(redis_store, name)
    raise AttributeError(f"module 'sqlkv' has no attribute {name!r}")

__all__ = [
    "AnyKvStore",
    "AsyncKvStore",
    "AsyncRedisStore",
    "CheckReport",
    "AsyncStoreWrapper",
    "AsyncTransaction",
    "ClosedError",
    "ConcurrentCommitError",
    "ConfigError",
    "ConflictError",
    "Connection",
    "CorruptError",
    "Database",
    "DatabaseInfo",
    "Error",
    "ExistsError",
    "FencedError",
    "KvStore",
    "LeaseInfo",
    "LmdbStore",
    "LockedError",
    "MemoryStore",
    "NotFoundError",
    "OutcomeUnknownError",
    "PinnedSettingError",
    "Problem",
    "QueryResult",
    "RIVET_ACTOR_LIMITS",
    "RedisStore",
    "RewoundError",
    "RunResult",
    "SqlError",
    "SourceFileError",
    "SqliteVfs",
    "StaleError",
    "Stats",
    "StoreCapabilities",
    "StoreError",
    "StoreLimitError",
    "StoreLimits",
    "StoreProtocolError",
    "StoreWrapper",
    "StoreTimeoutError",
    "TransferResult",
    "Transaction",
    "TransactionError",
    "UnusableError",
    "check_database",
    "connect",
    "copy_database",
    "export_database",
    "import_database",
    "lease_info",
    "list_databases",
    "open_store",
    "remove_database",
    "store_capabilities",
    "resolve_backend",
]

"""Stores by URL: ``memory://``, ``lmdb://PATH``, ``redis://``, ``rediss://``,
``redis+cluster://``, ``rediss+cluster://``."""

from __future__ import annotations

from collections.abc import Callable

from .errors import ConfigError
from .store import KvStore


def _memory(url: str) -> KvStore:
    from .memory import MemoryStore

    return MemoryStore()


def _lmdb(url: str) -> KvStore:
    from .lmdbstore import LmdbStore

    rest = url.split("://", 1)[1]
    if not rest:
        raise ConfigError("lmdb:// needs a path, as in lmdb://./sqlkv-data or lmdb:///var/db")
    return LmdbStore(rest)


def _redis(url: str) -> KvStore:
    try:
        from .redis_store import RedisStore
    except ImportError as exc:  # redis is the optional extra [redis]
        raise ConfigError(
            f"{url.split('://', 1)[0]}:// needs the redis package: pip install 'sqlkv[redis]'"
        ) from exc
    return RedisStore.from_url(url)


#: URL scheme -> function of the whole URL that opens the store.
SCHEMES: dict[str, Callable[[str], KvStore]] = {
    "memory": _memory,
    "lmdb": _lmdb,
    "redis": _redis,
    "rediss": _redis,
    "redis+cluster": _redis,
    "rediss+cluster": _redis,
}


def open_store(url: str) -> KvStore:
    """The store a URL names. Unknown schemes are refused with the list of known ones."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"store URL {url!r} has no scheme; known schemes: "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    scheme = url.split("://", 1)[0]
    opener = SCHEMES.get(scheme.lower())
    if opener is None:
        raise ConfigError(
            f"unknown store scheme {scheme!r} in {url!r}; known schemes: "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    return opener(url)

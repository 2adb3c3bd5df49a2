"""Stores by URL: ``memory://``, ``lmdb://PATH[?options]``, ``redis://``, ``rediss://``,
``redis+cluster://``, ``rediss+cluster://``, ``redis+sentinel://``, ``rediss+sentinel://``
(the Redis ones are parsed by :func:`sqlkv.stores.redis_store.parse_redis_url`).

``lmdb://`` takes the options ``map_size`` (initial map size in bytes),
``readonly`` and ``create`` (``1``/``true`` or ``0``/``false``); see
:class:`sqlkv.LmdbStore`. Any other option, and anything after
``memory://``, is a :class:`ConfigError` naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from ..errors import ConfigError
from .contract import KvStore

LMDB_URL_OPTIONS = ("map_size", "readonly", "create")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _memory(url: str, create: bool) -> KvStore:
    from .memory import MemoryStore

    if url.split("://", 1)[1]:
        raise ConfigError(f"memory:// takes no path or options, not {url!r}")
    return MemoryStore()


def _flag(name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"lmdb:// option {name} must be 1 or 0 (true or false), not {value!r}")


def lmdb_store_path(url: str) -> str | None:
    """The directory an ``lmdb://`` URL names, or ``None`` for another scheme."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "lmdb":
        return None
    return rest.partition("?")[0] or None


def _lmdb(url: str, create: bool) -> KvStore:
    from .lmdbstore import LmdbStore

    path = lmdb_store_path(url)
    query = url.partition("?")[2]
    if not path:
        raise ConfigError("lmdb:// needs a path, as in lmdb://./sqlkv-data or lmdb:///var/db")
    options: dict[str, object] = {"create": create}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)) if query else ():
        if name == "map_size":
            try:
                options[name] = int(value)
            except ValueError:
                raise ConfigError(f"lmdb:// option map_size must be a number of bytes, not {value!r}") from None
        elif name in ("readonly", "create"):
            options[name] = _flag(name, value)
        else:
            raise ConfigError(
                f"unknown option {name!r} in {url!r}; lmdb:// takes {', '.join(LMDB_URL_OPTIONS)}"
            )
    return LmdbStore(path, **options)  # type: ignore[arg-type]


def _redis(url: str, create: bool) -> KvStore:
    try:
        from .redis_store import RedisStore
    except ImportError as exc:  # redis is the optional extra [redis]
        raise ConfigError(
            f"{url.split('://', 1)[0]}:// needs the redis package: pip install 'sqlkv[redis]'"
        ) from exc
    return RedisStore.from_url(url)


#: URL scheme -> function of the whole URL (and ``create``) that opens the store.
SCHEMES: dict[str, Callable[[str, bool], KvStore]] = {
    "memory": _memory,
    "lmdb": _lmdb,
    "redis": _redis,
    "rediss": _redis,
    "redis+cluster": _redis,
    "rediss+cluster": _redis,
    "redis+sentinel": _redis,
    "rediss+sentinel": _redis,
}


def open_store(url: str, *, create: bool = False) -> KvStore:
    """The store a URL names. Unknown schemes are refused with the list of known ones.

    ``create``: for ``lmdb://``, make the store's directory even when its
    parent directories are missing too (without it only the last one is made).
    """
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
    return opener(url, create)

"""The options a database is opened with, and the parameters of one open: each declared, defaulted and checked once, at construction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigError
from ..format.layout import LAYOUTS, Layout, make_layout
from .lease import DEFAULT_LEASE_SECONDS, check_lease_seconds, check_lock_timeout

BACKENDS = ("pages", "snapshot")

#: ``kv_prefix``'s default; the only value layout ``rivet-v2``, which has no prefix, accepts.
DEFAULT_KV_PREFIX = 9
DEFAULT_CACHE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_DIRTY_BYTES = 64 * 1024 * 1024
#: ``store_timeout``'s default: seconds sqlkv waits for one store call.
DEFAULT_STORE_TIMEOUT = 30.0


def optional_seconds(name: str, value: object) -> float | None:
    """``value`` as a float if it is ``None`` or a positive (finite) number of
    seconds; a :class:`ConfigError` naming option ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds or None, not {value!r}")
    return float(value)


def _positive_int(field_name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{field_name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ConfigError(f"{field_name} must be positive, not {value}")
    return value


@dataclass(frozen=True)
class Options:
    """How databases are laid out and run.

    ``kv_prefix``: first byte of every key (0..255) in layout ``seed``; layout
    ``rivet-v2`` has no prefix and refuses any value but the default. ``chunk_size``:
    bytes per chunk. ``backend``: ``"pages"``, ``"snapshot"`` or ``None`` (choose at run
    time, see :func:`sqlkv.engine.backends.resolve_backend`). ``layout``: ``"seed"`` or
    ``"rivet-v2"``. ``cache_bytes``: the chunk cache's size per database.
    ``lease_seconds``: how long a writer's lease lasts unrenewed (see lease.py);
    ``None`` opens writers without a lease (the caller vouches for one writer).
    ``max_dirty_bytes``: the most changed chunks a transaction keeps in
    memory; past it they are spilled to the store's staging area and the
    commit is staged (see commit.py), so memory stays bounded at any size.
    ``store_timeout``: how many seconds sqlkv waits for any one store call
    before it gives up on it (see :class:`~sqlkv.stores.contract.StoreClient` and the
    README's "What happens when the store fails"); ``None``: for ever.
    """

    kv_prefix: int = DEFAULT_KV_PREFIX
    chunk_size: int = 4096
    backend: str | None = None
    layout: str = "seed"
    cache_bytes: int = DEFAULT_CACHE_BYTES
    lease_seconds: float | None = DEFAULT_LEASE_SECONDS
    max_dirty_bytes: int = DEFAULT_MAX_DIRTY_BYTES
    store_timeout: float | None = DEFAULT_STORE_TIMEOUT

    def __post_init__(self) -> None:
        prefix = self.kv_prefix
        if not isinstance(prefix, int) or isinstance(prefix, bool):
            raise ConfigError(f"kv_prefix must be an int, not {type(prefix).__name__}")
        if not 0 <= prefix <= 255:
            raise ConfigError(f"kv_prefix must be in 0..255, not {prefix}")
        _positive_int("chunk_size", self.chunk_size)
        _positive_int("cache_bytes", self.cache_bytes)
        _positive_int("max_dirty_bytes", self.max_dirty_bytes)
        if self.backend is not None and self.backend not in BACKENDS:
            raise ConfigError(
                f"backend must be one of {', '.join(BACKENDS)} or None, not {self.backend!r}"
            )
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.layout == "rivet-v2" and self.chunk_size != 4096:
            raise ConfigError("layout rivet-v2 has 4096-byte chunks; chunk_size must be 4096")
        if self.layout == "rivet-v2" and prefix != DEFAULT_KV_PREFIX:
            raise ConfigError(
                f"layout rivet-v2 has no prefix byte (every key begins 08 01), so kv_prefix "
                f"{prefix} cannot be honoured; leave kv_prefix at {DEFAULT_KV_PREFIX} and keep "
                "databases apart by key space (one store, Redis namespace or LMDB path each)"
            )
        check_lease_seconds(self.lease_seconds)
        optional_seconds("store_timeout", self.store_timeout)

    def make_layout(self, main_name: str) -> Layout:
        return make_layout(self.layout, self.kv_prefix, main_name)


def check_max_staleness(value: object) -> float:
    """``max_staleness`` if it is a number of seconds, 0 or more; else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ConfigError(f"max_staleness must be a number of seconds, 0 or more, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class OpenParams:
    """How one database is opened: the parameters of ``SqliteVfs.open``,
    :func:`sqlkv.connect` and :func:`sqlkv.dbapi2.connect`, declared, defaulted and
    checked here once, and carried as this one value to the engine and its storage.

    ``readonly``: a reader, which never writes and takes no lease.
    ``lock_timeout``: seconds a writer waits for another writer's lease.
    ``max_staleness``: seconds a reader may serve read transactions without
    checking the version (see versions.py); it applies to readers only, so a
    writer given any but the default is a :class:`ConfigError` naming it.
    """

    readonly: bool = False
    lock_timeout: float = 0.0
    max_staleness: float = 0.0

    def __post_init__(self) -> None:
        check_lock_timeout(self.lock_timeout)
        object.__setattr__(self, "max_staleness", check_max_staleness(self.max_staleness))
        if not self.readonly and self.max_staleness != OpenParams.max_staleness:
            raise ConfigError(
                f"max_staleness={self.max_staleness!r} applies to readers only; "
                "open with readonly=True, or leave max_staleness out"
            )


#: Every open parameter at its default: the one place the front doors' signatures take them from.
OPEN_DEFAULTS = OpenParams()


#: The options :class:`sqlkv.SqliteVfs`, :func:`sqlkv.connect` and the DB-API's
#: ``connect`` take by keyword, in :class:`Options`' order.
OPTION_NAMES = tuple(f.name for f in fields(Options))
#: How many of them :class:`sqlkv.SqliteVfs` also takes by position (the seed's shape).
POSITIONAL_OPTIONS = 3


def unknown_options(keywords: Mapping[str, Any]) -> list[str]:
    """The names in ``keywords`` that are not options, sorted."""
    return sorted(set(keywords) - set(OPTION_NAMES))


def _raise_unknown(keywords: Mapping[str, Any]) -> None:
    unknown = unknown_options(keywords)
    if unknown:
        raise ConfigError(
            f"unknown option(s): {', '.join(unknown)}; the options are {', '.join(OPTION_NAMES)}"
        )


def options_from(keywords: Mapping[str, Any], positional: tuple[Any, ...] = ()) -> Options:
    """The :class:`Options` both APIs build from their callers' arguments.

    ``positional`` are the first options in order (at most
    :data:`POSITIONAL_OPTIONS`). An unknown name, an option given twice or too
    many positional values is a :class:`ConfigError` naming them, as is a bad value.
    """
    _raise_unknown(keywords)
    if len(positional) > POSITIONAL_OPTIONS:
        raise ConfigError(
            f"at most {POSITIONAL_OPTIONS} options by position "
            f"({', '.join(OPTION_NAMES[:POSITIONAL_OPTIONS])}), not {len(positional)}"
        )
    twice = sorted(set(OPTION_NAMES[: len(positional)]) & set(keywords))
    if twice:
        raise ConfigError(f"option(s) given both by position and by name: {', '.join(twice)}")
    return Options(**dict(zip(OPTION_NAMES, positional)), **keywords)

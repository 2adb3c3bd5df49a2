"""Every environment variable sqlkv reads, read here and nowhere else.

Each is read when it is needed (not at import), so a test or a program that
sets one before opening a database is heard. A value that cannot be used is a
:class:`ConfigError` naming the variable, never silently replaced by the default.

==============================  ===============================================
``SQLKV_BACKEND``               engine when ``backend=`` is not given (engine/backends.py)
``SQLKV_STORE``                 store URL of the CLI and the DB-API ``connect``
``SQLKV_HISTORY``               the shell's history file
``SQLKV_ASYNC_SPIN_US``         how long the loop looks for an answer before sleeping (runtime/pool.py)
``SQLKV_WORKER_FOLLOWS_LOOP``   ``0``: pool threads are not placed on the loop's core (runtime/pool.py)
``SQLKV_POOL_SIZE``             threads of each event loop's pool (runtime/pool.py)
``SQLKV_SQLITE_LOOKASIDE``      ``1``: leave SQLite's lookaside on (engine/pages.py)
==============================  ===============================================
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

#: Where the CLI and the DB-API keep databases when no store is named.
DEFAULT_STORE = "lmdb://./sqlkv-data"
DEFAULT_SPIN_US = 100.0
BACKEND_VAR = "SQLKV_BACKEND"


def _raw(name: str) -> str | None:
    """The variable's value with surrounding blanks removed; ``None`` if unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def backend() -> str | None:
    """``$SQLKV_BACKEND``, checked by :func:`sqlkv.engine.backends.resolve_backend`."""
    return _raw(BACKEND_VAR)


def store_url() -> str:
    """``$SQLKV_STORE``, else :data:`DEFAULT_STORE`."""
    return _raw("SQLKV_STORE") or DEFAULT_STORE


def history_path() -> Path:
    """``$SQLKV_HISTORY``, else ``~/.sqlkv_history``."""
    value = _raw("SQLKV_HISTORY")
    return Path(value) if value is not None else Path.home() / ".sqlkv_history"


def async_spin_seconds() -> float:
    """``$SQLKV_ASYNC_SPIN_US`` (microseconds, default 100) in seconds; ``0`` turns spinning off."""
    value = _raw("SQLKV_ASYNC_SPIN_US")
    if value is None:
        return DEFAULT_SPIN_US / 1e6
    try:
        micros = float(value)
    except ValueError:
        micros = -1.0
    if not 0 <= micros < 1e6:
        raise ConfigError(
            f"$SQLKV_ASYNC_SPIN_US must be a number of microseconds from 0 to 999999, not {value!r}"
        )
    return micros / 1e6


def _switch(name: str, default: bool) -> bool:
    """``$name``: ``1`` or ``0``; ``default`` when unset."""
    value = _raw(name)
    if value is None:
        return default
    if value in ("0", "1"):
        return value == "1"
    raise ConfigError(f"${name} must be 0 or 1, not {value!r}")


def worker_follows_loop() -> bool:
    """``$SQLKV_WORKER_FOLLOWS_LOOP``: ``1`` (the default) or ``0``."""
    return _switch("SQLKV_WORKER_FOLLOWS_LOOP", True)


def sqlite_lookaside() -> bool:
    """``$SQLKV_SQLITE_LOOKASIDE``: ``0`` (the default: turned off) or ``1`` (left on)."""
    return _switch("SQLKV_SQLITE_LOOKASIDE", False)


def pool_size() -> int | None:
    """``$SQLKV_POOL_SIZE``: a positive thread count, or ``None`` when unset."""
    value = _raw("SQLKV_POOL_SIZE")
    if value is None:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 1024:
        raise ConfigError(f"$SQLKV_POOL_SIZE must be a whole number from 1 to 1024, not {value!r}")
    return int(value)

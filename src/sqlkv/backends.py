"""Choosing an engine at run time, and opening a database on it.

``pages`` (APSW, the default) is used when APSW imports; otherwise
``snapshot`` (stdlib ``sqlite3``). The environment variable
``SQLKV_BACKEND`` overrides that default, and an explicit ``backend=``
overrides both.
"""

from __future__ import annotations

import asyncio
import os

from .engine import Engine
from .errors import ConfigError
from .layout import check_file_name
from .lease import check_lease_options, take_lease
from .options import BACKENDS, Options
from .store import StoreClient

ENV_VAR = "SQLKV_BACKEND"


def apsw_available() -> bool:
    """Whether APSW imports. Only an ImportError counts as "not available"."""
    try:
        import apsw  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(requested: str | None = None) -> str:
    """The backend to use: ``requested``, else ``$SQLKV_BACKEND``, else the best available."""
    if requested is not None:
        if requested not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
        return requested
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        if from_env not in BACKENDS:
            raise ConfigError(
                f"{ENV_VAR}={from_env!r} is not a backend; use one of {', '.join(BACKENDS)}"
            )
        return from_env
    return "pages" if apsw_available() else "snapshot"


def open_engine(
    options: Options,
    store: object,
    file_name: str,
    *,
    readonly: bool = False,
    loop: asyncio.AbstractEventLoop | None = None,
    lock_timeout: float = 0.0,
) -> Engine:
    """Open ``file_name`` in ``store`` on the backend the options resolve to.

    ``loop`` is the event loop an async store's calls are run on (the
    caller's, for the async API); without one a private loop is started when
    the store turns out to be async. A writer first takes the database's
    lease (see lease.py), waiting up to ``lock_timeout`` seconds for it.
    """
    check_file_name(file_name)
    check_lease_options(options.lease_seconds, lock_timeout)
    backend = resolve_backend(options.backend)
    client = StoreClient(store, loop=loop)
    try:
        if not readonly and options.lease_seconds is not None:
            layout = options.make_layout(file_name)
            client.lease = take_lease(
                store, layout, file_name, options.lease_seconds, lock_timeout, loop
            )
        if backend == "pages":
            from .engine_pages import PagesEngine

            return PagesEngine(client, options, file_name, readonly)
        from .engine_snapshot import SnapshotEngine

        return SnapshotEngine(client, options, file_name, readonly)
    except BaseException:
        client.close()
        raise

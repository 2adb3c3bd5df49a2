"""Choosing an engine at run time, and opening a database on it.

``pages`` (APSW, the default) is used when APSW imports; otherwise
``snapshot`` (stdlib ``sqlite3``). The environment variable
``SQLKV_BACKEND`` overrides that default, and an explicit ``backend=``
overrides both.
"""

from __future__ import annotations

import asyncio

from .. import environment
from ..errors import ConfigError
from ..format.layout import check_file_name
from ..storage.lease import Leaser, LeaseRequest, release_and_close
from ..storage.options import BACKENDS, OpenParams, Options
from ..stores.contract import AnyKvStore, StoreClient
from .common import Engine

ENV_VAR = environment.BACKEND_VAR


def apsw_import_error() -> ImportError | None:
    """Why APSW cannot be imported, or ``None`` when it can.

    Only an ImportError means "not installed"; any other failure of the import
    (a broken build, say) is raised, not hidden behind the fallback.
    """
    try:
        import apsw  # noqa: F401
    except ImportError as exc:
        return exc
    return None


def apsw_available() -> bool:
    """Whether APSW imports. Only an ImportError counts as "not available"."""
    return apsw_import_error() is None


def _checked(backend: str, source: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"{source} must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "pages":
        missing = apsw_import_error()
        if missing is not None:
            raise ConfigError(
                f"{source} is 'pages', which needs APSW, and APSW cannot be imported "
                f"({missing}); install it (pip install apsw) or use backend 'snapshot'"
            ) from missing
    return backend


def resolve_backend(requested: str | None = None) -> str:
    """The backend to use: ``requested``, else ``$SQLKV_BACKEND``, else the best available.

    An unknown name, or ``pages`` where APSW cannot be imported, is a
    :class:`ConfigError` naming where the name came from.
    """
    if requested is not None:
        return _checked(requested, "backend")
    from_env = environment.backend()
    if from_env:
        return _checked(from_env, f"${ENV_VAR}")
    return "pages" if apsw_available() else "snapshot"


def open_engine(
    options: Options,
    store: AnyKvStore,
    file_name: str,
    params: OpenParams,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    client: StoreClient | None = None,
) -> Engine:
    """Open ``file_name`` in ``store`` on the backend the options resolve to,
    as ``params`` say (both checked when they were made).

    ``client``: the transport to ``store`` to use, for a caller that watches
    its calls (see :meth:`StoreClient.overdue`); made here when ``None``.

    ``loop`` is the event loop an async store's calls are run on (the
    caller's, for the async API); without one a private loop is started when
    the store turns out to be async. A writer first takes the database's
    lease (see lease.py), waiting up to ``params.lock_timeout`` seconds for it; its
    leaser works through the engine's transport (no second client, no second
    loop), and the engine releases the lease when it closes.
    """
    check_file_name(file_name)
    backend = resolve_backend(options.backend)
    if client is None:
        client = StoreClient(store, loop=loop, timeout=options.store_timeout)
    lease = None
    if not params.readonly and options.lease_seconds is not None:
        lease = LeaseRequest(
            Leaser(client), options.make_layout(file_name), file_name, options.lease_seconds,
            params.lock_timeout,
        )
    try:
        if backend == "pages":
            from .pages import PagesEngine

            return PagesEngine(client, options, file_name, params, lease)
        from .snapshot import SnapshotEngine

        return SnapshotEngine(client, options, file_name, params, lease)
    except BaseException:
        release_and_close(lease, client)
        raise

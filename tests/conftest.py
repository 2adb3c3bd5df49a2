"""Shared fixtures.

Every database a test opens through ``open_db`` / ``connect_db`` is checked at
the end of the test: reopened, and ``PRAGMA integrity_check`` must say ok.
API tests run against every backend (the ``backend`` fixture). The store
``open_db``/``connect_db`` use by default comes from ``new_store``, of the
kind the ``store_kind`` fixture says: a MemoryStore, and also Redis
(standalone and cluster, on backend ``pages``) for the tests that ask for
``new_store`` themselves or are marked ``all_stores`` (as test_api.py is).
The others bring their own stores, so Redis runs of them would repeat the
memory ones.
"""

from __future__ import annotations

import inspect

import pytest
from helpers import AsyncMemoryStore, integrity, make_16mib, unique_namespace

import sqlkv

BACKENDS = ["pages", "snapshot"]
#: (backend, store kind) pairs a test that uses ``new_store`` runs with.
MEMORY_COMBOS = [("pages", "memory"), ("snapshot", "memory")]
STORE_COMBOS = MEMORY_COMBOS + [("pages", "redis"), ("pages", "redis-cluster")]


def pytest_generate_tests(metafunc) -> None:
    names = metafunc.fixturenames
    if "store_kind" in names:
        wants_all = "new_store" in inspect.signature(metafunc.function).parameters or (
            metafunc.definition.get_closest_marker("all_stores") is not None
        )
        combos = STORE_COMBOS if wants_all else MEMORY_COMBOS
        metafunc.parametrize(
            ("backend", "store_kind"), combos, ids=[f"{b}-{k}" for b, k in combos]
        )
    elif "backend" in names:
        metafunc.parametrize("backend", BACKENDS)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A standalone redis-server of this test session (no persistence)."""
    from redis_servers import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A three-primary Redis Cluster of this test session."""
    from redis_servers import RedisCluster3

    cluster = RedisCluster3(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
async def new_store(store_kind, request):
    """``new_store(async_store=False)``: a fresh, empty store of the kind under
    test, with synchronous or ``async`` calls; closed at the end of the test."""
    made = []

    def factory(async_store: bool = False):
        if store_kind == "memory":
            store = AsyncMemoryStore() if async_store else sqlkv.MemoryStore()
        else:
            server = request.getfixturevalue(
                "redis_cluster" if store_kind == "redis-cluster" else "redis_server"
            )
            url = f"{server.url}?namespace={unique_namespace()}"
            store = sqlkv.AsyncRedisStore.from_url(url) if async_store else sqlkv.open_store(url)
        made.append(store)
        return store

    yield factory
    for store in made:
        closing = getattr(store, "close", None)
        if closing is not None and inspect.isawaitable(result := closing()):
            await result


class Opened:
    """Records every (store, name, options) a test opened, for the final check."""

    def __init__(self) -> None:
        self.entries: list[tuple[object, str, dict]] = []
        self.handles: list = []
        self.skip_check = False

    def add(self, store, name, options) -> None:
        key = (id(store), name)
        if all((id(s), n) != key for s, n, _ in self.entries):
            self.entries.append((store, name, options))

    def check(self) -> None:
        if self.skip_check:
            return
        for store, name, options in self.entries:
            options = {k: v for k, v in options.items() if k not in ("readonly",)}
            with sqlkv.connect(store, name, **options) as db:
                assert integrity(db) == [("ok",)], f"integrity_check failed for {name!r}"


@pytest.fixture
def opened():
    record = Opened()
    yield record


@pytest.fixture
async def open_db(backend, new_store, opened):
    """``await open_db(store=None, name="app.db", **options)``: an async Database
    (``store=None``: a new store of the kind under test)."""
    handles = []

    async def factory(store=None, name="app.db", **options):
        store = new_store() if store is None else store
        options.setdefault("backend", backend)
        readonly = options.pop("readonly", False)
        vfs = sqlkv.SqliteVfs(**options)
        db = await vfs.open(name, store, readonly=readonly)
        handles.append(db)
        opened.add(store, name, options)
        return db

    yield factory
    for db in handles:
        await db.close()
    opened.check()


@pytest.fixture
def connect_db(backend, new_store, opened):
    """``connect_db(store=None, name="app.db", **options)``: a sync Connection
    (``store=None``: a new store of the kind under test)."""
    handles = []

    def factory(store=None, name="app.db", **options):
        store = new_store() if store is None else store
        options.setdefault("backend", backend)
        db = sqlkv.connect(store, name, **options)
        handles.append(db)
        opened.add(store, name, {k: v for k, v in options.items() if k != "readonly"})
        return db

    yield factory
    for db in handles:
        db.close()
    opened.check()


@pytest.fixture(scope="session")
def store_16mib() -> sqlkv.MemoryStore:
    """A MemoryStore holding the 16 MiB ``bench.db``; copy it before changing it."""
    store = sqlkv.MemoryStore()
    make_16mib(store)
    return store


def pytest_terminal_summary(terminalreporter):
    """Say how many crash points the fault-injection tests ran."""
    import test_crash
    import test_group_commit

    if test_crash.CrashTally.points:
        terminalreporter.write_line(
            f"sqlkv fault injection: {test_crash.CrashTally.points} crash points run"
        )
    if test_group_commit.GroupTally.points:
        terminalreporter.write_line(
            f"sqlkv group commit: {test_group_commit.GroupTally.points} fault points run"
        )

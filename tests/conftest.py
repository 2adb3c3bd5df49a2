"""Shared fixtures.

Every database a test opens through ``open_db`` / ``connect_db`` is checked at
the end of the test: reopened, and ``PRAGMA integrity_check`` must say ok.
API tests run against every backend (the ``backend`` fixture).
"""

from __future__ import annotations

import pytest

import sqlkv
from helpers import integrity, make_16mib

BACKENDS = ["pages", "snapshot"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


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
async def open_db(backend, opened):
    """``await open_db(store=None, name="app.db", **options)``: an async Database."""
    handles = []

    async def factory(store=None, name="app.db", **options):
        store = sqlkv.MemoryStore() if store is None else store
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
def connect_db(backend, opened):
    """``connect_db(store=None, name="app.db", **options)``: a sync Connection."""
    handles = []

    def factory(store=None, name="app.db", **options):
        store = sqlkv.MemoryStore() if store is None else store
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

    if test_crash.CrashTally.points:
        terminalreporter.write_line(
            f"sqlkv fault injection: {test_crash.CrashTally.points} crash points run"
        )

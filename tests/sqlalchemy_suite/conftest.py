"""SQLAlchemy's third-party dialect compliance suite, run against ``sqlkv://``.

This folder is its own pytest session (SQLAlchemy's plugin wants one):
tests/test_sqlalchemy_suite.py runs it as a subprocess. The dialect is
registered here by name as well as by entry point, so the suite also runs from
a checkout whose installed metadata predates the entry points.

The provisioning hooks below are looked up by the URL's backend name,
``sqlkv``: one database per run (no followers), temporary tables as SQLite
makes them, and SQLite's own upsert.
"""

from sqlalchemy import pool
from sqlalchemy.dialects import registry

from sqlkv import dbapi2
from sqlkv.dbapi2.dialect import SQLKVDialect


class _SharedConnection:
    """One session-wide sqlkv connection, handed to every engine the suite makes.

    The suite opens many engines and connections on its one database at once;
    sqlkv has one writer per database, so they all share this one, as
    SQLAlchemy's own SQLite test runs share one connection for ``:memory:``.
    ``close()`` leaves it open for the next checkout.
    """

    _connections: dict = {}

    def __init__(self, args: tuple, kwargs: dict) -> None:
        key = (args, tuple(sorted(kwargs.items())))
        shared = self._connections.get(key)
        if shared is None or shared._closed:
            shared = self._connections[key] = dbapi2.connect(*args, **kwargs)
        object.__setattr__(self, "_shared", shared)

    def close(self) -> None:
        if self._shared.in_transaction:
            self._shared.rollback()

    def __getattr__(self, name):
        return getattr(self._shared, name)

    def __setattr__(self, name, value) -> None:
        setattr(self._shared, name, value)


class SuiteDialect(SQLKVDialect):
    """The dialect, every connection of it the shared one (see _SharedConnection)."""

    supports_statement_cache = True

    @classmethod
    def get_pool_class(cls, url):
        return pool.QueuePool  # its connections are all the shared one

    def connect(self, *args, **kwargs):
        return _SharedConnection(args, kwargs)


registry.register("sqlkv", "conftest", "SuiteDialect")

from sqlalchemy.testing import provision  # noqa: E402
from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F401,F403


@provision.generate_driver_url.for_db("sqlkv")
def _driver_url(url, driver, query_str):
    return url if driver == url.get_driver_name() else None


@provision.temp_table_keyword_args.for_db("sqlkv")
def _temp_table_keyword_args(cfg, eng):
    return {"prefixes": ["TEMPORARY"]}


@provision.stop_test_class_outside_fixtures.for_db("sqlkv")
def _stop_test_class(config, db, cls):
    db.dispose()  # let go of the writer's connection between classes


@provision.upsert.for_db("sqlkv")
def _upsert(cfg, table, returning, *, set_lambda=None, sort_by_parameter_order=False):
    from sqlalchemy.dialects.sqlite import insert

    statement = insert(table)
    if set_lambda is not None:
        statement = statement.on_conflict_do_update(set_=set_lambda(statement.excluded))
    else:
        statement = statement.on_conflict_do_nothing()
    return statement.returning(*returning, sort_by_parameter_order=sort_by_parameter_order)


_HERE = __import__("pathlib").Path(__file__).parent
#: Tests that fail the same way with SQLAlchemy's own sqlite+pysqlite driver.
SQLITE_DIALECT_FAILURES = _HERE / "sqlite_dialect_failures.txt"
#: Tests that need what sqlkv does not do (an ATTACHed schema).
SQLKV_SKIPS = _HERE / "sqlkv_skips.txt"


def _suite_id(item) -> str:
    """``Class::test[params]`` without the backend suffix SQLAlchemy adds to class names."""
    cls = item.cls.__name__.split("_sqlite+", 1)[0] if item.cls is not None else ""
    return f"{cls}::{item.name}"


def read_skips(path) -> dict[str, str]:
    """Test id -> why it is skipped, from one of the two lists."""
    known = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            test_id, reason = line.split("\t", 1)
            known[test_id] = reason
    return known


def pytest_collection_modifyitems(session, config, items):
    import os

    import pytest

    if os.environ.get("SQLKV_SUITE_NO_SKIPS") == "1":
        return  # the sqlite+pysqlite baseline run, which must fail the first list
    skips = {k: f"as with sqlite+pysqlite: {v}" for k, v in read_skips(SQLITE_DIALECT_FAILURES).items()}
    skips.update(read_skips(SQLKV_SKIPS))
    for item in items:
        reason = skips.get(_suite_id(item))
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))

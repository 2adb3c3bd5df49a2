"""Each option and open parameter is declared, defaulted and checked once (issue 23).

The front doors (``SqliteVfs``/``SqliteVfs.open``, ``sqlkv.connect``,
``sqlkv.dbapi2.connect``, the tools) take their defaults from one declaration
and check through it, so they cannot disagree.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

import sqlkv
from sqlkv import dbapi2
from sqlkv.runtime.database import HIBERNATE_AFTER, Database
from sqlkv.storage.options import Options


def test_a_writer_refuses_max_staleness_naming_it():
    store = sqlkv.MemoryStore()
    with pytest.raises(sqlkv.ConfigError, match="max_staleness"):
        sqlkv.connect(store, "a.db", max_staleness=1)
    with pytest.raises(sqlkv.ConfigError, match="max_staleness"):
        dbapi2.connect("a.db", store, max_staleness=1)

    async def async_open() -> None:
        await sqlkv.SqliteVfs().open("a.db", store, max_staleness=1)

    with pytest.raises(sqlkv.ConfigError, match="max_staleness"):
        asyncio.run(async_open())
    assert store._data == {}  # refused before anything was written
    with sqlkv.connect(store, "a.db", max_staleness=0) as writer:  # the default is no staleness: fine
        writer.exec("CREATE TABLE t(x)")
    with sqlkv.connect(store, "a.db", readonly=True, max_staleness=1) as reader:
        assert reader.query("SELECT count(*) FROM t").rows == [(0,)]


def test_the_tools_refuse_an_unknown_option_with_config_error_naming_it():
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "a.db") as db:
        db.exec("CREATE TABLE t(x)")
    for call in (
        lambda: sqlkv.check_database(store, "a.db", bogus=1),
        lambda: sqlkv.list_databases(store, bogus=1),
        lambda: sqlkv.remove_database(store, "a.db", bogus=1),
    ):
        with pytest.raises(sqlkv.ConfigError, match="bogus"):
            call()
    assert sqlkv.list_databases(store)[0].name == "a.db"  # nothing was lost


def test_hibernate_after_has_one_default_through_every_api():
    assert sqlkv.SqliteVfs().hibernate_after == HIBERNATE_AFTER
    for api in (sqlkv.SqliteVfs.__init__, Database.__init__):
        default = inspect.signature(api).parameters["hibernate_after"].default
        assert default in (HIBERNATE_AFTER, inspect.Parameter.empty), api


def test_every_front_door_takes_its_open_defaults_from_the_one_declaration():
    from sqlkv.storage.options import OPEN_DEFAULTS

    for api in (sqlkv.SqliteVfs.open, sqlkv.connect, dbapi2.connect):
        parameters = inspect.signature(api).parameters
        for name in ("readonly", "lock_timeout", "max_staleness"):
            assert parameters[name].default == getattr(OPEN_DEFAULTS, name), (api, name)


def test_open_params_keep_what_they_checked():
    from sqlkv.storage.options import OpenParams

    params = OpenParams(readonly=True, lock_timeout=2, max_staleness=3)
    assert params.max_staleness == 3.0 and isinstance(params.max_staleness, float)
    with pytest.raises(sqlkv.ConfigError, match="lock_timeout"):
        OpenParams(lock_timeout=-1)


class _CountedSeconds(float):
    """A number of seconds that counts the comparisons made of it (each check makes some)."""

    compared = 0

    def __lt__(self, other: object) -> bool:
        type(self).compared += 1
        return float(self) < other  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        type(self).compared += 1
        return float(self) > other  # type: ignore[operator]


def test_lease_seconds_is_checked_once_per_open():
    _CountedSeconds.compared = 0
    Options(lease_seconds=_CountedSeconds(30))
    one_check = _CountedSeconds.compared
    assert one_check > 0
    _CountedSeconds.compared = 0
    with sqlkv.connect(sqlkv.MemoryStore(), "a.db", lease_seconds=_CountedSeconds(30)):
        opened = _CountedSeconds.compared
    assert opened == one_check


def test_the_sqlalchemy_url_takes_every_declared_option_and_open_parameter():
    from dataclasses import fields

    pytest.importorskip("sqlalchemy")
    from sqlkv.dbapi2.dialect import _URL_OPTIONS
    from sqlkv.storage.options import OpenParams

    declared = {field.name for field in (*fields(Options), *fields(OpenParams))}
    assert set(_URL_OPTIONS) == declared | {"store"}

"""The public API on every backend: results, values, transactions, errors, lifecycle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import stored_keys

import sqlkv

pytestmark = pytest.mark.all_stores


async def test_exec_query_run(open_db):
    db = await open_db()
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    run = await db.run("INSERT INTO t(v) VALUES (?)", ["a"])
    assert (run.changes, run.last_insert_rowid) == (1, 1)
    await db.run("INSERT INTO t(v) VALUES (:v)", {"v": "b"})
    result = await db.query("SELECT id, v FROM t ORDER BY id")
    assert result.columns == ["id", "v"]
    assert result.rows == [(1, "a"), (2, "b")]
    empty = await db.query("SELECT v FROM t WHERE id = ?", [99])
    assert (empty.columns, empty.rows) == (["v"], [])


async def test_params_are_bound_not_formatted(open_db):
    db = await open_db()
    await db.exec("CREATE TABLE t(v TEXT)")
    evil = "x'); DROP TABLE t; --"
    await db.run("INSERT INTO t VALUES (?)", [evil])
    assert (await db.query("SELECT v FROM t")).rows == [(evil,)]


async def test_multi_statement_exec_with_callback(open_db):
    db = await open_db()
    seen = []
    results = await db.exec(
        "CREATE TABLE a(x); CREATE TABLE b(y, z);"
        "INSERT INTO a VALUES (1), (2); INSERT INTO b VALUES ('p', 'q');"
        "SELECT x FROM a ORDER BY x; SELECT y, z FROM b;",
        lambda row, columns: seen.append((row, columns)),
    )
    assert seen == [([1], ["x"]), ([2], ["x"]), (["p", "q"], ["y", "z"])]
    assert [r.rows for r in results if r.rows] == [[(1,), (2,)], [("p", "q")]]


async def test_async_callback_is_awaited(open_db):
    db = await open_db()
    seen = []

    async def callback(row, columns):
        await asyncio.sleep(0)
        seen.append(row)

    await db.exec("SELECT 1 UNION ALL SELECT 2", callback)
    assert seen == [[1], [2]]


async def test_query_and_run_take_one_statement(open_db):
    db = await open_db()
    await db.exec("CREATE TABLE t(x)")
    with pytest.raises(sqlkv.Error, match="exactly one statement"):
        await db.run("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)")
    # Nothing of a refused multi-statement call ran.
    assert (await db.query("SELECT count(*) FROM t")).rows == [(0,)]
    # Trailing semicolons and comments are not statements.
    assert (await db.query("SELECT 7; -- done\n ;  /* c */")).rows == [(7,)]


VALUES = [
    None,
    b"",
    b"\x00\x01\xff",
    0,
    -(2**63),
    2**63 - 1,
    1.5,
    -0.0,
    1e308,
    "",
    "nul\x00inside",
    "Unicode: é 漢字 🎉 \U0010ffff",
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:20] for v in VALUES])
async def test_values_round_trip_exactly(open_db, value):
    db = await open_db()
    await db.exec("CREATE TABLE t(v)")
    await db.run("INSERT INTO t VALUES (?)", [value])
    (got,), = (await db.query("SELECT v FROM t")).rows
    assert got == value and type(got) is type(value)


async def test_values_survive_reopen(open_db, new_store):
    store = new_store()
    db = await open_db(store)
    await db.exec("CREATE TABLE t(i INTEGER PRIMARY KEY, v)")
    for i, value in enumerate(VALUES):
        await db.run("INSERT INTO t VALUES (?, ?)", [i, value])
    await db.close()
    db = await open_db(store)
    rows = (await db.query("SELECT v FROM t ORDER BY i")).rows
    assert [r[0] for r in rows] == VALUES
    assert [type(r[0]) for r in rows] == [type(v) for v in VALUES]


async def test_integer_out_of_range_is_a_clear_error(open_db):
    db = await open_db()
    with pytest.raises(sqlkv.Error):
        await db.query("SELECT ?", [2**64])


async def test_sql_error_carries_sqlites_message(open_db):
    db = await open_db()
    with pytest.raises(sqlkv.SqlError, match="no such table: missing"):
        await db.query("SELECT * FROM missing")
    with pytest.raises(sqlkv.SqlError, match="syntax error"):
        await db.exec("SELEC 1")
    await db.exec("CREATE TABLE t(x UNIQUE)")
    await db.run("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlkv.SqlError, match="UNIQUE constraint failed"):
        await db.run("INSERT INTO t VALUES (1)")


async def test_commit_and_rollback(open_db, new_store):
    store = new_store()
    db = await open_db(store)
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    await db.exec("BEGIN; INSERT INTO t VALUES (2); ROLLBACK;")
    await db.exec("BEGIN; INSERT INTO t VALUES (3); COMMIT;")
    assert (await db.query("SELECT x FROM t ORDER BY x")).rows == [(1,), (3,)]
    await db.close()
    db = await open_db(store)
    assert (await db.query("SELECT x FROM t ORDER BY x")).rows == [(1,), (3,)]


async def test_rollback_of_a_transaction_that_spills_the_page_cache(open_db, new_store):
    store = new_store()
    db = await open_db(store)
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    await db.exec(
        "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
        "INSERT INTO t(v) SELECT printf('%.500c', 'a') FROM n; COMMIT;"
    )
    before = (await db.query("SELECT count(*), sum(length(v)) FROM t")).rows
    # A page cache of 10 pages: 3000 rows of 1000 bytes must spill to the file mid-transaction.
    await db.exec("PRAGMA cache_size = 10")
    async with db.transaction() as tx:
        await tx.exec(
            "UPDATE t SET v = 'changed';"
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
            "INSERT INTO t(v) SELECT printf('%.1000c', 'b') FROM n;"
        )
        assert (await tx.query("SELECT count(*) FROM t")).rows == [(3200,)]
        await tx.rollback()
    assert (await db.query("SELECT count(*), sum(length(v)) FROM t")).rows == before
    await db.close()
    db = await open_db(store)
    assert (await db.query("SELECT count(*), sum(length(v)) FROM t")).rows == before


async def test_thousand_inserts(open_db, new_store):
    store = new_store()
    db = await open_db(store)
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    for i in range(1000):
        await db.run("INSERT INTO t(v) VALUES (?)", [str(i).rjust(100, "x")])
    await db.close()
    db = await open_db(store)
    assert (await db.query("SELECT count(*), min(id), max(id) FROM t")).rows == [(1000, 1, 1000)]
    assert (await db.query("SELECT v FROM t WHERE id = 500")).rows == [("499".rjust(100, "x"),)]


async def test_fifty_updates_of_one_row(open_db, new_store):
    store = new_store()
    db = await open_db(store)
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO t VALUES (1, 0)")
    for _ in range(50):
        await db.run("UPDATE t SET n = n + 1 WHERE id = 1")
    await db.close()
    db = await open_db(store)
    assert (await db.query("SELECT n FROM t")).rows == [(50,)]


async def test_fifty_concurrent_coroutines_all_land(open_db, new_store):
    store = new_store()
    db = await open_db(store)
    await db.exec("CREATE TABLE t(k INTEGER PRIMARY KEY)")
    await asyncio.wait_for(
        asyncio.gather(*(db.run("INSERT INTO t VALUES (?)", [k]) for k in range(50))), 60
    )
    assert (await db.query("SELECT count(*), sum(k) FROM t")).rows == [(50, sum(range(50)))]
    await db.close()
    db = await open_db(store)
    assert (await db.query("SELECT count(*) FROM t")).rows == [(50,)]


async def test_use_after_close(open_db):
    db = await open_db()
    await db.exec("CREATE TABLE t(x)")
    await db.close()
    await db.close()  # twice is fine
    assert db.closed
    for call in (db.exec("SELECT 1"), db.query("SELECT 1"), db.run("SELECT 1")):
        with pytest.raises(sqlkv.ClosedError):
            await call


async def test_async_with_closes(open_db, new_store, backend):
    store = new_store()
    async with await sqlkv.SqliteVfs(backend=backend).open("app.db", store) as db:
        await db.exec("CREATE TABLE t(x)")
    assert db.closed
    with pytest.raises(sqlkv.ClosedError):
        await db.query("SELECT 1")
    await open_db(store)  # registered for the final integrity check


def test_sync_twin(connect_db, new_store):
    store = new_store()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x)")
    assert db.run("INSERT INTO t VALUES (?)", [1]).changes == 1
    rows = []
    db.exec("SELECT x FROM t", lambda row, columns: rows.append((row, columns)))
    assert rows == [([1], ["x"])]
    db.close()
    with pytest.raises(sqlkv.ClosedError):
        db.query("SELECT 1")
    with connect_db(store) as again:
        assert again.query("SELECT x FROM t").rows == [(1,)]
    assert again.closed


async def test_async_store_with_async_api(open_db, new_store):
    store = new_store(async_store=True)
    db = await open_db(store)
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)")
    await db.close()
    db = await open_db(store)
    assert (await db.query("SELECT sum(x) FROM t")).rows == [(3,)]


def test_async_store_with_sync_api(connect_db, new_store):
    store = new_store(async_store=True)
    with connect_db(store) as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)")
    with connect_db(store) as db:
        assert db.query("SELECT sum(x) FROM t").rows == [(3,)]


async def test_event_loop_runs_while_an_async_store_works(open_db, new_store):
    """The loop is never blocked: a ticker advances while the store is slow."""
    inner = new_store(async_store=True)

    class SlowStore:
        """The five calls of ``inner``, with ``put_batch`` slowed down."""

        get, get_batch, put, delete_batch = inner.get, inner.get_batch, inner.put, inner.delete_batch

        async def put_batch(self, entries):
            await asyncio.sleep(0.05)
            await inner.put_batch(entries)

    db = await open_db(SlowStore())
    ticks = 0

    async def ticker():
        nonlocal ticks
        for _ in range(1000):
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    await db.exec("CREATE TABLE t(x)")
    for i in range(3):
        await db.run("INSERT INTO t VALUES (?)", [i])
    task.cancel()
    assert ticks >= 10, f"the event loop advanced only {ticks} times in 4 slow commits"


async def test_unicode_file_name(open_db, new_store):
    store = new_store()
    name = "données/漢字 🎉.db"
    db = await open_db(store, name)
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES ('ok')")
    await db.close()
    assert any(name.encode() in k for k in await stored_keys(store))
    db = await open_db(store, name)
    assert (await db.query("SELECT x FROM t")).rows == [("ok",)]


@pytest.mark.parametrize("name", [":memory:", "", "a\x00b", 42, None, b"app.db"])
async def test_bad_file_names_are_refused(backend, name):
    store = sqlkv.MemoryStore()
    vfs = sqlkv.SqliteVfs(backend=backend)
    if name == ":memory:":
        # Not special here: it is a file in the store like any other.
        db = await vfs.open(name, store)
        await db.exec("CREATE TABLE t(x)")
        await db.close()
        assert store.get(b"\x09\x00:memory:") is not None
        return
    with pytest.raises(sqlkv.ConfigError):
        await vfs.open(name, store)
    assert len(store) == 0


async def test_databases_in_one_store_are_separate(open_db, new_store):
    store = new_store()
    a = await open_db(store, "a.db")
    b = await open_db(store, "b.db")
    await a.exec("CREATE TABLE t(x); INSERT INTO t VALUES ('a')")
    await b.exec("CREATE TABLE t(x); INSERT INTO t VALUES ('b')")
    assert (await a.query("SELECT x FROM t")).rows == [("a",)]
    assert (await b.query("SELECT x FROM t")).rows == [("b",)]


async def test_prefixes_separate_databases(open_db, new_store):
    store = new_store()
    one = await open_db(store, kv_prefix=1)
    two = await open_db(store, kv_prefix=2)
    await one.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    await two.exec("CREATE TABLE t(x); INSERT INTO t VALUES (2)")
    assert (await one.query("SELECT x FROM t")).rows == [(1,)]
    assert {k[0] for k in await stored_keys(store)} == {1, 2}


def test_a_store_wrapper_from_the_readme_sees_every_call():
    """The README's way to write a wrapper: subclass ``sqlkv.StoreWrapper`` and
    override ``_call``; every store call passes through it."""

    class Counting(sqlkv.StoreWrapper):
        def __init__(self, inner: sqlkv.MemoryStore) -> None:
            super().__init__(inner)
            self.kinds: list[str] = []

        def _call(self, kind: str, *args: Any) -> Any:
            self.kinds.append(kind)
            return super()._call(kind, *args)

    store = Counting(sqlkv.MemoryStore())
    with sqlkv.connect(store, "a.db", lease_seconds=None) as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        assert db.query("SELECT x FROM t").rows == [(1,)]
    assert "get_batch" in store.kinds and {"put_batch", "write_batch"} & set(store.kinds)
    from sqlkv.stores import wrapper

    assert (sqlkv.StoreWrapper, sqlkv.AsyncStoreWrapper) == (wrapper.StoreWrapper, wrapper.AsyncStoreWrapper)
    assert {"StoreWrapper", "AsyncStoreWrapper"} <= set(sqlkv.__all__)

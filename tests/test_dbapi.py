"""sqlkv.dbapi2 against the standard library's sqlite3: one script of DB-API
calls runs on both, and every result, exception class and attribute must match.

Also: what sqlite3 (3.11) cannot be compared on (``autocommit``), streaming
(rows are stepped only as fetched, counted), sqlkv errors keeping their
identity, and stores opened from URLs.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

import sqlkv
from sqlkv import dbapi2

Log = list[tuple[str, Any]]


def _outcome(log: Log, label: str, call: Callable[[], Any], module: Any) -> Any:
    """Run ``call``; log its result, or the PEP class and SQLite attributes of its error."""
    try:
        result = call()
    except (module.Error, TypeError, ValueError, OverflowError, LookupError) as exc:
        pep = [
            name
            for name in ("IntegrityError", "OperationalError", "ProgrammingError", "InterfaceError",
                         "DataError", "InternalError", "NotSupportedError", "DatabaseError", "Error")
            if isinstance(exc, getattr(module, name))
        ]
        builtin = [t.__name__ for t in (TypeError, ValueError, OverflowError, IndexError, KeyError)
                   if isinstance(exc, t)]
        if builtin == ["OverflowError"]:
            pep = []  # sqlite3 raises it bare; sqlkv as a DataError that is also an OverflowError
        log.append((label, ("error", pep[:1], builtin, getattr(exc, "sqlite_errorcode", None),
                            getattr(exc, "sqlite_errorname", None))))
        return None
    log.append((label, result))
    return result


def script(module: Any, conn: Any) -> Log:
    """DB-API calls of every kind; what each returned or raised, in order."""
    log: Log = []

    def step(label: str, call: Callable[[], Any]) -> Any:
        return _outcome(log, label, call, module)

    def state(label: str, cur: Any) -> None:
        log.append((label, (cur.description, cur.rowcount, cur.lastrowid, conn.in_transaction)))

    log.append(("module", (module.apilevel, module.paramstyle, module.Binary is memoryview)))
    log.append(("isolation_level", conn.isolation_level))
    cur = conn.cursor()
    state("fresh cursor", cur)
    log.append(("arraysize", cur.arraysize))
    step("create", lambda: cur.execute(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, score REAL, data BLOB)"
    ) and None)
    state("after create", cur)
    step("insert", lambda: cur.execute(
        "INSERT INTO t(name, score, data) VALUES (?, ?, ?)", ("a", 1.5, b"\x00\x01")) and None)
    state("after insert (implicit BEGIN)", cur)
    step("named", lambda: cur.execute(
        "INSERT INTO t(name, score) VALUES (:n, :s)", {"n": "b", "s": None}) and None)
    state("after named insert", cur)
    step("unique", lambda: cur.execute("INSERT INTO t(name) VALUES ('a')"))
    step("not null", lambda: cur.execute("INSERT INTO t(name) VALUES (NULL)"))
    step("missing table", lambda: cur.execute("SELECT * FROM nope"))
    step("syntax", lambda: cur.execute("SELEC 1"))
    step("commented select", lambda: cur.execute("/* a */ SELECT 1 AS one /* b */").fetchall())
    step("two statements", lambda: cur.execute("SELECT 1; SELECT 2"))
    step("too many params", lambda: cur.execute("SELECT ?", (1, 2)))
    step("too few params", lambda: cur.execute("SELECT ?, ?", (1,)))
    step("missing name", lambda: cur.execute("SELECT :a", {"b": 1}))
    step("unsupported type", lambda: cur.execute("SELECT ?", ([1],)))
    step("huge int", lambda: cur.execute("SELECT ?", (2**70,)))
    step("not str", lambda: cur.execute(42))
    step("memoryview", lambda: cur.execute("SELECT ?", (memoryview(b"xy"),)).fetchall())
    step("bytearray", lambda: cur.execute("SELECT ?", (bytearray(b"z"),)).fetchall())
    step("date", lambda: cur.execute("SELECT ?, ?", (datetime.date(2024, 2, 29),
                                                     datetime.datetime(2024, 1, 2, 3, 4, 5))).fetchall())
    step("many", lambda: cur.executemany(
        "INSERT INTO t(name, score) VALUES (?, ?)", [(f"n{i}", i / 4) for i in range(50)]) and None)
    state("after executemany", cur)
    step("many from generator", lambda: cur.executemany(
        "UPDATE t SET score = score * 2 WHERE name = ?", ((f"n{i}",) for i in range(3))) and None)
    state("after executemany update", cur)
    step("trigger", lambda: conn.execute(
        "CREATE TRIGGER audit AFTER UPDATE ON t BEGIN INSERT INTO t(name) VALUES ('t' || new.id); END"
    ) and None)
    step("many with trigger", lambda: cur.executemany(
        "UPDATE t SET score = 1 WHERE name = ?", [("n5",), ("n6",), ("none",)]).rowcount)
    step("drop trigger", lambda: conn.execute("DROP TRIGGER audit") and None)
    step("many select", lambda: cur.executemany("SELECT ?", [(1,)]))
    step("many unique", lambda: cur.executemany("INSERT INTO t(name) VALUES (?)", [("x",), ("a",)]))
    step("select", lambda: cur.execute("SELECT id, name, score, data FROM t ORDER BY id") and None)
    state("after select", cur)
    step("fetchone", cur.fetchone)
    step("fetchmany default", cur.fetchmany)
    step("fetchmany 3", lambda: cur.fetchmany(3))
    cur.arraysize = 4
    step("fetchmany arraysize", cur.fetchmany)
    step("iterate", lambda: [row for _, row in zip(range(5), cur)])
    step("fetchall", cur.fetchall)
    state("after fetchall", cur)
    step("fetchone at end", cur.fetchone)
    step("empty select", lambda: cur.execute("SELECT name AS n FROM t WHERE 0").fetchall())
    state("after empty select", cur)
    step("returning", lambda: cur.execute(
        "INSERT INTO t(name) VALUES ('r') RETURNING id, name") and None)
    state("returning before fetch", cur)
    step("returning rows", cur.fetchall)
    state("returning after fetch", cur)
    step("delete", lambda: cur.execute("DELETE FROM t WHERE name LIKE 'n1%'") and None)
    state("after delete", cur)
    step("commit", conn.commit)
    log.append(("in_transaction after commit", conn.in_transaction))
    step("update", lambda: cur.execute("UPDATE t SET score = 0") and None)
    state("after update", cur)
    step("rollback", conn.rollback)
    step("after rollback", lambda: conn.execute("SELECT count(*), sum(score) FROM t").fetchall())
    step("comment before dml", lambda: cur.execute(
        "/* c */ -- d\n  insert INTO t(name) VALUES ('c')") and None)
    state("after commented insert", cur)
    step("ddl in transaction", lambda: cur.execute("CREATE TABLE u(x)") and None)
    state("after ddl", cur)
    step("explicit commit sql", lambda: conn.execute("COMMIT") and None)
    log.append(("in_transaction", conn.in_transaction))

    def with_block() -> None:
        with conn:
            conn.execute("INSERT INTO u VALUES (1)")
            raise KeyError("boom")

    step("with rolls back", with_block)
    step("after with", lambda: conn.execute("SELECT count(*) FROM u").fetchall())

    def with_commit() -> None:
        with conn:
            conn.execute("INSERT INTO u VALUES (2)")

    step("with commits", with_commit)
    log.append(("in_transaction after with", conn.in_transaction))
    step("executescript", lambda: conn.executescript(
        "INSERT INTO u VALUES (3); CREATE TABLE v(y); INSERT INTO v VALUES ('x;y');") and None)
    log.append(("in_transaction after script", conn.in_transaction))
    step("script commits first", lambda: (conn.execute("INSERT INTO u VALUES (4)"),
                                          conn.executescript("SELECT 1"),
                                          conn.in_transaction)[2])
    step("script rows", lambda: conn.execute("SELECT * FROM u ORDER BY x").fetchall())
    step("script error", lambda: conn.executescript("INSERT INTO u VALUES (5); SELECT * FROM nope;"))
    step("bad isolation", lambda: setattr(conn, "isolation_level", "SOMETIMES"))
    conn.isolation_level = None
    step("autocommit mode", lambda: (conn.execute("INSERT INTO u VALUES (6)"), conn.in_transaction)[1])
    step("manual begin", lambda: (conn.execute("BEGIN"), conn.in_transaction)[1])
    step("manual rollback", lambda: (conn.execute("INSERT INTO u VALUES (7)"), conn.rollback(),
                                     conn.execute("SELECT max(x) FROM u").fetchall())[2])
    conn.isolation_level = "IMMEDIATE"
    step("immediate", lambda: (conn.execute("DELETE FROM u WHERE x = 6"), conn.in_transaction)[1])
    step("isolation to None commits", lambda: (setattr(conn, "isolation_level", None),
                                               conn.in_transaction)[1])
    conn.isolation_level = ""
    conn.row_factory = module.Row
    row = conn.execute("SELECT 1 AS one, 'b' AS Two").fetchone()
    log.append(("row factory", type(row).__name__))
    log.append(("row", (row[0], row["one"], row["TWO"], tuple(row), row.keys(), len(row))))
    step("row missing key", lambda: row["three"])
    conn.row_factory = lambda cursor, values: dict(zip([d[0] for d in cursor.description], values))
    step("custom factory", lambda: conn.execute("SELECT 1 AS a, 2 AS b").fetchall())
    conn.row_factory = None
    step("function", lambda: (conn.create_function("twice", 1, lambda v: v * 2),
                              conn.execute("SELECT twice(21)").fetchall())[1])
    c2 = conn.execute("SELECT * FROM t")
    step("pending select", lambda: c2.fetchone() is not None)
    step("close pending cursor", c2.close)
    step("closed cursor", lambda: c2.fetchall())
    step("closed cursor execute", lambda: c2.execute("SELECT 1"))
    step("pragma", lambda: conn.execute("PRAGMA user_version = 7") and None)
    step("pragma read", lambda: conn.execute("PRAGMA user_version").fetchall())
    step("with cursor", lambda: conn.execute("SELECT count(*) FROM t").fetchone())
    conn.close()
    step("closed connection", lambda: conn.execute("SELECT 1"))
    step("closed cursor of closed connection", lambda: cur.execute("SELECT 1"))
    step("close twice", conn.close)
    return log


def _compare(ours: Log, theirs: Log) -> None:
    assert [label for label, _ in ours] == [label for label, _ in theirs]
    for (label, mine), (_, expected) in zip(ours, theirs):
        assert mine == expected, label


@pytest.mark.parametrize("kv", ["memory", "lmdb"])
def test_script_matches_sqlite3(backend, kv, tmp_path) -> None:
    theirs = script(sqlite3, sqlite3.connect(str(tmp_path / "std.db")))
    store = sqlkv.MemoryStore() if kv == "memory" else f"lmdb://{tmp_path / 'kv'}"
    ours = script(dbapi2, dbapi2.connect("app.db", store=store, backend=backend))
    _compare(ours, theirs)
    # The error rows really are errors on both sides (the script is not vacuous).
    errors = [label for label, value in theirs if isinstance(value, tuple) and value[:1] == ("error",)]
    assert {"unique", "missing table", "closed connection", "closed cursor", "two statements"} <= set(errors)


def test_error_classes(backend) -> None:
    conn = dbapi2.connect("e.db", store=sqlkv.MemoryStore(), backend=backend)
    conn.execute("CREATE TABLE t(x UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(dbapi2.IntegrityError) as caught:
        conn.execute("INSERT INTO t VALUES (1)")
    error = caught.value
    assert isinstance(error, sqlkv.Error) and isinstance(error, dbapi2.DatabaseError)
    assert (error.sqlite_errorcode, error.sqlite_errorname) == (
        sqlite3.SQLITE_CONSTRAINT_UNIQUE, "SQLITE_CONSTRAINT_UNIQUE")
    with pytest.raises(dbapi2.NotSupportedError) as pinned:
        conn.execute("PRAGMA journal_mode=WAL")
    assert isinstance(pinned.value, sqlkv.PinnedSettingError)
    for cls in (dbapi2.Warning, dbapi2.Error, dbapi2.InterfaceError, dbapi2.DatabaseError,
                dbapi2.DataError, dbapi2.OperationalError, dbapi2.IntegrityError,
                dbapi2.InternalError, dbapi2.ProgrammingError, dbapi2.NotSupportedError):
        assert issubclass(cls, sqlkv.Error) and getattr(conn, cls.__name__) is cls
    conn.close()


def test_sqlkv_errors_keep_their_identity() -> None:
    store = sqlkv.MemoryStore()
    writer = dbapi2.connect("w.db", store=store)
    with pytest.raises(dbapi2.OperationalError) as caught:
        dbapi2.connect("w.db", store=store)
    assert isinstance(caught.value, sqlkv.LockedError)
    writer.execute("CREATE TABLE t(x)")
    writer.commit()
    reader = dbapi2.connect("w.db", store=store, readonly=True)
    assert reader.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
    with pytest.raises(dbapi2.OperationalError) as refused:
        reader.execute("INSERT INTO t VALUES (1)")
    assert refused.value.sqlite_errorname.startswith("SQLITE_READONLY")
    with pytest.raises(dbapi2.OperationalError):
        dbapi2.connect("missing.db", store=store, readonly=True)  # sqlite3: "unable to open"
    with pytest.raises(dbapi2.ProgrammingError) as bad_option:
        dbapi2.connect("x.db", store=store, chunk_size=0)
    assert isinstance(bad_option.value, sqlkv.ConfigError)
    reader.close()
    writer.close()


def test_store_failure_is_operational_error_with_cause() -> None:
    from sqlkv.testing import FaultyStore

    inner = sqlkv.MemoryStore()
    store = FaultyStore(inner)
    conn = dbapi2.connect("f.db", store=store, lease_seconds=None, isolation_level=None)
    conn.execute("CREATE TABLE t(x)")
    store.fail_at = store.calls + 1
    with pytest.raises(dbapi2.OperationalError) as caught:
        conn.execute("INSERT INTO t VALUES (1)")
    assert isinstance(caught.value, sqlkv.StoreError)
    assert caught.value.__cause__ is not None
    assert str(caught.value) and vars(caught.value) == vars(caught.value.__context__)
    conn.execute("INSERT INTO t VALUES (2)")  # the connection goes on, reopened from the store
    assert conn.execute("SELECT x FROM t").fetchall() == [(2,)]
    conn.close()


class _Counting:
    """Wraps an engine; counts rows handed out by the iterators of ``iterate``."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.rows = 0

    def iterate(self, sql: str, params: Any = None):
        columns, rows = self._engine.iterate(sql, params)

        def counted():
            try:
                for row in rows:
                    self.rows += 1
                    yield row
            finally:
                rows.close()

        return columns, counted()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def test_rows_stream(backend) -> None:
    conn = dbapi2.connect("s.db", store=sqlkv.MemoryStore(), backend=backend)
    conn.execute("CREATE TABLE t(x)")
    conn.executemany("INSERT INTO t VALUES (?)", ((i,) for i in range(20_000)))
    conn.commit()
    counting = _Counting(conn._engine)
    conn._engine = counting
    cur = conn.execute("SELECT x FROM t ORDER BY x")
    assert counting.rows == 0
    assert cur.fetchmany(100) == [(i,) for i in range(100)]
    assert counting.rows == 100
    assert cur.fetchone() == (100,)
    assert counting.rows == 101
    cur.close()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (20_000,)
    conn.close()


def test_autocommit_as_python_312(backend) -> None:
    store = sqlkv.MemoryStore()
    conn = dbapi2.connect("a.db", store=store, backend=backend, autocommit=False)
    assert conn.autocommit is False and conn.in_transaction  # always a transaction
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    assert conn.in_transaction
    conn.execute("INSERT INTO t VALUES (1)")
    conn.rollback()
    assert conn.in_transaction and conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    conn.execute("INSERT INTO t VALUES (2)")
    conn.autocommit = True  # commits what is pending
    assert not conn.in_transaction
    conn.execute("INSERT INTO t VALUES (3)")
    assert not conn.in_transaction  # no implicit BEGIN
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (4)")
    conn.commit()  # does nothing with autocommit=True
    assert conn.in_transaction
    conn.execute("ROLLBACK")
    conn.autocommit = False
    assert conn.in_transaction
    conn.execute("INSERT INTO t VALUES (5)")
    conn.close()  # rolls back
    again = dbapi2.connect("a.db", store=store, backend=backend)
    assert again.execute("SELECT x FROM t ORDER BY x").fetchall() == [(2,), (3,)]
    with pytest.raises(ValueError):
        again.autocommit = "yes"
    again.close()


def test_store_from_url_and_environment(tmp_path, monkeypatch) -> None:
    url = f"lmdb://{tmp_path / 'kv'}"
    conn = dbapi2.connect("u.db", store=url)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES ('kept')")
    conn.commit()
    store = conn._owned_store
    conn.close()
    assert store._closed  # the connection closed the store it opened
    monkeypatch.setenv("SQLKV_STORE", url)
    again = dbapi2.connect("u.db")
    assert again.execute("SELECT x FROM t").fetchall() == [("kept",)]
    again.close()
    with pytest.raises(dbapi2.ProgrammingError):
        dbapi2.connect("u.db", store="nosuch://x")


def test_type_objects() -> None:
    assert dbapi2.STRING == "TEXT" and dbapi2.NUMBER == "integer" and dbapi2.BINARY == "BLOB"
    assert dbapi2.STRING != "BLOB" and dbapi2.DATETIME == "TIMESTAMP"
    assert dbapi2.Binary(b"x") == memoryview(b"x")
    assert dbapi2.DateFromTicks(0) == datetime.date.fromtimestamp(0)
    assert dbapi2.TimestampFromTicks(0) == datetime.datetime.fromtimestamp(0)
    assert dbapi2.threadsafety == 1 and dbapi2.apilevel == "2.0" and dbapi2.paramstyle == "qmark"

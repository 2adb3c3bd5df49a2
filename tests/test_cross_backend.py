"""A database written by one backend opens in the other with identical content, both ways.

Both backends use the same layout and commit step over the same store, so a
database can move between them at any point: after writes, schema changes and
a shrink, with any chunk size and either layout.
"""

from __future__ import annotations

import math
import random

import pytest
from helpers import CountingStore, content, copy_store, integrity, stored_chunks, stored_size

import sqlkv

WAYS = [("pages", "snapshot"), ("snapshot", "pages")]

#: Steps that change the database, each one exec; the other backend checks after each.
STEPS = [
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB);"
    "CREATE INDEX t_v ON t(v);"
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
    "INSERT INTO t(v, b) SELECT printf('row %05d', i), randomblob(i * 7) FROM n",
    "BEGIN; UPDATE t SET v = v || ' changed' WHERE id % 3 = 0; DELETE FROM t WHERE id % 7 = 0; COMMIT;",
    "ALTER TABLE t ADD COLUMN extra INTEGER DEFAULT 42; CREATE TABLE u(k TEXT PRIMARY KEY, n REAL) WITHOUT ROWID;"
    "INSERT INTO u VALUES ('pi', 3.14159), ('e', 2.71828); PRAGMA user_version = 7;",
    "CREATE VIEW big AS SELECT id FROM t WHERE length(b) > 1000; DROP INDEX t_v;"
    "CREATE TRIGGER t_log AFTER DELETE ON t BEGIN INSERT INTO u VALUES ('deleted ' || old.id, old.id); END;",
    "INSERT INTO t(v, b) VALUES ('large', zeroblob(200000));",
]

#: Shrinks the file: most rows go, then VACUUM.
SHRINK = "DELETE FROM t WHERE id > 20; VACUUM;"


def _check_same(store, name: str, expected: dict, backend: str, **options) -> None:
    with sqlkv.connect(store, name, backend=backend, **options) as db:
        assert content(db) == expected
        assert integrity(db) == [("ok",)]


def _whole_layout(store, name: str, chunk_size: int) -> None:
    """Every chunk inside the file is stored, and none past its end."""
    size = stored_size(store, name)
    assert stored_chunks(store, name) == list(range(math.ceil(size / chunk_size)))


@pytest.mark.parametrize("chunk_size", [4096, 512, 4097])
@pytest.mark.parametrize("writer, reader", WAYS)
def test_written_by_one_opens_in_the_other(writer, reader, chunk_size):
    store = sqlkv.MemoryStore()
    for step in STEPS:
        with sqlkv.connect(store, "app.db", backend=writer, chunk_size=chunk_size) as db:
            db.exec(step)
            expected = content(db)
        _check_same(store, "app.db", expected, reader, chunk_size=chunk_size)
        _whole_layout(store, "app.db", chunk_size)
    grown = stored_size(store, "app.db")
    with sqlkv.connect(store, "app.db", backend=writer, chunk_size=chunk_size) as db:
        db.exec(SHRINK)
        expected = content(db)
    assert expected["t"] and stored_size(store, "app.db") < grown / 4
    _whole_layout(store, "app.db", chunk_size)
    _check_same(store, "app.db", expected, reader, chunk_size=chunk_size)


@pytest.mark.parametrize("first, second", WAYS)
def test_backends_take_turns_on_one_database(first, second):
    """Each backend writes in turn on what the other left, schema changes included."""
    store = sqlkv.MemoryStore()
    backends = [first, second] * 3
    for turn, backend in enumerate(backends):
        with sqlkv.connect(store, "app.db", backend=backend) as db:
            if turn == 0:
                db.exec("CREATE TABLE log(turn INTEGER, backend TEXT)")
            if turn == 3:
                db.exec("ALTER TABLE log ADD COLUMN note TEXT; CREATE INDEX log_backend ON log(backend)")
            db.run("INSERT INTO log(turn, backend) VALUES (?, ?)", [turn, backend])
    with sqlkv.connect(store, "app.db", backend=first) as a, sqlkv.connect(
        copy_store(store), "app.db", backend=second, readonly=True  # the copy holds a's lease
    ) as b:
        assert content(a) == content(b)
        assert a.query("SELECT turn, backend FROM log ORDER BY turn").rows == list(enumerate(backends))


@pytest.mark.parametrize("writer, reader", WAYS)
def test_rivet_v2_layout_in_both(writer, reader):
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, "actor.db", backend=writer, layout="rivet-v2") as db:
        db.exec(STEPS[0])
        expected = content(db)
    assert all(key[:2] == b"\x08\x01" for key in store._data)
    with sqlkv.connect(store, "actor.db", backend=reader, layout="rivet-v2") as db:
        assert content(db) == expected


@pytest.mark.parametrize("writer, reader", WAYS)
def test_a_database_from_the_other_backend_is_written_chunk_by_chunk(writer, reader, store_16mib):
    """The second backend's first write after opening the other's database writes
    a few chunks, not the whole image."""
    store = CountingStore(copy_store(store_16mib))
    if writer == "snapshot":
        with sqlkv.connect(store, "bench.db", backend="snapshot") as db:
            db.run("UPDATE t SET v = 'by snapshot' WHERE id = 1")
    with sqlkv.connect(store, "bench.db", backend=reader) as db:
        store.reset()
        db.run("UPDATE t SET v = 'by the reader' WHERE id = 9000")
        assert store.calls["put_batch"] == 1
        assert 1 <= len([k for k in store.keys_written if k[1] == 1]) <= 3
        assert db.query("SELECT v FROM t WHERE id IN (1, 9000) ORDER BY id").rows[1] == ("by the reader",)


def _random_workload(seed: int, steps: int) -> list[tuple[str, list]]:
    """A seeded mix of writes, transactions (committed and rolled back), schema changes and VACUUM."""
    rng = random.Random(seed)
    ops: list[tuple[str, list]] = [("CREATE TABLE t(id INTEGER PRIMARY KEY, v, w)", [])]
    columns = 0
    for _ in range(steps):
        kind = rng.choice(["insert", "insert", "update", "delete", "tx", "rollback", "schema", "vacuum"])
        value = rng.choice([None, rng.randrange(-(2**63), 2**63), rng.random(), "x" * rng.randrange(0, 6000),
                            bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))])
        row = rng.randrange(1, 400)
        if kind == "insert":
            ops.append(("INSERT OR REPLACE INTO t(id, v, w) VALUES (?, ?, ?)", [row, value, rng.randrange(9)]))
        elif kind == "update":
            ops.append(("UPDATE t SET v = ? WHERE id % 5 = ?", [value, row % 5]))
        elif kind == "delete":
            ops.append(("DELETE FROM t WHERE id BETWEEN ? AND ?", [row, row + rng.randrange(60)]))
        elif kind in ("tx", "rollback"):
            end = "COMMIT" if kind == "tx" else "ROLLBACK"
            body = "".join(
                f"INSERT OR REPLACE INTO t(id, v, w) VALUES ({rng.randrange(1, 400)}, zeroblob({rng.randrange(5000)}), 1);"
                for _ in range(rng.randrange(1, 30))
            )
            ops.append((f"BEGIN; {body} DELETE FROM t WHERE w = {rng.randrange(9)}; {end};", []))
        elif kind == "schema" and columns < 5:
            columns += 1
            ops.append((f"ALTER TABLE t ADD COLUMN c{columns} DEFAULT {columns};"
                        f"CREATE INDEX IF NOT EXISTS t_w{columns} ON t(w, c{columns})", []))
        elif kind == "vacuum":
            ops.append(("VACUUM", []))
    return ops


@pytest.mark.parametrize("seed", range(3))
def test_a_random_workload_gives_the_same_database_on_both(seed):
    stores = {backend: sqlkv.MemoryStore() for backend in ("pages", "snapshot")}
    dbs = {backend: sqlkv.connect(store, "app.db", backend=backend) for backend, store in stores.items()}
    try:
        for step, (sql, params) in enumerate(_random_workload(seed, 120)):
            for db in dbs.values():
                if params:
                    db.run(sql, params)
                else:
                    db.exec(sql)
            if step % 10 == 0:
                assert content(dbs["pages"]) == content(dbs["snapshot"]), f"differ after step {step}: {sql[:80]}"
        expected = content(dbs["pages"])
    finally:
        for db in dbs.values():
            db.close()
    for writer, reader in WAYS:
        _whole_layout(stores[writer], "app.db", 4096)
        _check_same(stores[writer], "app.db", expected, reader)

"""Payload sizes around chunk boundaries, odd chunk sizes, schema changes across reopen."""

from __future__ import annotations

import hashlib

import pytest

import sqlkv

PAYLOADS = [4095, 4096, 4097, 32 * 1024, 1024 * 1024]


def blob(n: int, seed: int = 0) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return out[:n]


@pytest.mark.parametrize("size", PAYLOADS)
async def test_payload_sizes_round_trip(open_db, size):
    store = sqlkv.MemoryStore()
    db = await open_db(store)
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB, s TEXT)")
    data = blob(size, size)
    text = data.hex()[:size]
    await db.run("INSERT INTO t VALUES (1, ?, ?)", [data, text])
    await db.close()
    db = await open_db(store)
    assert (await db.query("SELECT b, s, length(b) FROM t")).rows == [(data, text, size)]


@pytest.mark.parametrize("chunk_size", [512, 4095, 4096, 4097, 65536])
async def test_chunk_sizes(open_db, chunk_size):
    store = sqlkv.MemoryStore()
    db = await open_db(store, chunk_size=chunk_size)
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    payloads = {i: blob(i * 997 % 20000 + 1, i) for i in range(1, 40)}
    for i, data in payloads.items():
        await db.run("INSERT INTO t VALUES (?, ?)", [i, data])
    await db.exec("UPDATE t SET b = substr(b, 1, 10) WHERE id % 3 = 0")
    await db.exec("DELETE FROM t WHERE id % 5 = 0; VACUUM;")
    await db.close()
    # Every chunk but the last is exactly chunk_size bytes; none is longer.
    chunks = {k: v for k, v in store._data.items() if k[:2] == b"\x09\x01"}
    meta = store.get(b"\x09\x00app.db")
    size = int.from_bytes(meta[2:], "little")
    assert len(chunks) == -(-size // chunk_size)
    lengths = [len(chunks[k]) for k in sorted(chunks)]
    assert all(n == chunk_size for n in lengths[:-1])
    assert lengths[-1] == size - chunk_size * (len(lengths) - 1)
    db = await open_db(store, chunk_size=chunk_size)
    rows = dict((await db.query("SELECT id, b FROM t")).rows)
    expected = {
        i: (data[:10] if i % 3 == 0 else data) for i, data in payloads.items() if i % 5
    }
    assert rows == expected


async def test_reopen_and_schema_migration(open_db):
    store = sqlkv.MemoryStore()
    db = await open_db(store)
    await db.exec(
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT);"
        "INSERT INTO users(name) VALUES ('ada'), ('grace');"
        "PRAGMA user_version = 1;"
    )
    await db.close()

    db = await open_db(store)
    (version,), = (await db.query("PRAGMA user_version")).rows
    assert version == 1
    await db.exec(
        "BEGIN;"
        "ALTER TABLE users ADD COLUMN email TEXT;"
        "UPDATE users SET email = name || '@example.com';"
        "CREATE UNIQUE INDEX users_email ON users(email);"
        "CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), body TEXT);"
        "INSERT INTO posts(user_id, body) VALUES (1, 'hello');"
        "PRAGMA user_version = 2;"
        "COMMIT;"
    )
    await db.close()

    db = await open_db(store)
    assert (await db.query("PRAGMA user_version")).rows == [(2,)]
    rows = (await db.query(
        "SELECT u.name, u.email, p.body FROM users u LEFT JOIN posts p ON p.user_id = u.id ORDER BY u.id"
    )).rows
    assert rows == [("ada", "ada@example.com", "hello"), ("grace", "grace@example.com", None)]
    with pytest.raises(sqlkv.SqlError, match="UNIQUE"):
        await db.run("INSERT INTO users(name, email) VALUES ('x', 'ada@example.com')")
    # A migration that fails half-way leaves the schema as it was.
    with pytest.raises(sqlkv.SqlError):
        await db.exec("BEGIN; ALTER TABLE users ADD COLUMN age INTEGER; ALTER TABLE nope ADD COLUMN x;")
    await db.close()
    db = await open_db(store)
    columns = (await db.query("SELECT * FROM users LIMIT 0")).columns
    assert columns == ["id", "name", "email"]


async def test_persistence_across_new_vfs_instances(backend, opened):
    store = sqlkv.MemoryStore()
    for i in range(5):
        vfs = sqlkv.SqliteVfs(backend=backend)
        db = await vfs.open("app.db", store)
        await db.exec("CREATE TABLE IF NOT EXISTS t(i)")
        await db.run("INSERT INTO t VALUES (?)", [i])
        await db.close()
    vfs = sqlkv.SqliteVfs(backend=backend)
    db = await vfs.open("app.db", store)
    assert (await db.query("SELECT i FROM t ORDER BY i")).rows == [(i,) for i in range(5)]
    await db.close()
    opened.add(store, "app.db", {"backend": backend})
    opened.check()

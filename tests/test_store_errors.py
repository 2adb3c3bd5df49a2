"""A store's own exception reaches the caller as the cause; bad answers are named."""

from __future__ import annotations

import pytest
from helpers import AsyncWritesIgnored, CountingStore

import sqlkv


class Boom(Exception):
    pass


class FlakyStore(CountingStore):
    """Fails the calls named in ``failing`` while it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()

    def _maybe_fail(self, call: str) -> None:
        if call in self.failing:
            raise Boom(f"{call} is down")

    def get_batch(self, keys):
        self._maybe_fail("get_batch")
        return super().get_batch(keys)

    def put_batch(self, entries):
        self._maybe_fail("put_batch")
        return super().put_batch(entries)


def test_failed_commit_raises_store_error_with_cause_and_keeps_last_state(connect_db):
    store = FlakyStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    store.failing = {"put_batch"}
    with pytest.raises(sqlkv.StoreError) as info:
        db.run("INSERT INTO t VALUES (2)")
    assert isinstance(info.value.__cause__, Boom)
    assert "put_batch is down" in str(info.value)
    store.failing = set()
    # The same database goes on, with the last committed state.
    assert db.query("SELECT x FROM t").rows == [(1,)]
    db.run("INSERT INTO t VALUES (3)")
    assert db.query("SELECT x FROM t ORDER BY x").rows == [(1,), (3,)]


def test_failed_read_raises_store_error_with_cause(connect_db):
    store = FlakyStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x); INSERT INTO t SELECT randomblob(3000) FROM (SELECT 1 UNION ALL SELECT 2)")
    db.close()
    store.failing = {"get_batch"}
    with pytest.raises(sqlkv.StoreError) as info:
        connect_db(store)
    assert isinstance(info.value.__cause__, Boom)
    store.failing = set()
    db = connect_db(store)
    assert db.query("SELECT count(*) FROM t").rows == [(2,)]


async def test_async_store_error_has_cause(open_db):
    class AsyncFailing(AsyncWritesIgnored):
        async def get(self, key):
            return None

        async def get_batch(self, keys):
            raise Boom("async get_batch down")

    with pytest.raises(sqlkv.StoreError) as info:
        await sqlkv.SqliteVfs().open("app.db", AsyncFailing())
    assert isinstance(info.value.__cause__, Boom)


@pytest.mark.parametrize(
    "answer, problem",
    [
        (lambda keys: [42 for _ in keys], "returned a int"),
        (lambda keys: ["text" for _ in keys], "returned a str"),
        (lambda keys: [None], "returned 1 values for"),
        (lambda keys: None, "returned a NoneType, expected a list"),
        # A dict of the right length was taken as a list of its keys (issue 20, item 15).
        (lambda keys: {k: None for k in keys}, "returned a dict, expected a list"),
        (lambda keys: (None for _ in keys), "returned a generator, expected a list"),
    ],
)
def test_bad_store_answers_are_named(backend, answer, problem):
    store = sqlkv.MemoryStore()

    class Liar(sqlkv.MemoryStore):
        def get_batch(self, keys):
            return answer(keys)

    with pytest.raises(sqlkv.StoreProtocolError, match=problem):
        sqlkv.connect(Liar(), "app.db", backend=backend)
    assert len(store) == 0


def test_a_tuple_answer_from_get_batch_is_a_sequence_of_values(backend):
    class TupleStore(sqlkv.MemoryStore):
        def get_batch(self, keys):
            return tuple(super().get_batch(keys))

    with sqlkv.connect(TupleStore(), "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        assert db.query("SELECT x FROM t").rows == [(1,)]


def test_chunk_longer_than_chunk_size_is_corrupt(connect_db):
    store = sqlkv.MemoryStore()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x); INSERT INTO t SELECT randomblob(100) FROM (SELECT 1)")
    db.close()
    key = b"\x09\x01app.db\x00\x00\x00\x00\x01"
    before = dict(store._data)
    store.put(key, store.get(key) + b"extra")
    with pytest.raises(sqlkv.CorruptError, match="chunk 1 .* longer than the chunk size"):
        db = sqlkv.connect(store, "app.db", backend=db.backend)
        db.query("SELECT * FROM t")
    db.close()  # releases the writer's lease
    store.put(key, before[key])
    assert store._data == before

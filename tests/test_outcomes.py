"""Unknown outcomes: a commit that may have happened is never reported as "not committed".

Issue 9, item 4. The write that commits (the one batch, or a staged commit's
record) either is refused (FencedError: nothing of it is visible), succeeds,
or fails with its outcome unknown (OutcomeUnknownError, ``committed=None``).
A failure after it leaves the transaction committed (OutcomeUnknownError,
``committed=True``). Any other StoreError of a commit means nothing of it is
visible.
"""

from __future__ import annotations

import pytest
from helpers import FiveCallStore, MangledAnswers, staging_keys

import sqlkv
from sqlkv.format.layout import EXT_COMMIT_RECORD, EXT_LEASE, SeedLayout
from sqlkv.testing import FaultyStore, InjectedFault

LAYOUT = SeedLayout(9)
RECORD_KEY = LAYOUT.ext_key("app.db", EXT_COMMIT_RECORD)
EXPIRY_KEY = LAYOUT.ext_key("app.db", EXT_LEASE, b"e")
LONG_LEASE = 600
BIG_INSERT = (
    "INSERT INTO t(v) SELECT printf('%.1000c', 'q') || x FROM "
    "(WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100) SELECT x FROM n)"
)


class PausingStore(FiveCallStore):
    """A MemoryStore taking 16 keys a batch (so big commits are staged) that
    runs ``pause()`` once, right after it applied a write of ``key``: whatever
    ``pause`` does happens while the writer is stopped there."""

    def __init__(self, inner: sqlkv.MemoryStore, key: bytes, pause) -> None:
        super().__init__(inner)
        self.limits = sqlkv.StoreLimits(max_batch_keys=16)
        self.key = key
        self.pause = pause

    def write_batch(self, puts, deletes, expect=None):
        applied = self.inner.write_batch(puts, deletes, expect)
        if applied and self.pause is not None and any(k == self.key for k, _ in puts):
            pause, self.pause = self.pause, None
            pause()
        return applied


def test_a_writer_paused_past_its_lease_after_its_commit_point_hears_committed(backend):
    """Reproduction (issue 9, item 4): a staged commit writes its commit record;
    its writer is paused past its lease before moving the chunks into place;
    the next writer opens and rolls the commit forward. The old writer's next
    write is fenced, and it was told FencedError ("nothing of it is visible"):
    a retry would have inserted the 100 rows twice."""
    inner = sqlkv.MemoryStore()
    seen_by_next_writer = []

    def paused_past_the_lease() -> None:
        inner.delete_batch([EXPIRY_KEY])  # the lease ran out while it was stopped
        with sqlkv.connect(inner, "app.db", backend=backend, lease_seconds=LONG_LEASE) as nxt:
            seen_by_next_writer.append(nxt.query("SELECT count(*) FROM t").rows)

    store = PausingStore(inner, RECORD_KEY, None)
    stale = sqlkv.connect(store, "app.db", backend=backend, lease_seconds=LONG_LEASE)
    try:
        stale.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        store.pause = paused_past_the_lease
        with pytest.raises(sqlkv.OutcomeUnknownError) as caught:
            stale.exec(BIG_INSERT)
        assert caught.value.committed is True
        # Stopped by its lost lease, or by finding its commit finished by the next writer.
        assert isinstance(caught.value.__cause__, (sqlkv.FencedError, sqlkv.ConcurrentCommitError))
        assert "is committed" in str(caught.value) and RECORD_KEY.hex() in str(caught.value)
        assert seen_by_next_writer == [[(100,)]]  # the next writer rolled it forward
        with pytest.raises(sqlkv.FencedError):  # and the old writer stays fenced
            stale.exec("INSERT INTO t(v) VALUES ('late')")
    finally:
        stale.close()
    with sqlkv.connect(inner, "app.db", backend=backend) as db:
        assert db.query("SELECT count(*), count(DISTINCT v) FROM t").rows == [(100, 100)]
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]
    assert not staging_keys(inner._data)


@pytest.mark.parametrize("lose_reply", [True, False], ids=["reply-lost", "not-applied"])
def test_a_failed_one_batch_commit_is_an_unknown_outcome(backend, lose_reply):
    """The one batch of a commit fails: the store may have applied it (a lost
    reply) or not, and sqlkv cannot tell which; today a plain StoreError, which
    otherwise means "nothing of it is visible"."""
    store = FaultyStore(sqlkv.MemoryStore(), lose_reply=lose_reply)
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(x)")
        store.fail_at = store.calls + 1  # the commit of the next statement
        with pytest.raises(sqlkv.OutcomeUnknownError) as caught:
            db.run("INSERT INTO t VALUES (1)")
        assert caught.value.committed is None
        assert isinstance(caught.value, sqlkv.StoreError)
        assert isinstance(caught.value.__cause__, InjectedFault)
        # The next call reopens and shows which it was.
        assert db.query("SELECT count(*) FROM t").rows == [(1 if lose_reply else 0,)]


def test_a_failure_before_the_commit_point_is_a_plain_store_error(backend):
    """Staging fails before the commit record is written: nothing is visible,
    and that is what a plain StoreError says."""
    limits = sqlkv.StoreLimits(max_batch_keys=16)
    base = sqlkv.MemoryStore()
    dry = FaultyStore(sqlkv.MemoryStore(), limits=limits)
    with sqlkv.connect(dry, "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        before = dry.calls
        db.exec(BIG_INSERT)
        staged_calls = dry.calls - before
    assert staged_calls > 4
    store = FaultyStore(base, limits=limits)
    with sqlkv.connect(store, "app.db", backend=backend) as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        store.fail_at = store.calls + 2  # a staging write, well before the record
        with pytest.raises(sqlkv.StoreError) as caught:
            db.exec(BIG_INSERT)
        assert not isinstance(caught.value, sqlkv.OutcomeUnknownError)
        assert db.query("SELECT count(*) FROM t").rows == [(0,)]


@pytest.mark.parametrize("mode", ["short", "garbled"])
@pytest.mark.parametrize("kinds", [b"m", b"d"], ids=["manifest-piece", "staged-chunk"])
def test_a_damaged_answer_after_the_commit_point_is_committed_not_nothing_changed(backend, kinds, mode):
    """Reproduction (issue 20, item 6): a staged commit's record is stored, then
    the store answers a manifest piece (or a spilled chunk) garbled while the
    chunks are moved into place. That was a CorruptError saying "nothing was
    changed", though the transaction is committed: a retry inserted twice."""
    inner = sqlkv.MemoryStore()
    store = MangledAnswers(
        inner, sqlkv.StoreLimits(max_batch_keys=16), kinds=kinds, mode=mode, after_key=RECORD_KEY
    )
    options = {"max_dirty_bytes": 16 * 1024} if kinds == b"d" else {}
    with sqlkv.connect(store, "app.db", backend=backend, **options) as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        with pytest.raises(sqlkv.OutcomeUnknownError) as caught:
            db.exec(BIG_INSERT)
        assert store.mangled >= 1
        assert caught.value.committed is True
        assert isinstance(caught.value.__cause__, sqlkv.CorruptError)
        assert "is committed" in str(caught.value) and "nothing was changed" not in str(caught.value)
        store.armed = False
        store.after_key = None  # the store answers right again
        # The next call reopens and finishes the commit: the rows are there once.
        assert db.query("SELECT count(*), count(DISTINCT v) FROM t").rows == [(100, 100)]
    with sqlkv.connect(inner, "app.db", backend=backend) as db:
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]
        assert db.query("SELECT count(*) FROM t").rows == [(100,)]
    assert not staging_keys(inner._data)

"""A script's shared commit carries only committed transactions (issue 20, item 2).

The transactions of a script's statements are deferred and land together when
it ends (engine/common.py). A later statement of the same script may have begun a
transaction that SQLite spilled pages of (a change larger than its page cache)
and that is then rolled back: after a failing statement, or because the script
ended inside it. Those pages must never reach the store: not with the script's
commit, not before the rollback, not after it. Checked on every state the store
goes through (what a reader, or an open after a crash right then, would find),
for the sync ``exec`` and the DB-API's ``executescript``; then a fault at every
store call of a scripted workload, with a reader in another thread checking sums.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import sqlkv
from sqlkv import dbapi2
from sqlkv.testing import FaultyStore

ROWS = 1000
#: The accounts' balances add up to this in every committed state.
TOTAL = ROWS * 100
#: A committed transfer of 7 from account 1 to account 2, then a transaction that
#: changes every row (far more than SQLite's 10-page cache: it spills) and breaks
#: the sum, to be rolled back. ``{tail}``: how the script ends.
SCRIPT = (
    "PRAGMA cache_size = 10;"
    "BEGIN; UPDATE acct SET bal = bal - 7 WHERE id = 1; UPDATE acct SET bal = bal + 7 WHERE id = 2; COMMIT;"
    "INSERT INTO done VALUES ({step});"
    "BEGIN; UPDATE acct SET bal = bal + 1, pad = randomblob(300);"
    "INSERT INTO acct SELECT id + {far}, 0, pad FROM acct WHERE id <= 500;"
    "{tail}"
)
#: The two ways the script leaves the spilled transaction to be rolled back.
TAILS = {
    "failing-statement": "SELECT no_such_function()",
    "ends-inside-begin": "SELECT 1",
}
#: Options: SQLite's spilled pages stay in the file's buffer, or outgrow it and
#: go to the staging area (a 64 KiB bound) while the script's commit is deferred.
BUFFERS = {"buffered": {}, "staged": {"max_dirty_bytes": 64 * 1024}}


class RecordingStore(sqlkv.MemoryStore):
    """A MemoryStore that keeps a copy of what it holds after every write: each
    state a reader, or an open after a crash, could find."""

    def __init__(self) -> None:
        super().__init__()
        self.states: list[dict[bytes, bytes]] = []

    def _record(self) -> None:
        self.states.append(dict(self._data))

    def put(self, key: bytes, value: bytes) -> None:
        super().put(key, value)
        self._record()

    def put_batch(self, entries: list[tuple[bytes, bytes]]) -> None:
        super().put_batch(entries)
        self._record()

    def delete_batch(self, keys: list[bytes]) -> None:
        super().delete_batch(keys)
        self._record()

    def write_batch(
        self,
        puts: list[tuple[bytes, bytes]],
        deletes: list[bytes],
        expect: dict[bytes, bytes | None] | None = None,
    ) -> bool:
        applied = super().write_batch(puts, deletes, expect)
        self._record()
        return applied


def _create(store: Any, backend: str) -> None:
    with sqlkv.connect(store, "app.db", backend=backend, lease_seconds=None) as db:
        db.exec(
            "CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER, pad BLOB);"
            "CREATE INDEX acct_bal ON acct(bal); CREATE TABLE done(step INTEGER PRIMARY KEY);"
            f"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {ROWS}) "
            "INSERT INTO acct SELECT i, 100, randomblob(200) FROM c"
        )


def _sound(query: Any) -> tuple[int, int, int]:
    """Check a database's view: integrity ok, the accounts whole and adding up to
    :data:`TOTAL`; its balances of accounts 1 and 2, and its count of ``done`` rows."""
    assert query("PRAGMA integrity_check") == [("ok",)]
    assert query("SELECT count(*), sum(bal) FROM acct") == [(ROWS, TOTAL)]
    ((one, two),) = query("SELECT (SELECT bal FROM acct WHERE id = 1), (SELECT bal FROM acct WHERE id = 2)")
    ((done,),) = query("SELECT count(*) FROM done")
    assert (one, two) == (100 - 7 * done, 100 + 7 * done), "a transfer without its done row, or the reverse"
    return one, two, done


def _reopened(data: dict[bytes, bytes], backend: str) -> tuple[int, int, int]:
    """A fresh open of a store holding ``data`` (as after a crash then): checked."""
    store = sqlkv.MemoryStore()
    store._data = dict(data)
    with sqlkv.connect(store, "app.db", backend=backend, readonly=True) as db:
        return _sound(lambda sql: db.query(sql).rows)


def _recording(backend: str) -> tuple[RecordingStore, int]:
    """A store holding the accounts, and how many writes made them."""
    store = RecordingStore()
    _create(store, backend)
    return store, len(store.states)


def _every_state_sound(store: RecordingStore, since: int, backend: str) -> list[int]:
    """Every state the store held from write ``since`` on is sound; their ``done`` counts."""
    return [_reopened(data, backend)[2] for data in store.states[since:]]


@pytest.mark.parametrize("buffer", sorted(BUFFERS))
@pytest.mark.parametrize("tail", sorted(TAILS))
def test_sync_exec_never_commits_a_rolled_back_transaction(backend, tail, buffer):
    store, since = _recording(backend)
    db = sqlkv.connect(store, "app.db", backend=backend, lease_seconds=None, **BUFFERS[buffer])
    expected = sqlkv.SqlError if tail == "failing-statement" else sqlkv.TransactionError
    with pytest.raises(expected):
        db.exec(SCRIPT.format(step=1, far=10 * ROWS, tail=TAILS[tail]))
    # The transfer before the BEGIN stays committed, as SQLite ran it; the rest is gone.
    assert _sound(lambda sql: db.query(sql).rows) == (93, 107, 1)
    assert _every_state_sound(store, since, backend)[-1] == 1
    db.close()
    assert _reopened(store._data, backend) == (93, 107, 1)


@pytest.mark.parametrize("buffer", sorted(BUFFERS))
@pytest.mark.parametrize("tail", sorted(TAILS))
def test_dbapi_executescript_never_commits_a_rolled_back_transaction(backend, tail, buffer):
    store, since = _recording(backend)
    conn = dbapi2.connect("app.db", store, backend=backend, lease_seconds=None, **BUFFERS[buffer])
    script = SCRIPT.format(step=1, far=10 * ROWS, tail=TAILS[tail])
    if tail == "failing-statement":
        with pytest.raises(dbapi2.OperationalError):
            conn.executescript(script)
    else:
        conn.executescript(script)
    # As sqlite3 does, the transaction the script began is still open: nothing
    # of it is in the store, but the transfer before it is.
    assert conn.in_transaction
    assert _every_state_sound(store, since, backend)[-1] == 1
    conn.rollback()
    assert _sound(lambda sql: conn.execute(sql).fetchall()) == (93, 107, 1)
    conn.close()
    assert _every_state_sound(store, since, backend)[-1] == 1
    assert _reopened(store._data, backend) == (93, 107, 1)


def test_a_closed_dbapi_connection_drops_its_open_transaction(backend):
    """Closing with the spilled transaction open lands the script's commit alone."""
    store, since = _recording(backend)
    conn = dbapi2.connect("app.db", store, backend=backend, lease_seconds=None)
    conn.executescript(SCRIPT.format(step=1, far=10 * ROWS, tail=TAILS["ends-inside-begin"]))
    conn.close()
    assert _every_state_sound(store, since, backend)[-1] == 1


# -- a fault at every store call of a scripted workload, a reader checking sums -------

#: Scripts per run of the workload, ending in turn with each of :data:`TAILS`.
STEPS = 4
#: The faults: a crash at call N (it and every later call fail) or a transient failure.
FAULTS = ("crash_at", "fail_at")
#: Reads the reader makes at most per run (it stops when the writer is done).
READS_PER_RUN = 40


class _Reader(threading.Thread):
    """Reads the accounts' sum over and over while a workload runs, and keeps
    whatever it saw that no committed state holds."""

    def __init__(self, store: sqlkv.MemoryStore) -> None:
        super().__init__(daemon=True)
        self.db = sqlkv.connect(store, "app.db", readonly=True)
        self.stop = threading.Event()
        self.wrong: list[object] = []
        self.reads = 0

    def run(self) -> None:
        try:
            while not self.stop.is_set() and self.reads < READS_PER_RUN:
                self.reads += 1
                try:
                    seen = self.db.query("SELECT count(*), sum(bal) FROM acct").rows
                except sqlkv.ConflictError:
                    continue  # a commit landed under the read: it says so, it shows nothing torn
                except sqlkv.Error as exc:
                    self.wrong.append(exc)
                    continue
                if seen != [(ROWS, TOTAL)]:
                    self.wrong.append(seen)
        finally:
            self.db.close()


def _run_scripts(store: Any, api: str, buffer: str) -> tuple[set[int], int]:
    """Run the workload until it ends; the steps whose transfer is known to be
    committed (their script failed on SQL, not on the store), and the steps tried."""
    from test_crash import caused_by_the_store

    known: set[int] = set()
    tried = 0
    options: dict[str, Any] = {"lease_seconds": None, **BUFFERS[buffer]}
    try:
        db: Any = (
            sqlkv.connect(store, "app.db", **options) if api == "exec" else dbapi2.connect("app.db", store, **options)
        )
    except (sqlkv.Error, dbapi2.Error):
        return known, tried
    run = db.exec if api == "exec" else db.executescript
    try:
        for step in range(1, STEPS + 1):
            tried = step
            tail = sorted(TAILS)[step % len(TAILS)]
            try:
                run(SCRIPT.format(step=step, far=10 * ROWS, tail=TAILS[tail]))
                if api == "exec":
                    raise AssertionError("a script ending inside its transaction did not raise")
                failure: BaseException | None = None
            except (sqlkv.Error, dbapi2.Error) as exc:
                failure = exc
            if failure is None or not caused_by_the_store(failure):
                known.add(step)
            if api == "dbapi":
                try:
                    db.rollback()
                except dbapi2.Error:
                    pass
    finally:
        try:
            db.close()
        except (sqlkv.Error, dbapi2.Error):
            pass
    return known, tried


class _CallKinds(FaultyStore):
    """A FaultyStore that notes the kind of each call (``get_batch``, ``write_batch``, ...)."""

    def __init__(self, inner: sqlkv.MemoryStore) -> None:
        super().__init__(inner)
        self.kinds: list[str] = []

    def _call(self, kind: str, *args: Any) -> Any:
        self.kinds.append(kind)
        return super()._call(kind, *args)


#: The most writes and reads a sweep of the default suite puts a fault at
#: (``pytest -m slow``: every call; a staged transaction makes hundreds).
MOST_WRITES, MOST_READS = 20, 6


def _spread(calls: list[int], most: int) -> list[int]:
    """At most ``most`` of ``calls``, evenly spread, the first and last included."""
    if len(calls) <= most:
        return calls
    return [calls[round(i * (len(calls) - 1) / (most - 1))] for i in range(most)]


def _fault_points(kinds: list[str], every: bool) -> list[int]:
    """The calls to put a fault at (and the one after the last call): all of
    them if ``every``, else a spread of the writes and of the reads."""
    if every:
        return list(range(1, len(kinds) + 2))
    writes = [n for n, kind in enumerate(kinds, 1) if not kind.startswith("get")]
    reads = [n for n, kind in enumerate(kinds, 1) if kind.startswith("get")]
    return sorted(_spread(writes, MOST_WRITES) + _spread(reads, MOST_READS)) + [len(kinds) + 1]


def _fault_everywhere(api: str, buffer: str, fault: str, every: bool) -> None:
    dry = _CallKinds(sqlkv.MemoryStore())
    _create(dry.inner, "pages")
    known, tried = _run_scripts(dry, api, buffer)
    assert known == set(range(1, STEPS + 1)) and tried == STEPS
    assert _reopened(dry.inner._data, "pages")[2] == STEPS
    total = dry.calls
    assert "write_batch" in dry.kinds and total < 2000, total
    for n in _fault_points(dry.kinds, every):
        base = sqlkv.MemoryStore()
        _create(base, "pages")
        reader = _Reader(base)
        reader.start()
        try:
            known, tried = _run_scripts(FaultyStore(base, **{fault: n}), api, buffer)
        finally:
            reader.stop.set()
            reader.join(timeout=60)
        assert not reader.is_alive(), f"the reader did not stop (fault at call {n} of {total})"
        assert not reader.wrong, f"fault at call {n} of {total}: the reader saw {reader.wrong[:3]}"
        with sqlkv.connect(base, "app.db", lease_seconds=None) as after:
            _, _, done = _sound(lambda sql: after.query(sql).rows)
            steps = {step for (step,) in after.query("SELECT step FROM done").rows}
        assert known <= steps <= set(range(1, tried + 1)), (n, known, steps, tried)
        assert done == len(steps)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("buffer", sorted(BUFFERS))
@pytest.mark.parametrize("api", ["exec", "dbapi"])
def test_a_fault_at_every_store_call_of_scripts_that_roll_back(api, buffer, fault):
    _fault_everywhere(api, buffer, fault, every=buffer == "buffered")


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("api", ["exec", "dbapi"])
def test_a_fault_at_every_store_call_of_scripts_that_roll_back_long(api, fault):
    _fault_everywhere(api, "staged", fault, every=True)


def test_a_reader_through_an_interrupted_commit_never_reads_a_later_transactions_chunks():
    """Found by the sweep above (not item 2's defect; fixed by the digests staged
    chunks carry): once the writer's next call
    has finished an interrupted staged commit, its own transaction spills to the
    same staging keys, and a reader's read transaction begun on the interrupted
    commit reads them: rows of a transaction never committed."""
    options: dict[str, Any] = {"lease_seconds": None, "max_dirty_bytes": 64 * 1024}
    for n in range(1, 60):  # the first call whose failure leaves a commit interrupted after its commit point
        base = sqlkv.MemoryStore()
        with sqlkv.connect(base, "plain.db", lease_seconds=None) as db:
            db.exec(
                "CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER, pad BLOB);"
                f"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {ROWS}) "
                "INSERT INTO acct SELECT i, 100, randomblob(200) FROM c"
            )
        faulty = FaultyStore(base)
        writer = sqlkv.connect(faulty, "plain.db", **options)
        faulty.fail_at = faulty.calls + n
        try:
            writer.exec("UPDATE acct SET pad = randomblob(210)")
        except sqlkv.OutcomeUnknownError as exc:
            if exc.committed is True:
                break
        except sqlkv.Error:
            pass
        writer.close()
    else:
        pytest.fail("no call's failure left a staged commit interrupted")
    reader = sqlkv.connect(base, "plain.db", readonly=True, cache_bytes=64 * 1024)
    try:
        with reader.transaction() as read:
            assert read.query("SELECT count(*), sum(bal) FROM acct WHERE id <= 10").rows == [(10, 1000)]
            writer.exec("PRAGMA cache_size = 10")
            with pytest.raises(ZeroDivisionError), writer.transaction() as write:  # rolled back
                write.exec("UPDATE acct SET bal = bal + 1, pad = randomblob(300)")
                try:
                    seen = read.query("SELECT count(*), sum(bal) FROM acct").rows
                except sqlkv.ConflictError:
                    seen = [(ROWS, TOTAL)]  # told that it cannot read on: fine
                assert seen == [(ROWS, TOTAL)]
                raise ZeroDivisionError
    finally:
        reader.close()
        writer.close()

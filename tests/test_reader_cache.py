"""A reader's chunk cache against staged commits in flight and repeated conflicts
(issue 20, items 1 and 7): it never holds a value from before a commit it reads
through, and what it reads at once is bounded by what it can keep."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest

import sqlkv
from sqlkv.stores.redis_store import REDIS_LIMITS
from sqlkv.stores.wrapper import StoreWrapper, call_parts

#: The commit record of app.db (prefix 9, layout seed): a staged commit's commit point.
RECORD_KEY = b"\x09\x02app.db\x00c"
#: The FileMeta of app.db: read at the start of a read transaction, never by a later read.
META_KEY = b"\x09\x00app.db"
#: Every commit staged: the chunks, FileMeta and version keys of one never fit a batch.
STAGED = sqlkv.StoreLimits(max_batch_keys=3)
SUM = "SELECT (SELECT x FROM a) + (SELECT y FROM b) + (SELECT z FROM c)"


class AfterCalls(StoreWrapper):
    """Runs ``hook(n, kind, args)`` after the store answered call ``n`` (counted
    from 1, or from where the test last set :attr:`calls` to 0)."""

    def __init__(self, inner: Any, limits: sqlkv.StoreLimits, hook: Callable[[int, str, tuple[Any, ...]], None]) -> None:
        super().__init__(inner, limits=limits, write_batch=True)
        self.hook = hook
        self.calls = 0

    def _call(self, kind: str, *args: Any) -> Any:
        result = super()._call(kind, *args)
        self.calls += 1
        self.hook(self.calls, kind, args)
        return result


def three_tables(store: Any) -> None:
    """Three one-row tables, each on a page (a chunk) of its own, summing to 300."""
    with sqlkv.connect(store, "app.db") as db:
        db.exec(
            "CREATE TABLE a(x); CREATE TABLE b(y); CREATE TABLE c(z);"
            "INSERT INTO a VALUES (100); INSERT INTO b VALUES (100); INSERT INTO c VALUES (100)"
        )


def test_a_reader_never_caches_the_old_value_of_a_chunk_a_staged_commit_changed():
    """Reproduction (issue 20, item 1): the reader, one commit behind, drops the
    chunks that commit changed and reads them again with its next miss; the
    next commit, paused just after its commit point, changes one of them
    again. The reader read it from its place (the value from before the
    paused commit) into its cache and served it before the commit's staged
    value, forever: 305 instead of 300."""
    inner = sqlkv.MemoryStore()
    three_tables(inner)
    reader = sqlkv.connect(inner, "app.db", readonly=True, backend="pages")
    assert reader.query(SUM).rows == [(300,)]
    during: list[int] = []

    def pause(n: int, kind: str, args: tuple[Any, ...]) -> None:
        if any(k == RECORD_KEY for k, _ in call_parts(kind, args).puts):
            during.append(reader.query(SUM).rows[0][0])

    store = AfterCalls(inner, STAGED, lambda *call: None)
    with sqlkv.connect(store, "app.db", backend="pages") as writer:
        # A writer's first commit also rewrites chunk 0 (SQLite's change counter).
        writer.exec("BEGIN; UPDATE a SET x = x - 1; UPDATE c SET z = z + 1; COMMIT")
        store.hook = pause
        writer.exec("BEGIN; UPDATE a SET x = x - 5; UPDATE b SET y = y + 5; COMMIT")
        assert during == [300]
        assert reader.query(SUM).rows == [(300,)]  # after the apply
        store.hook = lambda *call: None
        writer.exec("UPDATE c SET z = z")
        assert reader.query(SUM).rows == [(300,)]  # and after a later commit
        assert reader.query("SELECT x, y, z FROM a, b, c").rows == [(94, 105, 101)]
    reader.close()


# -- the sweep: a pause, or a fault, at every store call of a staged workload ----------------

#: Transfers between the tables (each keeps the sum), every one a staged commit
#: of a writer that opens fresh (its first commit rewrites chunk 0 too).
TRANSFERS = [
    "BEGIN; UPDATE a SET x = x - 1; UPDATE c SET z = z + 1; COMMIT",
    "BEGIN; UPDATE a SET x = x - 5; UPDATE b SET y = y + 5; COMMIT",
    "BEGIN; UPDATE b SET y = y - 2; UPDATE c SET z = z + 2; COMMIT",
    "BEGIN; UPDATE c SET z = z - 3; UPDATE a SET x = x + 3; COMMIT",
]
#: Bounds of the sweep: store calls swept per mode, seconds a reader may take to answer.
MAX_SWEPT_CALLS = 120
LOOK_TIMEOUT = 30.0


class ReaderThread:
    """Long-lived readers in a thread of their own, asked to read the sum on demand."""

    def __init__(self, inner: Any, backend: str) -> None:
        self.inner = inner
        self.backend = backend
        self.asks: queue.Queue[str | None] = queue.Queue()
        self.answers: queue.Queue[tuple[str, object]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # One reader that reads at every look (never far behind), one that reads
        # only at the sweep's one look (as far behind as the workload got).
        readers = {
            kind: sqlkv.connect(self.inner, "app.db", readonly=True, backend=self.backend)
            for kind in ("each", "once")
        }
        try:
            while True:
                ask = self.asks.get(timeout=LOOK_TIMEOUT)
                if ask is None:
                    return
                kinds = ["each"] if ask == "each" else ["each", "once"]
                for kind in kinds:
                    try:
                        self.answers.put((kind, readers[kind].query(SUM).rows[0][0]))
                    except sqlkv.Error as exc:  # reported, and failed on, by the test
                        self.answers.put((kind, exc))
        finally:
            for reader in readers.values():
                reader.close()

    def look(self, ask: str = "each") -> list[tuple[str, object]]:
        """Have the readers read the sum now; what they saw."""
        self.asks.put(ask)
        return [self.answers.get(timeout=LOOK_TIMEOUT) for _ in range(1 if ask == "each" else 2)]

    def stop(self) -> None:
        self.asks.put(None)
        self.thread.join(timeout=LOOK_TIMEOUT)
        assert not self.thread.is_alive()


def sweep_once(at: int, mode: str, backend: str) -> tuple[int, list[tuple[str, object]]]:
    """Run the workload on a fresh store with a pause (``mode="pause"``: the
    readers read just after call ``at``) or a fault (``"fault"``: call ``at``
    fails after the store applied it, its reply lost) at store call ``at``;
    the readers read after every transaction too. The calls the workload made,
    and every sum the readers saw."""
    inner = sqlkv.MemoryStore()
    three_tables(inner)
    readers = ReaderThread(inner, backend)
    seen: list[tuple[str, object]] = []
    try:
        seen += readers.look()  # both readers hold every chunk of the state before the workload

        def hook(n: int, kind: str, args: tuple[Any, ...]) -> None:
            if n != at:
                return
            if mode == "pause":
                seen.extend(readers.look("both"))
            else:
                raise ConnectionError(f"injected: the reply to call {n} ({kind}) was lost")

        store = AfterCalls(inner, STAGED, lambda *call: None)
        with sqlkv.connect(store, "app.db", backend=backend, lease_seconds=None) as writer:
            store.calls, store.hook = 0, hook  # the workload's calls, from here
            for sql in TRANSFERS:
                try:
                    writer.exec(sql)
                except sqlkv.StoreError:
                    pass  # the fault: the transfer happened or not, whole either way
                seen += readers.look()
            writer.exec("UPDATE c SET z = z")  # a later commit: nothing stale may survive it
        seen += readers.look("both")
    finally:
        readers.stop()
    return store.calls, seen


@pytest.mark.parametrize("mode", ["pause", "fault"])
def test_readers_see_constant_sums_with_a_pause_or_fault_at_every_store_call(mode, backend):
    """A reader in another thread reads the sum of three tables while the
    writer's staged transfers stop (or fail) at each of their store calls in
    turn: always 300, never an error."""
    calls, seen = sweep_once(0, mode, backend)  # no pause: how many calls the workload makes
    assert 20 < calls <= MAX_SWEPT_CALLS
    assert {total for _, total in seen} == {300}
    for at in range(1, calls + 1):
        _, seen = sweep_once(at, mode, backend)
        assert {total for _, total in seen} == {300}, (at, seen)


# -- item 7: the whole-file read after two conflicts is bounded by the cache --------------------


class LargestAnswer(StoreWrapper):
    """Records the largest ``get_batch`` answer (keys, bytes); before answering a
    reader's read inside a read transaction, lets ``race()`` commit under it."""

    def __init__(self, inner: Any, limits: sqlkv.StoreLimits) -> None:
        super().__init__(inner, limits=limits)
        self.race: Callable[[], None] | None = None
        self.most_keys = 0
        self.most_bytes = 0

    def _call(self, kind: str, *args: Any) -> Any:
        reads = call_parts(kind, args).reads
        if self.race is not None and kind == "get_batch" and META_KEY not in reads:
            self.race()
        result = super()._call(kind, *args)
        if kind == "get_batch":
            self.most_keys = max(self.most_keys, len(reads))
            self.most_bytes = max(self.most_bytes, sum(len(v) for v in result if v is not None))
        return result


def test_the_whole_file_read_after_two_conflicts_is_bounded_by_the_cache():
    """Reproduction (issue 20, item 7): on a store with Redis's limits (512 MiB a
    batch), a reader with a 64 KiB cache on a 1 MiB database conflicted twice
    and then read the whole file in one get_batch, 16 times what it can keep.
    What a reader reads at once stays within its cache (plus the version's keys)."""
    inner = sqlkv.MemoryStore()
    with sqlkv.connect(inner, "app.db") as db:
        db.exec(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, v TEXT);"
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000)"
            " INSERT INTO t SELECT i, 0, printf('%.1000c', 'a') FROM s"
        )
    cache_bytes = 64 * 1024
    store = LargestAnswer(inner, REDIS_LIMITS)
    reader = sqlkv.connect(store, "app.db", readonly=True, backend="pages", cache_bytes=cache_bytes)
    writer = sqlkv.connect(inner, "app.db")
    races = []

    def race() -> None:  # every page of t changes under each of the reader's first reads
        if len(races) < 3:
            races.append(writer.run("UPDATE t SET n = n + 1").version)

    store.race = race
    assert reader.query("SELECT count(*), min(n), max(n) FROM t").rows == [(1000, 3, 3)]
    assert len(races) == 3
    # The chunks, and beside them the version's few keys (a log entry: 4 bytes a chunk).
    assert store.most_keys <= cache_bytes // 4096 + 16, store.most_keys
    assert store.most_bytes <= cache_bytes + 8 * 1024, store.most_bytes
    reader.close()
    writer.close()

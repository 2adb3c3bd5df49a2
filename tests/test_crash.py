"""Crash at every store call, reopen, and check what survived.

For each seeded workload and store configuration, a dry run counts the store
calls the workload makes; then, for every call index N, the workload runs
again on a fresh store that "crashes" at call N (that call and every later
one never reach it; on a non-atomic store the crashing batch lands in part).
Reopening the surviving store must give ``PRAGMA integrity_check`` = ok and
exactly the content after the last acknowledged transaction, or after the
interrupted one: never anything else. The recovery must leave no staging key.

The same workloads also run on stores that answer one read of a staging key
short or garbled (a staged chunk, or a manifest piece), at every such read in
turn (issue 20, item 5): the damage is caught and the transaction fails (a
plain error before its commit point, ``OutcomeUnknownError(committed=True)``
after it), and the store then holds exactly the state that error says.

CI runs a bounded slice (``CRASH_SEEDS``, ``MANGLE_SEEDS``); ``pytest -m slow`` runs many more.
"""

from __future__ import annotations

import pytest
from helpers import FiveCallStore, MangledAnswers, staging_keys
from workload import content, make_workload, model_states

import sqlkv
from sqlkv.testing import FaultyStore, InjectedFault, StoreCrashed

#: Store configurations: what the store can do, and the options the database uses.
CONFIGS = {
    # Atomic, unlimited, with write_batch: every commit is one batch.
    "one-batch": (lambda: sqlkv.MemoryStore(), None, {}),
    # Only the five calls, at most 12 keys a batch: bigger commits are staged.
    "small-batches": (lambda: FiveCallStore(), sqlkv.StoreLimits(max_batch_keys=12), {}),
    # Batches not atomic (a crashing batch lands in part): every commit is staged.
    "non-atomic": (
        lambda: FiveCallStore(),
        sqlkv.StoreLimits(atomic_batches=False, max_batch_keys=12),
        {},
    ),
    # A 24 KiB memory bound: big transactions spill to staging while they run.
    "spill": (lambda: sqlkv.MemoryStore(), None, {"max_dirty_bytes": 24 * 1024}),
}

#: 25-transaction workloads: about 650 crash points per seed and configuration on
#: backend pages, so CI's slice runs over 5,000 per backend.
TRANSACTIONS = 25
CRASH_SEEDS = list(range(1, 8))
SLOW_SEEDS = list(range(8, 60))

#: These tests model one writer whose store fails under it. Writers open without
#: a lease: a crashed writer's lease would keep the next open waiting until it
#: expires (leases have their own tests, in test_lease.py).
NO_LEASE = None


class CrashTally:
    points = 0


def run_workload(store, backend: str, options: dict, workload: list[str]) -> tuple[int, BaseException | None]:
    """Run until the store fails; the number of acknowledged transactions, and the error."""
    done = 0
    try:
        db = sqlkv.connect(store, "app.db", backend=backend, lease_seconds=NO_LEASE, **options)
    except sqlkv.Error as exc:
        return 0, exc
    try:
        for sql in workload:
            db.exec(sql)
            done += 1
    except sqlkv.Error as exc:
        return done, exc
    finally:
        try:
            db.close()
        except sqlkv.Error:
            pass
    return done, None


def surviving_content(store, backend: str) -> tuple:
    with sqlkv.connect(store, "app.db", backend=backend, lease_seconds=NO_LEASE) as db:
        assert db.query("PRAGMA integrity_check").rows == [("ok",)]
        return content(lambda sql: db.query(sql).rows)


def caused_by_the_store(exc: BaseException) -> bool:
    seen = exc
    while seen is not None:
        if isinstance(seen, (StoreCrashed, InjectedFault)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def crash_everywhere(backend: str, config: str, seed: int) -> int:
    make_store, limits, options = CONFIGS[config]
    workload = make_workload(seed, TRANSACTIONS)
    states = model_states(workload)

    dry = FaultyStore(make_store(), limits=limits)
    done, error = run_workload(dry, backend, options, workload)
    assert error is None and done == len(workload)
    assert surviving_content(dry.inner, backend) == states[-1]
    total = dry.calls

    for n in range(1, total + 1):
        base = make_store()
        faulty = FaultyStore(base, crash_at=n, limits=limits, seed=n)
        done, error = run_workload(faulty, backend, options, workload)
        assert error is not None, f"no failure with a crash at call {n} of {total}"
        assert isinstance(error, (sqlkv.StoreError, sqlkv.UnusableError)), repr(error)
        assert caused_by_the_store(error), f"crash at {n}: {error!r} does not name the store's fault"
        got = surviving_content(base, backend)
        assert got in (states[done], states[min(done + 1, len(workload))]), (
            f"{backend}/{config}/seed {seed}: crash at call {n} of {total} after "
            f"{done} acknowledged transactions left a state that is neither"
        )
        inner = base.inner if isinstance(base, FiveCallStore) else base
        leftovers = staging_keys(inner._data)
        assert not leftovers, f"crash at {n}: recovery left staging keys {leftovers[:3]}"
    CrashTally.points += total
    return total


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("seed", CRASH_SEEDS)
def test_crash_at_every_call(backend, config, seed):
    crash_everywhere(backend, config, seed)


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_crash_at_every_call_long(backend, config, seed):
    crash_everywhere(backend, config, seed)


@pytest.mark.parametrize("lose_reply", [False, True], ids=["not-sent", "reply-lost"])
@pytest.mark.parametrize("config", ["one-batch", "small-batches"])
def test_transient_failure_then_the_same_database_goes_on(backend, config, lose_reply):
    """After one failed call the same Database serves exactly what the store
    holds (never pages of a failed commit), and keeps working."""
    make_store, limits, options = CONFIGS[config]
    workload = make_workload(7, transactions=6)
    states = model_states(workload)
    dry = FaultyStore(make_store(), limits=limits)
    run_workload(dry, backend, options, workload)
    for n in range(1, dry.calls + 1):
        base = make_store()
        faulty = FaultyStore(base, fail_at=n, limits=limits, lose_reply=lose_reply)
        try:
            db = sqlkv.connect(faulty, "app.db", backend=backend, lease_seconds=NO_LEASE, **options)
        except sqlkv.StoreError:
            continue  # the open itself failed; nothing to go on with
        with db:
            done = 0
            failed = False
            for sql in workload:
                try:
                    db.exec(sql)
                except (sqlkv.StoreError, sqlkv.UnusableError) as exc:
                    assert caused_by_the_store(exc)
                    failed = True
                    break
                done += 1
            if not failed:
                continue
            served = content(lambda sql, db=db: db.query(sql).rows)
            assert served == surviving_content(base, backend)
            assert served in (states[done], states[done + 1])
            db.exec("CREATE TABLE IF NOT EXISTS after_failure(x); INSERT INTO after_failure VALUES (1)")
            assert db.query("SELECT count(*) FROM after_failure").rows == [(1,)]
        with sqlkv.connect(base, "app.db", backend=backend, lease_seconds=NO_LEASE) as again:
            assert again.query("SELECT count(*) FROM after_failure").rows == [(1,)]
            assert again.query("PRAGMA integrity_check").rows == [("ok",)]


#: Seeds of the damaged-answer sweep in CI, and under ``-m slow``.
MANGLE_SEEDS = list(range(1, 4))
SLOW_MANGLE_SEEDS = list(range(4, 30))
#: The configurations whose commits read staging keys back: pieces when staged, chunks when spilled.
MANGLE_CONFIGS = [("spill", b"d"), ("spill", b"m"), ("small-batches", b"m"), ("non-atomic", b"m")]


def mangle_everywhere(backend: str, config: str, kinds: bytes, mode: str, seed: int) -> int:
    """Run the workload once per read that returns a staging key of ``kinds``,
    that read answered ``mode`` (short or garbled); see the module docstring."""
    make_store, limits, options = CONFIGS[config]
    workload = make_workload(seed, TRANSACTIONS)
    states = model_states(workload)
    dry = MangledAnswers(make_store(), limits, kinds=kinds, mode=mode, at=0)
    done, error = run_workload(dry, backend, options, workload)
    assert error is None and done == len(workload) and dry.mangled == 0
    total = dry.hits
    assert total > 0, f"{config}: the workload never read a staging key of kind {kinds!r}"
    for n in range(1, total + 1):
        base = make_store()
        store = MangledAnswers(base, limits, kinds=kinds, mode=mode, at=n)
        done, error = run_workload(store, backend, options, workload)
        assert store.mangled == 1
        assert error is not None, f"{config}: the damaged answer at read {n} of {total} went unnoticed"
        assert not isinstance(error, sqlkv.UnusableError), repr(error)
        committed = isinstance(error, sqlkv.OutcomeUnknownError) and error.committed is True
        if not committed:
            assert isinstance(error, sqlkv.CorruptError), repr(error)
        got = surviving_content(base, backend)
        assert got == states[done + 1 if committed else done], (
            f"{backend}/{config}/seed {seed}: {mode} answer at read {n} of {total} after {done} "
            f"acknowledged transactions, {type(error).__name__}, left another state"
        )
        inner = base.inner if isinstance(base, FiveCallStore) else base
        assert not staging_keys(inner._data), f"read {n}: recovery left staging keys"
    return total


@pytest.mark.parametrize("mode", ["short", "garbled"])
@pytest.mark.parametrize(("config", "kinds"), MANGLE_CONFIGS, ids=[f"{c}-{k.decode()}" for c, k in MANGLE_CONFIGS])
@pytest.mark.parametrize("seed", MANGLE_SEEDS)
def test_a_damaged_staging_answer_at_every_read(backend, config, kinds, mode, seed):
    mangle_everywhere(backend, config, kinds, mode, seed)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["short", "garbled"])
@pytest.mark.parametrize(("config", "kinds"), MANGLE_CONFIGS, ids=[f"{c}-{k.decode()}" for c, k in MANGLE_CONFIGS])
@pytest.mark.parametrize("seed", SLOW_MANGLE_SEEDS)
def test_a_damaged_staging_answer_at_every_read_long(backend, config, kinds, mode, seed):
    mangle_everywhere(backend, config, kinds, mode, seed)


@pytest.mark.parametrize("mode", ["short", "garbled"])
def test_a_damaged_staging_answer_then_the_same_database_goes_on(backend, mode):
    """After a staged chunk answered damaged (before or after the commit point),
    the same Database serves exactly the state its error names, and keeps working."""
    make_store, limits, options = CONFIGS["spill"]
    workload = make_workload(7, transactions=10)
    states = model_states(workload)
    dry = MangledAnswers(make_store(), limits, kinds=b"d", mode=mode, at=0)
    run_workload(dry, backend, options, workload)
    assert dry.hits > 0
    for n in range(1, dry.hits + 1):
        base = make_store()
        store = MangledAnswers(base, limits, kinds=b"d", mode=mode, at=n)
        with sqlkv.connect(store, "app.db", backend=backend, lease_seconds=NO_LEASE, **options) as db:
            done, error = 0, None
            for sql in workload:
                try:
                    db.exec(sql)
                except sqlkv.Error as exc:
                    error = exc
                    break
                done += 1
            assert error is not None, f"the damaged answer at read {n} went unnoticed"
            committed = isinstance(error, sqlkv.OutcomeUnknownError) and error.committed is True
            assert committed or isinstance(error, sqlkv.CorruptError), repr(error)
            assert content(lambda sql, db=db: db.query(sql).rows) == states[done + 1 if committed else done]
            db.exec("CREATE TABLE IF NOT EXISTS after_failure(x); INSERT INTO after_failure VALUES (1)")
        with sqlkv.connect(base, "app.db", backend=backend, lease_seconds=NO_LEASE) as again:
            assert again.query("SELECT count(*) FROM after_failure").rows == [(1,)]
            assert again.query("PRAGMA integrity_check").rows == [("ok",)]

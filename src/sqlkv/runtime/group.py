"""Group commit: the write transactions queued on one database share a round trip.

An async database's calls wait in its worker's queue (worker.py) and run one
at a time. When a call's transaction commits while more calls wait behind it,
its commit is *deferred*: SQLite has committed, the changed chunks stay in the
file's buffer (kvfile.py), and the next calls run on that state. When the
queue runs dry (or after :data:`~sqlkv.runtime.pool.TURN` calls, or before any call
that is not a plain one: a ``transaction()``'s steps, ``close``, anything the
database runs for itself), everything deferred is committed at once: one
commit, one version, the union of the changed chunks and the last FileMeta,
through the same commit path as any other (staged when it outgrows the
store's limits or ``max_dirty_bytes``).

**Nothing is acknowledged before it is durable.** From the first deferred
commit on, every call's answer is *held*: a write's, and a read's too, since a
read that ran after a not-yet-durable write may have seen it. Held answers are
handed out only once the commit carrying the deferred transactions has landed.

**A failed group commit** fails every held call (reads included: what they saw
is gone) with an error of the same kind as the commit's (:class:`StoreError`,
:class:`OutcomeUnknownError` or :class:`FencedError`, the store's exception as
its cause); the engine drops its state in memory, so the next call reopens the
database from the store, at its last durable state. A transaction that fails
on its own (a constraint, a SQL error) is rolled back by SQLite and fails
alone: its error is held like any answer, and the others commit.

A lone caller pays nothing: with no call waiting behind it, a commit is never
deferred (exactly one round trip, as without groups), and no timer ever waits
for company.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ..engine.common import Engine
from ..errors import FencedError, OutcomeUnknownError, StoreError
from .transaction import run_call

#: What a call ends with: the future to settle, whether it succeeded, its result or exception.
Answer = tuple[Any, bool, Any]


def _shared_failure(exc: BaseException) -> BaseException:
    """The error a held call gets when the group commit it waited on failed with ``exc``."""
    message = (
        "the group commit carrying this call's transaction (or state it read) failed: "
        f"{exc}"
    )
    twin: BaseException
    if isinstance(exc, OutcomeUnknownError):
        twin = OutcomeUnknownError(message, exc.committed)
    elif isinstance(exc, FencedError):
        twin = type(exc)(message)  # RewoundError stays one
    else:
        twin = StoreError(message)
    twin.__cause__ = exc.__cause__ if exc.__cause__ is not None else exc
    return twin


class CommitGroup:
    """One async database's group commit (see the module docstring).

    Runs on the pool's threads, one call at a time (the worker's rule), so it
    needs no lock. ``queue`` is the worker's deque of waiting calls.
    """

    def __init__(self, engine: Engine, queue: deque) -> None:
        self._engine = engine
        self._queue = queue
        self._plain_call = False
        #: Answers waiting for the deferred transactions to land, in the order made.
        self.held: list[Answer] = []
        engine.defer_commits = self._defer

    def _defer(self) -> bool:
        """Asked by the file at a commit: defer it while calls wait behind this one."""
        return self._plain_call and bool(self._queue)

    def run(self, future: Any, fn: Callable[..., Any], args: tuple, last_of_turn: bool) -> list[Answer]:
        """Run the call ``fn(*args)``; the answers that may be handed out now.

        ``last_of_turn``: the thread leaves the database after this call, so
        whatever gathered must land now.
        """
        answers: list[Answer] = []
        plain = fn is run_call
        if self.held and not plain:
            answers += self.settle()
        self._plain_call = plain
        try:
            outcome: Answer = (future, True, fn(*args))
        except BaseException as exc:  # handed to the caller, whatever it is
            outcome = (future, False, exc)
        finally:
            self._plain_call = False
        if not self.held and not self._engine.deferred:
            answers.append(outcome)
            return answers
        self.held.append(outcome)
        if self._engine.deferred and self._queue and not last_of_turn and self._engine.failure is None:
            return answers  # more calls wait: let them join the group
        answers += self.settle()
        return answers

    def settle(self) -> list[Answer]:
        """Commit whatever was deferred and return the held answers: as they were
        if it landed, every one failed if it did not."""
        held, self.held = self.held, []
        failure = self._engine.failure
        if failure is None:
            try:
                self._engine.commit_deferred()
            except BaseException as exc:  # every held caller hears of it
                failure = exc
        if failure is None:
            return held
        # A call that failed on a store error of its own keeps it; every other
        # answer (results, SQL errors) was made on a state that is now lost.
        return [
            (future, False, value if not ok and _store_failure(value) else _shared_failure(failure))
            for future, ok, value in held
        ]


def _store_failure(exc: BaseException) -> bool:
    return isinstance(exc, (StoreError, FencedError))

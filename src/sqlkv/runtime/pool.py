"""The threads SQLite runs on for the async API: one bounded pool per event loop.

Each async :class:`~sqlkv.runtime.database.Database` has a :class:`Worker`: a serial
queue of its calls. The :class:`Pool` of its event loop drains those queues
with a few threads (``pool_size``, by default the number of cores the
process may use, at least 2 and at most 8): a thread takes one database's queue
and runs its calls one at a time, in the order given, then takes the next
database that has calls waiting. So a database never runs two calls at once,
many databases run in parallel (as many as the pool has threads), and ten
thousand open databases cost no thread and no file descriptor each: a pool
holds at most ``pool_size`` threads (started only when calls wait for them)
and one pipe, and it ends, threads and pipe, when its last database closes.
A call whose future was cancelled before a thread took it up is skipped; one
already running completes. A database whose queue keeps filling gives its
thread up after :data:`TURN` calls when others are waiting, so none starves.

Why not ``loop.run_in_executor``: its hand-off cost far more than a short call
itself (a locked queue, a condition variable, a wrapped concurrent future, a
wake-up through the loop's self-pipe). Here a call goes to its database's
deque, a waiting thread is woken through a lock of its own, and the answer
comes back in a deque with a pipe used as a doorbell: the loop watches its
bell with ``add_reader`` and settles every finished call at once.

What a hand-off costs is mostly waking the other thread's core: on a VM whose
idle cores halt, a wake-up across cores costs around 100 µs, within one core
about 10 µs (benchmarks/thread_handoff.py). So on Linux the pool's first
thread follows the event loop: before a call is handed over it is placed on
the core the loop's thread runs on (only that thread's affinity changes, never
the caller's), and it is the thread woken first; the loop, waiting on its
bell, is woken on the core that just ran it. One busy database is thus served
as by a thread of its own; the other threads, not placed, take the calls of
other databases when the first is busy. ``SQLKV_WORKER_FOLLOWS_LOOP=0`` turns
the placing off.

The other wake-up is the loop's own: waiting in ``epoll`` for a call that
takes 50 µs lets its core halt, and waking it costs more than the call. So
:meth:`Worker.call` first waits a little without sleeping: up to
``SQLKV_ASYNC_SPIN_US`` (default 100) microseconds, yielding the CPU and the
GIL at every turn, it looks for the answer itself; a call that takes longer
(a store round trip) is awaited as usual. While it looks, the threads leave
its bell alone: an answer found that way costs no pipe write on the thread,
and no wake-up, read and extra turn of the loop (after it stops looking it
looks once more, so no answer is left unrung). The loop is thus held up to
that long per call. For a database on an async store the loop stops looking as
soon as a callback waits to run on it (the store's coroutine, handed over by
the call), so the store is never kept waiting; on an event loop that does not
show its queue (not asyncio's own), such a database never spins.
``SQLKV_ASYNC_SPIN_US=0`` turns spinning off.

The same holds the other way: a caller in a loop hands over its next call
within microseconds of its answer. So a thread whose answer the loop was
looking for (a caller awaiting calls one after another), and whose database
has no call left, keeps the database for up to :data:`LINGER` (50 µs),
looking for the next call without sleeping (yielding the CPU and the GIL at
every turn); a call made meanwhile needs no pipe write and no wake-up. It
stops looking as soon as another database waits for a thread, or the pool
stops. After other answers (an open, a close, calls queued behind others)
it parks at once: their caller has more to do first, and a thread asking
for the GIL meanwhile would only slow it. ``SQLKV_ASYNC_SPIN_US=0`` turns
this off too (the loop then never looks).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .. import environment
from ..errors import ConfigError


class CallGroup(Protocol):
    """What the pool needs of a database's group commit (:class:`~sqlkv.runtime.group.CommitGroup`),
    declared here so that this module does not import the one that imports it."""

    @property
    def held(self) -> list[Any]: ...
    def run(self, future: Any, fn: Callable[..., Any], args: tuple, last_of_turn: bool) -> list[tuple[Any, bool, Any]]: ...
    def settle(self) -> list[tuple[Any, bool, Any]]: ...


def _STOP() -> None:
    """The job that ends a worker (recognised by identity, never called)."""


def _cpu_probe() -> Callable[[], int] | None:
    """``sched_getcpu`` from the C library (Linux), or ``None`` where there is none."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        import ctypes

        getcpu = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):
        return None
    getcpu.restype = ctypes.c_int
    getcpu.argtypes = []
    return getcpu


_sched_getcpu = _cpu_probe()

_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


class _Doorbell:
    """A pipe that wakes whoever waits on it; ringing never blocks.

    A full pipe means a wake-up is already pending, so a ring that finds it
    full is dropped. The waiter empties the bell, then drains its deque: every
    item appended before a ring is seen.
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        # A ring after close must never write to a descriptor number the
        # process has since reused for something else (a data file).
        self._open = threading.Lock()
        self.closed = False

    def ring(self) -> None:
        with self._open:
            if self.closed:
                return
            try:
                os.write(self.write_fd, b"\0")
            except BlockingIOError:
                pass

    def wait(self) -> None:
        """Block until rung (the read end stays blocking)."""
        os.read(self.read_fd, 4096)

    def clear(self) -> None:
        """Empty a bell whose read end is non-blocking (one read: should more than
        4096 rings be pending, the loop's reader is called again)."""
        try:
            os.read(self.read_fd, 4096)
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._open:
            if self.closed:
                return
            self.closed = True
            os.close(self.read_fd)
            os.close(self.write_fd)


#: Calls a thread runs for one database before letting others that wait have a turn.
TURN = 64
#: Seconds a thread keeps looking for its database's next call before parking.
LINGER = 50e-6
#: The pool size when neither ``pool_size`` nor ``$SQLKV_POOL_SIZE`` says.
MIN_DEFAULT_POOL, MAX_DEFAULT_POOL = 2, 8


def default_pool_size() -> int:
    """``$SQLKV_POOL_SIZE``, else the cores this process may run on, within 2..8."""
    configured = environment.pool_size()
    if configured is not None:
        return configured
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(MIN_DEFAULT_POOL, min(MAX_DEFAULT_POOL, cores))


def check_pool_size(pool_size: object) -> int | None:
    """``pool_size`` if it is ``None`` or a whole number from 1 to 1024; :class:`ConfigError` otherwise."""
    if pool_size is None:
        return None
    if not isinstance(pool_size, int) or isinstance(pool_size, bool) or not 1 <= pool_size <= 1024:
        raise ConfigError(f"pool_size must be a whole number from 1 to 1024 or None, not {pool_size!r}")
    return pool_size


def _loop_queue(loop: asyncio.AbstractEventLoop) -> deque | None:
    """The deque of callbacks waiting to run on ``loop``, where asyncio's loop shows it."""
    ready = getattr(loop, "_ready", None)
    return ready if isinstance(ready, deque) else None


Job = tuple["asyncio.Future | None", Any, tuple]


class _PoolThread:
    """One thread of a pool, and the lock it parks on while it has nothing to do."""

    def __init__(self, pool: Pool, index: int) -> None:
        self.bell = _Doorbell()
        #: Set (under the pool's lock) on the last thread to leave a stopping pool:
        #: it alone tells the loop that the pool has ended.
        self.last = False
        self.thread = threading.Thread(
            target=pool._run, args=(self,), name=f"sqlkv-pool-{index}", daemon=True
        )


class Pool:
    """The threads serving every :class:`Worker` of one event loop (see the module docstring).

    Made and ended by :func:`attach` and :meth:`Worker.stop`: one per loop
    while it has a database open. ``size`` is fixed by the first database;
    a later ``pool_size`` that differs is a :class:`ConfigError`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.size = size
        self.workers = 0
        self.stopping = False
        #: Set once the last thread has ended and the pipe is closed.
        self.ended: concurrent.futures.Future = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._ready: deque[Worker] = deque()
        self._idle: list[_PoolThread] = []
        self._threads: list[_PoolThread] = []
        self._started = 0
        self._done: deque[tuple[asyncio.Future | None, bool, Any]] = deque()
        #: Set while the loop looks for answers without sleeping (Worker.call):
        #: the threads then leave the bell alone.
        self.watching = False
        self._to_loop = _Doorbell()
        os.set_blocking(self._to_loop.read_fd, False)
        try:
            loop.add_reader(self._to_loop.read_fd, self._deliver)
            self._watched = True
        except NotImplementedError:  # a loop without add_reader: wake it another way
            self._watched = False
        self._follow = _sched_getcpu is not None and environment.worker_follows_loop()
        self._cpu = -1

    @property
    def threads(self) -> int:
        """How many threads the pool runs now."""
        return len(self._threads)

    # -- the loop's side ----------------------------------------------------------

    def enqueue(self, worker: Worker, job: Job) -> None:
        """Queue ``job`` on ``worker``; wake (or start) a thread if it needs one."""
        wake: _PoolThread | None = None
        start: _PoolThread | None = None
        with self._lock:
            worker.jobs.append(job)
            if worker.scheduled:
                return  # a thread has it, or it waits in line
            worker.scheduled = True
            self._ready.append(worker)
            if self._idle:
                # The first thread (placed on the loop's core) goes first.
                first = self._threads[0]
                wake = first if first in self._idle else self._idle[-1]
                self._idle.remove(wake)
            elif len(self._threads) < self.size:
                start = _PoolThread(self, self._started)
                self._started += 1
                self._threads.append(start)
            first = self._threads[0]
        if start is not None:
            start.thread.start()  # it finds the worker in the ready line
        elif wake is not None:
            wake.bell.ring()
        if self._follow and first is (wake or start):
            self._follow_loop(first)

    def _follow_loop(self, first: _PoolThread) -> None:
        """Place the first thread on the core the loop runs on now (see the module docstring)."""
        if _sched_getcpu is None:
            return
        cpu = _sched_getcpu()
        if cpu == self._cpu or cpu < 0:
            return
        tid = first.thread.native_id
        if tid is None:
            return
        try:
            os.sched_setaffinity(tid, {cpu})
        except OSError:  # not allowed here (a container's policy): stop trying
            self._follow = False
            return
        self._cpu = cpu

    def _deliver(self) -> None:
        """On the loop, when the bell rings: empty it, settle every finished call."""
        self._to_loop.clear()
        self._settle()

    def _settle(self) -> None:
        """On the loop: settle every call the threads have finished."""
        done = self._done
        while done:
            future, ok, value = done.popleft()
            if future is None:  # the last thread has ended
                self._release()
                return
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _release(self) -> None:
        """Once the last thread has ended: stop watching the bell and close it."""
        if self.ended.done():
            return
        if self._watched and not self.loop.is_closed():
            self.loop.remove_reader(self._to_loop.read_fd)
        self._to_loop.close()
        self.ended.set_result(None)

    def stop(self) -> None:
        """End the threads (each after its current call); the last one releases the pipe."""
        with self._lock:
            self.stopping = True
            idle, self._idle = self._idle, []
            no_threads = not self._threads
        for parked in idle:
            parked.bell.ring()
        if no_threads:
            self._answer(None, True, None)

    # -- the threads' side --------------------------------------------------------

    def _next(self, me: _PoolThread, worker: Worker | None, ran: int) -> tuple[Worker | None, bool]:
        """Under the pool's lock: the worker whose call ``me`` runs next (the same
        one while it has calls and its turn lasts, else the next in line), or
        ``None`` to park; and whether ``me`` should end (the pool is stopping)."""
        with self._lock:
            ready = self._ready
            if worker is not None:
                if not worker.jobs:
                    worker.scheduled = False
                    worker = None
                elif ran >= TURN and ready:
                    ready.append(worker)  # still scheduled: its turn comes again
                    worker = None
            if worker is not None:
                return worker, False
            if ready:
                return ready.popleft(), False
            if self.stopping:
                self._threads.remove(me)
                if not self._threads:  # the last one out: the pool has ended
                    me.last = True
                return None, True
            self._idle.append(me)
            return None, False

    def _run(self, me: _PoolThread) -> None:
        worker: Worker | None = None
        ran = 0
        #: Whether the last answer went to a loop looking for it (a caller in a loop).
        watched = False
        while True:
            if worker is None or ran >= TURN or not worker.jobs:
                if worker is not None and worker.group is not None and worker.group.held:
                    # Never let go of a database with answers held (group.py).
                    self._answer_all(worker.group.settle())
                    continue
                if watched and worker is not None and not worker.jobs and ran < TURN:
                    self._linger(worker)
                watched = False
                current, leave = self._next(me, worker, ran)
                if current is not worker or ran >= TURN:  # kept: nobody else waits, a new turn
                    worker, ran = current, 0
                if leave:
                    me.bell.close()
                    if me.last:
                        self._answer(None, True, None)
                    return
                if worker is None:
                    me.bell.wait()
                    continue
            future, fn, args = worker.jobs.popleft()
            ran += 1
            if future is not None and future.cancelled():
                # Cancelled while queued: it never runs. (A plain read of the
                # future's state; a cancel that comes after it finds the call
                # running, and the call completes.)
                continue
            if fn is _STOP:
                worker.stopped()
                if future is not None:
                    self._answer(future, True, None)
                continue
            if worker.group is not None:
                watched = self._answer_all(worker.group.run(future, fn, args, ran >= TURN))
                continue
            try:
                outcome = (True, fn(*args))
            except BaseException as exc:  # handed to the caller, whatever it is
                outcome = (False, exc)
            if future is not None:  # an abandoned worker's last calls answer nobody
                watched = self._answer(future, *outcome)

    def _linger(self, worker: Worker) -> None:
        """Keep ``worker`` a little while after its last call, looking for its next
        one without sleeping (a caller in a loop makes it within microseconds):
        it then needs no wake-up. Not while other databases wait for a thread."""
        deadline = time.perf_counter() + LINGER
        while not worker.jobs and not self._ready and not self.stopping:
            if time.perf_counter() >= deadline:
                return
            _yield()

    def _answer_all(self, answers: list[tuple[asyncio.Future | None, bool, Any]]) -> bool:
        """Hand the outcomes of several calls to the loop (an abandoned worker's answer
        nobody); whether the last went to a loop looking for it."""
        watched = False
        for future, ok, value in answers:
            if future is not None:
                watched = self._answer(future, ok, value)
        return watched

    def _answer(self, future: asyncio.Future | None, ok: bool, value: Any) -> bool:
        """Hand an outcome to the loop (``future`` ``None``: the pool has ended);
        whether the loop was looking for it (then it needed no ring)."""
        loop = self.loop
        if future is None and not loop.is_running():
            # Nobody will read the bell (the loop is closed or stopped): release it here.
            self._release()
            return False
        self._done.append((future, ok, value))
        if self._watched:
            # The loop looking for answers itself (Worker.call) settles this
            # one without a ring; it looks once more after it stops looking.
            if self.watching:
                return True
            self._to_loop.ring()
            return False
        try:
            loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass
        return False


_pools: dict[asyncio.AbstractEventLoop, Pool] = {}
_pools_lock = threading.Lock()


def attach(loop: asyncio.AbstractEventLoop, size: int | None) -> Pool:
    """The pool of ``loop`` (made if it has none), counting one more worker on it."""
    with _pools_lock:
        pool = _pools.get(loop)
        if pool is None:
            pool = _pools[loop] = Pool(loop, size or default_pool_size())
        elif size is not None and size != pool.size:
            raise ConfigError(
                f"pool_size={size}, but this event loop's pool already has {pool.size} threads "
                "(one pool serves every database of a loop; close them all to change its size)"
            )
        pool.workers += 1
        return pool


def _detach(pool: Pool) -> bool:
    """One worker fewer on ``pool``; stop it if that was the last. Whether it was."""
    with _pools_lock:
        pool.workers -= 1
        if pool.workers:
            return False
        if _pools.get(pool.loop) is pool:
            del _pools[pool.loop]
    pool.stop()
    return True


def pool_of(loop: asyncio.AbstractEventLoop) -> Pool | None:
    """The pool serving ``loop`` now, if it has one (for counts and tests)."""
    with _pools_lock:
        return _pools.get(loop)


class Worker:
    """One database's serial queue of calls on its loop's :class:`Pool` (see the module docstring)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, spin: bool = True, pool_size: int | None = None
    ) -> None:
        self._loop = loop
        self._spin = environment.async_spin_seconds() if spin else 0.0
        self._spin_while_loop_idle = False
        self.jobs: deque[Job] = deque()
        #: Whether a thread runs this worker's calls or it waits in the ready line (pool's lock).
        self.scheduled = False
        #: The database's group commit (group.py), which then runs its calls; ``None``: none.
        self.group: CallGroup | None = None
        self._stopping = False
        #: Set on a pool thread once the worker has left its pool; made when it
        #: is told to stop (a future holds a lock and a condition: not worth
        #: keeping for each of ten thousand idle databases).
        self._left: concurrent.futures.Future | None = None
        self.pool = attach(loop, check_pool_size(pool_size))

    @property
    def _released(self) -> bool:
        """Whether the worker has left its pool (its stop call ran)."""
        return self._left is not None and self._left.done()

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Queue ``fn(*args)``; the future holds its result or exception."""
        if self._stopping:
            raise RuntimeError("this worker is stopped")
        future = self._loop.create_future()
        self.pool.enqueue(self, (future, fn, args))
        return future

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the pool and return its result (see the module docstring)."""
        # Waiting without sleeping pays only when this call runs next: behind
        # other calls of this database it would hold up the loop, which their
        # callers (and the calls that could join a group commit) need.
        if not self._spin or self.jobs:
            return await self.submit(fn, *args)
        pool = self.pool
        done = pool._done
        loop_queue = _loop_queue(self._loop) if self._spin_while_loop_idle else None
        # Set before the call is handed over: a quick one is answered while
        # the hand-off's wake-up lets the thread run.
        pool.watching = True
        try:
            future = self.submit(fn, *args)
            deadline = time.perf_counter() + self._spin
            while True:
                if done:
                    pool._settle()
                    if future.done():
                        break
                if loop_queue or time.perf_counter() >= deadline:
                    break
                _yield()
        finally:
            pool.watching = False
        if done:  # answered after the last look, before the threads rang again
            pool._settle()
        return await future

    def no_spin(self) -> None:
        """For a database on an async store: wait without sleeping only while no
        callback waits to run on the loop (the store's coroutines need it), and
        never where the loop does not show its queue."""
        if _loop_queue(self._loop) is None:
            self._spin = 0.0
        else:
            self._spin_while_loop_idle = True

    def stopped(self) -> None:
        """On a pool thread, at the stop call: no more calls will come; leave the pool."""
        _detach(self.pool)
        assert self._left is not None  # made before the stop call was queued
        self._left.set_result(None)

    async def stop(self) -> None:
        """Wait for the calls already queued, then leave the pool (ended with its
        last worker: then this waits for its threads to end and its pipe to close).

        Calls submitted afterwards are refused.
        """
        if self._stopping:
            return
        self._left = concurrent.futures.Future()
        future = self.submit(_STOP)
        self._stopping = True
        await future
        if self.pool.stopping:
            await asyncio.wrap_future(self.pool.ended)

    def abandon(self, *last: Callable[[], Any]) -> None:
        """Run the calls ``last``, then leave the pool, unawaited.

        For an owner dropped without being closed (its finalizer calls this, from
        whatever thread the garbage collector runs on).
        """
        if self._stopping:
            return
        self._stopping = True
        self._left = concurrent.futures.Future()
        for fn in last:
            self.pool.enqueue(self, (None, fn, ()))
        self.pool.enqueue(self, (None, _STOP, ()))

    async def finish_elsewhere(self, last: Callable[[], Any]) -> None:
        """From another event loop, once the worker's own loop no longer runs:
        run ``last`` and leave the pool; ``last``'s exception is raised here."""
        if self._stopping:
            return
        outcome: concurrent.futures.Future = concurrent.futures.Future()

        def run_last() -> None:
            try:
                outcome.set_result(last())
            except BaseException as exc:  # handed to the caller, whatever it is
                outcome.set_exception(exc)

        self.abandon(run_last)
        try:
            await asyncio.wrap_future(outcome)
        finally:
            assert self._left is not None
            await asyncio.wrap_future(self._left)  # the stop call comes right after ``last``
            if self.pool.stopping:
                await asyncio.wrap_future(self.pool.ended)

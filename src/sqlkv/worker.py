"""The thread a database's SQLite calls run on, and the cheap hand-off to it.

Each async :class:`~sqlkv.database.Database` owns one :class:`Worker`: a
thread that runs the calls it is given one at a time, in the order given, and
hands each result back to the event loop as a future. Queued calls need no
lock: one thread, first in, first out. A call whose future was cancelled
before the thread took it up is skipped; one already running completes.

Why not ``loop.run_in_executor``: its hand-off cost far more than a short call
itself (a locked queue, a condition variable, a wrapped concurrent future, a
wake-up through the loop's self-pipe). Here each direction is a deque and a
pipe used as a doorbell: the loop appends a call and rings, the thread appends
the outcome and rings back; the loop watches its bell with ``add_reader`` and
settles every finished call at once.

What a hand-off costs is mostly waking the other thread's core: on a VM whose
idle cores halt, a wake-up across cores costs around 100 µs, within one core
about 10 µs (benchmarks/thread_handoff.py). So on Linux the worker follows
the event loop: before each call it is placed on the core the loop's thread
runs on (only the worker's own affinity changes, never the caller's thread),
and the loop, waiting on its bell, is woken on the core that just ran it. The
calls run one at a time and the loop awaits each, so they lose no parallelism
that mattered. ``SQLKV_WORKER_FOLLOWS_LOOP=0`` turns it off.

The other wake-up is the loop's own: waiting in ``epoll`` for a call that
takes 50 µs lets its core halt, and waking it costs more than the call. So
:meth:`Worker.call` first waits a little without sleeping: up to
``SQLKV_ASYNC_SPIN_US`` (default 100) microseconds, yielding the CPU and the
GIL at every turn, it looks for the answer itself; a call that takes longer
(a store round trip) is awaited as usual. The loop is thus held up to that
long per call. A database on an async store never does it (its store's
coroutines need the loop), and ``SQLKV_ASYNC_SPIN_US=0`` turns it off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import environment

_STOP = object()


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

    def ring(self) -> None:
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
        os.close(self.read_fd)
        os.close(self.write_fd)


class Worker:
    """A thread running calls in order for the event loop ``loop`` (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str = "sqlkv", spin: bool = True) -> None:
        self._loop = loop
        self._spin = environment.async_spin_seconds() if spin else 0.0
        self._jobs: deque[tuple[asyncio.Future, Any, tuple]] = deque()
        self._done: deque[tuple[asyncio.Future, bool, Any]] = deque()
        self._to_thread = _Doorbell()
        self._to_loop = _Doorbell()
        os.set_blocking(self._to_loop.read_fd, False)
        try:
            loop.add_reader(self._to_loop.read_fd, self._deliver)
            self._watched = True
        except NotImplementedError:  # a loop without add_reader: wake it another way
            self._watched = False
        self._stopping = False
        self._released = False
        self._follow = _sched_getcpu is not None and environment.worker_follows_loop()
        self._cpu = -1
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Queue ``fn(*args)``; the future holds its result or exception."""
        if self._stopping:
            raise RuntimeError("this worker is stopped")
        future = self._loop.create_future()
        self._jobs.append((future, fn, args))
        if self._follow:
            self._follow_loop()
        self._to_thread.ring()
        return future

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the thread and return its result (see the module docstring)."""
        future = self.submit(fn, *args)
        if self._spin:
            deadline = time.perf_counter() + self._spin
            done = self._done
            while not done:
                if time.perf_counter() >= deadline:
                    break
                _yield()
            if done:
                self._deliver()
        return await future

    def no_spin(self) -> None:
        """Never wait for an answer without sleeping (the store's coroutines need the loop)."""
        self._spin = 0.0

    def _follow_loop(self) -> None:
        """Place the worker on the core the loop runs on now (see the module docstring)."""
        cpu = _sched_getcpu()
        if cpu == self._cpu or cpu < 0:
            return
        tid = self._thread.native_id
        if tid is None:
            return
        try:
            os.sched_setaffinity(tid, {cpu})
        except OSError:  # not allowed here (a container's policy): stop trying
            self._follow = False
            return
        self._cpu = cpu

    async def stop(self) -> None:
        """Wait for the calls already queued, end the thread and release its pipes.

        Calls submitted afterwards are refused.
        """
        if self._stopping:
            return
        future = self.submit(_STOP)
        self._stopping = True
        await future  # if cancelled here, the pipes are left open (a small leak)
        self._release()

    def abandon(self, *last: Callable[[], Any]) -> None:
        """Run the calls ``last``, then end the thread and release its pipes, unawaited.

        For an owner dropped without being closed (its finalizer calls this, from
        whatever thread the garbage collector runs on).
        """
        if self._stopping:
            return
        self._stopping = True
        for fn in last:
            self._jobs.append((None, fn, ()))
        self._jobs.append((None, _STOP, ()))
        self._to_thread.ring()

    async def finish_elsewhere(self, last: Callable[[], Any]) -> None:
        """From another event loop, once the worker's own loop no longer runs:
        run ``last``, end the thread and release its pipes; ``last``'s exception
        is raised here."""
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
            await asyncio.to_thread(self._thread.join)
            self._release()

    def _release(self) -> None:
        """On the loop, once the thread has ended: stop watching and close the pipes."""
        if self._released:
            return
        self._released = True
        if self._watched and not self._loop.is_closed():
            self._loop.remove_reader(self._to_loop.read_fd)
        self._to_thread.close()
        self._to_loop.close()

    def _deliver(self) -> None:
        """On the loop: settle every call the thread has finished."""
        self._to_loop.clear()
        done = self._done
        while done:
            future, ok, value = done.popleft()
            if future is None:  # the end of an abandoned worker
                self._release()
                return
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _run(self) -> None:
        jobs, done = self._jobs, self._done
        while True:
            self._to_thread.wait()
            while jobs:
                future, fn, args = jobs.popleft()
                if fn is _STOP:
                    done.append((future, True, None))
                    self._answer()
                    return
                if future is not None and future.cancelled():
                    # Cancelled while queued: it never runs. (A plain read of
                    # the future's state; a cancel that comes after it finds
                    # the call running, and the call completes.)
                    continue
                try:
                    outcome = (future, True, fn(*args))
                except BaseException as exc:  # handed to the caller, whatever it is
                    outcome = (future, False, exc)
                if future is not None:  # an abandoned worker's last calls answer nobody
                    done.append(outcome)
                    self._answer()

    def _answer(self) -> None:
        if self._watched:
            self._to_loop.ring()
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

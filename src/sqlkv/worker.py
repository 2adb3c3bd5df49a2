"""The thread a database's SQLite calls run on, and the cheap hand-off to it.

Each async :class:`~sqlkv.database.Database` owns one :class:`Worker`: a
thread that runs the calls it is given one at a time, in the order given, and
hands each result back to the event loop as a future. Queued calls need no
lock: one thread, first in, first out.

Why not ``loop.run_in_executor``: its hand-off cost far more than a short call
itself (a locked queue, a condition variable, a wrapped concurrent future, a
wake-up through the loop's self-pipe). Here each direction is a deque and a
pipe used as a doorbell: the loop appends a call and rings, the thread appends
the outcome and rings back; the loop watches its bell with ``add_reader`` and
settles every finished call at once. Measured on a 2-core VM
(benchmarks/async_overhead.py), the async API's added cost per ``SELECT 1``
fell from about 230 µs to about 25 µs; see BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

_STOP = object()


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

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str = "sqlkv") -> None:
        self._loop = loop
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
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Queue ``fn(*args)``; the future holds its result or exception."""
        if self._stopping:
            raise RuntimeError("this worker is stopped")
        future = self._loop.create_future()
        self._jobs.append((future, fn, args))
        self._to_thread.ring()
        return future

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

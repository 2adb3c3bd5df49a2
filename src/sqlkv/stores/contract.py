"""The store contract as code, and the client the engine talks to a store through.

A store has five calls (the seed's KV interface), either all synchronous
(:class:`KvStore`) or all ``async`` (:class:`AsyncKvStore`)::

    get(key: bytes) -> bytes | None
    get_batch(keys: list[bytes]) -> list[bytes | None]
    put(key: bytes, value: bytes) -> None
    put_batch(entries: list[tuple[bytes, bytes]]) -> None
    delete_batch(keys: list[bytes]) -> None

Everything else is an optional capability, each declared by a protocol of its
own and found once, by :func:`store_capabilities`, never probed for elsewhere:

- ``limits`` (:class:`DeclaresLimits`): a :class:`StoreLimits` saying what one
  call can carry. A store that declares nothing is taken to apply batches
  atomically and without limits, as the seed takes its KV.
- ``write_batch(puts, deletes, expect=None) -> bool``
  (:class:`SupportsWriteBatch`): applies ``puts`` (a list of (key, value)) and
  ``deletes`` (a list of keys) in one atomic step, and only if every
  ``key: value`` in ``expect`` matches what is stored (``None`` meaning
  "absent"); it returns whether it applied. With it a commit that shrinks a
  file is still one round trip, and writers can be fenced.
- ``scan(prefix) -> Iterator[bytes]`` (:class:`SupportsScan`): every key that
  starts with ``prefix``, in any order (for tools that list what a store holds).
- ``close()`` (:class:`SupportsClose`): release what the store holds.

On an async store the optional calls are ``async`` too.

``scan`` must not block the store for others (Redis: ``SCAN``, never
``KEYS``). The maintenance operations that must find every key of a database
(``list_databases``, ``check_database``, ``remove_database``) need it; a store
without it gets a :class:`StoreError` saying so.

:class:`StoreClient` is the transport: what the layers above see of a store.
It makes synchronous calls (SQLite calls its VFS synchronously, from a worker
thread; an ``async`` store's coroutines run on an event loop), checks every
answer, wraps every exception as :class:`StoreError` with the store's own as
the cause, and counts every round trip in :class:`Stats`. It also does the
batching within the store's limits, so that no layer above splits a batch by
hand: :meth:`StoreClient.get_many` reads any number of keys in as few
``get_batch`` calls as the limits and a bound on memory
(:data:`READ_BYTES_BOUND`) allow, :meth:`StoreClient.write` writes any
number of entries and deletes any number of keys in as few calls as they
allow, and :meth:`StoreClient.fits_one_call` says whether a write is one
atomic call. It knows nothing of leases: a conditional write's expectations
(a writer's fence) are the caller's argument. It may be called from several
threads at once (a database's worker and its lease renewer). It bounds every
call by its ``timeout`` (the ``store_timeout`` option): an ``async`` store's
call is cancelled; a synchronous one's is watched, so whoever waits for it
can give up (see :meth:`StoreClient.overdue`).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, cast, runtime_checkable

from ..errors import ConfigError, StoreError, StoreProtocolError, StoreTimeoutError
from ..metrics import Stats

STORE_METHODS = ("get", "get_batch", "put", "put_batch", "delete_batch")


#: Answers of a store call that are never awaitable (what sync stores return).
_PLAIN_ANSWERS = (bytes, bool, list, tuple)


@dataclass(frozen=True)
class StoreLimits:
    """What a store can do in one call. ``None`` means no limit.

    ``atomic_batches``: a ``put_batch``/``write_batch`` is applied all or nothing.
    ``max_batch_keys`` / ``max_batch_bytes``: the most keys, and key plus value
    bytes, one batch call may carry. ``max_value_bytes``: the largest value;
    ``max_key_bytes``: the longest key (a database whose keys would be longer is
    refused at open). A single ``put`` is always taken to be atomic.
    """

    atomic_batches: bool = True
    max_batch_keys: int | None = None
    max_batch_bytes: int | None = None
    max_value_bytes: int | None = None
    max_key_bytes: int | None = None

    def __post_init__(self) -> None:
        for field_name in ("max_batch_keys", "max_batch_bytes", "max_value_bytes", "max_key_bytes"):
            value = getattr(self, field_name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigError(f"StoreLimits.{field_name} must be a positive int or None")
        if self.max_batch_keys is not None and self.max_batch_keys < 2:
            raise ConfigError("StoreLimits.max_batch_keys must be at least 2")


UNLIMITED = StoreLimits()

#: The rivet actor KV: 128 keys and 976 KiB per batch, 128 KiB per value.
RIVET_ACTOR_LIMITS = StoreLimits(
    atomic_batches=True, max_batch_keys=128, max_batch_bytes=976 * 1024, max_value_bytes=128 * 1024
)


@runtime_checkable
class KvStore(Protocol):
    """A synchronous store: the five calls every store has."""

    def get(self, key: bytes) -> bytes | None: ...
    def get_batch(self, keys: list[bytes]) -> list[bytes | None]: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def put_batch(self, entries: list[tuple[bytes, bytes]]) -> None: ...
    def delete_batch(self, keys: list[bytes]) -> None: ...


@runtime_checkable
class AsyncKvStore(Protocol):
    """An ``async`` store: the same five calls, each a coroutine."""

    async def get(self, key: bytes) -> bytes | None: ...
    async def get_batch(self, keys: list[bytes]) -> list[bytes | None]: ...
    async def put(self, key: bytes, value: bytes) -> None: ...
    async def put_batch(self, entries: list[tuple[bytes, bytes]]) -> None: ...
    async def delete_batch(self, keys: list[bytes]) -> None: ...


#: Any store sqlkv can open a database in.
AnyKvStore: TypeAlias = KvStore | AsyncKvStore


# The optional capabilities. Each call may be ``async`` on an async store,
# hence the awaitable in each return type.


@runtime_checkable
class DeclaresLimits(Protocol):
    """A store that says what one call can carry."""

    limits: StoreLimits


@runtime_checkable
class SupportsWriteBatch(Protocol):
    """A store with the atomic, conditional ``write_batch`` (see the module docstring)."""

    def write_batch(
        self,
        puts: list[tuple[bytes, bytes]],
        deletes: list[bytes],
        expect: dict[bytes, bytes | None] | None = None,
    ) -> bool | Awaitable[bool]: ...


@runtime_checkable
class SupportsScan(Protocol):
    """A store that lists its keys: those starting with ``prefix``, in any order."""

    def scan(self, prefix: bytes) -> Iterator[bytes] | Awaitable[Iterator[bytes]]: ...


@runtime_checkable
class SupportsClose(Protocol):
    """A store that holds something to release (connections, files)."""

    def close(self) -> None | Awaitable[None]: ...


@dataclass(frozen=True)
class StoreCapabilities:
    """What a store is and can do beyond the five calls (see :func:`store_capabilities`).

    ``is_async``: its calls are coroutines. ``limits``: the limits it declares,
    or :data:`UNLIMITED`. ``write_batch``, ``scan``, ``close``: whether it has
    that optional call.
    """

    is_async: bool
    limits: StoreLimits
    write_batch: bool
    scan: bool
    close: bool


def check_store(store: object) -> None:
    """Raise :class:`ConfigError` naming what ``store`` lacks to be a store."""
    missing = [m for m in STORE_METHODS if not _has_call(store, m)]
    if missing:
        raise ConfigError(
            f"store {type(store).__name__} lacks {', '.join(missing)}: a store needs "
            f"{', '.join(STORE_METHODS)}"
        )


def store_limits(store: object) -> StoreLimits:
    """The limits ``store`` declares, or :data:`UNLIMITED`."""
    limits = getattr(store, "limits", None)
    if limits is None:
        return UNLIMITED
    if not isinstance(limits, StoreLimits):
        raise ConfigError(f"store {type(store).__name__}.limits must be a StoreLimits")
    return limits


def store_capabilities(store: object) -> StoreCapabilities:
    """Check that ``store`` is a store and find, once, what it can do.

    The one place that looks at a store for its optional parts; everything
    else asks the :class:`StoreCapabilities` it returns. A store is async
    when any of its five calls is a coroutine function (a store should make
    all five alike; the client awaits whatever a call returns anyway).
    """
    check_store(store)
    return StoreCapabilities(
        is_async=any(inspect.iscoroutinefunction(getattr(store, m)) for m in STORE_METHODS),
        limits=store_limits(store),
        write_batch=_has_call(store, "write_batch"),
        scan=_has_call(store, "scan"),
        close=_has_call(store, "close"),
    )


def _has_call(store: object, name: str) -> bool:
    return callable(getattr(store, name, None))


def expectations_hold(get: Callable[[bytes], bytes | None], expect: dict[bytes, bytes | None] | None) -> bool:
    """Whether every ``key: value`` of ``expect`` is what ``get`` finds (``None``: absent).

    For stores implementing ``write_batch`` inside their own atomic step.
    """
    if expect:
        for key, value in expect.items():  # a loop, not a generator: no call per key
            if get(key) != value:
                return False
    return True


def _as_value(value: object, key: bytes, call: str) -> bytes | None:
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise StoreProtocolError(
        f"store {call} returned a {type(value).__name__} for key {key.hex()}; values must be bytes or None"
    )


class _LoopThread:
    """A private event loop on a daemon thread, for async stores used from sync code."""

    #: How long a stopping loop gives the store's calls still running to end once cancelled.
    CANCEL_SECONDS = 1.0

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sqlkv-store-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Run the loop until stopped; then cancel the store's calls still on it
        (one given up on after ``store_timeout``, say) and let them end."""
        loop = self.loop
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=self.CANCEL_SECONDS))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


#: Bytes allowed for one key when planning how many values fit one ``get_batch``.
KEY_BYTES_ALLOWANCE = 64
#: The most bytes one ``get_batch`` is planned to carry (keys, and values of the
#: size the caller expects), whatever the store allows: what one read may cost in
#: memory here and in the store. Redis takes 512 MiB a batch; one read of that
#: stalls it and this process alike.
READ_BYTES_BOUND = 32 * 1024 * 1024
#: Keys taken per call from a lazy iterable of keys (:meth:`StoreClient.read_lazily`,
#: deletes given as an iterator) on a store that declares no key limit, so that
#: a huge range of keys is never listed at once.
DEFAULT_RUN_KEYS = 4096

Entry: TypeAlias = tuple[bytes, bytes]


class _Loop:
    """Where an async store's coroutines run: the caller's loop, or a private
    loop thread started on first use. Shared by a client and its views
    (:meth:`StoreClient.apart`), safe to use from several threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._given = loop
        self._own: _LoopThread | None = None
        self._lock = threading.Lock()

    @property
    def given(self) -> asyncio.AbstractEventLoop | None:
        """The caller's loop, if one was given (``None``: a private one when needed)."""
        return self._given

    def get(self) -> asyncio.AbstractEventLoop:
        if self._given is not None:
            return self._given
        with self._lock:
            if self._own is None:
                self._own = _LoopThread()
            return self._own.loop

    def close(self) -> None:
        with self._lock:
            own, self._own = self._own, None
        if own is not None:
            own.close()


def await_on(
    loop: asyncio.AbstractEventLoop, awaitable: Awaitable[Any], timeout: float | None = None
) -> Any:
    """Await ``awaitable`` in a task on ``loop`` (running on another thread) and
    return its outcome.

    This hand-off is the whole price of an async store's call, paid twice
    (thread to loop and back), so it takes the least there is: a plain lock,
    and one task that hands the outcome back itself, without a future or a
    done callback (each would cost the loop one more turn).

    After ``timeout`` seconds (``None``: never) the task is cancelled and a
    :class:`StoreTimeoutError` raised, whatever the task does about it.
    """
    done = threading.Lock()
    done.acquire()
    outcome: list[Any] = []  # [True, value] or [False, exception]
    tasks: list[asyncio.Task] = []

    async def run() -> None:
        try:
            outcome[:] = [True, await awaitable]
        except BaseException as exc:  # handed to the caller, whatever it is
            outcome[:] = [False, exc]
        finally:
            done.release()

    def start() -> None:
        try:
            tasks.append(loop.create_task(run()))
        except BaseException:
            done.release()
            raise

    def cancel() -> None:  # on the loop, after start(): the task exists unless start failed
        for task in tasks:
            task.cancel()

    loop.call_soon_threadsafe(start)
    if not done.acquire(timeout=-1 if timeout is None else timeout):
        try:
            loop.call_soon_threadsafe(cancel)
        except RuntimeError:  # the loop is closed: nothing runs there any more
            pass
        raise StoreTimeoutError(
            f"the store's call did not answer within {timeout:g} s (store_timeout); it was cancelled"
        )
    if not outcome:
        raise StoreError("the store's call never started (is its event loop closing?)")
    ok, value = outcome
    if ok:
        return value
    if isinstance(value, asyncio.CancelledError):
        raise StoreError("the store's call was cancelled (is its event loop closing?)")
    raise value


class _InFlight:
    """The store calls a client and its views have in flight, one per thread at
    most (a store call never makes another): what each is and when it began.
    Shared by a client and its views, read from any thread."""

    def __init__(self) -> None:
        #: Thread id -> (kind, start): :meth:`StoreClient._wrapped` sets and pops its
        #: entry itself (two calls fewer per store call than a begin/end pair would make).
        self.calls: dict[int, tuple[str, float]] = {}

    def oldest(self) -> tuple[str, float] | None:
        """The kind and the start (``time.monotonic()``) of the oldest call in flight."""
        calls = list(self.calls.values())  # one C-level copy: safe beside other threads
        return min(calls, key=lambda call: call[1], default=None)


class StoreClient:
    """The transport: synchronous, checked, counted and batched access to a store
    (see the module docstring).

    ``loop`` is the event loop an async store's coroutines run on; when it is
    ``None`` and the store turns out to be async, a private loop thread is
    started and stopped again by :meth:`close`. Calls must not be made from
    ``loop``'s own thread (they would wait on themselves).

    ``timeout``: seconds any one store call may take (``None``: no bound). An
    ``async`` store's call past it is cancelled and raises
    :class:`StoreTimeoutError`. A synchronous store's call runs on the calling
    thread and cannot be stopped: :meth:`overdue` tells whoever waits for that
    thread (the async API's :class:`~sqlkv.runtime.database.Database`) that it may give up.
    """

    def __init__(
        self,
        store: AnyKvStore,
        stats: Stats | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        timeout: float | None = None,
    ) -> None:
        self.capabilities = capabilities = store_capabilities(store)
        self.store = store
        self.limits = capabilities.limits
        self.is_async = capabilities.is_async
        self.stats = stats if stats is not None else Stats()
        self.timeout = timeout
        self._in_flight = _InFlight()
        self._loop = _Loop(loop)
        self._owns_loop = True
        self._write_batch = (
            cast(SupportsWriteBatch, store).write_batch if capabilities.write_batch else None
        )
        #: Every write fits one atomic call (no batch limits): :meth:`fits_one_write`
        #: need not be asked, per commit.
        self.unbounded = self.limits.atomic_batches and (
            self.limits.max_batch_keys is None and self.limits.max_batch_bytes is None
        )

    def apart(self) -> StoreClient:
        """This transport (same store, same loop), counting its round trips in a
        :class:`Stats` of its own: for traffic that is not the database's (its
        lease). Closing the view releases nothing."""
        view = copy.copy(self)
        view.stats = Stats()
        view._owns_loop = False
        return view

    def unwatched(self) -> StoreClient:
        """This transport (same store, loop and counters), whose calls in flight
        are not seen by :meth:`overdue`: for calls no database waits for (the
        lease renewer's), which must not make a database give up. Closing the
        view releases nothing."""
        view = copy.copy(self)
        view._in_flight = _InFlight()
        view._owns_loop = False
        return view

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop an async store's calls run on, when the caller gave one."""
        return self._loop.given

    @property
    def can_write_batch(self) -> bool:
        """Whether the store has the atomic ``write_batch`` call (puts, deletes, expectations)."""
        return self.capabilities.write_batch

    # -- plumbing -------------------------------------------------------------

    def overdue(self) -> tuple[str, float] | None:
        """The store call in flight the longest, if it has taken over :attr:`timeout`:
        its kind and how long it has taken so far; ``None`` otherwise. When no call
        is overdue, :meth:`next_check` says when one can be at the earliest."""
        oldest = self._in_flight.oldest()
        if oldest is None or self.timeout is None:
            return None
        kind, started = oldest
        taken = time.monotonic() - started
        return (kind, taken) if taken >= self.timeout else None

    def next_check(self) -> float | None:
        """Seconds until a call in flight now would be overdue (the whole
        :attr:`timeout` when none is in flight; ``None``: no timeout)."""
        if self.timeout is None:
            return None
        oldest = self._in_flight.oldest()
        if oldest is None:
            return self.timeout
        return max(0.0, oldest[1] + self.timeout - time.monotonic())

    def _resolve(self, result: Any) -> Any:
        # A sync store's usual answers first: no need to ask whether they are awaitable.
        if result is None or type(result) in _PLAIN_ANSWERS or not inspect.isawaitable(result):
            return result
        loop = self._loop.get()
        if loop.is_closed():
            raise StoreError("the event loop this database was opened on is closed")

        return await_on(loop, result, self.timeout)

    def _call(self, kind: str, method: Any, *args: Any) -> Any:
        self.stats.calls[kind] += 1
        start = time.perf_counter()
        try:
            return self._wrapped(kind, method, *args)
        finally:
            self.stats.store_seconds += time.perf_counter() - start

    def _wrapped(self, kind: str, method: Any, *args: Any) -> Any:
        """``method(*args)``, awaited if need be; the store's exception as a :class:`StoreError`'s cause."""
        try:
            in_flight = self._in_flight.calls
            ident = threading.get_ident()
            in_flight[ident] = (kind, time.monotonic())
            try:
                answer = method(*args)  # a synchronous store's whole call, or a coroutine made
            finally:
                in_flight.pop(ident, None)
            # A sync store's usual answers need no _resolve call (see there).
            if answer is None or type(answer) in _PLAIN_ANSWERS:
                return answer
            return self._resolve(answer)
        except StoreTimeoutError as exc:
            raise StoreTimeoutError(f"store {kind} failed: {exc}") from exc.__cause__
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"store {kind} failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Stop the private loop thread, if this client started one (a view: nothing)."""
        if self._owns_loop:
            self._loop.close()

    # -- batching within the store's limits -------------------------------------

    def keys_per_read(self, value_bytes: int = 0) -> int | None:
        """How many keys one ``get_batch`` may ask for, by the store's limits,
        when each value is up to ``value_bytes`` long (``None``: any number)."""
        limits = self.limits
        most = limits.max_batch_keys
        if limits.max_batch_bytes is not None:
            by_bytes = max(1, limits.max_batch_bytes // (value_bytes + KEY_BYTES_ALLOWANCE))
            most = by_bytes if most is None else min(most, by_bytes)
        return most

    def keys_per_call(self, value_bytes: int = 0) -> int:
        """How many keys one ``get_batch`` of :meth:`get_many` or :meth:`read_lazily`
        asks for: within the store's limits (:meth:`keys_per_read`) and within
        :data:`READ_BYTES_BOUND` for values up to ``value_bytes`` long."""
        bound = max(1, READ_BYTES_BOUND // (value_bytes + KEY_BYTES_ALLOWANCE))
        most = self.keys_per_read(value_bytes)
        return bound if most is None else min(most, bound)

    def get_many(self, keys: Sequence[bytes], value_bytes: int = 0) -> list[bytes | None]:
        """The values of ``keys`` (``None``: absent), in as few ``get_batch`` calls as
        :meth:`keys_per_call` allows for values up to ``value_bytes`` long."""
        step = self.keys_per_call(value_bytes)
        values: list[bytes | None] = []
        for start in range(0, len(keys), step):
            values += self.get_batch(keys[start : start + step])
        return values

    def read_lazily(
        self, keys: Iterable[bytes], run: int = DEFAULT_RUN_KEYS, value_bytes: int = 0
    ) -> Iterator[tuple[bytes, bytes | None]]:
        """``(key, value)`` for each of ``keys``, which may be endless: fetched as
        the caller goes on, at most ``run`` keys a call (what the caller expects
        to need) and never more than :meth:`keys_per_call` allows for values up
        to ``value_bytes`` long, so a caller that stops early reads no more."""
        step = max(1, min(run, self.keys_per_call(value_bytes)))
        keys = iter(keys)
        while batch := list(itertools.islice(keys, step)):
            yield from zip(batch, self.get_batch(batch))

    def fits_one_write(self, puts: Sequence[Entry], deletes: Sequence[bytes] = ()) -> bool:
        """Whether :meth:`write` of ``puts`` and ``deletes`` lands in one atomic step.

        That is one ``write_batch`` within the limits, or, on a store without
        it, one atomic ``put_batch`` (the deletes then follow in a second call,
        which can only clean up after the puts).
        """
        limits = self.limits
        if not limits.atomic_batches:
            return False
        with_deletes = self.can_write_batch
        keys = len(puts) + (len(deletes) if with_deletes else 0)
        if limits.max_batch_keys is not None and (
            keys > limits.max_batch_keys or len(deletes) > limits.max_batch_keys
        ):
            return False
        if limits.max_batch_bytes is not None:
            nbytes = sum(len(k) + len(v) for k, v in puts)
            if with_deletes:
                nbytes += sum(len(k) for k in deletes)
            if nbytes > limits.max_batch_bytes:
                return False
        return True

    def entry_batches(
        self, entries: Iterable[Entry], reserve_keys: int = 0, reserve_bytes: int = 0
    ) -> Iterator[list[Entry]]:
        """``entries`` in runs that each fit one call, leaving room in every call
        for ``reserve_keys`` more keys and ``reserve_bytes`` more bytes."""
        limits = self.limits
        max_keys = None if limits.max_batch_keys is None else max(1, limits.max_batch_keys - reserve_keys)
        max_bytes = None if limits.max_batch_bytes is None else limits.max_batch_bytes - reserve_bytes
        batch: list[Entry] = []
        nbytes = 0
        for key, value in entries:
            size = len(key) + len(value)
            if batch and (
                (max_keys is not None and len(batch) >= max_keys)
                or (max_bytes is not None and nbytes + size > max_bytes)
            ):
                yield batch
                batch, nbytes = [], 0
            batch.append((key, value))
            nbytes += size
        if batch:
            yield batch

    def _key_runs(self, keys: Iterable[bytes]) -> Iterator[list[bytes]]:
        """``keys`` in runs of the store's most keys per call; a list all at once on a
        store without a limit, a lazy iterable in runs of :data:`DEFAULT_RUN_KEYS`."""
        step = self.limits.max_batch_keys
        if step is None:
            if isinstance(keys, Sequence):
                if keys:
                    yield list(keys)
                return
            step = DEFAULT_RUN_KEYS
        keys = iter(keys)
        while batch := list(itertools.islice(keys, step)):
            yield batch

    def write(
        self,
        puts: Sequence[Entry] = (),
        deletes: Iterable[bytes] = (),
        expect: dict[bytes, bytes | None] | None = None,
    ) -> bool:
        """Write ``puts`` and delete ``deletes``, each call conditional on ``expect``.

        One call (see :meth:`write_batch`) when they fit it; otherwise the puts
        in batches, then the deletes in batches, which is not atomic as a
        whole. Returns ``False`` at the first call whose expectations failed
        (the calls before it applied, none after it was made).
        """
        if isinstance(deletes, Sequence) and (self.unbounded or self.fits_one_write(puts, deletes)):
            return not (puts or deletes) or self.write_batch(puts, deletes, expect)
        for batch in self.entry_batches(puts):
            if not self.write_batch(batch, (), expect):
                return False
        for keys in self._key_runs(deletes):
            if not self.write_batch((), keys, expect):
                return False
        return True

    # -- the calls ------------------------------------------------------------

    @property
    def can_scan(self) -> bool:
        """Whether the store has the optional ``scan(prefix)`` call (key listing)."""
        return self.capabilities.scan

    def scan(self, prefix: bytes) -> list[bytes]:
        """The keys that start with ``prefix``, sorted (see the module docstring).

        Not counted in :attr:`stats` (no database's traffic: only maintenance
        operations list keys). A store without ``scan`` is a :class:`StoreError`.
        """
        if not self.can_scan:
            raise StoreError(
                f"store {type(self.store).__name__} cannot list its keys (it has no scan "
                "call), which listing, checking and removing databases need"
            )

        def listed(found: Any) -> list[bytes]:
            keys = []
            for key in found:
                if type(key) is not bytes:
                    raise StoreProtocolError(
                        f"store scan returned a {type(key).__name__} key; keys must be bytes"
                    )
                if key.startswith(prefix):
                    keys.append(key)
            return sorted(keys)

        return listed(self._wrapped("scan", self._listing, prefix))

    def _listing(self, prefix: bytes) -> Any:
        """The store's answer to ``scan``, as a list (or the coroutine giving it)."""
        found = cast(SupportsScan, self.store).scan(prefix)
        return found if inspect.isawaitable(found) else list(found)

    def get(self, key: bytes) -> bytes | None:
        value = _as_value(self._call("get", self.store.get, key), key, "get")
        self.stats.count_read(1, (value,))
        return value

    def get_batch(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        keys = list(keys)
        answer = self._call("get_batch", self.store.get_batch, keys)
        # Only a sequence of values in the keys' order will do: a dict (or any other
        # iterable) of the right length would otherwise pass, its keys taken for values.
        if not isinstance(answer, (list, tuple)):
            raise StoreProtocolError(
                f"store get_batch returned a {type(answer).__name__}, expected a list"
            )
        values = answer
        if len(values) != len(keys):
            raise StoreProtocolError(
                f"store get_batch returned {len(values)} values for {len(keys)} keys"
            )
        out = [_as_value(v, k, "get_batch") for k, v in zip(keys, values)]
        self.stats.count_read(len(keys), out)
        return out

    def put(self, key: bytes, value: bytes) -> None:
        self._call("put", self.store.put, key, value)
        self.stats.count_written(((key, value),))

    def put_batch(self, entries: Iterable[tuple[bytes, bytes]]) -> None:
        entries = list(entries)
        if not entries:
            return
        self._call("put_batch", self.store.put_batch, entries)
        self.stats.count_written(entries)

    def delete_batch(self, keys: Iterable[bytes]) -> None:
        keys = list(keys)
        if not keys:
            return
        self._call("delete_batch", self.store.delete_batch, keys)
        self.stats.keys_deleted += len(keys)

    def write_batch(
        self,
        puts: Iterable[tuple[bytes, bytes]],
        deletes: Iterable[bytes] = (),
        expect: dict[bytes, bytes | None] | None = None,
    ) -> bool:
        """Apply puts and deletes atomically if ``expect`` holds; return whether applied.

        On a store without ``write_batch`` this is ``put_batch`` then
        ``delete_batch`` (two round trips when both are non-empty), and
        ``expect`` cannot be honoured.
        """
        puts = puts if type(puts) is list else list(puts)
        deletes = deletes if type(deletes) is list else list(deletes)
        if self._write_batch is not None:  # can_write_batch, without the property's call
            applied = self._call("write_batch", self._write_batch, puts, deletes, expect)
            if not isinstance(applied, bool):
                raise StoreProtocolError(
                    f"store write_batch returned a {type(applied).__name__}, expected a bool"
                )
            if applied:
                self.stats.count_written(puts)
                self.stats.keys_deleted += len(deletes)
            return applied
        if expect:
            raise StoreError(
                f"store {type(self.store).__name__} has no write_batch call, so it cannot "
                "make a write conditional"
            )
        self.put_batch(puts)
        self.delete_batch(deletes)
        return True

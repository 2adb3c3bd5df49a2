"""What a store holds, and keeping it sound: list, check (and repair), remove databases.

These need to find every key of a database, so they need the store's
optional ``scan(prefix)`` call (see store.py); a store without it gets a
clear :class:`StoreError`.

A database's keys (layout ``seed``; ``rivet-v2`` alike, with tags): the
FileMeta and chunks of the database file and of the files SQLite may keep
beside it (``-journal``, ``-wal``), and sqlkv's own keys beside each (staged
commits, the writer's lease; see layout.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptError, Error, FencedError, NotFoundError, StoreError
from ..format import layout as layouts
from ..format.layout import (
    CHUNK,
    EXT,
    META,
    SIDECARS,
    Layout,
    check_file_name,
    chunk_count,
    decode_file_meta,
    record_key,
)
from ..storage.commit import readable_record
from ..storage.files import make_options, open_file, writer_lease
from ..storage.kvfile import KvFile
from ..storage.lease import decode_lease_value, lease_keys
from ..storage.options import OPEN_DEFAULTS, Options
from ..storage.storage import sqlite_header
from ..stores.contract import AnyKvStore, StoreClient

_STAGING_KINDS = (layouts.EXT_COMMIT_RECORD, layouts.EXT_STAGED_MANIFEST, layouts.EXT_STAGED_CHUNK)


@dataclass(frozen=True)
class LeaseInfo:
    """A writer's lease on a database: its generation and when it ends
    (seconds from now; zero or less: expired, left by a writer that stopped)."""

    generation: int
    ends_in: float

    @property
    def held(self) -> bool:
        return self.ends_in > 0

    def describe(self) -> str:
        if self.held:
            return f"held by a writer (generation {self.generation}, ends in {self.ends_in:.1f} s)"
        return f"left by a writer that stopped (generation {self.generation}, expired {-self.ends_in:.1f} s ago)"


@dataclass(frozen=True)
class DatabaseInfo:
    """One database in a store, as :func:`list_databases` finds it."""

    name: str
    size: int | None  # None: its FileMeta cannot be read (``problem`` says why)
    chunks: int
    lease: LeaseInfo | None
    problem: str | None = None


def _lease_info(gen_key: bytes, gen: bytes | None, expiry_key: bytes, expiry: bytes | None) -> LeaseInfo | None:
    if gen is None and expiry is None:
        return None
    generation = decode_lease_value(gen, gen_key)[0] if gen is not None else 0
    ends_ms = decode_lease_value(expiry, expiry_key)[0] if expiry is not None else 0
    return LeaseInfo(generation, (ends_ms - time.time() * 1000) / 1000)


def lease_info(store: AnyKvStore, name: str, **options: Any) -> LeaseInfo | None:
    """The writer's lease on database ``name``, or ``None`` when nobody holds one.

    One ``get_batch``; needs no ``scan``. ``options``: ``kv_prefix``, ``layout``.
    """
    opts = make_options(options)
    layout = opts.make_layout(check_file_name(name))
    keys = lease_keys(layout, name)
    client = StoreClient(store, timeout=opts.store_timeout)
    try:
        gen, expiry = client.get_batch(keys)
    finally:
        client.close()
    return _lease_info(keys[0], gen, keys[1], expiry)


def list_databases(store: AnyKvStore, **options: Any) -> list[DatabaseInfo]:
    """The databases in ``store`` (layout ``seed``, the ``kv_prefix`` given), by name:
    size, chunks stored, and the writer's lease. A journal or WAL beside a
    database is part of it, not listed apart. Needs the store's ``scan``.

    A database that does not open is listed with its ``problem``, and the
    listing goes on: a FileMeta that cannot be read, or one whose last chunk
    (:func:`~sqlkv.format.layout.last_chunk`) is not among the keys stored (``check``
    also reads that chunk, and finds one stored too short)."""
    opts = make_options(options)
    if opts.layout != "seed":
        raise Error("listing databases needs layout seed (layout rivet-v2 holds one database per key space)")
    layout = layouts.SeedLayout(opts.kv_prefix)
    client = StoreClient(store, timeout=opts.store_timeout)
    try:
        metas = [layout.classify(k) for k in client.scan(layout.kind_prefix(META))]
        names = [info.file_name for info in metas if info is not None and info.what == META]
        mains = [n for n in names if not any(n.endswith(s) and n[: -len(s)] in names for s in SIDECARS)]
        wanted = [layout.meta_key(n) for n in mains]
        for n in mains:
            wanted += lease_keys(layout, n)
        values = client.get_many(wanted)
        sizes: dict[str, int] = {}
        problems: dict[str, str] = {}
        leases: dict[str, LeaseInfo | None] = {}
        for i, name in enumerate(mains):
            meta = values[i]
            gen_key, expiry_key = lease_keys(layout, name)
            gen, expiry = values[len(mains) + 2 * i : len(mains) + 2 * i + 2]
            try:
                sizes[name] = decode_file_meta(meta, opts.chunk_size, wanted[i]) if meta is not None else 0
                leases[name] = _lease_info(gen_key, gen, expiry_key, expiry)
            except CorruptError as exc:
                problems[name] = str(exc)
        # The key of each database's last chunk, to be found among those stored.
        ends = {}
        for name, size in sizes.items():
            end = layouts.last_chunk(size, opts.chunk_size)
            if end is not None:
                ends[layout.chunk_key(name, end[0])] = name
        chunks: dict[str, int] = {}
        for key in client.scan(layout.kind_prefix(CHUNK)):
            info = layout.classify(key)
            if info is None or info.what != CHUNK:
                continue
            chunks[info.file_name] = chunks.get(info.file_name, 0) + 1
            ends.pop(key, None)
    finally:
        client.close()
    for name in ends.values():  # their last chunk is not stored
        problem = _bad_end(layout, name, sizes[name], opts.chunk_size, None)
        if problem is not None and name not in problems:
            problems[name] = problem
    return [
        DatabaseInfo(name, sizes.get(name), chunks.get(name, 0), leases.get(name), problems.get(name))
        for name in mains
    ]


def _bad_end(layout: Layout, name: str, size: int, chunk_size: int, last: bytes | None) -> str | None:
    """Why database ``name`` does not open when its FileMeta says ``size`` bytes and
    its last chunk (:func:`~sqlkv.format.layout.last_chunk`) holds ``last`` (``None``:
    missing): that chunk is missing or shorter than the size needs. ``None``
    when it is there at its full length (the open's rule, see storage.py)."""
    end = layouts.last_chunk(size, chunk_size)
    if end is None or (last is not None and len(last) >= end[1]):
        return None
    index, want = end
    found = "missing" if last is None else f"{len(last)} bytes long, not {want}"
    return (
        f"FileMeta says {size} bytes, but chunk {index} (key {layout.chunk_key(name, index).hex()}), "
        f"the last that size needs, is {found}: the database does not open"
    )


@dataclass
class DatabaseKeys:
    """Every key of one database in a store, sorted by what it is."""

    meta: dict[str, bytes] = field(default_factory=dict)  # file name -> FileMeta key (present ones)
    chunks: dict[str, dict[int, bytes]] = field(default_factory=dict)  # file -> index -> key
    staging: list[bytes] = field(default_factory=list)
    lease: list[bytes] = field(default_factory=list)
    other: list[bytes] = field(default_factory=list)

    def all(self) -> list[bytes]:
        keys = list(self.meta.values()) + self.staging + self.other + self.lease
        for by_index in self.chunks.values():
            keys += by_index.values()
        return keys


def database_keys(client: StoreClient, layout: Layout, name: str) -> DatabaseKeys:
    """Every key ``client``'s store holds for database ``name`` (see the module docstring)."""
    found = DatabaseKeys()
    files = [name] + [name + s for s in SIDECARS]
    metas = client.get_batch([layout.meta_key(f) for f in files])
    for file_name, value in zip(files, metas):
        if value is not None:
            found.meta[file_name] = layout.meta_key(file_name)
        by_index = {}
        for key in client.scan(layout.chunk_prefix(file_name)):
            info = layout.classify(key)
            if info is not None and info.what == CHUNK and info.file_name == file_name and info.index is not None:
                by_index[info.index] = key
        if by_index:
            found.chunks[file_name] = by_index
        for key in client.scan(layout.ext_prefix(file_name)):
            info = layout.classify(key)
            kind = info.kind if info is not None and info.what == EXT and info.file_name == file_name else b""
            if kind in _STAGING_KINDS:
                found.staging.append(key)
            elif kind == layouts.EXT_LEASE and file_name == name:
                found.lease.append(key)
            else:
                found.other.append(key)
    return found


def _delete(transport: StoreClient, fence: dict[bytes, bytes | None] | None, keys: list[bytes]) -> None:
    """Delete ``keys`` in as few calls as the store allows, each conditional on the
    writer's lease ``fence`` (``None``: no lease held)."""
    if not transport.write((), keys, fence):
        raise FencedError("this writer lost its lease while deleting; nothing more was deleted")


def remove_database(store: AnyKvStore, name: str, *, lock_timeout: float = OPEN_DEFAULTS.lock_timeout, **options: Any) -> int:
    """Remove every key of database ``name`` (layout and sqlkv's own), under its
    writer lease; return how many keys were removed. The FileMeta goes first,
    with chunk 0 (the SQLite header a repair could rebuild it from), in one
    write, so the database is gone at once even if the rest is interrupted
    (``check`` then finds, and ``remove`` again removes, what is left).

    It never opens the database: it removes the keys a scan finds, whatever the
    FileMeta says (unreadable, or claiming more than is stored), so it is the
    way out of a database that no longer opens. Memory goes with the keys
    stored, never with a size claimed. A database with no keys at all is a
    :class:`NotFoundError`. Needs ``scan``."""
    opts = make_options(options)
    layout = opts.make_layout(check_file_name(name))
    with writer_lease(store, name, opts, lock_timeout) as (transport, fence):
        found = database_keys(transport, layout, name)
        # The lease's keys go with the lease, at its release.
        keys = [k for k in found.all() if k not in found.lease]
        if not keys:
            raise NotFoundError(f"database {name!r} does not exist in the store")
        first = [found.meta[name]] if name in found.meta else []
        first += [found.chunks[name][0]] if 0 in found.chunks.get(name, {}) else []
        _delete(transport, fence, first)
        _delete(transport, fence, [k for k in keys if k not in first])
    return len(keys)


@dataclass(frozen=True)
class Problem:
    """One thing :func:`check_database` found wrong. ``repairable``: ``repair=True``
    deals with it, as ``action`` says (what it removes or writes); ``kind`` names
    the repair, so that a repair does only what it announced."""

    message: str
    repairable: bool
    action: str = ""
    kind: str = ""

    def describe(self) -> str:
        """The problem, and what a repair does about it."""
        return f"{self.message}: {self.action}" if self.action else self.message


#: Kinds of repair (:attr:`Problem.kind`).
_LEASE, _STAGING, _SIDECAR, _PAST_END, _FILE_META = "lease", "staging", "sidecar", "past end", "FileMeta"


@dataclass
class CheckReport:
    """What :func:`check_database` found (``problems``), what it repaired, and notes."""

    name: str
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def sound(self) -> bool:
        return not self.problems


@dataclass
class _Audit:
    """What :func:`_audit` found, and what a repair of it would do: delete ``delete``
    and write the FileMeta of ``meta_size`` bytes (``None``: leave it)."""

    found: DatabaseKeys
    delete: dict[str, list[bytes]] = field(default_factory=dict)  # by kind of repair
    meta_size: int | None = None
    opens: bool = True  # False: its FileMeta keeps the database from opening


def _header_size(client: StoreClient, layout: Layout, name: str, chunks: dict[int, bytes]) -> int | None:
    """The database's size by the SQLite header in its chunk 0 (page count times
    page size), or ``None``: no chunk 0, no SQLite header in it, or a page count
    the header itself does not vouch for."""
    if 0 not in chunks:
        return None
    first = client.get(layout.chunk_key(name, 0))
    header = sqlite_header(first) if first is not None else None
    return header.size if header is not None else None


def _chunks_agree(chunks: dict[int, bytes], size: int, chunk_size: int) -> bool:
    """Whether the chunk indices present are exactly those of a file of ``size`` bytes."""
    count = chunk_count(size, chunk_size)
    return len(chunks) == count and all(i < count for i in chunks)


def _audit(client: StoreClient, opts: Options, name: str, report: CheckReport) -> _Audit:
    """Add to ``report`` what is wrong with database ``name``; return the keys and the repair plan.

    A repair removes only what provably belongs to nothing, and writes a FileMeta
    only where the SQLite header in chunk 0 and the chunks present agree on the
    size (its page count times its page size is exactly the chunks present):
    a missing FileMeta, one that ends the file before the header does, which
    SQLite calls malformed, or one that claims more than is stored (its last
    chunk missing or short), which no open accepts. Chunks past the end of a FileMeta count as belonging
    to nothing only when the header confirms the FileMeta (ends there or before).
    """
    layout = opts.make_layout(name)
    found = database_keys(client, layout, name)
    audit = _Audit(found)
    cs = opts.chunk_size
    gen_key, expiry_key = lease_keys(layout, name)
    gen, expiry = client.get_batch([gen_key, expiry_key])
    lease = None
    try:
        lease = _lease_info(gen_key, gen, expiry_key, expiry)
    except CorruptError as exc:
        report.problems.append(Problem(f"unreadable lease: {exc}", True, "replaced and released", _LEASE))
    if lease is not None:
        if lease.held:
            report.notes.append(f"lease: {lease.describe()}")
        else:
            report.problems.append(Problem(f"stale lease: {lease.describe()}", True, "taken and released", _LEASE))
    if found.staging:
        commit_record = record_key(layout, name)
        what = (
            "an interrupted commit past its commit point (rolled forward on repair)"
            if commit_record in found.staging
            else "an interrupted commit before its commit point (rolled back on repair)"
        )
        record = client.get(commit_record) if commit_record in found.staging else None
        if record is not None and not readable_record(record, commit_record):
            what = (
                "an interrupted commit whose commit record cannot be read (discarded on repair, "
                "and the transaction it records with it)"
            )
        if lease is not None and lease.held:
            what = "a commit in flight, or interrupted"
        report.problems.append(
            Problem(f"{len(found.staging)} staging key(s): {what}", True, "finished or discarded", _STAGING)
        )
        audit.delete[_STAGING] = list(found.staging)
    for sidecar in SIDECARS:
        file_name = name + sidecar
        if file_name in found.meta or file_name in found.chunks:
            report.problems.append(Problem(
                f"file {file_name!r} beside the database (a journal left by another writer)", True,
                "rolled back if hot, then removed", _SIDECAR,
            ))
            keys = [found.meta[file_name]] if file_name in found.meta else []
            audit.delete.setdefault(_SIDECAR, []).extend(keys + list(found.chunks.get(file_name, {}).values()))
    meta_values = client.get_batch([found.meta[name]]) if name in found.meta else [None]
    chunks = found.chunks.get(name, {})
    size = None
    if meta_values[0] is not None:
        try:
            size = decode_file_meta(meta_values[0], cs, found.meta[name])
        except CorruptError as exc:
            report.problems.append(Problem(f"bad FileMeta: {exc}", False))
            audit.opens = False
            return audit
    header_size = _header_size(client, layout, name, chunks) if chunks else None
    agree = header_size is not None and _chunks_agree(chunks, header_size, cs)
    if size is None:
        if not chunks:
            report.problems.append(Problem("no FileMeta: the database file does not exist", False))
        elif agree:
            report.problems.append(Problem(
                f"no FileMeta, but the {len(chunks)} chunk(s) present are the whole database its "
                f"SQLite header describes ({header_size} bytes)", True,
                f"a FileMeta of {header_size} bytes written", _FILE_META,
            ))
            audit.meta_size = header_size
        else:
            report.problems.append(Problem(
                f"{len(chunks)} chunk(s) of no file: no FileMeta, and no SQLite header the chunks agree "
                "with to rebuild it from; not removed (sqlkv rm removes every key of the database)", False,
            ))
        return audit
    end = layouts.last_chunk(size, cs)
    last = client.get(chunks[end[0]]) if end is not None and end[0] in chunks else None
    bad_end = _bad_end(layout, name, size, cs, last)
    if bad_end is not None:
        audit.opens = False
        if agree and header_size != size:
            report.problems.append(Problem(
                f"{bad_end}; its SQLite header and the {len(chunks)} chunk(s) present say {header_size}",
                True, f"the FileMeta rewritten to {header_size} bytes", _FILE_META,
            ))
            audit.meta_size = header_size
            return audit
        if header_size is None:
            why = "no SQLite header in chunk 0 says where the file ends"
        elif not agree:
            why = (
                f"its SQLite header says {header_size} bytes, and the {len(chunks)} chunk(s) "
                "present do not agree with it"
            )
        else:
            why = "its SQLite header and the chunks present say the same: the last chunk itself is damaged"
        report.problems.append(Problem(
            f"{bad_end}; {why}; nothing written (sqlkv rm removes every key of the database)", False
        ))
        return audit
    count = chunk_count(size, cs)
    past = sorted(i for i in chunks if i >= count)
    if header_size is not None and header_size > size:
        if agree:
            report.problems.append(Problem(
                f"FileMeta says {size} bytes, but the database's SQLite header and the chunks present "
                f"say {header_size}", True, f"the FileMeta rewritten to {header_size} bytes", _FILE_META,
            ))
            audit.meta_size = header_size
            return audit
        report.problems.append(Problem(
            f"FileMeta says {size} bytes, the database's SQLite header {header_size}, and the chunks "
            f"present agree with neither ({len(chunks)} of them); nothing removed", False,
        ))
    elif past:
        what = f"{len(past)} chunk(s) past the end of the file (first: chunk {past[0]})"
        if header_size is not None:  # the header confirms the FileMeta: they belong to nothing
            report.problems.append(Problem(what, True, "removed", _PAST_END))
            audit.delete[_PAST_END] = [chunks[i] for i in past]
        else:
            report.problems.append(Problem(
                f"{what}; not removed: no SQLite header in chunk 0 confirms where the file ends", False
            ))
    inside = [chunks[i] for i in sorted(chunks) if i < count]
    for key, value in client.read_lazily(inside, value_bytes=cs):
        if value is not None and len(value) > cs:
            report.problems.append(
                Problem(f"chunk at key {key.hex()} is {len(value)} bytes, longer than chunk_size {cs}", False)
            )
    return audit


def _integrity(store: AnyKvStore, name: str, opts: Options, report: CheckReport) -> None:
    from ..runtime.connection import connect

    try:
        with connect(
            store, name, readonly=True, kv_prefix=opts.kv_prefix, chunk_size=opts.chunk_size,
            layout=opts.layout, cache_bytes=opts.cache_bytes,
        ) as db:
            rows = db.query("PRAGMA integrity_check").rows
    except StoreError:
        raise
    except Error as exc:
        report.problems.append(Problem(f"cannot open the database: {exc}", False))
        return
    if rows != [("ok",)]:
        for (line,) in rows[:20]:
            report.problems.append(Problem(f"integrity_check: {line}", False))


def check_database(
    store: AnyKvStore,
    name: str,
    *,
    repair: bool = False,
    lock_timeout: float = OPEN_DEFAULTS.lock_timeout,
    on_plan: Callable[[list[str]], None] | None = None,
    **options: Any,
) -> CheckReport:
    """Audit database ``name``: its layout (FileMeta readable and consistent with
    the chunks and the SQLite header, no chunk past the end, no staging keys left
    over, no stale lease, no journal left beside it) and ``PRAGMA integrity_check``.

    ``repair=True`` then deals with what it can without losing data, under the
    writer's lease: an interrupted commit is finished or discarded (as any
    writer's open does), a journal left beside it rolled back, staging leftovers
    and chunks that provably belong to nothing deleted, a stale lease taken and
    released, and a FileMeta that is missing, ends the file early or claims more
    than is stored rewritten from the SQLite header where the chunks present agree
    with it (see :func:`_audit`; the repair's open takes such a FileMeta as it is,
    which every other open refuses).
    ``on_plan`` is called first with what it will do, one line each, before any of
    it is done. What it did is in ``repaired``; the report's problems are those of
    the audit after it. An unreadable FileMeta, bad pages, and chunks no evidence
    shows to be orphans are never "repaired" (that could lose data): they stay
    problems. A database with no keys is a :class:`NotFoundError`. Needs ``scan``.
    """
    opts = make_options(options)
    check_file_name(name)
    report = CheckReport(name)
    with _client(store, opts) as client:
        audit = _audit(client, opts, name, report)
    if not audit.found.all():
        raise NotFoundError(f"database {name!r} does not exist in the store")
    planned = [p for p in report.problems if p.repairable]
    if repair and planned:
        if on_plan is not None:
            on_plan([p.describe() for p in planned])
        kinds = {p.kind for p in planned}
        with open_file(store, name, opts, readonly=False, lock_timeout=lock_timeout, salvage=True) as main:
            # Under the lease, after the open dealt with an interrupted commit or a
            # journal: do what the audit of this state finds, of what was announced.
            now = _audit(main.transport, opts, name, CheckReport(name))
            doomed = [k for kind, keys in now.delete.items() if kind in kinds for k in keys]
            _delete(main.transport, main.committer.fence, doomed)
            if now.meta_size is not None and _FILE_META in kinds:
                _write_file_meta(main, now.meta_size)
        report = CheckReport(name, repaired=[p.describe() for p in planned])
        with _client(store, opts) as client:
            audit = _audit(client, opts, name, report)
    if name in audit.found.meta and audit.opens:
        _integrity(store, name, opts, report)
    return report


@contextmanager
def _client(store: AnyKvStore, options: Options) -> Iterator[StoreClient]:
    client = StoreClient(store, timeout=options.store_timeout)
    try:
        yield client
    finally:
        client.close()


def _write_file_meta(main: KvFile, size: int) -> None:
    """Make ``size`` the database's committed size, changing no chunk: a commit of
    the FileMeta alone (with its version, so readers see it), fenced by the lease."""
    count = chunk_count(size, main.chunk_size)
    main.committer.commit(main.name, {}, size, count, count, None)

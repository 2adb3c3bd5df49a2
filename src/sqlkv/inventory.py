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
from dataclasses import dataclass, field
from typing import Any

from . import layout as layouts
from .commit import readable_record
from .errors import CorruptError, Error, FencedError, NotFoundError, StoreError
from .files import make_options, open_file
from .kvfile import KvFile
from .layout import Layout, check_file_name, decode_file_meta
from .lease import _decode as decode_lease_value
from .lease import lease_keys
from .options import Options
from .store import AnyKvStore, StoreClient

SIDECARS = ("-journal", "-wal")
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
    layout = make_options(options).make_layout(check_file_name(name))
    keys = lease_keys(layout, name)
    client = StoreClient(store)
    try:
        gen, expiry = client.get_batch(keys)
    finally:
        client.close()
    return _lease_info(keys[0], gen, keys[1], expiry)


def list_databases(store: AnyKvStore, **options: Any) -> list[DatabaseInfo]:
    """The databases in ``store`` (layout ``seed``, the ``kv_prefix`` given), by name:
    size, chunks stored, and the writer's lease. A journal or WAL beside a
    database is part of it, not listed apart. Needs the store's ``scan``."""
    opts = make_options(options)
    if opts.layout != "seed":
        raise Error("listing databases needs layout seed (layout rivet-v2 holds one database per key space)")
    prefix = bytes([opts.kv_prefix])
    client = StoreClient(store)
    try:
        meta_keys = client.scan(prefix + b"\x00")
        names = [k[2:].decode("utf-8", "replace") for k in meta_keys]
        mains = [n for n in names if not any(n.endswith(s) and n[: -len(s)] in names for s in SIDECARS)]
        chunks: dict[str, int] = {}
        for key in client.scan(prefix + b"\x01"):
            end = key.rfind(b"\x00", 0, len(key) - 4)
            owner = key[2:end].decode("utf-8", "replace")
            chunks[owner] = chunks.get(owner, 0) + 1
        layout = layouts.SeedLayout(opts.kv_prefix)
        wanted = [layout.meta_key(n) for n in mains]
        for n in mains:
            wanted += lease_keys(layout, n)
        values = client.get_many(wanted)
    finally:
        client.close()
    out = []
    for i, name in enumerate(mains):
        meta = values[i]
        gen_key, expiry_key = lease_keys(layout, name)
        gen, expiry = values[len(mains) + 2 * i : len(mains) + 2 * i + 2]
        size, problem = None, None
        try:
            size = decode_file_meta(meta, opts.chunk_size, wanted[i]) if meta is not None else 0
            lease = _lease_info(gen_key, gen, expiry_key, expiry)
        except CorruptError as exc:
            problem, lease = str(exc), None
        out.append(DatabaseInfo(name, size, chunks.get(name, 0), lease, problem))
    return out


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
        head = layout.chunk_key(file_name, 0)[:-4]
        by_index = {int.from_bytes(k[len(head):], "big"): k for k in client.scan(head) if len(k) == len(head) + 4}
        if by_index:
            found.chunks[file_name] = by_index
        ext = layout.ext_key(file_name, b"")
        for key in client.scan(ext):
            kind = key[len(ext) : len(ext) + 1]
            if kind in _STAGING_KINDS:
                found.staging.append(key)
            elif kind == layouts.EXT_LEASE and file_name == name:
                found.lease.append(key)
            else:
                found.other.append(key)
    return found


def _delete(main: KvFile, keys: list[bytes]) -> None:
    """Delete ``keys`` in as few calls as the store allows, each conditional on the
    lease of the writer that opened ``main`` (if it holds one)."""
    if not main.transport.write((), keys, main.committer.fence):
        raise FencedError("this writer lost its lease while deleting; nothing more was deleted")


def remove_database(store: AnyKvStore, name: str, *, lock_timeout: float = 0.0, **options: Any) -> int:
    """Remove every key of database ``name`` (layout and sqlkv's own), under its
    writer lease; return how many keys were removed. The FileMeta goes first,
    in one write, so the database is gone at once even if the rest is
    interrupted (``check`` then finds, and ``remove`` again removes, what is left).
    A database with no keys at all is a :class:`NotFoundError`. Needs ``scan``."""
    opts = make_options(options)
    layout = opts.make_layout(check_file_name(name))
    with open_file(store, name, opts, readonly=False, lock_timeout=lock_timeout) as main:
        found = database_keys(main.transport, layout, name)
        # The lease's keys go with the lease, at its release.
        keys = [k for k in found.all() if k not in found.lease]
        if not keys:
            raise NotFoundError(f"database {name!r} does not exist in the store")
        first = [found.meta[name]] if name in found.meta else []
        _delete(main, first)
        _delete(main, [k for k in keys if k not in first])
    return len(keys)


@dataclass(frozen=True)
class Problem:
    """One thing :func:`check_database` found wrong; ``repairable``: ``repair=True`` removes it."""

    message: str
    repairable: bool


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


def _audit(client: StoreClient, opts: Options, name: str, report: CheckReport) -> DatabaseKeys:
    layout = opts.make_layout(name)
    found = database_keys(client, layout, name)
    cs = opts.chunk_size
    gen_key, expiry_key = lease_keys(layout, name)
    gen, expiry = client.get_batch([gen_key, expiry_key])
    lease = None
    try:
        lease = _lease_info(gen_key, gen, expiry_key, expiry)
    except CorruptError as exc:
        report.problems.append(Problem(f"unreadable lease: {exc}", True))
    if lease is not None:
        if lease.held:
            report.notes.append(f"lease: {lease.describe()}")
        else:
            report.problems.append(Problem(f"stale lease: {lease.describe()}", True))
    if found.staging:
        record_key = layout.ext_key(name, layouts.EXT_COMMIT_RECORD)
        what = (
            "an interrupted commit past its commit point (rolled forward on repair)"
            if record_key in found.staging
            else "an interrupted commit before its commit point (rolled back on repair)"
        )
        record = client.get(record_key) if record_key in found.staging else None
        if record is not None and not readable_record(record, record_key):
            what = (
                "an interrupted commit whose commit record cannot be read (discarded on repair, "
                "and the transaction it records with it)"
            )
        if lease is not None and lease.held:
            what = "a commit in flight, or interrupted"
        report.problems.append(Problem(f"{len(found.staging)} staging key(s): {what}", True))
    for sidecar in SIDECARS:
        file_name = name + sidecar
        if file_name in found.meta or file_name in found.chunks:
            report.problems.append(
                Problem(f"file {file_name!r} beside the database (a journal left by another writer)", True)
            )
    meta_values = client.get_batch([found.meta[name]]) if name in found.meta else [None]
    size = None
    if meta_values[0] is None:
        report.problems.append(Problem("no FileMeta: the database file does not exist", bool(found.chunks.get(name))))
    else:
        try:
            size = decode_file_meta(meta_values[0], cs, found.meta[name])
        except CorruptError as exc:
            report.problems.append(Problem(f"bad FileMeta: {exc}", False))
    chunks = found.chunks.get(name, {})
    if size is not None:
        count = -(-size // cs)
        past = sorted(i for i in chunks if i >= count)
        if past:
            report.problems.append(
                Problem(f"{len(past)} chunk(s) past the end of the file (first: chunk {past[0]})", True)
            )
        inside = [chunks[i] for i in sorted(chunks) if i < count]
        for key, value in client.read_lazily(inside, value_bytes=cs):
            if value is not None and len(value) > cs:
                report.problems.append(
                    Problem(f"chunk at key {key.hex()} is {len(value)} bytes, longer than chunk_size {cs}", False)
                )
    elif meta_values[0] is None and chunks:
        report.problems.append(Problem(f"{len(chunks)} chunk(s) of no file", True))
    return found


def _integrity(store: AnyKvStore, name: str, opts: Options, report: CheckReport) -> None:
    from .sync import connect

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
    store: AnyKvStore, name: str, *, repair: bool = False, lock_timeout: float = 0.0, **options: Any
) -> CheckReport:
    """Audit database ``name``: its layout (FileMeta readable and consistent with
    the chunks, no chunk past the end, no staging keys left over, no stale lease,
    no journal left beside it) and ``PRAGMA integrity_check``.

    ``repair=True`` first removes what is safe to remove, under the writer's
    lease: an interrupted commit is finished or discarded (as any writer's open
    does), a journal left beside it rolled back, chunks past the end and staging
    leftovers deleted, a stale lease taken and released. What it did is in
    ``repaired``; the report's problems are those of the audit after it. Bad
    FileMeta or pages are never "repaired" (that would lose data): they stay
    problems. A database with no keys is a :class:`NotFoundError`. Needs ``scan``.
    """
    opts = make_options(options)
    check_file_name(name)
    report = CheckReport(name)
    client = StoreClient(store)
    try:
        found = _audit(client, opts, name, report)
    finally:
        client.close()
    if not found.all():
        raise NotFoundError(f"database {name!r} does not exist in the store")
    if repair and any(p.repairable for p in report.problems):
        repaired = [p.message for p in report.problems if p.repairable]
        with open_file(store, name, opts, readonly=False, lock_timeout=lock_timeout, salvage=True) as main:
            after = CheckReport(name)
            left = _audit(main.transport, opts, name, after)
            count = -(-main.size // opts.chunk_size) if main.exists else 0
            doomed = list(left.staging) + [k for f, k in left.meta.items() if f != name]
            for file_name, by_index in left.chunks.items():
                limit = count if file_name == name else 0
                doomed += [k for i, k in by_index.items() if i >= limit]
            _delete(main, doomed)
        report = CheckReport(name, repaired=repaired)
        client = StoreClient(store)
        try:
            _audit(client, opts, name, report)
        finally:
            client.close()
    if name in found.meta and not any(p.message.startswith("bad FileMeta") for p in report.problems):
        _integrity(store, name, opts, report)
    return report

"""Moving whole databases: a SQLite file into a store, a database out to a file,
a database from one store to another.

All three copy the database file byte for byte (any page size), so what
arrives is the same database SQLite wrote, and each is atomic where it
lands:

- :func:`import_database` and :func:`copy_database` write the target through
  sqlkv's own commit step as ONE transaction under the target's writer lease
  (staged when larger than the store's limits or ``max_dirty_bytes``), so the
  database appears whole or not at all, even if the process is killed, and
  replacing an existing one (``replace=True``) is atomic too.
- :func:`export_database` writes a temporary file beside the target, syncs it
  and renames it over the target name, so no half-written file ever has it.

A source database in a store is read under its writer lease (no other writer
commits while it is read, so the copy is one consistent state); with
``readonly=True`` it is read without one, for stores that cannot be written
(consistent only while nobody writes it).

A source SQLite file is read consistently: a file with no journal or WAL
beside it is read under a shared lock (a read transaction of stdlib
``sqlite3``); a file with a rollback journal or a WAL beside it is first
copied, with them, to a temporary directory, where SQLite rolls the journal
back or checkpoints the WAL. The user's file is never changed.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Error, ExistsError, NotFoundError
from ..format.layout import SIDECARS
from ..storage.files import Progress, make_options, open_file, stream, write_whole
from ..storage.kvfile import KvFile
from ..storage.options import OPEN_DEFAULTS
from ..storage.storage import SQLITE_HEADER_BYTES, SQLITE_MAGIC, sqlite_header
from ..stores.contract import AnyKvStore

#: Header bytes 18 and 19: file format write and read versions, 2 in WAL mode.
_FORMAT_VERSIONS = slice(18, 20)


@dataclass(frozen=True)
class TransferResult:
    """What a transfer moved: the database's name at the target, and its size in bytes."""

    name: str
    size: int


class SourceFileError(Error):
    """A SQLite file given as a source cannot be read, or is not a whole SQLite
    database (empty, not SQLite's header, truncated, or SQLite cannot read it);
    SQLite's own error, where there is one, is the ``__cause__``."""


def _read_head(path: Path) -> tuple[bytes, int]:
    """The first bytes of the file at ``path`` (its header) and its size."""
    try:
        with open(path, "rb") as f:
            return f.read(SQLITE_HEADER_BYTES), os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise SourceFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _size_problem(path: Path, head: bytes, size: int) -> str | None:
    """What makes the SQLite file at ``path`` (starting with ``head``, ``size`` bytes)
    less than a whole database by its header, or ``None``."""
    if size < SQLITE_HEADER_BYTES:
        return f"{path} is truncated: {size} bytes, shorter than a SQLite header ({SQLITE_HEADER_BYTES} bytes)"
    header = sqlite_header(head)
    if header is None:
        return f"{path} has a damaged SQLite header (a page size SQLite does not take)"
    if header.size is not None and size < header.size:
        return (
            f"{path} is truncated: its header says {header.page_count} pages of {header.page_size} "
            f"bytes ({header.size} bytes), but the file has {size} bytes"
        )
    return None


def _check_sqlite_file(path: Path, whole: bool = False, source: Path | None = None) -> int:
    """The size of the SQLite file at ``path``; :class:`SourceFileError` if it is not one
    (``whole``: nor a whole one by its header; not asked of a file whose hot journal
    or WAL beside it is still to be applied). Errors name ``source`` (default ``path``):
    the user's file, where ``path`` is a copy of it."""
    head, size = _read_head(path)
    shown = source or path
    if not size:
        raise SourceFileError(f"{shown} is empty: there is no database in it to import")
    if not head.startswith(SQLITE_MAGIC):
        raise SourceFileError(f"{shown} is not a SQLite database (its header is not SQLite's)")
    problem = _size_problem(shown, head, size) if whole else None
    if problem is not None:
        raise SourceFileError(problem)
    return size


def _unreadable(path: Path, exc: sqlite3.Error, source: Path | None = None) -> SourceFileError:
    """The error for a source SQLite could not read at ``path`` (a copy of ``source``,
    which the message names): truncated, if its header says so."""
    head, size = _read_head(path)
    shown = source or path
    return SourceFileError(_size_problem(shown, head, size) or f"SQLite cannot read {shown}: {exc}")


@contextmanager
def _consistent_file(path: Path) -> Iterator[Path]:
    """A path whose bytes are one committed state of the SQLite database at ``path``,
    stable for the ``with`` block (see the module docstring)."""
    sidecars = [Path(str(path) + s) for s in SIDECARS if Path(str(path) + s).exists()]
    if not sidecars:
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise _unreadable(path, exc) from exc
        try:
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # takes the shared lock
            except sqlite3.Error as exc:
                raise _unreadable(path, exc) from exc
            yield path
        finally:
            conn.close()
        return
    with tempfile.TemporaryDirectory(prefix="sqlkv-import-") as tmp:
        copy = Path(tmp) / "source.db"
        shutil.copyfile(path, copy)
        for sidecar in sidecars:
            shutil.copyfile(sidecar, str(copy) + sidecar.name[len(path.name):])
        conn = sqlite3.connect(copy, isolation_level=None)
        try:
            # Reading recovers a hot journal; leaving WAL mode checkpoints the WAL into the file.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            conn.execute("PRAGMA journal_mode=DELETE").fetchall()
        except sqlite3.Error as exc:
            raise _unreadable(copy, exc, path) from exc
        finally:
            conn.close()
        yield copy


def _rollback_header(offset: int, block: bytes) -> bytes:
    """``block`` with the header's format versions set to rollback-journal mode (1),
    as ``PRAGMA journal_mode=DELETE`` sets them: sqlkv runs its own journal mode."""
    if offset != 0 or len(block) < _FORMAT_VERSIONS.stop or block[_FORMAT_VERSIONS] == b"\x01\x01":
        return block
    return block[: _FORMAT_VERSIONS.start] + b"\x01\x01" + block[_FORMAT_VERSIONS.stop :]


def _check_target(target: KvFile, name: str, replace: bool) -> None:
    if target.exists and not replace:
        raise ExistsError(f"database {name!r} already exists in the target store")


def import_database(
    source: str | os.PathLike[str],
    store: AnyKvStore,
    name: str,
    *,
    replace: bool = False,
    progress: Progress | None = None,
    lock_timeout: float = OPEN_DEFAULTS.lock_timeout,
    **options: Any,
) -> TransferResult:
    """Bring the SQLite file ``source`` into ``store`` as database ``name``, atomically.

    ``replace``: replace a database of that name (else :class:`ExistsError`).
    ``progress(done, total)`` is called as bytes are written. ``options`` are
    :class:`sqlkv.SqliteVfs`'s (``kv_prefix``, ``chunk_size``, ``layout``,
    ``max_dirty_bytes``, ``lease_seconds``, ...); the database then opens with
    the same ones. A source that is not a whole SQLite database (empty, truncated,
    malformed) is a :class:`SourceFileError`, raised before the store is touched.
    """
    opts = make_options(options)
    path = Path(source)
    _check_sqlite_file(path)
    with _consistent_file(path) as consistent:
        size = _check_sqlite_file(consistent, whole=True, source=path)
        with open(consistent, "rb") as f, open_file(
            store, name, opts, readonly=False, lock_timeout=lock_timeout
        ) as target:
            _check_target(target, name, replace)

            def read(amount: int, offset: int) -> bytes:
                f.seek(offset)
                return _rollback_header(offset, f.read(amount))

            write_whole(target, stream(read, size, progress), size)
    return TransferResult(name, size)


def export_database(
    store: AnyKvStore,
    name: str,
    target: str | os.PathLike[str],
    *,
    replace: bool = False,
    readonly: bool = False,
    progress: Progress | None = None,
    lock_timeout: float = OPEN_DEFAULTS.lock_timeout,
    **options: Any,
) -> TransferResult:
    """Write database ``name`` of ``store`` to the SQLite file ``target``.

    One consistent state (read under the writer's lease, or with
    ``readonly=True`` without one); the file appears under its name only once
    it is whole and synced. An existing ``target`` is an :class:`ExistsError`
    unless ``replace``. A missing database is a :class:`NotFoundError`.
    """
    opts = make_options(options)
    target_path = Path(target)
    if target_path.exists() and not replace:
        raise ExistsError(f"{target_path} already exists")
    directory = target_path.parent
    with open_file(store, name, opts, readonly=readonly, lock_timeout=lock_timeout) as source:
        if not source.exists:
            raise NotFoundError(f"database {name!r} does not exist in the store")
        size = source.size
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target_path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise Error(f"cannot write in {directory}: {exc.strerror or exc}") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                for _offset, block in stream(source.read, size, progress):
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, target_path)
        except BaseException as exc:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise Error(f"cannot write {target_path}: {exc.strerror or exc}") from exc
            raise
    _sync_directory(directory)
    return TransferResult(str(target_path), size)


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def copy_database(
    source_store: AnyKvStore,
    target_store: AnyKvStore,
    name: str,
    new_name: str | None = None,
    *,
    replace: bool = False,
    readonly: bool = False,
    progress: Progress | None = None,
    lock_timeout: float = OPEN_DEFAULTS.lock_timeout,
    **options: Any,
) -> TransferResult:
    """Copy database ``name`` of ``source_store`` to ``target_store`` (as ``new_name``).

    Atomic at the target, under the target's writer lease; the source is read
    under its own (or, with ``readonly=True``, without one). Both stores use the
    same ``options``. Copying a database onto itself is a :class:`ConfigError`.
    """
    opts = make_options(options)
    new_name = name if new_name is None else new_name
    if source_store is target_store and new_name == name:
        raise ConfigError(f"cannot copy database {name!r} onto itself")
    with open_file(source_store, name, opts, readonly=readonly, lock_timeout=lock_timeout) as source:
        if not source.exists:
            raise NotFoundError(f"database {name!r} does not exist in the source store")
        size = source.size
        with open_file(target_store, new_name, opts, readonly=False, lock_timeout=lock_timeout) as target:
            _check_target(target, new_name, replace)
            write_whole(target, stream(source.read, size, progress), size)
    return TransferResult(new_name, size)

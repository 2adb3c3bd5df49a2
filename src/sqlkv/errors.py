"""The exceptions sqlkv raises.

Every error derives from :class:`Error`, so ``except sqlkv.Error`` catches
everything the library itself raises. A store's own exception is never
swallowed: it reaches the caller as the ``__cause__`` of a :class:`StoreError`.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every sqlkv error."""


class ConfigError(Error, ValueError):
    """A configuration value is invalid; the message names the field."""


class ClosedError(Error):
    """The database (or store) was used after it was closed."""


class SqlError(Error):
    """SQLite refused a statement; the message is SQLite's own.

    ``code`` is SQLite's (extended) result code when known, else ``None``.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class PinnedSettingError(SqlError):
    """A PRAGMA tried to change a setting the commit protocol depends on."""


class StoreError(Error):
    """The key-value store failed; the store's exception is ``__cause__``."""


class StoreProtocolError(StoreError):
    """The store answered something the store protocol does not allow
    (a value that is not bytes, a batch answer of the wrong length, ...)."""


class StoreTimeoutError(StoreError):
    """A store call did not answer within the database's ``store_timeout``.

    An ``async`` store's call was cancelled; a synchronous store's call could
    not be, and the database gave up on it (see the README, "What happens when
    the store fails"). A commit's write that timed out is reported as an
    :class:`OutcomeUnknownError` instead, since the store may have applied it.
    """


class StoreLimitError(StoreError):
    """A write cannot be expressed within the store's declared limits, or the store
    refused it for a key's or value's size before writing any of it: nothing of it
    was written (a store raises it only then)."""


class OutcomeUnknownError(StoreError):
    """A commit failed at or after its commit point: it may have happened.

    ``committed`` is ``None`` when the write that commits (the one batch of a
    commit that fits one, or the commit record of a staged one) failed: the
    store may have applied it and lost the reply, or not. It is ``True`` when
    that write is known to be stored, but what follows it (moving staged
    chunks into place, cleaning up) failed: the transaction is committed and
    the next open, by this writer or the one that replaced it, finishes it.

    ``__cause__`` is the store's exception, or the :class:`FencedError` that
    stopped this writer from finishing. It subclasses :class:`StoreError`, so
    code that reopens after a store failure goes on working; but unlike any
    other :class:`StoreError` of a commit it does *not* mean "nothing of it
    is visible": do not retry the transaction blindly, check what the
    database holds first (a plain :class:`StoreError` or :class:`FencedError`
    does mean the transaction is gone).
    """

    def __init__(self, message: str, committed: bool | None) -> None:
        super().__init__(message)
        self.committed = committed


class CorruptError(Error):
    """Stored data does not follow the layout (bad FileMeta, missing or oversized
    chunk, garbled commit record, ...); the message names the key.

    Raised before anything is written, so nothing stored changes.
    """


class ConcurrentCommitError(Error):
    """A writer changed the database while a reader that holds no lease was
    reading it, so what the reader needed is gone (a read-only open is not
    isolated from writers). Nothing is wrong with the stored data: reopen and
    retry.
    """


class UnusableError(Error):
    """The database cannot go on after an earlier failure; close and reopen it."""


class LockedError(Error):
    """Another writer holds the database's lease.

    ``reason`` is what happened and ``advice`` what the caller of the library can
    do about it (in its Python arguments; empty when there is none); the message is
    both. A command line gives its own advice in place of ``advice``.
    """

    def __init__(self, reason: str, advice: str = "") -> None:
        super().__init__(f"{reason}; {advice}" if advice else reason)
        self.reason = reason
        self.advice = advice


class FencedError(Error):
    """This writer lost its lease; its commit was refused and nothing of it is visible."""


class RewoundError(FencedError):
    """The store's state is not the one this writer built on: it went back in
    time (a failover promoted a replica that was behind, a backup was
    restored) or another branch was written. Every commit is conditional on
    the head (the version record) its writer last committed or read, so
    nothing of the transaction was written; the writer has dropped what it
    held in memory, and its next call reopens the database at the store's
    real state: retry the transaction then."""


class NotFoundError(Error):
    """The database named does not exist in the store."""


class ExistsError(Error):
    """The database (or file) to be made exists already, and replacing it was not asked for."""


class TransactionError(Error):
    """A transaction was used against the rules: a call left one open (it was
    rolled back), a call came after its transaction ended, a commit found its
    transaction already rolled back, or a direct call came from inside an open
    ``transaction()`` (which would otherwise wait on itself)."""


class ConflictError(Error):
    """A read transaction of a reader (``readonly=True``) cannot be served from
    the one committed state it started at: a writer's commit changed what it
    still needed. Nothing is wrong: retry the transaction (a single statement
    outside ``BEGIN ... COMMIT`` is retried by sqlkv itself)."""


class StaleError(Error):
    """A call asked for at least a version (``min_version=``) that the database
    did not reach within the time allowed."""

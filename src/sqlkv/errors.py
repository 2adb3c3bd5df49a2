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


class StoreLimitError(StoreError):
    """A write cannot be expressed within the store's declared limits."""


class CorruptError(Error):
    """Stored data does not follow the layout (bad FileMeta, oversized chunk, ...).

    Raised before anything is written, so nothing stored changes.
    """


class UnusableError(Error):
    """The database cannot go on after an earlier failure; close and reopen it."""


class LockedError(Error):
    """Another writer holds the database's lease."""


class FencedError(Error):
    """This writer lost its lease; its commit was refused and nothing of it is visible."""


class TransactionError(Error):
    """A transaction was used against the rules: a call left one open (it was
    rolled back), a call came after its transaction ended, a commit found its
    transaction already rolled back, or a direct call came from inside an open
    ``transaction()`` (which would otherwise wait on itself)."""

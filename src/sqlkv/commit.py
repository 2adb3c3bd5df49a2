"""The commit step: how a file's buffered changes become one committed state.

A commit is a list of puts (changed chunks and the new FileMeta) and a list
of deletes (chunks past the new end). When the store applies batches
atomically and the commit fits its limits, it is one round trip: one
``write_batch`` (or ``put_batch``, then ``delete_batch`` only when the file
shrank, on a store without ``write_batch``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import FencedError, StoreLimitError
from .store import StoreClient, StoreLimits


def fits_one_batch(
    limits: StoreLimits, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes], has_write_batch: bool
) -> bool:
    """Whether ``puts`` and ``deletes`` can be applied by one atomic call of the store."""
    if not limits.atomic_batches:
        return False
    keys = len(puts) + (len(deletes) if has_write_batch else 0)
    if limits.max_batch_keys is not None and keys > limits.max_batch_keys:
        return False
    if not has_write_batch and limits.max_batch_keys is not None and len(deletes) > limits.max_batch_keys:
        return False
    if limits.max_batch_bytes is not None:
        nbytes = sum(len(k) + len(v) for k, v in puts)
        if has_write_batch:
            nbytes += sum(len(k) for k in deletes)
        if nbytes > limits.max_batch_bytes:
            return False
    return True


def commit(
    client: StoreClient,
    puts: Sequence[tuple[bytes, bytes]],
    deletes: Sequence[bytes],
    expect: dict[bytes, bytes | None] | None = None,
) -> None:
    """Make ``puts`` and ``deletes`` the committed state, atomically.

    ``expect`` makes the commit conditional (writer fencing): if any of its
    keys does not hold the expected value, nothing is written and
    :class:`FencedError` is raised.
    """
    limits = client.limits
    for key, value in puts:
        if limits.max_value_bytes is not None and len(value) > limits.max_value_bytes:
            raise StoreLimitError(
                f"value of {len(value)} bytes for key {key.hex()} exceeds the store's "
                f"largest value ({limits.max_value_bytes} bytes)"
            )
    if not fits_one_batch(limits, puts, deletes, client.can_write_batch):
        raise StoreLimitError(
            f"a commit of {len(puts)} puts and {len(deletes)} deletes does not fit one atomic "
            f"batch of this store ({limits})"
        )
    if not client.write_batch(puts, deletes, expect):
        raise FencedError("commit refused: this writer no longer holds the database's lease")
    client.stats.commits += 1

"""Fencing tokens: the proof an effect carries that its caller still had the right to act.

Before a fence, a restart or a migration start, the job's owner asks the journal for a
token (:meth:`evac.journal.Journal.fence_token`): a transaction that checks it still
owns the job and returns the cluster's current leader revision. The token is kept here
for the calling thread, so an outside party that can check it (the lab's power switch,
a BMC proxy) reads it without every fence agent's signature changing. A party that has
seen a newer token refuses an older one: a deposed controller that wakes up after a
pause cannot power off a host on the strength of an old decision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

current: ContextVar[int | None] = ContextVar("evac_fencing_token", default=None)


def token() -> int | None:
    """The token of this thread's last guard (a job's step thread guards before every
    effect); None where nothing guarded."""
    return current.get()


@contextmanager
def carried(value: int) -> Iterator[int]:
    """``value`` is this thread's token inside the block only (a pooled thread, such as an
    HTTP worker's, must not carry one request's token into the next)."""
    reset = current.set(value)
    try:
        yield value
    finally:
        current.reset(reset)

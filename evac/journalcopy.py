"""``evac journal copy``: move every record from one journal to another (SQLite to etcd
when a fleet grows a second controller, etcd to SQLite when it shrinks back)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from .errors import ConfigError
from .journal import Journal


def copy(source: Journal, target: Journal) -> dict[str, int]:
    """Every record of ``source`` into the empty ``target``; the counts by kind.

    Refused while a live process runs a job of ``source``: its next writes would be
    lost from the copy. Unfinished jobs of dead processes are copied, owned by nobody,
    and the next controller on ``target`` claims them.
    """
    live = [job for job in source.unfinished_jobs() if not job.orphaned]
    if live:
        jobs = ", ".join(f"job {job.id} ({job.owner})" for job in live)
        raise ConfigError(
            f"journal copy: {jobs} still running in a live process: stop evac serve first,"
            " or wait for the job to finish, then copy again"
        )
    counts: Counter[str] = Counter()

    def counted() -> Iterator[tuple[str, dict[str, Any]]]:
        for kind, record in source.dump():
            counts[kind] += 1
            yield kind, record

    target.load(counted())
    return dict(counts)

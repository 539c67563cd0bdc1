"""One small error hierarchy, so retry policies and the CLI can name classes.

``ConfigError`` is the user's fault (exit code 2, nothing started);
``TransientError`` is worth retrying; the rest are operational failures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class EvacError(Exception):
    """Base of every error evac raises on purpose."""


class ConfigError(EvacError):
    """Bad input: a runbook, inventory, config, parameter or CLI argument.

    The message is one line that names the file, line and field.
    """


class TransientError(EvacError):
    """Something that may succeed when tried again (a dropped connection, a busy host)."""


class HostUnreachable(TransientError):
    """A host's libvirt daemon cannot be reached."""


class DiskInUse(TransientError):
    """A lock manager refused to start a guest: another QEMU still holds one of its disks.

    It is the last guard against split-brain when a fence lied or was aimed at the wrong
    machine. It is transient because a dead host's lease can outlive it for a while (an NFS
    server's lock grace period), so a restart may succeed a little later.
    """


class NotFound(EvacError):
    """A guest or host that evac was asked about does not exist."""


class MigrationError(EvacError):
    """A live migration failed; the guest is still on its source."""


class FencingError(EvacError):
    """A host could not be confirmed powered off."""


class LockedError(EvacError):
    """Another job already holds the lock (for example, a drain of the same host);
    ``holder`` is that job's id where the journal said it."""

    def __init__(self, message: str, holder: int | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class JournalError(EvacError):
    """The journal cannot be opened, read or written: corrupt, read-only, locked, disk full.

    The message is one line that names the file, what is wrong and the way out.
    """


class Interrupted(EvacError):
    """The job stops here but stays ``running`` in the journal, for this process's next
    start or for another controller to take over (the service is stopping)."""


class OwnershipLost(Interrupted):
    """This process no longer owns the job (its etcd lease expired, or another controller
    claimed it): it must not apply another effect, and it leaves the job to the new owner."""


class ClusterUnavailable(JournalError, Interrupted):
    """The distributed journal (etcd) has no quorum or no endpoint answers. Nothing is
    fenced, restarted or moved until it returns; jobs stay ``running`` and resume then."""


class Cancelled(EvacError):
    """The job was cancelled by an operator."""


class Incomplete(EvacError):
    """An action that ran but did not reach its goal; its outputs still matter (a report)."""

    def __init__(self, message: str, outputs: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.outputs = dict(outputs)


class StepTimeout(EvacError):
    """A step ran past its ``timeout``."""


class HaDisarmed(ConfigError):
    """An automatic failover refused while HA is disarmed: ``evac ha arm`` resumes them."""


class AdmissionRefused(EvacError):
    """``ha.admission: enforce`` refused to protect a guest; nothing changed."""


ERROR_CLASSES: dict[str, type[EvacError]] = {
    cls.__name__: cls
    for cls in (
        EvacError,
        ConfigError,
        TransientError,
        HostUnreachable,
        DiskInUse,
        NotFound,
        MigrationError,
        FencingError,
        LockedError,
        JournalError,
        Interrupted,
        OwnershipLost,
        ClusterUnavailable,
        Cancelled,
        Incomplete,
        StepTimeout,
        HaDisarmed,
        AdmissionRefused,
    )
}

"""The vocabularies: job, step, item and host states, and event kinds.

They are ``StrEnum``s, so a value is also its string: journals store the text, JSON
output shows it, and a plugin comparing ``event.kind == "job.finished"`` keeps working.
``docs/plugins.md`` documents every event kind and its payload (a test keeps it so).
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PARTIAL = "partial"  # finished, but a step with ``on_failure: continue`` had failures
    INTERRUPTED = "interrupted"  # the service stopped: still running in the journal

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PARTIAL})


class StepState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    PARTIAL = "partial"
    CANCELLED = "cancelled"


class ItemState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class HostMode(StrEnum):
    """Evac's own record of a host, kept in the journal (not what the monitor sees)."""

    ENABLED = "enabled"
    MAINTENANCE = "maintenance"
    FENCED = "fenced"


class Health(StrEnum):
    """What the monitor concludes about a host from its evidence."""

    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"


class EventKind(StrEnum):
    """Every event evac emits. Job events carry the job's id; host and monitor events job 0."""

    JOB_STARTED = "job.started"
    JOB_RESUMED = "job.resumed"
    JOB_CANCEL_REQUESTED = "job.cancel_requested"
    JOB_INTERRUPTED = "job.interrupted"
    JOB_FINISHED = "job.finished"
    STEP_STARTED = "step.started"
    STEP_ITEMS = "step.items"
    STEP_SKIPPED = "step.skipped"
    STEP_FINISHED = "step.finished"
    STEP_FAILED = "step.failed"
    ITEM_STARTED = "item.started"
    ITEM_RETRY = "item.retry"
    ITEM_FINISHED = "item.finished"
    PROGRESS = "progress"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_GRANTED = "approval.granted"
    ROLLBACK_STARTED = "rollback.started"
    ROLLBACK_FINISHED = "rollback.finished"
    HOST_UP = "host.up"
    HOST_SUSPECT = "host.suspect"
    HOST_DOWN = "host.down"
    HOST_IGNORED = "host.ignored"
    HOST_CLEANED = "host.cleaned"
    HOST_FAILOVER_NOT_STARTED = "host.failover_not_started"  # a dead host's failover could not start
    MONITOR_STORM_BRAKE = "monitor.storm_brake"
    MONITOR_BRAKE_RELEASED = "monitor.brake_released"
    CLUSTER_LEADER = "cluster.leader"  # this replica became the leader
    CLUSTER_FOLLOWER = "cluster.follower"  # this replica lost or gave up the leadership
    CLUSTER_UNAVAILABLE = "cluster.unavailable"  # etcd lost: nothing is fenced or restarted
    CLUSTER_AVAILABLE = "cluster.available"  # etcd answers again
    GUEST_LEFT_STOPPED = "guest.left_stopped"  # a guest's QEMU died more often than its restart policy allows
    HA_DISARMED = "ha.disarmed"  # HA disarmed cluster-wide: observe and alert, never fence or restart
    HA_ARMED = "ha.armed"  # HA armed again: every host is judged again at once
    HA_HELD = "ha.held"  # something HA would have done (a failover, a restart) not done: disarmed
    HA_RESERVE_BROKEN = "ha.reserve_broken"  # the fleet can no longer restart every protected guest
    HA_RESERVE_RESTORED = "ha.reserve_restored"

"""The storm brake: when too many hosts go down at once, the likeliest cause is that evac
itself is cut off, and fencing them all would be the disaster. Automatic failover then
pauses (manual commands still work) until an operator releases the brake.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .journal import BrakeState, Disarmed, Journal


@dataclass
class StormBrake:
    max_hosts: int = 1  # down within the window before the brake engages...
    max_fraction: float = 0.2  # ...or this share of the fleet, whichever is larger
    window: float = 120.0
    downs: list[tuple[float, str]] = field(default_factory=list)
    engaged: bool = False
    reason: str = ""

    def limit(self, fleet_size: int) -> int:
        return max(self.max_hosts, int(fleet_size * self.max_fraction))

    def host_down(self, host: str, now: float, fleet_size: int) -> bool:
        """Record a host going down; True when automatic failover may go ahead for it."""
        self.downs = [(t, h) for t, h in self.downs if now - t <= self.window and h != host]
        self.downs.append((now, host))
        if len(self.downs) > self.limit(fleet_size) and not self.engaged:
            self.engaged = True
            hosts = ", ".join(sorted(h for _, h in self.downs))
            self.reason = (
                f"{len(self.downs)} of {fleet_size} hosts down within {self.window:.0f} s ({hosts}): "
                "evac may be the one cut off; automatic failover paused until `evac brake release`"
            )
        return not self.engaged

    def release(self) -> None:
        self.engaged, self.reason, self.downs = False, "", []


# Between the monitor's last look at the brake and its failover job's creation, and between
# the wall clocks of replicas: a brake engaged this much before a job started still stops it.
BRAKE_GRACE = 1.0


def holds_back(held: BrakeState | Disarmed | None, started: float, grace: float = BRAKE_GRACE) -> bool:
    """Whether an engaged brake stops, before its fence, a failover job created at ``started``
    (wall clock): it does when it engaged after that job began (or ``grace`` before).

    Hosts failing together are seen up to about a second apart, so the first one's failover
    may already be running when the second one engages the brake; the fence, the first
    thing that cannot be undone, must then not follow. A failover started well after the
    brake engaged is an operator's (the monitor starts none while it holds), and goes ahead:
    manual commands still work while automatic failover is paused. HA disarmed after the
    job began holds it back the same way."""
    return held is not None and held.since >= started - grace


def release_held(journal: Journal, actor: str) -> BrakeState | None:
    """Release the brake kept in the journal, audited; what was released, or None.

    A running monitor (``evac serve``, ``evac monitor``) follows within its interval."""
    held = journal.brake()
    if held is None or not journal.release_brake():
        return None
    journal.audit(actor, "brake.release", "fleet", {"reason": held.reason})
    return held

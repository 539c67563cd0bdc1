"""Which of a fenced host's guests are stale once it answers again: those running on
another host that is up. The cleaning itself is specified through the return that
enables such a host (test_returning) and on the lab (test_failover)."""

from __future__ import annotations

from evac.fencedhost import stale
from evac.model import Guest, HostStatus


def guest(name: str, host: str, state: str = "running") -> Guest:
    return Guest(name=name, uuid=name, host=host, state=state, memory_mib=512, vcpus=1, persistent=True)


def status(name: str, *guests: Guest, state: str = "up") -> HostStatus:
    return HostStatus(name, f"qemu+tcp://{name}/system", state, guests=guests)


def test_a_guest_running_on_a_host_that_is_up_is_stale_on_the_fenced_host() -> None:
    own = [guest("web1", "host3", "shutoff"), guest("db1", "host3", "running")]
    fleet = [status("host1", guest("web1", "host1")), status("host2", guest("db1", "host2", "paused"))]
    assert [g.name for g in stale("host3", own, fleet)] == ["web1", "db1"]


def test_a_guest_that_runs_nowhere_else_is_the_fenced_hosts_own() -> None:
    own = [guest("web1", "host3", "shutoff")]
    assert stale("host3", own, [status("host1", guest("web1", "host1", "shutoff"))]) == []
    assert stale("host3", own, [status("host1", guest("web1", "host1"), state="unreachable")]) == []
    assert stale("host3", own, [status("host3", guest("web1", "host3"))]) == []  # its own report of itself

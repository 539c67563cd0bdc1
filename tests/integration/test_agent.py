"""``evac agent`` on every host of the HA lab, feeding the lab's watchdog for its host; host4
has no BMC: its inventory fence chain is only ``watchdog``.

Outcomes are read outside evac: the lab watchdog's own log (when it fired), the process
table (when the restarted guest's QEMU started), libvirt on every host (where guests
run). The timings are the lab's (``evac.lab.agents``): lease 3 s, watchdog 3 s, margin 2 s.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evac.agents import STOPPED, AgentState, state_key
from evac.errors import JournalError
from evac.lab import Lab
from evac.lab.agents import WATCHDOG_TIMEOUT
from evac.lab.guests import qemu_pids
from evac.states import EventKind, HostMode
from tests.conftest import poll_until
from tests.integration.conftest import inventory_copy
from tests.integration.replicas import SETTLE, TOKEN, Replicas

NO_BMC = "host4"


class Fleet(Replicas):
    """The replicas, and an agent on every host."""

    def agents_hold_leases(self) -> bool:
        view = self.app.agents
        assert view is not None
        try:
            view.refresh()
        except JournalError:
            return False  # etcd still electing
        return all(view.holds_lease(h) for h in self.lab.host_names())

    def runs_once_elsewhere(self, name: str, not_on: str) -> str:
        """As the replicas' helper, but a timeout says what evac did meanwhile."""
        try:
            return super().runs_once_elsewhere(name, not_on)
        except AssertionError as exc:
            seen = [
                f"{j.id} {j.runbook} {j.state}: "
                + "; ".join(e.message for _, e in self.journal.events(j.id) if e.message)
                for j in self.journal.jobs(5)
            ]
            hosts = [f"{e.kind} {e.item} {e.message}" for _, e in self.journal.events(0)[-12:]]
            raise AssertionError(f"{exc}; jobs: {seen}; host events: {hosts}") from None

    def fired(self, host: str, since: float) -> list[dict[str, Any]]:
        return [e for e in self.lab.watchdog_log() if e["host"] == host and e["event"] == "fired" and e["ts"] >= since]

    def failover_events(self, host: str, since: float) -> list[tuple[int, Any]]:
        (job,) = self.failovers(host, since)
        return self.journal.events(job)

    def restore(self) -> None:
        for host in self.lab.host_names():
            if self.lab.is_cut(host):
                self.lab.heal(host)
            if self.lab.power_state(host) == "on" and not self.lab.etcd_health().get(host, True):
                self.lab.start_etcd(host)
        for host in self.lab.host_names():
            self.revive(host)
            self.lab.start_agent(host)
        poll_until(self.agents_hold_leases, SETTLE, "every agent holds its lease")


def holds_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    """``check()`` stays true for ``seconds``: an absence is proved over a window, not waited for."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert check(), what
        time.sleep(0.2)


def qemu_started(name: str) -> list[float]:
    """Wall-clock start times of the QEMU processes running this guest, from the process table."""
    ticks = os.sysconf("SC_CLK_TCK")
    boot = next(
        float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
    )
    return [
        boot + int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        for pid in qemu_pids(name)
    ]


@pytest.fixture(scope="module")
def agents(ha_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("agents")
    token_file = tmp / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    ha_lab.agent_section()  # the shared key: every config the lab writes now has agent:
    for host in ha_lab.host_names():
        ha_lab.start_agent(host)
    inventory = inventory_copy(ha_lab, tmp, **{NO_BMC: {"fence": [{"method": "watchdog"}]}})
    fleet = Fleet(ha_lab, token_file, inventory=str(inventory))
    try:
        for host in fleet.hosts:
            fleet.start(host)
        fleet.leader()
        poll_until(fleet.agents_hold_leases, SETTLE, "every agent holds its lease")
        yield fleet
    finally:
        for host in fleet.hosts:
            ha_lab.stop_serve(host, signal.SIGKILL)
        fleet.app.close()
        ha_lab.remove_agents()  # the HA tests cut hosts: without agents, nobody resets them


@pytest.fixture
def fleet(agents: Fleet) -> Iterator[Fleet]:
    yield agents
    agents.restore()
    agents.remove_guests()  # once every host answers again: a reset host still defines its guests
    assert agents.journal.brake() is None, "a storm brake engaged during the test"


def test_a_host_without_a_bmc_cut_off_is_reset_by_its_watchdog_before_its_guests_start_elsewhere(
    fleet: Fleet,
) -> None:
    name = fleet.guest(NO_BMC, "ag-cut")
    cut = time.time()
    fleet.lab.cut(NO_BMC)
    poll_until(lambda: fleet.lab.power_state(NO_BMC) == "off", SETTLE, f"{NO_BMC} reset by its watchdog")
    fleet.runs_once_elsewhere(name, not_on=NO_BMC)
    (fired,) = fleet.fired(NO_BMC, cut)
    (started,) = qemu_started(name)
    assert started > fired["ts"], "the guest started elsewhere before the watchdog reset its host"
    events = [event for _, event in fleet.failover_events(NO_BMC, cut)]
    assert not [e for e in events if e.kind == EventKind.ITEM_RETRY], "a start was refused: the order was wrong"
    assert any(f"{NO_BMC} fenced by watchdog" in e.message for e in events if e.kind == EventKind.PROGRESS)
    assert fleet.journal.host_states()[NO_BMC].reason == "fenced by watchdog"


def test_with_etcd_down_everywhere_no_host_resets_and_nothing_fails_over(fleet: Fleet) -> None:
    stopped = time.time()
    for member in fleet.lab.etcd_member_names():
        fleet.lab.kill_etcd(member)
    leader = fleet.hosts[0]
    poll_until(
        lambda: (fleet.health(leader) or {}).get("cluster", {}).get("etcd") == "unavailable",
        SETTLE,
        "the replicas say etcd is unavailable",
    )
    hosts = fleet.lab.host_names()
    holds_for(lambda: all(fleet.lab.power_state(h) == "on" for h in hosts), 3 * WATCHDOG_TIMEOUT, "a host was reset")
    assert not any(fleet.fired(h, stopped) for h in fleet.lab.host_names())
    for member in fleet.lab.etcd_member_names():
        fleet.lab.start_etcd(member)
    poll_until(fleet.agents_hold_leases, SETTLE, "every agent holds its lease again")
    assert not [j for j in fleet.journal.jobs(50) if j.runbook == "host-failure" and j.created >= stopped]


def test_an_agent_killed_on_a_healthy_host_gets_it_reset_and_its_guests_failed_over(fleet: Fleet) -> None:
    name = fleet.guest(NO_BMC, "ag-kill")
    killed = time.time()
    fleet.lab.stop_agent(NO_BMC, signal.SIGKILL)
    poll_until(lambda: fleet.lab.power_state(NO_BMC) == "off", SETTLE, f"{NO_BMC} reset by its watchdog")
    fleet.runs_once_elsewhere(name, not_on=NO_BMC)
    assert len(fleet.fired(NO_BMC, killed)) == 1
    assert fleet.journal.host_states()[NO_BMC].state == HostMode.FENCED


def test_a_clean_stop_records_stopped_then_disarms_so_it_never_counts_as_a_fence(fleet: Fleet) -> None:
    stopped = time.time()
    fleet.lab.stop_agent(NO_BMC, signal.SIGTERM)
    log = [e for e in fleet.lab.watchdog_log() if e["host"] == NO_BMC and e["ts"] >= stopped]
    assert [e["event"] for e in log] == ["disarmed"]
    kv = fleet.app._etcd[0].get(state_key(fleet.app.settings.cluster.etcd.prefix, NO_BMC))  # type: ignore[union-attr]
    assert kv is not None
    state = AgentState.parse(NO_BMC, kv.value)
    assert state is not None and state.state == STOPPED and state.at >= stopped - 1
    assert json.loads(kv.value)["reason"] == "agent stopped cleanly"
    holds_for(lambda: fleet.lab.power_state(NO_BMC) == "on", 2 * WATCHDOG_TIMEOUT, "the disarmed watchdog fired")
    assert not fleet.fired(NO_BMC, stopped)


def test_a_guest_whose_qemu_is_killed_is_restarted_in_place_by_its_agents_report_then_relocated(
    fleet: Fleet,
) -> None:
    name = fleet.guest(NO_BMC, "ag-qemu")
    (first,) = qemu_pids(name)
    os.kill(first, signal.SIGKILL)
    poll_until(lambda: qemu_pids(name) not in ([], [first]) and fleet.running(name), SETTLE, f"{name} runs again")
    assert fleet.running(name) == [NO_BMC], "max_restart 1: the first death is restarted in place"
    (second,) = qemu_pids(name)
    os.kill(second, signal.SIGKILL)
    poll_until(lambda: fleet.running(name) not in ([], [NO_BMC]), SETTLE, f"{name} relocated")
    assert len(fleet.running(name)) == 1 and len(qemu_pids(name)) == 1
    jobs = [j for j in fleet.journal.jobs(50) if j.runbook == "guest-failure" and j.target == name]
    assert sorted(j.params["action"] for j in jobs) == ["relocate", "restart"]

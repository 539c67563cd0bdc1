"""HA disarmed across the cluster (``evac ha disarm``): kept in the journal and audited;
no automatic failover and no guest restart meanwhile, each an alert instead; arming fails
over the hosts down then; agents feed whatever happens while disarmed, and a watchdog of
an agent that last saw HA disarmed never counts as a fence.

The front door on the fake fleet of ``evac.testing``; the monitor's threads over a fake
fleet; the agents and the leader's count on a real etcd (tests.etcdserver).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evac import hookimpl
from evac.agent import Agent, acknowledged, acknowledgments, disarmed_key
from evac.agents import RUNNING, STOPPED, UNARMED, AgentState, AgentView, GuestDown, live_key, state_key
from evac.app import App
from evac.cli import main
from evac.config import AgentSettings, load_config
from evac.errors import ConfigError, FencingError, HaDisarmed, JournalError
from evac.etcdclient import Cluster, EtcdSettings
from evac.etcdjournal import EtcdJournal
from evac.etcdsession import Session
from evac.events import Event
from evac.evidence import MonitorSettings
from evac.hypervisor import Hypervisor
from evac.inventory import HostSpec, Inventory, load_inventory
from evac.jobs import Actor, Channel
from evac.monitor import Monitor
from evac.plugins import plugin_manager
from evac.selffence import Acknowledged, HaMode, feeds, mode_while_acknowledging, watchdog_counts
from evac.service import Service
from evac.sqlitejournal import SqliteJournal
from evac.states import EventKind, HostMode
from evac.stormbrake import StormBrake
from evac.testing import EvacKit, FakeFleet, make_plugin_manager
from evac_plugins import basics, failover, guestha
from evac_plugins.fence_watchdog import WatchdogFence
from tests.conftest import poll_until
from tests.unit.fakefleet import HOSTS, Fleet
from tests.unit.test_agent import TIMINGS, RecordingWatchdog, free_port, no_libvirt
from tests.unit.test_webhooks import AM, BEARER, alert, batch, client, make_served

OPS = Actor(Channel.CLI, "ops")
SLACK = Actor(Channel.SLACK, "U123")
TIMEOUT = 10.0


class Watch:
    """Every event, in order, for the specs to look at or wait on."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cond = threading.Condition()

    @hookimpl
    def evac_event(self, event: Event) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def kinds(self) -> list[str]:
        with self.cond:
            return [e.kind for e in self.events]

    def wait_for(self, kind: str, item: str = "", timeout: float = TIMEOUT) -> Event:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = next((e for e in self.events if e.kind == kind and (not item or e.item == item)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                assert left > 0, f"no {kind} {item}; saw {[(e.kind, e.item) for e in self.events][-10:]}"
                self.cond.wait(left)


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> FakeFleet:
    """Three hosts; web1's QEMU died on host1 (libvirt reads it ``crashed``)."""
    fleet = FakeFleet()
    monkeypatch.setattr(Hypervisor, "connect", staticmethod(fleet.connect))
    for name in ("host1", "host2", "host3"):
        fleet.add_host(name)
    fleet.add_guest("host1", "web1", state="crashed")
    return fleet


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
def app(fleet: FakeFleet, watch: Watch, tmp_path: Path) -> Iterator[App]:
    journal = SqliteJournal(tmp_path / "journal.db")
    pm = make_plugin_manager(watch)
    for plugin in (basics, failover, guestha):
        if not pm.is_registered(plugin):  # $EVAC_PLUGINS may name it
            pm.register(plugin)
    made = EvacKit(pm, journal, fleet, tmp_path).app
    made.config = replace(made.settings, monitor=replace(made.settings.monitor, require_doctor=False))
    yield made
    journal.close()


def audits(app: App, prefix: str = "") -> list[tuple[str, str, str]]:
    return [(a.actor, a.action, a.target) for a in reversed(app.journal.audit_log()) if a.action.startswith(prefix)]


# ---------------------------------------------------------------- the front door


def test_disarming_is_kept_in_the_journal_audited_and_announced_as_an_alert(app: App, watch: Watch) -> None:
    assert app.jobs.disarm(OPS, "  core switch swap, CHG-4711 ") is True
    held = app.journal.disarmed()
    assert held is not None and (held.reason, held.actor) == ("core switch swap, CHG-4711", "cli:ops")
    assert audits(app, "ha.") == [("cli:ops", "ha.disarm", "fleet")]
    event = watch.wait_for(EventKind.HA_DISARMED)
    assert event.item == "cli:ops"
    assert (event.data["actor"], event.data["reason"], event.data["level"]) == (
        "cli:ops",
        "core switch swap, CHG-4711",
        "alert",
    )
    assert "never fenced or failed over" in event.message
    assert [e.kind for _, e in app.journal.events(0)] == [EventKind.HA_DISARMED]


def test_disarming_twice_keeps_the_first_reason_and_changes_nothing(app: App) -> None:
    assert app.jobs.disarm(OPS, "first")
    assert app.jobs.disarm(SLACK, "second") is False
    held = app.journal.disarmed()
    assert held is not None and (held.reason, held.actor) == ("first", "cli:ops")
    assert audits(app, "ha.") == [("cli:ops", "ha.disarm", "fleet")]


def test_arming_returns_what_was_disarmed_audits_and_announces_it(app: App, watch: Watch) -> None:
    app.jobs.disarm(OPS, "upgrade")
    held = app.jobs.arm(SLACK)
    assert held is not None and (held.reason, held.actor) == ("upgrade", "cli:ops")
    assert app.journal.disarmed() is None
    assert audits(app, "ha.") == [("cli:ops", "ha.disarm", "fleet"), ("slack:U123", "ha.arm", "fleet")]
    armed = watch.wait_for(EventKind.HA_ARMED)
    assert (armed.item, armed.data["actor"], armed.data["was"]) == ("slack:U123", "slack:U123", "upgrade")
    assert "by cli:ops since " in armed.message and armed.message.count(": upgrade)") == 1


def test_arming_what_is_armed_returns_none_and_audits_nothing(app: App, watch: Watch) -> None:
    assert app.jobs.arm(OPS) is None
    assert audits(app, "ha.") == [] and EventKind.HA_ARMED not in watch.kinds()


@pytest.mark.parametrize(
    ("reason", "said"),
    [("line one\nline two", "one line expected"), ("x" * 301, "301 characters, at most 300 expected")],
)
def test_a_reason_that_is_not_one_short_line_is_refused_naming_the_field_and_nothing_is_disarmed(
    app: App, reason: str, said: str
) -> None:
    with pytest.raises(ConfigError, match=f"^ha disarm: reason: {said}") as refused:
        app.jobs.disarm(OPS, reason)
    assert "\n" not in str(refused.value)
    assert app.journal.disarmed() is None
    assert audits(app, "ha.") == [("cli:ops", "ha.disarm.refused", "fleet")]


def test_a_disarm_holds_across_a_restart_of_evac(app: App, tmp_path: Path) -> None:
    app.jobs.disarm(OPS, "upgrade")
    reopened = SqliteJournal(tmp_path / "journal.db")  # the next process on the same journal
    try:
        held = reopened.disarmed()
        assert held is not None and held.reason == "upgrade"
    finally:
        reopened.close()


@pytest.mark.parametrize("channel", [Channel.MONITOR, Channel.ALERTMANAGER])
def test_an_automatic_failover_is_refused_while_disarmed_and_the_refusal_audited(app: App, channel: Channel) -> None:
    app.jobs.disarm(OPS, "upgrade")
    with pytest.raises(
        HaDisarmed, match="host2: not failed over: HA is disarmed \\(by cli:ops since [-0-9 :]+: upgrade\\)"
    ):
        app.jobs.fail_over("host2", Actor(channel), "down")
    assert app.journal.jobs() == []
    assert audits(app, "failover")[-1][1:] == ("failover.refused", "host2")


def test_an_operators_failover_still_runs_while_disarmed(app: App) -> None:
    app.jobs.disarm(OPS, "upgrade")
    started = app.jobs.fail_over("host2", SLACK, "fenced by hand")
    assert (started.runbook.name, started.target) == ("host-failure", "host2")


def test_a_host_the_monitor_reports_down_while_disarmed_starts_nothing_and_is_an_alert(app: App, watch: Watch) -> None:
    app.jobs.disarm(OPS, "upgrade")
    app.jobs.host_down("host2", "libvirt connection lost")
    held = watch.wait_for(EventKind.HA_HELD, "host2")
    assert held.data["level"] == "alert" and "not failed over" in held.message
    assert app.journal.jobs() == [] and EventKind.HOST_FAILOVER_NOT_STARTED not in watch.kinds()


def test_once_armed_the_monitors_failover_starts_again(app: App) -> None:
    app.jobs.disarm(OPS, "upgrade")
    app.jobs.arm(OPS)
    started = app.jobs.fail_over("host2", Actor(Channel.MONITOR), "down", checks=1)
    assert started.target == "host2"


def test_a_guest_whose_qemu_died_while_disarmed_is_an_alert_and_is_not_restarted(app: App, watch: Watch) -> None:
    app.jobs.disarm(OPS, "upgrade")
    assert app.jobs.guest_failed("host1", "web1", "crashed") is None
    held = watch.wait_for(EventKind.HA_HELD, "web1")
    assert held.data == {"host": "host1", "guest": "web1", "level": "alert"}
    assert "web1 died on host1 (crashed) and is not restarted" in held.message
    assert app.journal.jobs() == []
    assert audits(app, "guest.")[-1][1:] == ("guest.recover.refused", "web1")


def test_a_guest_that_died_while_disarmed_is_restarted_once_armed(app: App) -> None:
    app.jobs.disarm(OPS, "upgrade")
    app.jobs.guest_failed("host1", "web1", "crashed")
    app.jobs.arm(OPS)
    started = app.jobs.guest_failed("host1", "web1", "crashed")
    assert started is not None and started.params["action"] == "restart"


def test_an_alert_while_disarmed_is_refused_and_its_repeat_after_arming_starts_the_failover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = make_served(tmp_path, monkeypatch)
    served.app.jobs.disarm(OPS, "upgrade")
    http = client(served)
    (refused,) = http.post(AM, json=batch(alert("198.18.0.3:9100")), headers=BEARER).json()["results"]
    assert refused["result"] == "refused" and "HA is disarmed" in refused["why"]
    assert served.spawned == []
    served.app.jobs.arm(OPS)
    (accepted,) = http.post(AM, json=batch(alert("198.18.0.3:9100")), headers=BEARER).json()["results"]
    assert accepted["result"] == "accepted" and [s.job for s in served.spawned] == [accepted["job"]]


# ---------------------------------------------------------------- the service


@dataclass
class Reports:
    """Agents' reports of guests whose QEMU died, as ``AgentView.guests_down`` gives them;
    its ``cluster`` deletes them as etcd does."""

    downs: list[Any] = field(default_factory=list)

    @property
    def cluster(self) -> Reports:
        return self

    def guests_down(self) -> list[Any]:
        return list(self.downs)

    def txn(self, compare: list[Any], success: list[Any]) -> None:
        self.downs = []


@pytest.fixture
def service(fleet: FakeFleet, watch: Watch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    (tmp_path / "hosts.yaml").write_text(
        "hosts:\n" + "".join(f"  - {{name: {h}, uri: 'qemu:///system?fake={h}'}}\n" for h in fleet.hosts)
    )
    (tmp_path / "evac.yaml").write_text(
        f"inventory: hosts.yaml\njournal: {tmp_path}/j.db\nmonitor: {{enabled: false}}\nlisten: {{port: 0}}\n"
    )
    pm = plugin_manager()
    pm.register(watch)
    made = Service(App.from_config(load_config(tmp_path / "evac.yaml", pm), pm))
    monkeypatch.setattr(made.app.jobs, "spawn", lambda started: None)
    yield made
    made.http.stop()


def test_healthz_says_whether_ha_is_armed_and_who_disarmed_it_when_and_why(service: Service) -> None:
    assert service.health()["ha"] == {"armed": True, "reason": None, "by": None, "since": None}
    service.app.jobs.disarm(OPS, "upgrade")
    ha = service.health()["ha"]
    assert (ha["armed"], ha["reason"], ha["by"]) == (False, "upgrade", "cli:ops")
    assert abs(ha["since"] - time.time()) < 60


def test_the_ha_armed_gauge_follows_the_journal_whoever_changed_it(service: Service) -> None:
    def gauge() -> float | None:
        return service.metrics.registry.get_sample_value("evac_ha_armed")

    assert gauge() == 1.0
    service.app.journal.disarm("from another process", "cli:ops")
    assert gauge() == 0.0
    service.app.journal.arm()
    assert gauge() == 1.0


def test_a_guest_reported_dead_while_disarmed_is_alerted_once_kept_and_restarted_once_armed(
    service: Service, watch: Watch
) -> None:
    reports = Reports([GuestDown("host1", "web1", "crashed", time.time(), "/evac/agents/guestdown/host1/web1", 7)])
    agents = cast(AgentView, reports)
    service.app.jobs.disarm(OPS, "upgrade")
    service.restart_guests(agents)
    service.restart_guests(agents)
    assert [e.item for e in watch.events if e.kind == EventKind.HA_HELD] == ["web1"]
    assert reports.downs and service.app.journal.jobs() == []
    service.app.jobs.arm(OPS)
    service.restart_guests(agents)
    (job,) = service.app.journal.jobs()
    assert (job.runbook, job.target) == ("guest-failure", "web1") and reports.downs == []


# ---------------------------------------------------------------- the monitor


class Failovers:
    def __init__(self) -> None:
        self.hosts: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def __call__(self, host: str, reason: str) -> None:
        with self.cond:
            self.hosts.append((host, reason))
            self.cond.notify_all()

    def wait_for(self, host: str) -> str:
        with self.cond:
            assert self.cond.wait_for(lambda: any(h == host for h, _ in self.hosts), TIMEOUT), self.hosts
            return next(r for h, r in self.hosts if h == host)


@dataclass
class Watched:
    app: App
    fleet: Fleet
    failovers: Failovers
    monitor: Monitor


@pytest.fixture
def watched(watch: Watch, tmp_path: Path) -> Iterator[Callable[..., Watched]]:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        "hosts:\n" + "".join(f"  - {{name: {h}, uri: 'qemu+tcp://192.0.2.{i}/system'}}\n" for i, h in enumerate(HOSTS))
    )
    app = App(inventory_path=inventory, journal_path=tmp_path / "j.db", pm=plugin_manager(load_entrypoints=False))
    app.pm.register(watch)
    fleet, failovers = Fleet(), Failovers()
    settings = MonitorSettings(interval=0.01, suspect_interval=0.01, power_every=0, brake_every=0.05)
    monitors: list[Monitor] = []

    def start(brake: StormBrake | None = None) -> Watched:
        """A monitor; its storm brake holds back a second host down (the default)."""
        monitor = Monitor(app, failovers, settings, brake, probe=fleet.probe, connect=fleet.connect)
        monitors.append(monitor)
        monitor.start()
        assert monitor.started.wait(TIMEOUT)
        return Watched(app, fleet, failovers, monitor)

    yield start
    for monitor in monitors:
        monitor.stop()


def test_a_host_that_goes_down_while_disarmed_is_reported_and_not_failed_over(
    watched: Callable[..., Watched], watch: Watch
) -> None:
    w = watched()
    w.app.jobs.disarm(OPS, "upgrade")
    w.fleet.kill("host1")
    watch.wait_for(EventKind.HOST_DOWN, "host1")
    held = watch.wait_for(EventKind.HA_HELD, "host1")
    assert held.message.startswith("HA disarmed: host1 not failed over (by cli:ops since ")
    assert w.failovers.hosts == []


def test_arming_in_the_same_process_fails_over_the_hosts_down_at_once(
    watched: Callable[..., Watched], watch: Watch
) -> None:
    w = watched()
    w.app.jobs.disarm(SLACK, "upgrade")
    w.fleet.kill("host1")
    watch.wait_for(EventKind.HA_HELD, "host1")
    w.app.jobs.arm(SLACK)
    assert w.failovers.wait_for("host1").endswith("(after HA was armed)")
    assert w.failovers.hosts == [w.failovers.hosts[0]]


def test_arming_from_another_process_is_heard_here_and_fails_the_hosts_down_over(
    watched: Callable[..., Watched], watch: Watch
) -> None:
    w = watched()
    w.app.journal.disarm("upgrade", "cli:ops")  # as `evac ha disarm` does from another process
    watch.wait_for(EventKind.HA_DISARMED)
    w.fleet.kill("host2")
    watch.wait_for(EventKind.HA_HELD, "host2")
    w.app.journal.arm()
    watch.wait_for(EventKind.HA_ARMED)
    assert w.failovers.wait_for("host2").endswith("(after HA was armed)")


def test_a_monitor_started_while_disarmed_says_so_and_holds_its_failovers(
    watched: Callable[..., Watched], watch: Watch, tmp_path: Path
) -> None:
    w = watched()
    w.monitor.stop()
    w.app.journal.disarm("upgrade", "cli:ops")
    w = watched()
    still = [e for e in watch.events if e.kind == EventKind.HA_DISARMED]
    assert still and still[-1].message.startswith("HA still disarmed: by cli:ops")
    w.fleet.kill("host3")
    watch.wait_for(EventKind.HA_HELD, "host3")
    assert w.failovers.hosts == []


def test_hosts_down_when_ha_is_armed_are_counted_together_by_the_storm_brake(
    watched: Callable[..., Watched], watch: Watch
) -> None:
    w = watched()
    w.app.jobs.disarm(OPS, "switch swap")
    w.fleet.kill("host1", "host2")
    watch.wait_for(EventKind.HA_HELD, "host1")
    watch.wait_for(EventKind.HA_HELD, "host2")
    assert w.app.journal.brake() is None  # not counted while disarmed: they were expected down
    w.app.jobs.arm(OPS)
    watch.wait_for(EventKind.MONITOR_STORM_BRAKE, "host1")
    watch.wait_for(EventKind.MONITOR_STORM_BRAKE, "host2")
    held = w.app.journal.brake()
    assert held is not None and "2 of 3 hosts down" in held.reason
    assert w.failovers.hosts == []


def test_arming_leaves_a_host_put_in_maintenance_meanwhile_alone(watched: Callable[..., Watched], watch: Watch) -> None:
    w = watched(StormBrake(max_hosts=3))
    w.app.jobs.disarm(OPS, "upgrade")
    w.fleet.kill("host1", "host2")
    watch.wait_for(EventKind.HA_HELD, "host1")
    watch.wait_for(EventKind.HA_HELD, "host2")
    w.app.journal.set_host_state("host2", HostMode.MAINTENANCE, "repair", "cli:ops")
    w.app.jobs.arm(OPS)
    w.failovers.wait_for("host1")
    assert [h for h, _ in w.failovers.hosts] == ["host1"]


# ---------------------------------------------------------------- the agent's rule (pure)


def test_a_disarmed_agent_feeds_whatever_happens_even_cut_off_from_etcd_and_its_peers() -> None:
    assert feeds(HaMode.DISARMED, False, {}, peers=2) == (True, "HA disarmed: fed whatever happens")


def test_an_armed_agent_cut_off_from_etcd_and_its_peers_stops_feeding() -> None:
    assert feeds(HaMode.ARMED, False, {}, peers=2)[0] is False


@pytest.mark.parametrize(
    ("current", "seen", "meanwhile"),
    [
        (HaMode.ARMED, HaMode.DISARMED, HaMode.ARMED),  # disarmed only once recorded
        (HaMode.DISARMED, HaMode.ARMED, HaMode.ARMED),  # armed at once, before it is recorded
        (HaMode.ARMED, HaMode.ARMED, HaMode.ARMED),
        (HaMode.DISARMED, HaMode.DISARMED, HaMode.DISARMED),
    ],
)
def test_while_an_agent_records_what_it_saw_it_self_fences_if_either_says_armed(
    current: HaMode, seen: HaMode, meanwhile: HaMode
) -> None:
    assert mode_while_acknowledging(current, seen) is meanwhile


def test_an_agent_record_says_what_it_acknowledges_and_nothing_for_an_older_agent() -> None:
    assert Acknowledged.parse('{"state": "running", "ha": "disarmed"}', 5) == Acknowledged(HaMode.DISARMED, 5)
    assert Acknowledged.parse('{"state": "running"}', 6) == Acknowledged(None, 6)
    assert Acknowledged.parse(None) == Acknowledged(None, 0)


def test_the_leader_counts_a_watchdog_only_under_an_unchanged_record_acknowledging_ha_armed() -> None:
    armed, disarmed, older = Acknowledged(HaMode.ARMED, 7), Acknowledged(HaMode.DISARMED, 7), Acknowledged(None, 7)
    assert watchdog_counts("host1", armed, armed) == (True, "its agent acknowledged HA armed")
    assert watchdog_counts("host1", armed, Acknowledged(HaMode.ARMED, 8))[0] is None  # rewritten: judged again
    assert watchdog_counts("host1", None, armed)[0] is None  # etcd did not answer
    counts, why = watchdog_counts("host1", disarmed, disarmed)
    assert counts is False and "last acknowledged HA disarmed" in why and "--confirm-manually" in why
    counts, why = watchdog_counts("host1", older, older)
    assert counts is False and "never acknowledged HA armed" in why


# ---------------------------------------------------------------- the agent on etcd


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    hosts = "".join(
        f"  - {{name: host{i}, uri: 'qemu+tcp://127.0.0.{i + 1}/system', address: 127.0.0.{i + 1}}}\n"
        for i in (1, 2, 3)
    )
    (tmp_path / "agents.yaml").write_text("hosts:\n" + hosts)
    return load_inventory(tmp_path / "agents.yaml")


@pytest.fixture
def journal(etcd_settings: EtcdSettings) -> Iterator[EtcdJournal]:
    """The controllers' journal on etcd, under the agents' prefix."""
    cluster = Cluster(etcd_settings)
    session = Session(cluster, 5)
    session.start()
    yield EtcdJournal(cluster, session)
    session.stop(revoke=True)
    cluster.close()


@pytest.fixture
def agent(inventory: Inventory, etcd_settings: EtcdSettings) -> Iterator[Agent]:
    """host1's agent, running; its peers run no agent, so cut off it has no one to vouch."""
    settings = AgentSettings(TIMINGS, {"method": "recording"}, free_port(), "unit-secret")
    made = Agent(inventory.host("host1"), inventory, settings, etcd_settings, RecordingWatchdog(), no_libvirt)
    made.start()
    yield made
    made.stop()


def said(agent: Agent) -> HaMode | None:
    return acknowledged(agent.cluster, agent.prefix, agent.host.name).mode


def test_an_agent_starts_armed_and_says_so_in_its_record(agent: Agent) -> None:
    assert agent.ha is HaMode.ARMED and said(agent) is HaMode.ARMED


def test_an_agent_that_sees_ha_disarmed_records_it_then_feeds_even_cut_off(agent: Agent, journal: EtcdJournal) -> None:
    assert journal.disarm("upgrade", "cli:ops")
    agent.follow_ha()
    assert said(agent) is HaMode.DISARMED and agent.ha is HaMode.DISARMED
    agent.reaches_etcd = lambda: False  # type: ignore[method-assign]
    assert agent.decide() == (True, "HA disarmed: fed whatever happens")


def test_an_agent_that_sees_ha_armed_again_self_fences_and_records_it(agent: Agent, journal: EtcdJournal) -> None:
    journal.disarm("upgrade", "cli:ops")
    agent.follow_ha()
    journal.arm()
    agent.follow_ha()
    assert said(agent) is HaMode.ARMED and agent.ha is HaMode.ARMED
    agent.reaches_etcd = lambda: False  # type: ignore[method-assign]
    feed, why = agent.decide()
    assert not feed and "no answer from host2, host3" in why


def test_an_agent_whose_acknowledgment_of_a_disarm_fails_keeps_self_fencing(
    agent: Agent, journal: EtcdJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(record: str) -> None:
        raise JournalError("etcd: timed out")

    monkeypatch.setattr(agent, "_swap", refused)
    journal.disarm("upgrade", "cli:ops")
    agent.follow_ha()
    assert agent.ha is HaMode.ARMED and said(agent) is HaMode.ARMED


def test_an_agent_that_does_not_hold_its_lease_does_not_look_and_keeps_its_mode(
    agent: Agent, journal: EtcdJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent.session, "valid", lambda margin=0.0: False)
    journal.disarm("upgrade", "cli:ops")
    agent.follow_ha()
    assert agent.ha is HaMode.ARMED and said(agent) is HaMode.ARMED


def test_the_agent_loop_follows_the_journal_by_itself(agent: Agent, journal: EtcdJournal) -> None:
    journal.disarm("upgrade", "cli:ops")
    poll_until(lambda: said(agent) is HaMode.DISARMED and agent.ha is HaMode.DISARMED, TIMEOUT, "the disarm seen")
    journal.arm()
    poll_until(lambda: said(agent) is HaMode.ARMED and agent.ha is HaMode.ARMED, TIMEOUT, "the arm seen")


def test_the_journal_and_the_agents_name_the_same_disarmed_key(journal: EtcdJournal) -> None:
    journal.disarm("upgrade", "cli:ops")
    kv = journal.cluster.get(disarmed_key(journal.cluster.settings.prefix))
    assert kv is not None and json.loads(kv.value)["reason"] == "upgrade"


def test_a_record_rewritten_by_someone_else_is_read_again_before_the_agent_writes_its_own(agent: Agent) -> None:
    key = state_key(agent.prefix, agent.host.name)
    agent.cluster.put(key, AgentState("host1", "unarmed", 3.0, reason="marked by a controller").record())
    assert agent._record(RUNNING, "again", 3.0, tries=1) is False  # its compare-and-swap saw the rewrite
    kv = agent.cluster.get(key)
    assert kv is not None and json.loads(kv.value)["reason"] == "marked by a controller"
    assert agent._record(RUNNING, "again", 3.0, tries=1) is True
    assert said(agent) is HaMode.ARMED


def test_every_agents_acknowledgment_is_read_in_one_go_for_evac_ha_status(agent: Agent, journal: EtcdJournal) -> None:
    journal.disarm("upgrade", "cli:ops")
    agent.follow_ha()
    found = acknowledgments(agent.cluster, agent.prefix)
    assert {h: (s, a.mode) for h, (s, a) in found.items()} == {"host1": (RUNNING, HaMode.DISARMED)}


Step = tuple[HaMode, bool]  # what the agent sees in etcd, whether its write of the record works


@given(st.lists(st.tuples(st.sampled_from(list(HaMode)), st.booleans()), max_size=12))
def test_no_agent_ever_feeds_whatever_happens_under_a_record_that_says_armed(steps: list[Step]) -> None:
    """Any order of disarms, arms and failed writes: at every moment, the agent's mode is
    ``disarmed`` only if etcd's record says so (what the leader's count relies on)."""
    agent = Agent.__new__(Agent)  # its HA half alone: no lease, no watchdog, no server
    agent.ha = agent.acknowledged = HaMode.ARMED
    agent.running = True
    agent._last = (RUNNING, "", 3.0)
    record = [HaMode.ARMED]
    looking: list[HaMode] = []

    class Session:
        def valid(self, margin: float = 0.0) -> bool:
            return True

    class Store:
        def get(self, key: str) -> object | None:
            return object() if looking[-1] is HaMode.DISARMED else None

    def write(state: str | None, reason: str, timeout: float, tries: int | None, ha: HaMode | None = None) -> bool:
        assert agent.ha is HaMode.ARMED or record[-1] is HaMode.DISARMED  # the moment before the write
        if not ok:
            return False
        record.append(ha or agent.acknowledged)
        agent.acknowledged = record[-1]
        return True

    agent.session, agent.cluster, agent.prefix, agent.timings = Session(), Store(), "/p/", TIMINGS  # type: ignore[assignment]
    agent._record = write  # type: ignore[method-assign]
    agent.host = HostSpec(name="host1", uri="qemu:///system")
    for seen, ok in steps:
        looking.append(seen)
        agent.follow_ha()
        assert agent.ha is HaMode.ARMED or record[-1] is HaMode.DISARMED
        if ok:
            assert agent.ha is seen and record[-1] is seen


# ---------------------------------------------------------------- the leader's count on etcd


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cluster(etcd_settings: EtcdSettings) -> Iterator[Cluster]:
    made = Cluster(etcd_settings)
    yield made
    made.close()


def agents_ran(cluster: Cluster, ha: dict[str, str | None]) -> dict[str, int]:
    """Agents as etcd shows them: each a state record acknowledging ``ha[host]`` and a leased live key."""
    prefix, leases = cluster.settings.prefix, {}
    for host, mode in ha.items():
        leases[host] = cluster.grant(60)
        record = json.loads(AgentState(host, RUNNING, 3.0).record())
        cluster.put(state_key(prefix, host), json.dumps({**record, **({"ha": mode} if mode else {})}))
        cluster.put(live_key(prefix, host), "{}", leases[host])
    return leases


def fence_long_after(cluster: Cluster, ha: str | None) -> WatchdogFence:
    """host1's watchdog fence, its lease seen gone a minute ago and the host silent; its
    agent's record acknowledges ``ha``, the other three agents' HA armed."""
    leases = agents_ran(cluster, {"host1": ha, "host2": "armed", "host3": "armed", "host4": "armed"})
    clock = Clock()
    view = AgentView(cluster, clock)
    cluster.revoke(leases["host1"])
    view.refresh()
    clock.now += 60
    spec = HostSpec(name="host1", uri="qemu+tcp://192.0.2.1/system")
    fence = WatchdogFence(spec, view, TIMINGS, free_port(), ("host2", "host3", "host4"))
    fence.answers = lambda: False
    return fence


def test_a_host_whose_agent_acknowledged_ha_armed_is_counted_fenced_by_its_watchdog(cluster: Cluster) -> None:
    fence = fence_long_after(cluster, "armed")
    fence.power_off()
    assert fence.confirmed.endswith("its agent acknowledged HA armed")


def test_a_host_whose_agent_last_saw_ha_disarmed_is_never_counted_fenced_after_ha_is_armed_again(
    cluster: Cluster,
) -> None:
    fence = fence_long_after(cluster, "disarmed")  # it was cut off while disarmed; the journal is armed now
    with pytest.raises(FencingError, match="last acknowledged HA disarmed.*--confirm-manually"):
        fence.power_off()
    assert fence.confirmed == ""


def test_a_host_whose_agent_acknowledges_nothing_is_never_counted_fenced(cluster: Cluster) -> None:
    with pytest.raises(FencingError, match="never acknowledged HA armed"):
        fence_long_after(cluster, None).power_off()


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., int]:
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")

    def run(*argv: str) -> int:
        return main(["--inventory", str(tmp_path / "hosts.yaml"), "--journal", str(tmp_path / "j.db"), *argv])

    return run


def test_ha_status_exits_1_while_disarmed_and_says_by_whom_and_why(
    cli: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("ha", "status") == 0
    assert cli("ha", "disarm", "--reason", "upgrade") == 0
    capsys.readouterr()
    assert cli("ha", "status", "--json") == 1
    shown = json.loads(capsys.readouterr().out)
    assert (shown["armed"], shown["reason"], shown["agents"]) == (False, "upgrade", {})
    assert cli("ha", "arm") == 0
    assert "HA armed (disarmed by cli:" in capsys.readouterr().out
    assert cli("ha", "status") == 0


def test_a_bad_reason_is_one_line_on_stderr_with_exit_code_2(
    cli: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("ha", "disarm", "--reason", "one\ntwo") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("evac: error: ha disarm: reason: one line expected")


def test_ha_without_a_verb_is_a_usage_error(cli: Callable[..., int], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli("ha")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err == "evac ha: error: the following arguments are required: verb\n"


def recorded_state(agent: Agent) -> str:
    kv = agent.cluster.get(state_key(agent.prefix, agent.host.name))
    assert kv is not None
    return str(json.loads(kv.value)["state"])


def test_acknowledging_a_disarm_keeps_the_unarmed_a_failed_feed_recorded(agent: Agent, journal: EtcdJournal) -> None:
    assert agent._record(UNARMED, "feeding failed: device gone", 3.0, tries=1)
    journal.disarm("upgrade", "cli:ops")
    agent.follow_ha()
    assert said(agent) is HaMode.DISARMED and recorded_state(agent) == UNARMED


def test_an_acknowledgement_in_flight_while_the_agent_stops_never_records_it_running_again(
    agent: Agent, journal: EtcdJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stop()`` records ``stopped`` between the acknowledgement's look at the journal and
    its write: the write must keep ``stopped``, or the leader would count the watchdog of a
    host whose agent disarmed it."""
    journal.disarm("upgrade", "cli:ops")
    look = agent.cluster.get

    def stopping_meanwhile(key: str) -> Any:
        found = look(key)
        assert agent._record(STOPPED, "agent stopped cleanly", 0.0, tries=1)
        return found

    monkeypatch.setattr(agent.cluster, "get", stopping_meanwhile)
    agent.follow_ha()
    monkeypatch.undo()
    assert recorded_state(agent) == STOPPED


def test_a_stopping_agent_acknowledges_nothing(agent: Agent, journal: EtcdJournal) -> None:
    agent.running = False
    journal.disarm("upgrade", "cli:ops")
    agent.follow_ha()
    assert said(agent) is HaMode.ARMED

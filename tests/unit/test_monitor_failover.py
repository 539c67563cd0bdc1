"""When the monitor fails a down host over: at once when it failed alone, after the other
hosts in doubt are decided when it did not, not past the storm brake, and for the hosts
the brake held back once an operator releases it.

The monitor runs for real here (its threads, a real journal) over a fake fleet: the test
decides which hosts answer libvirt and the probe, and fires libvirt's close callback.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from evac import hookimpl
from evac.app import App
from evac.coordination import Agreement, Coordination
from evac.errors import ConfigError
from evac.events import Event
from evac.evidence import Evidence, MonitorSettings, PolledWatch, ProbeSource, Report, Rule, Verdict
from evac.inventory import HostSpec
from evac.journal import JobRecord
from evac.monitor import Monitor, undecided
from evac.plugins import plugin_manager
from evac.states import EventKind, Health, HostMode, JobState
from evac.stormbrake import StormBrake
from tests.conftest import poll_until
from tests.unit.fakefleet import HOSTS, Fleet

FAST = MonitorSettings(interval=0.01, suspect_interval=0.01, power_every=0, settle_max=5.0)
TIMEOUT = 10.0


# ---------------------------------------------------------------- what the tests watch


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() when it happened
    host: str
    what: str  # the event's kind, or the failover's reason


class Record:
    """Things seen in order, each with its time; tests wait on them with a deadline."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.cond = threading.Condition()

    def add(self, host: str, what: str) -> None:
        with self.cond:
            self.seen.append(Seen(time.monotonic(), host, what))
            self.cond.notify_all()

    def wait_for(self, host: str, what: str = "", timeout: float = TIMEOUT) -> Seen:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = next((s for s in self.seen if s.host == host and what in s.what), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                assert left > 0, f"{host} {what!r} never came; saw {self.seen[-10:]}"
                self.cond.wait(left)

    def hosts(self) -> list[str]:
        with self.cond:
            return [s.host for s in self.seen]


class Events(Record):
    @hookimpl
    def evac_event(self, event: Event) -> None:
        self.add(event.item, f"{event.kind}: {event.message}")


class Failovers(Record):
    """Each failover asked for; while ``locked`` is above zero, one more is answered with
    job ``holder``, which holds the host's lock (ask again once it ends)."""

    locked = 0
    holder = 7  # no such job in the journal: ended already

    def __call__(self, host: str, reason: str) -> int | None:
        self.add(host, reason)
        with self.cond:
            self.locked -= 1
            return self.holder if self.locked >= 0 else None


@dataclass
class Watched:
    app: App
    fleet: Fleet
    events: Events
    failovers: Failovers
    start: Callable[..., Monitor]


@pytest.fixture
def app(tmp_path: Path) -> App:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        "hosts:\n" + "".join(f"  - {{name: {h}, uri: 'qemu+tcp://192.0.2.{i}/system'}}\n" for i, h in enumerate(HOSTS))
    )
    return App(inventory_path=inventory, journal_path=tmp_path / "j.db", pm=plugin_manager(load_entrypoints=False))


@pytest.fixture
def watched(app: App) -> Iterator[Watched]:
    fleet, events, failovers = Fleet(), Events(), Failovers()
    app.pm.register(events)
    monitors: list[Monitor] = []

    def start(
        settings: MonitorSettings = FAST, brake: StormBrake | None = None, coordination: Coordination | None = None
    ) -> Monitor:
        monitor = Monitor(
            app, failovers, settings, brake, probe=fleet.probe, connect=fleet.connect, coordination=coordination
        )
        monitor.start()
        monitors.append(monitor)
        assert monitor.started.wait(TIMEOUT)
        return monitor

    yield Watched(app, fleet, events, failovers, start)
    for monitor in monitors:
        monitor.stop()


def brake_of_one() -> StormBrake:
    return StormBrake(max_hosts=1, window=60)


# ---------------------------------------------------------------- settle

UP, SUSPECT, DOWN = Health.UP, Health.SUSPECT, Health.DOWN


def test_a_host_that_failed_alone_waits_for_no_other_host() -> None:
    assert undecided("host1", {"host1": DOWN, "host2": UP, "host3": UP}) == []


def test_a_failover_waits_for_the_other_hosts_that_are_suspect() -> None:
    states = {"host1": DOWN, "host2": SUSPECT, "host3": UP, "host4": SUSPECT}
    assert undecided("host1", states) == ["host2", "host4"]


def test_a_failover_waits_for_a_host_down_that_the_storm_brake_has_not_counted_yet() -> None:
    assert undecided("host1", {"host1": DOWN, "host2": DOWN, "host3": UP}, deciding={"host1", "host2"}) == ["host2"]


def test_a_failover_does_not_wait_for_a_host_already_down_and_counted() -> None:
    assert undecided("host1", {"host1": DOWN, "host2": DOWN, "host3": UP}, deciding={"host1"}) == []


def test_a_host_that_failed_alone_is_failed_over_without_waiting_for_settle_max(watched: Watched) -> None:
    watched.start(MonitorSettings(interval=0.01, suspect_interval=0.01, power_every=0, settle_max=3600))
    watched.fleet.kill("host1")
    failover = watched.failovers.wait_for("host1")
    assert failover.what.startswith("libvirt connection lost")
    assert failover.what.endswith("and probe missed 2 times in a row")


def test_a_down_host_is_failed_over_only_after_a_settle_that_is_asked_for(watched: Watched) -> None:
    watched.start(MonitorSettings(interval=0.01, suspect_interval=0.01, power_every=0, settle=0.3))
    watched.fleet.kill("host1")
    down = watched.events.wait_for("host1", EventKind.HOST_DOWN)
    assert watched.failovers.wait_for("host1").at - down.at >= 0.3


def test_a_down_host_waits_while_another_host_is_suspect_until_that_one_is_decided(watched: Watched) -> None:
    watched.start(MonitorSettings(interval=0.01, suspect_interval=0.01, power_every=0, settle_max=60))
    watched.fleet.mute("host2")
    watched.events.wait_for("host2", EventKind.HOST_SUSPECT)
    watched.fleet.kill("host1")
    watched.events.wait_for("host1", EventKind.HOST_DOWN)
    probes = watched.fleet.probes["host2"]
    poll_until(lambda: watched.fleet.probes["host2"] >= probes + 30, TIMEOUT, "30 more probes of host2: settle is over")
    assert watched.failovers.hosts() == []
    revived = time.monotonic()  # not host.up's event: the failover may wake before that is told
    watched.fleet.revive("host2")
    watched.events.wait_for("host2", EventKind.HOST_UP)
    assert watched.failovers.wait_for("host1").at >= revived


def test_a_down_host_waits_for_a_suspect_one_no_longer_than_settle_max(watched: Watched) -> None:
    settings = MonitorSettings(interval=0.01, suspect_interval=0.01, power_every=0, settle_max=0.4)
    monitor = watched.start(settings)
    watched.fleet.mute("host2")
    watched.events.wait_for("host2", EventKind.HOST_SUSPECT)
    watched.fleet.kill("host1")
    down = watched.events.wait_for("host1", EventKind.HOST_DOWN)
    assert watched.failovers.wait_for("host1").at - down.at >= 0.4
    assert monitor.state("host2") is Health.SUSPECT


# ---------------------------------------------------------------- the storm brake


def test_a_second_host_down_within_the_window_is_held_back_and_the_brake_is_kept_in_the_journal(
    watched: Watched,
) -> None:
    monitor = watched.start(brake=brake_of_one())
    watched.fleet.kill("host1")
    watched.failovers.wait_for("host1")
    watched.fleet.kill("host2")
    watched.events.wait_for("host2", EventKind.MONITOR_STORM_BRAKE)
    assert watched.failovers.hosts() == ["host1"]
    held = watched.app.journal.brake()
    assert held is not None and "2 of 3 hosts down" in held.reason
    assert monitor.brake.engaged


def test_hosts_going_down_together_are_all_held_by_the_brake(watched: Watched) -> None:
    watched.start(brake=brake_of_one())
    watched.fleet.kill("host1", "host2")
    for host in ("host1", "host2"):
        watched.events.wait_for(host, EventKind.MONITOR_STORM_BRAKE)
    assert watched.failovers.hosts() == []
    assert watched.app.journal.brake() is not None


def test_releasing_the_brake_fails_over_the_hosts_it_held_back(watched: Watched) -> None:
    watched.start(brake=brake_of_one())
    watched.fleet.kill("host1", "host2")
    for host in ("host1", "host2"):
        watched.events.wait_for(host, EventKind.MONITOR_STORM_BRAKE)
    assert watched.app.journal.release_brake()  # as `evac brake release` does from another process
    released = watched.events.wait_for("", EventKind.MONITOR_BRAKE_RELEASED)
    assert released.what.endswith("failing over host1, host2")
    for host in ("host1", "host2"):
        assert watched.failovers.wait_for(host).what.endswith("(after the storm brake was released)")


def test_releasing_the_brake_leaves_a_held_back_host_put_in_maintenance_alone(watched: Watched) -> None:
    watched.start(brake=brake_of_one())
    watched.fleet.kill("host1", "host2")
    for host in ("host1", "host2"):
        watched.events.wait_for(host, EventKind.MONITOR_STORM_BRAKE)
    watched.app.journal.set_host_state("host2", HostMode.MAINTENANCE, "repair", "test")
    watched.app.journal.release_brake()
    released = watched.events.wait_for("", EventKind.MONITOR_BRAKE_RELEASED)
    assert released.what.endswith("failing over host1")
    watched.failovers.wait_for("host1")
    assert "host2" not in watched.failovers.hosts()


def test_a_brake_left_engaged_in_the_journal_holds_after_a_restart(watched: Watched) -> None:
    watched.app.journal.engage_brake("2 of 3 hosts down earlier")
    monitor = watched.start(brake=brake_of_one())
    watched.events.wait_for("", "still engaged: 2 of 3 hosts down earlier")
    assert monitor.brake.engaged
    watched.fleet.kill("host1")
    watched.events.wait_for("host1", EventKind.MONITOR_STORM_BRAKE)
    assert watched.failovers.hosts() == []


def test_a_down_host_whose_lock_another_job_holds_is_failed_over_once_that_job_lets_go(watched: Watched) -> None:
    watched.failovers.locked = 2  # a return of host1 was running when it died
    watched.start()
    watched.fleet.kill("host1")
    poll_until(lambda: watched.failovers.hosts().count("host1") == 3, TIMEOUT, "host1's failover asked for three times")


def test_a_down_host_whose_failover_ended_without_a_fence_is_failed_over_again(watched: Watched) -> None:
    """Its first check found the host answering a moment before it died: the nemesis, seed
    1449909988, cut a host whose watchdog fired just as the cut healed."""
    failover = watched.app.journal.create_job("host-failure", "monitor", {"host": "host1"}, "host1", False, None)
    watched.app.journal.finish_job(failover, JobState.FAILED)  # "host1 answers: not down, nothing to do"
    watched.failovers.locked, watched.failovers.holder = 1, failover
    watched.start()
    watched.fleet.kill("host1")
    poll_until(lambda: watched.failovers.hosts().count("host1") == 2, TIMEOUT, "host1's failover asked for again")


def killed_and_probed(watched: Watched, rounds: int) -> None:
    """host1 killed, its failover asked for once, then ``rounds`` more probes of it."""
    watched.start()
    watched.fleet.kill("host1")
    watched.failovers.wait_for("host1")
    probes = watched.fleet.probes["host1"]
    poll_until(lambda: watched.fleet.probes["host1"] >= probes + rounds, TIMEOUT, f"{rounds} more probes of host1")


def test_a_down_host_whose_lock_a_running_drain_holds_is_asked_again_only_once_that_drain_ends(
    watched: Watched,
) -> None:
    drain = watched.app.journal.create_job("maintenance", "cli:ops", {"host": "host1"}, "host1", False, None)
    watched.failovers.locked, watched.failovers.holder = 1, drain
    killed_and_probed(watched, 30)
    assert watched.failovers.hosts().count("host1") == 1
    watched.app.journal.finish_job(drain, JobState.FAILED)
    poll_until(lambda: watched.failovers.hosts().count("host1") == 2, TIMEOUT, "host1's failover asked for again")


def test_a_down_host_whose_lock_names_a_job_that_cannot_be_found_is_asked_about_less_and_less_often(
    watched: Watched,
) -> None:
    watched.failovers.locked = 1000  # job 7 holds the lock for good, and is nowhere in the journal
    killed_and_probed(watched, 120)
    assert watched.failovers.hosts().count("host1") <= 10  # doubling pauses: about log2(120), not 120


def test_a_host_back_while_another_job_holds_its_lock_is_not_failed_over_when_that_job_ends(
    watched: Watched,
) -> None:
    drain = watched.app.journal.create_job("maintenance", "cli:ops", {"host": "host1"}, "host1", False, None)
    watched.failovers.locked, watched.failovers.holder = 100, drain
    watched.start()
    watched.fleet.kill("host1")
    watched.failovers.wait_for("host1")
    watched.fleet.revive("host1")
    watched.events.wait_for("host1", EventKind.HOST_UP)
    watched.app.journal.finish_job(drain, JobState.FAILED)

    def waiting() -> bool:
        return any(t.name == "failover-host1" and t.is_alive() for t in threading.enumerate())

    poll_until(lambda: not waiting(), TIMEOUT, "host1's failover thread gave up waiting")
    assert watched.failovers.hosts().count("host1") == 1


def test_a_host_in_maintenance_that_goes_down_is_not_failed_over(watched: Watched) -> None:
    watched.app.journal.set_host_state("host1", HostMode.MAINTENANCE, "kernel update", "test")
    monitor = watched.start(brake=brake_of_one())
    watched.fleet.kill("host1")
    ignored = watched.events.wait_for("host1", EventKind.HOST_IGNORED)
    assert "in maintenance" in ignored.what
    assert watched.failovers.hosts() == []
    assert not monitor.brake.engaged  # not counted towards the brake either


def test_a_host_that_dies_while_its_drain_runs_is_failed_over_for_the_guests_the_drain_did_not_move(
    watched: Watched,
) -> None:
    drain = watched.app.journal.create_job("maintenance", "cli:ops", {"host": "host1"}, "host1", False, None)
    watched.app.journal.set_host_state("host1", HostMode.MAINTENANCE, "kernel update", f"job:{drain}")
    watched.start()
    watched.fleet.kill("host1")
    assert watched.failovers.wait_for("host1")


def test_a_host_that_dies_after_its_drain_succeeded_is_left_to_its_maintenance(watched: Watched) -> None:
    drain = watched.app.journal.create_job("maintenance", "cli:ops", {"host": "host1"}, "host1", False, None)
    watched.app.journal.set_host_state("host1", HostMode.MAINTENANCE, "kernel update", f"job:{drain}")
    watched.app.journal.finish_job(drain, JobState.SUCCEEDED)
    watched.start()
    watched.fleet.kill("host1")
    watched.events.wait_for("host1", EventKind.HOST_IGNORED)
    assert watched.failovers.hosts() == []


def test_a_host_that_answers_again_is_up_again(watched: Watched) -> None:
    monitor = watched.start()
    watched.fleet.mute("host3")
    watched.events.wait_for("host3", EventKind.HOST_SUSPECT)
    watched.fleet.revive("host3")
    watched.events.wait_for("host3", EventKind.HOST_UP)
    assert monitor.state("host3") is Health.UP
    assert watched.failovers.hosts() == []


# ---------------------------------------------------------------- evidence from plugins


class LeaseSource:
    """A push source as an agent-lease plugin would be: evidence arrives when it arrives."""

    name = "lease"

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.reports: dict[str, Report] = {}

    def watch(self, host: HostSpec, report: Report) -> PolledWatch:
        self.reports[host.name] = report
        return PolledWatch(lambda: None, every=math.inf)

    def expire(self, host: str) -> None:
        self.reports[host](Evidence(self.name, host, Verdict.DEAD, "agent lease expired"))


class SourcePlugin:
    def __init__(self, *sources: Any) -> None:
        self.sources = list(sources)

    @hookimpl
    def evac_evidence_sources(self, app: App, settings: MonitorSettings) -> list[Any]:
        return self.sources


def test_a_plugin_source_whose_loss_is_conclusive_brings_a_host_down_alone(watched: Watched) -> None:
    lease = LeaseSource(Rule(conclusive=True))
    watched.app.pm.register(SourcePlugin(lease))
    watched.start()
    lease.expire("host2")
    assert watched.failovers.wait_for("host2").what == "agent lease expired"


def test_a_plugin_source_counts_as_one_of_the_two_losses(watched: Watched) -> None:
    lease = LeaseSource(Rule())
    watched.app.pm.register(SourcePlugin(lease))
    watched.start()
    lease.expire("host2")
    watched.events.wait_for("host2", EventKind.HOST_SUSPECT)
    watched.fleet.mute("host2")  # libvirt still holds: the probe is the second loss
    failover = watched.failovers.wait_for("host2")
    assert failover.what == "probe missed 2 times in a row and agent lease expired"


def test_a_plugin_source_that_breaks_does_not_stop_the_monitor(watched: Watched) -> None:
    def broken() -> Evidence | None:
        raise RuntimeError("lease store unreachable")

    class Broken(LeaseSource):
        def watch(self, host: HostSpec, report: Report) -> PolledWatch:
            return PolledWatch(broken)

    watched.app.pm.register(SourcePlugin(Broken(Rule())))
    watched.start()
    watched.fleet.kill("host1")
    watched.failovers.wait_for("host1")


def test_two_evidence_sources_of_one_name_are_refused_naming_both(app: App) -> None:
    app.pm.register(SourcePlugin(ProbeSource(lambda spec: True)))
    with pytest.raises(ConfigError, match=r"'probe' is given twice: by evac\.evidence\.ProbeSource and"):
        Monitor(app, lambda host, reason: None, FAST)


# ---------------------------------------------------------------- replicas


class Gate:
    """Replicas as the monitor sees them: the views it published, and whether the leader
    may fail a host over (closed until a test opens it)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.published: list[tuple[str, Health]] = []

    def start(self, emit: Callable[[Event], None]) -> None:
        pass

    def stop(self) -> None:
        pass

    def leads(self) -> bool:
        return self.open.is_set()

    def publish(self, host: str, health: Health, reason: str) -> None:
        self.published.append((host, health))

    def agreed_down(self, host: str) -> Agreement:
        if self.open.is_set():
            return Agreement(True, "2 of 3 replicas see it down")
        return Agreement(False, "1 of 3 replicas see it down; 2 must")

    def status(self) -> dict[str, Any]:
        return {}


def test_every_view_of_a_host_is_published_for_the_other_replicas(watched: Watched) -> None:
    gate = Gate()
    watched.start(coordination=gate)
    assert sorted(gate.published) == [(h, Health.UP) for h in HOSTS]
    watched.fleet.kill("host1")
    watched.events.wait_for("host1", EventKind.HOST_DOWN)
    assert gate.published[-1] == ("host1", Health.DOWN)


def test_a_slow_journal_never_leaves_an_older_view_published_than_the_hosts_state(watched: Watched) -> None:
    """libvirt's close callback only hands its evidence over: the host's own thread weighs
    it, in order with what it polls, so an event written slowly (etcd electing a leader)
    neither holds up libvirt's event loop nor publishes "suspect" after "down"."""
    gate = Gate()
    watched.start(coordination=gate)
    released, writing = threading.Event(), threading.Event()
    writers: list[str] = []
    record = watched.app.journal.add_event

    def slow(event: Event) -> None:
        if event.kind == EventKind.HOST_SUSPECT and event.item == "host1":
            writers.append(threading.current_thread().name)
            writing.set()
            released.wait(TIMEOUT)
        record(event)

    watched.app.journal.add_event = slow  # type: ignore[method-assign]
    watched.fleet.kill("host1")  # libvirt's callbacks run here, as on its event thread
    assert writing.wait(TIMEOUT)
    assert writers == ["monitor-host1"]
    released.set()
    watched.events.wait_for("host1", EventKind.HOST_DOWN)
    assert [h for host, h in gate.published if host == "host1"][-1] == Health.DOWN


def test_a_down_host_is_failed_over_only_once_enough_replicas_agree(watched: Watched) -> None:
    gate = Gate()
    watched.start(coordination=gate)
    watched.fleet.kill("host1")
    watched.events.wait_for("host1", EventKind.HOST_DOWN)
    probes = watched.fleet.probes["host2"]
    poll_until(lambda: watched.fleet.probes["host2"] >= probes + 30, TIMEOUT, "30 more probes: settle is over")
    assert watched.failovers.hosts() == []
    gate.open.set()
    assert watched.failovers.wait_for("host1").what.endswith("; 2 of 3 replicas see it down")


def test_a_host_that_comes_back_while_replicas_disagree_is_never_failed_over(watched: Watched) -> None:
    gate = Gate()
    watched.start(coordination=gate)
    watched.fleet.kill("host1")
    watched.events.wait_for("host1", EventKind.HOST_DOWN)
    watched.fleet.revive("host1")
    watched.events.wait_for("host1", EventKind.HOST_UP)
    gate.open.set()
    probes = watched.fleet.probes["host1"]
    poll_until(lambda: watched.fleet.probes["host1"] >= probes + 30, TIMEOUT, "30 more probes of host1")
    assert watched.failovers.hosts() == []


def test_a_stopped_monitor_leaves_no_failover_thread_behind(watched: Watched) -> None:
    """A failover waiting for the replicas' agreement when the monitor stops ends with it,
    rather than log into whatever the process has closed since."""
    asking, answer = threading.Event(), threading.Event()

    class SlowGate(Gate):
        def agreed_down(self, host: str) -> Agreement:
            asking.set()
            answer.wait(TIMEOUT)
            return super().agreed_down(host)

    monitor = watched.start(coordination=SlowGate())  # never agrees: host1's failover waits
    watched.fleet.kill("host1")
    assert asking.wait(TIMEOUT)
    threading.Timer(0.2, answer.set).start()  # the replicas answer while stop() is under way
    monitor.stop()
    assert not any(t.name == "failover-host1" and t.is_alive() for t in threading.enumerate())


# ---------------------------------------------------------------- wired to the real jobs


def test_a_dead_host_gets_a_real_failover_job_and_another_when_that_one_finds_it_answering(
    tmp_path: Path,
) -> None:
    """The monitor as ``evac monitor`` wires it: to ``Jobs.host_down``, with the installed
    plugins (the failover's actions are one). The fake fleet says host1 died; the failover's
    own check (libvirt's test driver) finds it answering, so the job ends without a fence,
    and the monitor, still seeing host1 down, starts another."""
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("hosts:\n" + "".join(f"  - {{name: {h}, uri: 'test:///default'}}\n" for h in HOSTS))
    app = App(inventory_path=inventory, journal_path=tmp_path / "j.db", pm=plugin_manager())
    app.config = replace(app.settings, monitor=replace(app.settings.monitor, require_doctor=False))
    fleet = Fleet()
    monitor = Monitor(app, app.jobs.host_down, FAST, probe=fleet.probe, connect=fleet.connect)
    monitor.start()
    try:
        assert monitor.started.wait(TIMEOUT)
        fleet.kill("host1")

        def failovers() -> list[JobRecord]:
            found = [j for j in app.journal.jobs() if j.runbook == "host-failure" and j.target == "host1"]
            return sorted(found, key=lambda j: j.id)

        poll_until(lambda: len(failovers()) >= 2, TIMEOUT, "a second failover of host1")
        first = failovers()[0]
        assert first.state == JobState.FAILED
        assert "host1 answers" in first.error
        assert app.journal.host_states().get("host1") is None  # never fenced: it answered
    finally:
        monitor.stop()

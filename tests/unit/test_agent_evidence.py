"""The ``agent`` evidence source, and a monitor that probes only hosts whose lease is late.

The source is specified over a fake view of the agents' keys and a fake clock; the
monitor runs for real (its threads, a real journal) over a fake fleet, whose hosts the
test powers off (EOF on every connection) or cuts (nothing answers, nothing closes). One
spec follows a real :class:`evac.agents.AgentView` on the session's etcd.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from evac import hookimpl
from evac.agentevidence import AgentSource
from evac.agents import RUNNING, STOPPED, AgentState, AgentView, live_key, state_key
from evac.app import App
from evac.errors import HostUnreachable
from evac.etcdclient import Cluster, EtcdSettings
from evac.events import Event
from evac.evidence import Evidence, LibvirtSource, MonitorSettings, Verdict
from evac.inventory import HostSpec
from evac.monitor import Monitor, call_within
from evac.plugins import plugin_manager
from evac.states import EventKind, Health
from tests.conftest import poll_until
from tests.unit.fakefleet import HOSTS, Fleet

FAST = MonitorSettings(interval=0.01, suspect_interval=0.01, power_every=0, settle=0.05)
TIMEOUT = 10.0
SPEC = HostSpec("host1", "qemu+tcp://192.0.2.1/system")


# ---------------------------------------------------------------- a fake view of the agents' keys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Leases:
    """The agents as a controller's view shows them: each a state record and, while it
    holds its lease, a live key. Every change runs the view's ``changed`` callbacks, as a
    read of etcd that saw a lease appear or vanish does."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.states: dict[str, AgentState] = {}
        self.live: set[str] = set()
        self.changed: list[Callable[[], None]] = []
        self.following = True  # False: etcd away, the last read grows old
        self.last_read = clock()
        self.refreshes = 0

    @property
    def read_at(self) -> float:
        return self.clock() if self.following else self.last_read

    def holds_lease(self, host: str) -> bool | None:
        if host in self.live:
            return True
        return False if host in self.states else None

    def refresh(self) -> None:
        self.refreshes += 1
        self.last_read, self.following = self.clock(), True

    def run(self, host: str) -> None:
        self.states[host] = AgentState(host, RUNNING, 3.0)
        self._move(self.live | {host})

    def expire(self, host: str) -> None:
        self._move(self.live - {host})

    def stop(self, host: str) -> None:
        self.states[host] = AgentState(host, STOPPED, reason="agent stopped cleanly")
        self._move(self.live - {host})

    def lose_etcd(self) -> None:
        self.last_read, self.following = self.clock(), False

    def _move(self, live: set[str]) -> None:
        self.live = live
        for callback in list(self.changed):
            callback()


def said(pushed: list[Evidence]) -> list[tuple[Verdict, str]]:
    return [(e.verdict, e.detail) for e in pushed]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def leases(clock: Clock) -> Leases:
    return Leases(clock)


# ---------------------------------------------------------------- the source


def test_a_held_lease_is_reported_alive_and_vouches_for_its_host(leases: Leases, clock: Clock) -> None:
    leases.run("host1")
    pushed: list[Evidence] = []
    watch = AgentSource(leases, clock=clock).watch(SPEC, pushed.append)
    assert said(pushed) == [(Verdict.ALIVE, "agent holds its lease")]
    assert watch.vouches()


def test_a_lease_gone_while_the_agent_runs_is_pushed_dead_at_once(leases: Leases, clock: Clock) -> None:
    leases.run("host1")
    pushed: list[Evidence] = []
    watch = AgentSource(leases, clock=clock).watch(SPEC, pushed.append)
    leases.expire("host1")
    assert said(pushed)[-1] == (Verdict.DEAD, "agent lease expired")
    assert pushed[-1].source == "agent"
    assert not watch.vouches()


def test_a_clean_stop_is_no_death(leases: Leases, clock: Clock) -> None:
    leases.run("host1")
    pushed: list[Evidence] = []
    AgentSource(leases, clock=clock).watch(SPEC, pushed.append)
    leases.stop("host1")
    assert said(pushed)[-1] == (Verdict.UNKNOWN, "agent stopped: agent stopped cleanly")
    assert Verdict.DEAD not in [e.verdict for e in pushed]


def test_a_host_whose_agent_never_ran_gets_no_verdict(leases: Leases, clock: Clock) -> None:
    pushed: list[Evidence] = []
    watch = AgentSource(leases, clock=clock).watch(SPEC, pushed.append)
    leases.run("host2")
    assert (pushed, watch.poll(), watch.vouches()) == ([], None, False)


def test_an_agent_started_after_the_watch_is_followed_from_then_on(leases: Leases, clock: Clock) -> None:
    pushed: list[Evidence] = []
    watch = AgentSource(leases, clock=clock).watch(SPEC, pushed.append)
    leases.run("host1")
    assert said(pushed) == [(Verdict.ALIVE, "agent holds its lease")]
    assert watch.vouches()


def test_a_verdict_is_given_once_whether_pushed_or_polled(leases: Leases, clock: Clock) -> None:
    leases.run("host1")
    pushed: list[Evidence] = []
    watch = AgentSource(leases, clock=clock).watch(SPEC, pushed.append)
    leases.expire("host1")
    assert watch.poll() is None
    assert said(pushed) == [(Verdict.ALIVE, "agent holds its lease"), (Verdict.DEAD, "agent lease expired")]


def test_a_stale_view_vouches_for_nobody(leases: Leases, clock: Clock) -> None:
    leases.run("host1")
    watch = AgentSource(leases, stale_after=3.0, clock=clock).watch(SPEC, lambda e: None)
    leases.lose_etcd()
    clock.now += 3.0
    assert watch.vouches()
    clock.now += 0.1
    assert not watch.vouches()


def test_a_view_never_read_is_read_once_before_the_first_watch(leases: Leases, clock: Clock) -> None:
    leases.last_read, leases.following = -float("inf"), False
    source = AgentSource(leases, clock=clock)
    source.watch(SPEC, lambda e: None)
    source.watch(HostSpec("host2", "qemu+tcp://192.0.2.2/system"), lambda e: None)
    assert leases.refreshes == 1


def test_a_closed_watch_hears_no_more(leases: Leases, clock: Clock) -> None:
    leases.run("host1")
    pushed: list[Evidence] = []
    AgentSource(leases, clock=clock).watch(SPEC, pushed.append).close()
    leases.expire("host1")
    assert said(pushed) == [(Verdict.ALIVE, "agent holds its lease")]


def test_a_real_view_pushes_the_lease_gone_when_etcd_deletes_it(etcd_settings: EtcdSettings) -> None:
    cluster = Cluster(etcd_settings)
    view = AgentView(cluster)
    lease = cluster.grant(60)
    cluster.put(state_key(cluster.settings.prefix, "host1"), AgentState("host1", RUNNING, 3.0).record())
    cluster.put(live_key(cluster.settings.prefix, "host1"), "{}", lease)
    dead = threading.Event()

    def report(evidence: Evidence) -> None:
        if evidence.verdict is Verdict.DEAD:
            dead.set()

    watch = AgentSource(view).watch(SPEC, report)
    view.start(every=60)  # only etcd's watch wakes it
    try:
        assert watch.vouches()
        cluster.revoke(lease)
        assert dead.wait(TIMEOUT), "the lease's deletion was never pushed"
        assert not watch.vouches()
    finally:
        watch.close()
        view.stop()
        cluster.close()


# ---------------------------------------------------------------- the libvirt watch, hushed


class Conn:
    def __init__(self, keepalive: bool) -> None:
        self.keepalive = keepalive
        self.closed = False
        self.callbacks: list[Callable[[str], None]] = []

    def alive(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True
        for callback in self.callbacks:
            callback("client")  # as libvirt may: a close we asked for is no loss

    def on_close(self, callback: Callable[[str], None]) -> None:
        self.callbacks.append(callback)


class Libvirt:
    def __init__(self) -> None:
        self.handed: list[Conn] = []
        self.answers = True

    def connect(self, keepalive: bool) -> Callable[[HostSpec], Conn]:
        def make(spec: HostSpec) -> Conn:
            if not self.answers:
                raise HostUnreachable(f"{spec.name}: no answer")
            self.handed.append(Conn(keepalive))
            return self.handed[-1]

        return make

    def source(self) -> LibvirtSource:
        return LibvirtSource(self.connect(True), self.connect(False))


def test_a_hushed_libvirt_watch_holds_a_connection_without_keepalive() -> None:
    libvirt = Libvirt()
    pushed: list[Evidence] = []
    watch = libvirt.source().watch(SPEC, pushed.append)
    watch.poll()
    watch.hush(True)
    assert watch.poll() is not None
    assert [(c.keepalive, c.closed) for c in libvirt.handed] == [(True, True), (False, False)]
    assert watch.every == float("inf") and pushed == []


def test_an_unhushed_libvirt_watch_reconnects_with_keepalive_and_a_cut_host_is_lost_at_once() -> None:
    libvirt = Libvirt()
    pushed: list[Evidence] = []
    watch = libvirt.source().watch(SPEC, pushed.append)
    watch.hush(True)
    watch.poll()
    libvirt.answers = False  # cut: the idle connection notices nothing
    watch.hush(False)
    lost = watch.poll()
    assert lost is not None and (lost.verdict, lost.detail) == (Verdict.DEAD, "libvirt connection lost: no connection")
    assert pushed == []


def test_a_hushed_connections_eof_is_pushed_at_once() -> None:
    libvirt = Libvirt()
    pushed: list[Evidence] = []
    watch = libvirt.source().watch(SPEC, pushed.append)
    watch.hush(True)
    watch.poll()
    libvirt.handed[0].callbacks[0]("eof")
    assert said(pushed) == [(Verdict.DEAD, "libvirt connection lost: eof")]


# ---------------------------------------------------------------- the monitor over a fake fleet


class Seen:
    """Events and failovers in order; tests wait on them with a deadline."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def add(self, host: str, what: str) -> None:
        with self.cond:
            self.seen.append((host, what))
            self.cond.notify_all()

    @hookimpl
    def evac_event(self, event: Event) -> None:
        self.add(event.item, f"{event.kind}: {event.message}")

    def fail_over(self, host: str, reason: str) -> None:
        self.add(host, f"failover: {reason}")

    def wait_for(self, host: str, what: str) -> str:
        with self.cond:
            found = self.cond.wait_for(
                lambda: next((w for h, w in self.seen if h == host and what in w), None), TIMEOUT
            )
            assert found, f"{host} {what!r} never came; saw {self.seen[-10:]}"
            return found

    def of(self, host: str) -> list[str]:
        with self.cond:
            return [w for h, w in self.seen if h == host]


@dataclass
class Watched:
    fleet: Fleet
    leases: Leases
    seen: Seen
    monitor: Monitor

    def probed_30_more(self, host: str) -> None:
        """A clock made of another host's probes: enough rounds have passed."""
        before = self.fleet.probes[host]
        poll_until(lambda: self.fleet.probes[host] >= before + 30, TIMEOUT, f"30 more probes of {host}")


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Watched]:
    """host1 and host2 run agents holding their leases; host3 runs none."""
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        "hosts:\n" + "".join(f"  - {{name: {h}, uri: 'qemu+tcp://192.0.2.{i}/system'}}\n" for i, h in enumerate(HOSTS))
    )
    app = App(inventory_path=inventory, journal_path=tmp_path / "j.db", pm=plugin_manager(load_entrypoints=False))
    fleet, leases, seen = Fleet(), Leases(time.monotonic), Seen()
    leases.run("host1")
    leases.run("host2")
    app.pm.register(seen)
    monitor = Monitor(app, seen.fail_over, FAST, probe=fleet.probe, connect=fleet.connect, agents=leases)
    monitor.start()
    assert monitor.started.wait(TIMEOUT)
    yield Watched(fleet, leases, seen, monitor)
    monitor.stop()


def test_a_host_whose_agent_holds_its_lease_is_not_probed(watched: Watched) -> None:
    watched.probed_30_more("host3")
    assert watched.fleet.probes["host1"] == 0


def test_a_host_without_an_agent_is_probed_and_failed_over_as_today(watched: Watched) -> None:
    watched.probed_30_more("host3")
    watched.fleet.power_off("host3")
    reason = watched.seen.wait_for("host3", "failover:")
    assert reason.startswith("failover: libvirt connection lost:")
    assert reason.endswith("and probe missed 2 times in a row")


def test_a_lease_gone_is_pushed_dead_and_the_probes_resume_at_once(watched: Watched) -> None:
    watched.leases.expire("host1")
    watched.seen.wait_for("host1", f"{EventKind.HOST_SUSPECT}: agent lease expired")
    poll_until(lambda: watched.fleet.probes["host1"] > 0, TIMEOUT, "host1 probed again")
    assert watched.monitor.state("host1") is Health.SUSPECT  # one loss: the host still answers


def test_a_cut_host_is_failed_over_once_its_lease_is_gone(watched: Watched) -> None:
    watched.fleet.cut("host1")
    watched.probed_30_more("host3")
    assert watched.seen.of("host1") == []  # nothing to tell it by but its lease
    watched.leases.expire("host1")
    reason = watched.seen.wait_for("host1", "failover:")
    assert reason == "failover: libvirt connection lost: no connection and agent lease expired"


def test_a_powered_off_host_is_seen_through_its_connections_eof_before_its_lease_expires(watched: Watched) -> None:
    watched.fleet.power_off("host2")
    reason = watched.seen.wait_for("host2", "failover:")
    assert reason.startswith("failover: libvirt connection lost:")
    assert reason.endswith("and probe missed 2 times in a row")


def test_an_agent_stopped_cleanly_is_no_death_and_its_host_is_probed_again(watched: Watched) -> None:
    watched.leases.stop("host1")
    poll_until(lambda: watched.fleet.probes["host1"] >= 30, TIMEOUT, "host1 probed as a host without an agent")
    assert watched.seen.of("host1") == []
    assert watched.monitor.state("host1") is Health.UP


def test_a_host_whose_lease_comes_back_is_hushed_again(watched: Watched) -> None:
    watched.leases.stop("host1")
    poll_until(lambda: watched.fleet.probes["host1"] > 0, TIMEOUT, "host1 probed again")
    watched.leases.run("host1")
    watched.probed_30_more("host3")
    probes = watched.fleet.probes["host1"]
    watched.probed_30_more("host3")
    assert watched.fleet.probes["host1"] == probes


# ---------------------------------------------------------------- a libvirt open that hangs


def test_a_call_that_hangs_is_given_up_and_its_late_result_handed_over() -> None:
    release, late = threading.Event(), threading.Event()
    handed: list[str] = []

    def hangs() -> str:
        release.wait(TIMEOUT)
        return "connection"

    def closed(value: str) -> None:
        handed.append(value)
        late.set()

    assert call_within(hangs, 0.01, closed, "test") is None
    release.set()
    assert late.wait(TIMEOUT) and handed == ["connection"]


def test_a_call_in_time_returns_its_result_or_raises_its_error() -> None:
    def refuses() -> str:
        raise HostUnreachable("host1: refused")

    assert call_within(lambda: "connection", TIMEOUT, lambda v: None, "test") == "connection"
    with pytest.raises(HostUnreachable, match="refused"):
        call_within(refuses, TIMEOUT, lambda v: None, "test")

"""The host-failure actions' own guards: the storm brake read again right before the fence,
and the other hosts asked through the job's connections whether a guest runs there already;
and the restart plan: only HA members restarted, in ``after`` order, each restart waiting
for what it comes after.

The fence is pressed through a registered fence method (an outlet in memory); the other
hosts are libvirt's test driver (real connections, one shared state that runs a guest
named ``test``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evac import FenceMethod, hookimpl
from evac.actions import StepContext
from evac.app import App
from evac.connections import Connections
from evac.domainxml import EVAC_NS
from evac.errors import Cancelled, HostUnreachable, TransientError
from evac.events import Event
from evac.hypervisor import Hypervisor
from evac.model import Guest
from evac.plugins import plugin_manager
from evac.restartorder import Dependency, Look, Seen
from evac.states import EventKind, HostMode, ItemState
from evac_plugins.failover import (
    ReadinessChecks,
    Whereabouts,
    fence,
    plan_restart,
    report,
    restart,
    running_somewhere,
    wait_for_dependencies,
    whereabouts,
)

LIBVIRT = Hypervisor.connect  # the real one, before a test counts the connections it opens


class Outlet:
    def __init__(self) -> None:
        self.state = "on"
        self.pressed = 0

    def power_off(self) -> None:
        self.pressed += 1
        self.state = "off"

    def power_state(self) -> str:
        return self.state


class OutletMethod:
    def __init__(self, outlet: Outlet) -> None:
        self.outlet = outlet

    @hookimpl
    def evac_fence_methods(self) -> list[FenceMethod]:
        return [FenceMethod("outlet", lambda host, settings: self.outlet)]


class Opened:
    """A ``connect`` that opens real test-driver connections, counts them, and refuses the
    hosts in ``refused``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections: list[Hypervisor] = []
        self.refused: set[str] = set()

    def __call__(self, name: str, uri: str, keepalive: tuple[int, int] | None = None) -> Hypervisor:
        if name in self.refused:
            raise HostUnreachable(f"{name}: cannot connect")
        hv = LIBVIRT(name, uri, keepalive=None)  # the test driver has no keepalive
        with self.lock:
            self.connections.append(hv)
        return hv

    def hosts(self) -> list[str]:
        with self.lock:
            return sorted(hv.name for hv in self.connections)


@pytest.fixture
def outlet() -> Outlet:
    return Outlet()


@pytest.fixture
def app(tmp_path: Path, outlet: Outlet) -> App:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        "hosts:\n"
        + "".join(f"  - {{name: host{i}, uri: 'test:///default', fence: [{{method: outlet}}]}}\n" for i in (1, 2, 3))
    )
    pm = plugin_manager(load_entrypoints=False)
    pm.register(OutletMethod(outlet))
    return App(inventory_path=inventory, journal_path=tmp_path / "j.db", pm=pm)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Opened:
    counted = Opened()
    monkeypatch.setattr(Hypervisor, "connect", staticmethod(counted))
    return counted


@pytest.fixture
def hosts(opened: Opened) -> Iterator[Connections]:
    """A job's connections, current in the test (as the engine makes them in a step)."""
    connections = Connections(connect=opened)
    with connections.as_current():
        yield connections
    connections.close()


def step(app: App, step: str, emitted: list[Event] | None = None) -> StepContext:
    job = app.journal.create_job("host-failure", "test", {"host": "host1"}, "host1", False, None)
    sink: list[Event] = [] if emitted is None else emitted
    return StepContext(job_id=job, step=step, inputs={"host": "host1"}, params={}, app=app, emit=sink.append)


# ---------------------------------------------------------------- the storm brake before the fence


def test_the_fence_step_fences_a_host_while_no_brake_is_engaged(app: App, outlet: Outlet) -> None:
    outputs: Any = fence(step(app, "fence"))
    assert (outputs["method"], outlet.state) == ("outlet", "off")
    assert app.journal.host_states()["host1"].state == HostMode.FENCED


def test_a_brake_engaged_after_the_failover_started_stops_it_before_the_fence(app: App, outlet: Outlet) -> None:
    ctx = step(app, "fence")
    app.journal.engage_brake("2 of 3 hosts down within 120 s (host1, host2)")
    with pytest.raises(Cancelled, match=r"^host1 not fenced: the storm brake engaged .*\(2 of 3 hosts down"):
        fence(ctx)
    assert outlet.pressed == 0
    assert "host1" not in app.journal.host_states()


def test_a_failover_the_brake_stopped_is_told_as_the_monitor_tells_a_braked_one(app: App) -> None:
    emitted: list[Event] = []
    ctx = step(app, "fence", emitted)
    app.journal.engage_brake("2 of 3 hosts down within 120 s (host1, host2)")
    with pytest.raises(Cancelled):
        fence(ctx)
    (told,) = emitted
    assert (told.kind, told.job_id, told.item) == (EventKind.MONITOR_STORM_BRAKE, 0, "host1")
    assert told.message == "host1 not failed over: 2 of 3 hosts down within 120 s (host1, host2)"


def test_ha_disarmed_after_the_failover_started_stops_it_before_the_fence(app: App, outlet: Outlet) -> None:
    emitted: list[Event] = []
    ctx = step(app, "fence", emitted)
    app.journal.disarm("switch firmware on every rack", "cli:ops")
    with pytest.raises(Cancelled, match=r"^host1 not fenced: HA was disarmed after its failover started"):
        fence(ctx)
    assert outlet.pressed == 0
    (told,) = emitted
    assert (told.kind, told.item) == (EventKind.HA_HELD, "host1")


# ---------------------------------------------------------------- the other hosts, through the job's connections


def test_every_check_asks_each_other_host_through_one_connection(app: App, hosts: Connections, opened: Opened) -> None:
    found = [running_somewhere(app, name, skip="host1") for name in ("test", "gone1", "gone2", "test")]
    assert found == ["host2", None, None, "host2"]
    assert opened.hosts() == ["host2", "host3"]


def test_a_connection_that_dropped_is_opened_again_before_the_check(
    app: App, hosts: Connections, opened: Opened
) -> None:
    with hosts.use(app.inventory.host("host2")) as hv:
        hv.close()
    assert running_somewhere(app, "test", skip="host1") == "host2"
    assert opened.hosts().count("host2") == 2


def test_a_host_that_answers_but_cannot_be_asked_stops_the_restart_until_it_can(
    app: App, hosts: Connections, opened: Opened
) -> None:
    opened.refused.add("host2")
    with pytest.raises(TransientError, match="cannot tell whether it runs on host2"):
        running_somewhere(app, "test", skip="host1")
    opened.refused.clear()
    assert running_somewhere(app, "test", skip="host1") == "host2"


class Doubting:
    """A monitor, as the fence step sees one: in doubt about host2 until told otherwise."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.asked = threading.Event()
        self.decided = threading.Event()

    def in_doubt(self, host: str) -> list[str]:
        self.asked.set()
        return [] if self.decided.is_set() else ["host2"]


def test_the_fence_waits_for_a_host_in_doubt_and_stops_when_its_count_engages_the_brake(
    app: App, outlet: Outlet
) -> None:
    from evac import monitor

    doubting = Doubting(app)
    monitor._RUNNING.add(doubting)  # type: ignore[arg-type]

    def host2_counted() -> None:
        doubting.asked.wait(10)
        app.journal.engage_brake("2 of 3 hosts down within 120 s (host1, host2)")
        doubting.decided.set()

    counting = threading.Thread(target=host2_counted)
    counting.start()
    try:
        with pytest.raises(Cancelled, match="storm brake engaged"):
            fence(step(app, "fence"))
    finally:
        counting.join()
        monitor._RUNNING.discard(doubting)  # type: ignore[arg-type]
    assert outlet.pressed == 0


# ---------------------------------------------------------------- HA membership and the restart order


def definition(name: str, **meta: str) -> str:
    """A test-driver domain with ``<evac:guest>`` metadata (``ha_protected="no"``: ``ha-protected``)."""
    attrs = "".join(f' {key.replace("_", "-")}="{value}"' for key, value in meta.items())
    return (
        f"<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        f"<metadata><evac:guest xmlns:evac='{EVAC_NS}'{attrs}/></metadata><os><type>hvm</type></os></domain>"
    )


def failed_with(app: App, **definitions: str) -> None:
    """host1 ran these guests, as evac's last snapshot says, and is fenced now."""
    app.journal.save_definitions("host1", definitions)
    app.journal.set_host_state("host1", HostMode.FENCED, "fenced by outlet", "test")


def planned(app: App) -> dict[str, Any]:
    return dict(plan_restart(step(app, "plan")))


def test_only_protected_guests_are_restarted_and_the_others_are_listed_as_left_stopped(
    app: App, hosts: Connections
) -> None:
    failed_with(app, kept=definition("kept"), spare=definition("spare", ha_protected="no"))
    plan = planned(app)
    assert [m["guest"] for m in plan["moves"]] == ["kept"]
    assert plan["left_stopped"] == [{"guest": "spare", "memory_mib": 64, "reason": "not protected: left stopped"}]
    assert plan["unrecoverable"] == []


def test_the_plan_lists_guests_in_restart_order_with_their_wave_and_what_they_wait_for(
    app: App, hosts: Connections
) -> None:
    failed_with(
        app,
        db=definition("db", ready="echo", address="198.19.3.5"),
        web=definition("web", priority="10", after="db"),
        batch=definition("batch", priority="5"),
    )
    plan = planned(app)
    assert [(m["guest"], m["wave"], m["after"]) for m in plan["moves"]] == [
        ("db", 1, []),
        ("web", 2, ["db"]),
        ("batch", 1, []),
    ]
    assert plan["waits"] == {"db": {"guest": "db", "ready": "echo", "address": "198.19.3.5", "host": ""}}
    assert plan["warnings"] == []


def test_a_guest_waiting_for_one_that_is_left_stopped_is_restarted_and_the_plan_says_why_it_will_not_wait(
    app: App, hosts: Connections
) -> None:
    failed_with(app, db=definition("db", ha_protected="no"), web=definition("web", after="db"))
    plan = planned(app)
    assert [(m["guest"], m["after"]) for m in plan["moves"]] == [("web", [])]
    assert plan["warnings"] == [
        "web waits for db, which is not restarted (not protected: left stopped): web starts without waiting for it"
    ]


def test_a_cycle_in_guests_metadata_is_a_warning_in_the_plan_and_both_guests_are_restarted(
    app: App, hosts: Connections
) -> None:
    failed_with(app, a=definition("a", after="b"), b=definition("b", after="a"))
    plan = planned(app)
    assert sorted((m["guest"], m["after"]) for m in plan["moves"]) == [("a", []), ("b", [])]
    (warning,) = plan["warnings"]
    assert 'a [metadata after="b"] -> b [metadata after="a"] -> a' in warning


def test_a_guest_running_on_another_host_is_waited_for_where_it_runs(app: App, hosts: Connections) -> None:
    failed_with(app, web=definition("web", after="test"))
    plan = planned(app)
    assert plan["moves"][0]["after"] == ["test"]
    assert plan["waits"]["test"]["host"] in ("host2", "host3")


def restart_step(app: App, guest: str, after: list[str], waits: dict[str, Any], timeout: float = 300) -> StepContext:
    job = app.journal.create_job("host-failure", "test", {"host": "host1"}, "host1", False, None)
    inputs = {"host": "host1", "guest": guest, "target": "host2", "after": after, "waits": waits}
    return StepContext(job_id=job, step="restart", inputs=inputs | {"after_timeout": timeout}, params={}, app=app)


def test_a_guest_left_only_as_a_paused_post_copy_source_is_restarted_once_that_copy_is_destroyed(
    app: App, hosts: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nemesis, seed 549695709: a return's post-copy migration had switched over to the
    host that then died (host1 here); its source stayed paused, and the failover counted
    that as the guest running, so the guest ran nowhere."""
    sources = {"host2", "host3"}  # the test driver's guest "test", as each other host sees it
    monkeypatch.setattr(Hypervisor, "postcopy_source", lambda hv, name: hv.name in sources)
    assert whereabouts(app, "test", skip="host1") == Whereabouts(stranded=("host2", "host3"))
    failed_with(app, test=definition("test"))
    emitted: list[Event] = []
    job = app.journal.create_job("host-failure", "test", {"host": "host1"}, "host1", False, None)
    inputs = {"host": "host1", "guest": "test", "target": "host2", "after": [], "waits": {}}
    ctx = StepContext(job_id=job, step="restart", inputs=inputs, params={}, app=app, emit=emitted.append)

    outputs = dict(restart(ctx))

    assert (outputs["target"], outputs.get("already")) == ("host2", None)
    assert [e.message for e in emitted if "post-copy" in e.message] == [
        f"test: destroyed its paused post-copy source on {h}: the copy it ran died with host1"
        for h in ("host2", "host3")
    ]


def test_a_paused_post_copy_source_is_kept_while_a_host_where_the_guest_may_run_does_not_answer(
    app: App, hosts: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """host3 is cut off, not fenced: the migration's destination may be host3, running the
    guest. Destroying the source there would kill that guest, and a restart run it twice."""
    found = Whereabouts(stranded=("host2",), unanswered=("host3",))
    monkeypatch.setattr("evac_plugins.failover.whereabouts", lambda app, name, skip: found)
    failed_with(app, test=definition("test"))
    job = app.journal.create_job("host-failure", "test", {"host": "host1"}, "host1", False, None)
    inputs = {"host": "host1", "guest": "test", "target": "host2", "after": [], "waits": {}}
    ctx = StepContext(job_id=job, step="restart", inputs=inputs, params={}, app=app)
    with pytest.raises(TransientError, match=r"post-copy source on host2, and host3 does not answer"):
        restart(ctx)


def in_plan(name: str, ready: str = "started") -> dict[str, Any]:
    return {name: {"guest": name, "ready": ready, "address": "", "host": ""}}


def test_a_restart_does_not_wait_for_a_guest_that_already_runs_elsewhere(app: App, hosts: Connections) -> None:
    waits = {"test": {"guest": "test", "ready": "started", "address": "", "host": "host2"}}
    waited = wait_for_dependencies(restart_step(app, "web", ["test"], waits), app)
    assert (waited.ready, waited.note) == (("test",), "")


def seen_as(monkeypatch: pytest.MonkeyPatch, states: dict[str, str]) -> None:
    """Each host's view of the guest ``test``: its state there, or "absent", or "broken"
    (that host's libvirt answers nothing)."""
    real = Hypervisor.guest

    def has_guest(hv: Hypervisor, name: str) -> bool:
        if states.get(hv.name) == "broken":
            raise HostUnreachable(f"{hv.name}: no answer")
        return states.get(hv.name, "absent") != "absent"

    def guest(hv: Hypervisor, name: str, *args: Any) -> Guest:
        return dataclasses.replace(real(hv, name, *args), state=states[hv.name])

    monkeypatch.setattr(Hypervisor, "has_guest", has_guest)
    monkeypatch.setattr(Hypervisor, "guest", guest)


MOVED = {"test": {"guest": "test", "ready": "started", "address": "", "host": "host2"}}  # as the plan saw it


def test_a_restart_waits_for_a_guest_that_moved_since_the_plan_only_until_it_runs_where_it_went(
    app: App, hosts: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nemesis, seed 2122160409: the plan saw ``test`` on host2, then a drain moved it
    to host3. Looked for on host2 only, it held the restart for its whole timeout."""
    monkeypatch.setattr(Hypervisor, "has_guest", lambda hv, name: hv.name == "host3")
    waited = wait_for_dependencies(restart_step(app, "web", ["test"], MOVED, timeout=10), app)
    assert (waited.ready, waited.note) == (("test",), "")


@pytest.mark.parametrize(
    "states",
    [
        {"host2": "shutoff", "host3": "running"},  # left shut off where the plan saw it
        {"host2": "broken", "host3": "running"},  # the plan's host cannot be asked
    ],
    ids=["shut-off-there", "host-broken"],
)
def test_a_guest_not_running_where_the_plan_saw_it_is_waited_for_where_it_runs(
    app: App, hosts: Connections, monkeypatch: pytest.MonkeyPatch, states: dict[str, str]
) -> None:
    seen_as(monkeypatch, states)
    waited = wait_for_dependencies(restart_step(app, "web", ["test"], MOVED, timeout=10), app)
    assert (waited.ready, waited.note) == (("test",), "")


def test_a_search_passes_over_a_host_that_cannot_be_asked_and_prefers_where_the_guest_runs(
    app: App, hosts: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """host1 comes first in the inventory and waits paused for an incoming migration; the
    dead host here is one outside it, so every host but the plan's is searched."""
    for first in ("broken", "paused"):
        seen_as(monkeypatch, {"host1": first, "host3": "running"})
        ctx = restart_step(app, "web", ["test"], MOVED)
        ctx = dataclasses.replace(ctx, inputs={**ctx.inputs, "host": "host9"})
        with ReadinessChecks(ctx, app) as check:
            assert check(Dependency.of(MOVED["test"])) == Look(Seen.READY, "runs on host3")


def test_a_guest_that_is_nowhere_is_searched_for_once_per_pause_not_at_every_look(
    app: App, hosts: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def has_guest(hv: Hypervisor, name: str) -> bool:
        asked.append(hv.name)
        return False

    monkeypatch.setattr(Hypervisor, "has_guest", has_guest)
    now = [0.0]
    with ReadinessChecks(restart_step(app, "web", ["test"], MOVED), app, clock=lambda: now[0]) as check:
        for now[0] in (0.0, 0.5, 1.0, 1.9, 2.0, 3.0, 4.5):
            assert check(Dependency.of(MOVED["test"])) == Look(Seen.WAITING, "not on host2")
    assert asked.count("host2") == 7  # every look
    assert asked.count("host3") == 3  # each search, at 0, 2.0 and 4.5 s (host1 is the failed host)


def test_a_guest_waited_for_that_runs_nowhere_is_still_late_after_its_timeout(
    app: App, hosts: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Hypervisor, "has_guest", lambda hv, name: False)
    waits = {"test": {"guest": "test", "ready": "started", "address": "", "host": "host2"}}
    waited = wait_for_dependencies(restart_step(app, "web", ["test"], waits, timeout=0), app)
    assert waited.late == {"test": "not on host2"}


def test_a_restart_waits_for_a_guest_of_its_plan_only_until_that_guest_runs(app: App, hosts: Connections) -> None:
    ctx = restart_step(app, "web", ["test"], in_plan("test"))
    app.journal.save_item(ctx.job_id, "restart", "test", ItemState.SUCCEEDED, {"target": "host2"})
    assert wait_for_dependencies(ctx, app).ready == ("test",)


def test_a_restart_does_not_wait_for_a_guest_whose_restart_failed(app: App, hosts: Connections) -> None:
    ctx = restart_step(app, "web", ["db"], in_plan("db"))
    app.journal.save_item(ctx.job_id, "restart", "db", ItemState.FAILED, {}, "db: no host fits")
    waited = wait_for_dependencies(ctx, app)
    assert waited.note == "started without its dependencies ready: db: its restart failed (db: no host fits)"


def test_a_restart_whose_dependency_is_not_ready_in_time_starts_anyway_and_says_so(
    app: App, hosts: Connections
) -> None:
    failed_with(app, web=definition("web", after="db"))
    ctx = restart_step(app, "web", ["db"], in_plan("db"), timeout=0)
    app.journal.save_item(ctx.job_id, "restart", "db", ItemState.RUNNING, {})
    try:
        outputs = dict(restart(ctx))
        assert (outputs["target"], outputs["after"]) == ("host2", ["db"])
        assert outputs["waited"] == (
            "started without its dependencies ready: db not ready after 0 s (its restart has not finished)"
        )
        with hosts.use(app.inventory.host("host2")) as hv:
            assert hv.guest("web").state == "running"
    finally:
        with hosts.use(app.inventory.host("host2")) as hv:
            if hv.has_guest("web"):
                hv.destroy("web")
                hv.undefine("web")


def test_a_guest_agent_that_cannot_answer_keeps_the_restart_waiting_until_its_timeout(
    app: App, hosts: Connections
) -> None:
    ctx = restart_step(app, "web", ["test"], in_plan("test", ready="agent"), timeout=0)
    app.journal.save_item(ctx.job_id, "restart", "test", ItemState.SUCCEEDED, {"target": "host2"})
    waited = wait_for_dependencies(ctx, app)
    assert set(waited.late) == {"test"}
    assert "its guest agent does not answer" in waited.late["test"]


def test_the_report_lists_guests_left_stopped_without_counting_them_as_failures(app: App) -> None:
    plan = {
        "moves": [{"guest": "web", "priority": 0, "wave": 2, "after": ["db"]}],
        "left_stopped": [{"guest": "spare", "memory_mib": 64, "reason": "not protected: left stopped"}],
        "snapshot_guests": 2,
        "snapshot_age": 1.0,
    }
    waited = "started without its dependencies ready: db not ready after 300 s (no echo answer at 198.19.3.5)"
    done = {"items": {"web": {"target": "host2", "waited": waited}}, "failed": {}}
    ctx = step(app, "report")
    ctx.inputs = {"host": "host1", "plan": plan, "restart": done, "fence": {"method": "outlet"}}
    outputs = dict(report(ctx))
    assert [(r["guest"], r["result"], r["wave"], r["after"], r["detail"]) for r in outputs["rows"]] == [
        ("web", "restarted", 2, ["db"], waited),
        ("spare", "left stopped", None, [], "not protected: left stopped"),
    ]
    assert outputs["summary"] == (
        "host1 failed, fenced by outlet: 1 of 1 guests restarted elsewhere "
        "(2 guest(s) known from a snapshot 1.0 s old, 1 not protected: left stopped)"
    )

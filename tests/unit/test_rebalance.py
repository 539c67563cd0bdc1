"""Rebalancing: a pure plan that fixes broken host rules, empties spares and evens out memory
load without breaking any rule a drain keeps; then its runbook, its ``rebalance:`` section,
its periodic service and ``evac rebalance``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evac.actions import StepContext
from evac.cli import main
from evac.errors import EvacError, Incomplete, LockedError
from evac.hypervisor import Hypervisor
from evac.journal import Disarmed
from evac.model import Disk, Guest, GuestRules
from evac.placement import HostView, Policy
from evac.rebalance import RebalancePlan, RebalanceSettings, plan_rebalance
from evac.testing import EvacKit, FakeFleet, make_plugin_manager
from evac_plugins import rebalance as plugin
from tests.sections import section_error, sections
from tests.unit.test_placement import guest, host

POLICY = Policy(headroom_memory_mib=0)


def plan(*hosts: HostView, **kw: Any) -> RebalancePlan:
    return plan_rebalance(list(hosts), POLICY, **kw)


def small(prefix: str, on: str, count: int, mem: int = 128, **kw: Any) -> tuple[Guest, ...]:
    return tuple(guest(f"{prefix}{i}", on, mem, **kw) for i in range(count))


def moved(p: RebalancePlan) -> dict[str, str]:
    return {m.guest: m.target for m in p.moves}


def pct(p: RebalancePlan, when: str = "after") -> dict[str, float]:
    return {load.host: round(load.memory_pct, 1) for load in getattr(p, when)}


# ---------------------------------------------------------------- balance
def test_a_skewed_fleet_is_evened_until_the_spread_is_within_the_threshold() -> None:
    p = plan(host("h1", 1024, small("g", "h1", 3)), host("h2", 1024), host("h3", 1024))
    assert pct(p, "before") == {"h1": 37.5, "h2": 0.0, "h3": 0.0}
    assert sorted(moved(p).values()) == ["h2", "h3"]
    assert pct(p) == {"h1": 12.5, "h2": 12.5, "h3": 12.5}
    assert p.moves[0].reason.startswith("evens memory load: h1 38% -> 25%, h2 0% -> 12%")


def test_a_fleet_within_the_threshold_is_left_alone() -> None:
    p = plan(host("h1", 1024, small("g", "h1", 1)), host("h2", 1024), threshold=15)
    assert p.moves == () and p.spread_before == 12.5


def test_a_move_that_would_only_swap_the_skew_is_not_made() -> None:
    p = plan(host("h1", 1024, (guest("big", "h1", 512),)), host("h2", 1024), threshold=0)
    assert p.moves == ()  # 50/0 would become 0/50


def test_load_is_a_share_of_each_hosts_capacity_not_raw_memory() -> None:
    p = plan(host("big", 8192, small("g", "big", 4, 512)), host("little", 2048), threshold=5)
    assert pct(p) == {"big": 18.8, "little": 25.0}  # 25%/0% became 19%/25%, not 4 GiB each way


def test_max_moves_caps_the_plan_and_says_the_spread_is_still_above_the_threshold() -> None:
    p = plan(host("h1", 2048, small("g", "h1", 8)), host("h2", 2048), max_moves=2)
    assert len(p.moves) == 2
    assert "stopped at max_moves (2) with the spread above the threshold" in p.warnings


def test_hosts_in_maintenance_down_or_unreachable_are_neither_source_nor_target() -> None:
    p = plan(
        host("h1", 1024, small("g", "h1", 4)),
        host("h2", 1024, small("m", "h2", 4), state="maintenance"),
        host("h3", 1024, state="unreachable"),
        host("h4", 1024),
    )
    assert set(moved(p).values()) == {"h4"} and not set(moved(p)) & {"m0", "m1", "m2", "m3"}
    assert "h3 is unreachable: left out (neither source nor target)" in p.warnings


def test_a_guest_is_never_balanced_off_its_preferred_host() -> None:
    pinned = small("g", "h1", 4, rules=GuestRules(prefer=("h1",)))
    p = plan(host("h1", 1024, pinned), host("h2", 1024))
    assert p.moves == ()


def test_a_balancing_move_goes_only_where_the_hosts_rule_allows() -> None:
    ruled = small("g", "h1", 4, rules=GuestRules(hosts=("h1", "h3")))
    p = plan(host("h1", 1024, ruled), host("h2", 1024), host("h3", 1024))
    assert set(moved(p).values()) == {"h3"}
    assert "within its hosts rule (h1, h3)" in p.moves[0].reason


def test_a_guest_beside_members_of_its_affinity_group_stays_with_them() -> None:
    together = small("g", "h1", 4, affinity=("web",))
    p = plan(host("h1", 1024, together), host("h2", 1024))
    assert p.moves == ()


def test_anti_affinity_keeps_a_guest_off_a_host_with_a_member_of_its_group() -> None:
    h1 = host("h1", 1024, (guest("db1", "h1", 256, anti_affinity=("db",)), *small("g", "h1", 2)))
    h2 = host("h2", 1024, (guest("db2", "h2", 128, anti_affinity=("db",)),))
    p = plan(h1, h2, host("h3", 2048, small("x", "h3", 7)), threshold=0)
    assert moved(p).get("db1") != "h2"


def test_guests_with_local_disks_and_paused_guests_are_not_moved_to_balance() -> None:
    local = guest("local", "h1", 512, disks=(Disk("vda", "/var/lib/x.qcow2", "file", shared=False),))
    paused = guest("paused", "h1", 512, state="paused")
    p = plan(host("h1", 2048, (local, paused)), host("h2", 2048))
    assert p.moves == () and p.spread_before == 50.0


def test_spare_hosts_are_not_balanced_onto_and_not_counted_in_the_spread() -> None:
    p = plan(host("h1", 1024, small("g", "h1", 2)), host("h2", 1024, small("x", "h2", 2)), host("sp", 1024, spare=True))
    assert p.moves == () and p.spread_before == 0.0


# ---------------------------------------------------------------- rule fixes and spares
def test_a_guest_on_a_host_its_rule_forbids_moves_first_whatever_the_load() -> None:
    wrong = guest("db", "h1", 128, rules=GuestRules(hosts=("h2",)))
    p = plan(host("h1", 1024, (wrong,)), host("h2", 1024, small("x", "h2", 2)), host("h3", 1024), threshold=50)
    assert [(m.guest, m.target) for m in p.moves] == [("db", "h2")]
    assert p.moves[0].reason.startswith("rule fix: h1 is outside its hosts rule; ")
    assert p.as_dict()["moves"][0]["kind"] == "rule"


def test_a_rule_fix_no_allowed_host_can_take_stays_with_the_reason() -> None:
    wrong = guest("db", "h1", 512, rules=GuestRules(hosts=("h2", "h3")))
    p = plan(host("h1", 1024, (wrong,)), host("h2", 1024, state="maintenance"), host("h3", 256))
    assert p.moves == ()
    assert p.unplaceable[0].reason == (
        "stays on h1 against its rule: must run on h2, h3: h2: in maintenance; h3: memory: needs 512 MiB, 256 MiB free"
    )


def test_guests_on_a_spare_move_to_regular_hosts_with_room() -> None:
    p = plan(host("h1", 1024), host("sp", 1024, small("g", "sp", 2), spare=True))
    assert set(moved(p)) == {"g0", "g1"}
    assert all(m.reason.startswith("off spare host sp: ") for m in p.moves)


def test_a_spare_keeps_the_guests_no_regular_host_has_room_for() -> None:
    p = plan(host("h1", 200), host("sp", 1024, small("g", "sp", 2), spare=True))
    assert list(moved(p)) == ["g0"]


def test_room_counts_guests_leaving_a_host_until_the_whole_job_is_done() -> None:
    wrong = guest("db", "h2", 512, rules=GuestRules(hosts=("h1",)))
    p = plan(host("h1", 1024, (guest("a", "h1", 512), guest("b", "h1", 256))), host("h2", 1024, (wrong,)))
    # a balancing move of 'a' to h2 would free room on h1 for 'db' only after it finished
    assert p.unplaceable and p.unplaceable[0].guest == "db"


# ---------------------------------------------------------------- properties
@st.composite
def fleets(draw: st.DrawFn) -> list[HostView]:
    names = [f"h{i}" for i in range(draw(st.integers(2, 5)))]
    views = []
    count = 0
    for name in names:
        guests = []
        for _ in range(draw(st.integers(0, 6))):
            count += 1
            rules = GuestRules(
                hosts=tuple(draw(st.lists(st.sampled_from(names), max_size=2, unique=True))),
                prefer=tuple(draw(st.lists(st.sampled_from(names), max_size=1))),
            )
            groups = tuple(draw(st.lists(st.sampled_from(["a", "b"]), max_size=1)))
            guests.append(
                guest(
                    f"g{count}",
                    name,
                    draw(st.integers(64, 1024)),
                    rules=rules,
                    anti_affinity=groups,
                    state=draw(st.sampled_from(["running", "running", "running", "paused", "shutoff"])),
                )
            )
        views.append(
            host(
                name,
                draw(st.integers(1024, 4096)),
                tuple(guests),
                state=draw(st.sampled_from(["up", "up", "up", "maintenance"])),
                spare=draw(st.booleans()) and name != names[0],
            )
        )
    return views


def placed_after(views: list[HostView], p: RebalancePlan) -> dict[str, list[Guest]]:
    where = {v.name: [g for g in v.guests if g.name not in moved(p)] for v in views}
    every = {g.name: g for v in views for g in v.guests}
    for m in p.moves:
        where[m.target].append(every[m.guest])
    return where


@settings(max_examples=200, deadline=None)
@given(views=fleets(), max_moves=st.integers(1, 8), threshold=st.sampled_from([0.0, 5.0, 10.0]))
def test_no_move_breaks_a_rule_and_no_host_ever_holds_more_than_it_can(
    views: list[HostView], max_moves: int, threshold: float
) -> None:
    p = plan_rebalance(views, POLICY, max_moves, threshold)
    by_name = {v.name: v for v in views}
    every = {g.name: g for v in views for g in v.guests}
    assert len(p.moves) <= max_moves
    assert len(moved(p)) == len(p.moves)  # each guest moves once at most
    for m in p.moves:
        g, target = every[m.guest], by_name[m.target]
        assert g.state == "running" and m.source == g.host != m.target
        assert target.state == "up" and by_name[m.source].state == "up"
        assert not g.rules.hosts or m.target in g.rules.hosts
        if p.kinds[m.guest] != "rule":  # a must rule wins over a should rule
            assert not (g.rules.prefer and g.host in g.rules.prefer and m.target not in g.rules.prefer)
        if p.kinds[m.guest] == "balance":
            assert not target.spare
    for name, view in by_name.items():
        # room while the moves run in parallel: every guest that was there, and every arrival
        present = [g for g in view.guests if g.state in ("running", "paused")]
        arriving = [every[m.guest] for m in p.moves if m.target == name]
        if arriving:
            assert sum(g.memory_mib for g in present + arriving) <= view.memory_capacity(POLICY)
            for g in arriving:
                others = [o for o in present + arriving if o.name != g.name]
                assert not set(g.anti_affinity) & {a for o in others for a in o.anti_affinity}


def within_rules(views: list[HostView]) -> list[HostView]:
    """The same fleet with nothing to fix: each guest allowed where it runs, spares empty."""

    def allowed(g: Guest) -> Guest:
        hosts = g.rules.hosts
        return replace(g, rules=replace(g.rules, hosts=(*hosts, g.host) if hosts and g.host not in hosts else hosts))

    return [replace(v, guests=() if v.spare else tuple(map(allowed, v.guests))) for v in views]


@settings(max_examples=200, deadline=None)
@given(views=fleets(), max_moves=st.integers(1, 8), threshold=st.sampled_from([0.0, 5.0, 10.0]))
def test_balancing_never_widens_the_spread(views: list[HostView], max_moves: int, threshold: float) -> None:
    p = plan_rebalance(within_rules(views), POLICY, max_moves, threshold)
    assert set(p.kinds.values()) <= {"balance"}
    assert p.spread_after <= p.spread_before
    if p.moves:
        assert p.spread_before > threshold


@settings(max_examples=100, deadline=None)
@given(views=fleets())
def test_every_running_guest_still_runs_exactly_once_after_the_plan(views: list[HostView]) -> None:
    p = plan_rebalance(views, POLICY, 8, 0.0)
    after = placed_after(views, p)
    names = [g.name for guests in after.values() for g in guests]
    assert sorted(names) == sorted(g.name for v in views for g in v.guests)
    assert sum(load.memory_mib for load in p.after) == sum(load.memory_mib for load in p.before)


# ---------------------------------------------------------------- what front doors read
def test_the_plan_as_a_dict_has_what_slack_and_the_cli_show() -> None:
    d = plan(host("h1", 1024, small("g", "h1", 3)), host("h2", 1024)).as_dict()
    assert set(d["moves"][0]) >= {"guest", "source", "target", "reason", "memory_mib"}
    assert d["unplaceable"] == []
    assert d["before"]["h1"]["memory_pct"] == 37.5 and d["after"]["h2"]["memory_pct"] == 12.5
    assert (d["spread_before"], d["spread_after"]) == (37.5, 12.5)
    assert d["summary"] == "1 move: memory load spread 38 -> 12 points (threshold 10)"
    json.dumps(d)


# ---------------------------------------------------------------- the runbook on a fake fleet
@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> FakeFleet:
    found = FakeFleet()
    monkeypatch.setattr(Hypervisor, "connect", staticmethod(found.connect))
    for name in ("host1", "host2", "host3"):
        found.add_host(name, memory_mib=2048)
    for i in range(3):
        found.add_guest("host1", f"web{i}", memory_mib=512)
    return found


def kit(fleet: FakeFleet, tmp_path: Path) -> EvacKit:
    from evac.sqlitejournal import SqliteJournal

    pm = make_plugin_manager("basics", "drain", "migrate", "rebalance")
    return EvacKit(pm, SqliteJournal(":memory:"), fleet, tmp_path)


def test_the_dry_run_of_the_rebalance_runbook_plans_and_reports_each_move(fleet: FakeFleet, tmp_path: Path) -> None:
    result = kit(fleet, tmp_path).run("rebalance", {"threshold": 5}, dry_run=True, target="fleet")
    assert result.state == "succeeded", result.error
    planned = result.outputs["plan"]
    assert sorted(m["target"] for m in planned["moves"]) == ["host2", "host3"]
    assert [r["result"] for r in result.outputs["report"]["rows"]] == ["would move", "would move"]
    assert any(m.startswith("2 moves: memory load spread") for m in result.messages())


def context(inputs: dict[str, Any], dry_run: bool = False) -> StepContext:
    return StepContext(job_id=1, step="report", inputs=inputs, params={}, dry_run=dry_run)


def test_the_report_fails_when_a_planned_move_did_not_happen_and_lists_what_stays() -> None:
    planned = {
        "moves": [
            {"guest": "a", "source": "h1", "target": "h2", "memory_mib": 1, "reason": "r"},
            {"guest": "b", "source": "h1", "target": "h3", "memory_mib": 1, "reason": "r"},
        ],
        "unplaceable": [{"guest": "c", "memory_mib": 1, "reason": "stays on h1 against its rule: ..."}],
        "spread_before": 40.0,
        "spread_after": 0.0,
    }
    migrated = {"items": {"a": {"guest": "a", "target": "h2", "seconds": 3}}, "failed": {"b": "MigrationError: x"}}
    with pytest.raises(Incomplete) as info:
        plugin.report(context({"plan": planned, "migrate": migrated}))
    rows = {r["guest"]: (r["result"], r["detail"]) for r in info.value.outputs["rows"]}
    assert rows == {
        "a": ("moved", ""),
        "b": ("failed", "MigrationError: x"),
        "c": ("stays", "stays on h1 against its rule: ..."),
    }
    assert str(info.value).startswith("rebalance: 1 of 2 moves done; memory load spread 40 -> 0 points as planned")


# ---------------------------------------------------------------- the rebalance: section
def test_the_section_gives_the_period_and_the_defaults(tmp_path: Path) -> None:
    found = sections(tmp_path, "rebalance:\n  every: 3600\n  max_moves: 3\n  threshold: 12.5\n", plugin)
    assert found["rebalance"] == RebalanceSettings(every=3600.0, max_moves=3, threshold=12.5)


def test_without_the_section_nothing_runs_periodically() -> None:
    assert RebalanceSettings.of({}).every is None
    assert plugin.evac_services(app=object(), config=type("C", (), {"sections": {}})()) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rebalance:\n  every: 5\n", "evac.yaml:2: rebalance.every: expected at least 60 seconds"),
        ("rebalance:\n  evry: 600\n", "evac.yaml:2: rebalance.evry: unknown field (did you mean 'every'?)"),
        ("rebalance:\n  max_moves: 0\n", "evac.yaml:2: rebalance.max_moves: expected a whole number 1-1000, got 0"),
        ("rebalance:\n  threshold: 150\n", "evac.yaml:2: rebalance.threshold: expected percent points 0-100"),
        ("rebalance:\n  every: soon\n", "evac.yaml:2: rebalance.every: expected seconds > 0"),
    ],
)
def test_a_bad_section_is_one_line_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    assert section_error(tmp_path, text, plugin).startswith(message)


# ---------------------------------------------------------------- the periodic service
@dataclass
class FakeJobs:
    locked: bool = False
    started: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    spawned: list[int] = field(default_factory=list)

    def start(self, runbook: str, given: dict[str, Any], actor: Any, target: str = "") -> Any:
        if self.locked:
            raise LockedError("lock 'rebalance' is held by job 7")
        self.started.append((runbook, given, str(actor)))
        return type("Started", (), {"job": 42})()

    def spawn(self, started: Any) -> None:
        self.spawned.append(started.job)


@dataclass
class FakeJournal:
    running: list[Any] = field(default_factory=list)
    held: Disarmed | None = None

    def unfinished_jobs(self) -> list[Any]:
        return self.running

    def disarmed(self) -> Disarmed | None:
        return self.held


@dataclass
class FakeApp:
    jobs: FakeJobs
    journal: FakeJournal = field(default_factory=FakeJournal)
    leader: bool = True
    settings: Any = None

    @property
    def coordination(self) -> Any:
        return type("Coordination", (), {"leads": lambda _self: self.leader})()


SKEWED = plan(host("h1", 1024, small("g", "h1", 3)), host("h2", 1024))
BALANCED = plan(host("h1", 1024), host("h2", 1024))


def service(app: FakeApp, planned: RebalancePlan = SKEWED) -> plugin.RebalanceService:
    made = plugin.RebalanceService(app, RebalanceSettings(every=600, max_moves=4, threshold=7))
    made.plan = lambda: planned
    return made


def test_the_leader_starts_a_rebalance_job_when_the_plan_has_moves() -> None:
    app = FakeApp(FakeJobs())
    assert service(app).tick() == 42
    assert app.jobs.started == [("rebalance", {"max_moves": 4, "threshold": 7.0}, "service:rebalance")]
    assert app.jobs.spawned == [42]


MAINTENANCE = type("Job", (), {"id": 3, "runbook": "maintenance", "dry_run": False})()


@pytest.mark.parametrize(
    ("app", "planned"),
    [
        (FakeApp(FakeJobs()), BALANCED),
        (FakeApp(FakeJobs(), leader=False), SKEWED),
        (FakeApp(FakeJobs(), FakeJournal(running=[MAINTENANCE])), SKEWED),
        (FakeApp(FakeJobs(), FakeJournal(held=Disarmed("window", "cli:ops", 0.0))), SKEWED),
        (FakeApp(FakeJobs(locked=True)), SKEWED),
    ],
    ids=["no moves", "not the leader", "another job runs", "ha disarmed", "a rebalance holds the lock"],
)
def test_no_job_starts_when_there_is_nothing_to_do_or_it_is_not_this_rounds_to_do(
    app: FakeApp, planned: RebalancePlan
) -> None:
    assert service(app, planned).tick() is None
    assert app.jobs.spawned == []


def test_a_round_plans_with_the_sections_limits_on_the_live_fleet(fleet: FakeFleet, tmp_path: Path) -> None:
    app = kit(fleet, tmp_path).app
    made = plugin.RebalanceService(app, RebalanceSettings(every=600, max_moves=1, threshold=5))
    assert [(m.source, m.guest) for m in made.plan().moves] == [("host1", "web0")]


def test_the_service_runs_a_round_every_period_and_stops_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rounds = threading.Event()
    running = service(FakeApp(FakeJobs()))
    running.every = 0.01
    monkeypatch.setattr(running, "tick", lambda: rounds.set())
    running.start()
    assert rounds.wait(10)
    running.stop()
    assert not running._thread.is_alive()


def test_a_round_that_raises_does_not_end_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    twice = threading.Event()
    running = service(FakeApp(FakeJobs()))
    running.every = 0.01

    def tick() -> None:
        calls.append(1)
        if len(calls) >= 2:
            twice.set()
        raise EvacError("etcd gone")

    monkeypatch.setattr(running, "tick", tick)
    running.start()
    assert twice.wait(10)
    running.stop()


# ---------------------------------------------------------------- evac rebalance
@pytest.fixture
def cli_fleet(fleet: FakeFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFleet]:
    lines = ["hosts:", *(f"  - {{name: {h.name}, uri: '{h.spec.uri}'}}" for h in fleet.hosts.values())]
    lines += ["shared_storage: [/srv/shared]"]
    (tmp_path / "hosts.yaml").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "hosts.yaml"))
    monkeypatch.setenv("EVAC_JOURNAL", str(tmp_path / "j.db"))
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    yield fleet


def test_evac_rebalance_dry_run_shows_moves_reasons_and_load_per_host(
    cli_fleet: FakeFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rebalance", "--dry-run", "--threshold", "5"]) == 0
    out = capsys.readouterr().out
    assert "rebalance plan" in out and "evens memory load" in out
    assert "load per host" in out and "1536/1792 MiB (85.7%)" in out  # the default headroom kept free
    assert "2 moves: memory load spread 86 -> 0 points (threshold 5)" in out


def test_evac_rebalance_json_dry_run_is_the_plan_step_output(
    cli_fleet: FakeFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rebalance", "--dry-run", "--json", "--max-moves", "1"]) == 0
    found = json.loads(capsys.readouterr().out)["plan"]
    assert len(found["moves"]) == 1 and found["max_moves"] == 1


def test_evac_rebalance_without_yes_off_a_terminal_starts_nothing(
    cli_fleet: FakeFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rebalance"]) == 2
    assert (
        capsys.readouterr().err.strip() == "evac: error: rebalance: confirm with --yes (or look first with --dry-run)"
    )
    assert main(["history", "--json"]) == 0
    assert [job["dry_run"] for job in json.loads(capsys.readouterr().out)] == [True]  # the preview only


def test_evac_rebalance_refuses_a_threshold_out_of_range_with_one_line(
    cli_fleet: FakeFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["rebalance", "--threshold", "250"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("argument --threshold: expected 0-100 percent points, got 250")


def test_a_balanced_fleet_needs_no_confirmation_and_starts_nothing(
    cli_fleet: FakeFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_fleet.move_guest("web1", "host2")
    cli_fleet.move_guest("web2", "host3")
    assert main(["rebalance"]) == 0
    assert "nothing to move" in capsys.readouterr().out

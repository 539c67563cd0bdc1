"""Admission control: how many host failures the fleet absorbs (never claimed beyond what the
planner can restart), the reserve ``ha:`` asks for, ``evac ha protect`` refused under
``enforce`` when it would break N+1, the metadata it writes, and the service's reserve alerts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evac import admission
from evac.admission import AdmissionMode, Reserve, admit, capacity, check
from evac.cli import main
from evac.errors import AdmissionRefused, ConfigError
from evac.events import Event
from evac.hypervisor import Hypervisor, with_attribute
from evac.jobs import Actor, Channel
from evac.model import Disk, Guest, GuestRules
from evac.placement import HostView, Move, Policy, place
from evac.protection import ReserveState, protect, recorded
from evac.restartpolicy import HaSettings
from evac.sqlitejournal import SqliteJournal
from evac.states import EventKind
from evac.testing import EvacKit, FakeFleet, FakeHypervisor, make_plugin_manager
from evac_plugins import admission as plugin
from evac_plugins import guestha
from tests.sections import section_error, sections
from tests.unit.test_placement import guest, host

POLICY = Policy(headroom_memory_mib=0)


def free(name: str, mem: int = 512, **kw: Any) -> Guest:
    return guest(name, kw.pop("on", "x"), mem, rules=GuestRules(protected=False), **kw)


def fleet3(free_on_host3: int = 900) -> list[HostView]:
    """The issue's example: host3 keeps ``free_on_host3`` MiB free."""
    return [
        host("host1", 8192, (guest("web-1", "host1", 4096),)),
        host("host2", 8192, (guest("web-2", "host2", 2048), guest("web-3", "host2", 2048))),
        host("host3", 4096, (guest("db", "host3", 4096 - free_on_host3),)),
    ]


# ---------------------------------------------------------------- capacity
def test_capacity_says_how_many_failures_and_names_what_the_next_one_leaves_without_room() -> None:
    report = capacity(fleet3(), POLICY)
    assert report.absorbs == 1
    assert report.summary() == (
        "1 host failure: any one host's protected guests fit on the others; not 2: losing host1 and host2 "
        "leaves web-1 (4096 MiB) without room: host3: memory: needs 4096 MiB, 900 MiB free"
    )


def test_a_fleet_that_cannot_lose_even_its_worst_host_absorbs_zero_and_says_why() -> None:
    hosts = [host("h1", 4096, (guest("big", "h1", 3072),)), host("h2", 4096, (guest("b", "h2", 2048),))]
    report = capacity(hosts, POLICY)
    assert report.absorbs == 0
    assert report.summary() == "0 host failures: losing h1 leaves big (3072 MiB) without room: h2: memory: " + (
        "needs 3072 MiB, 2048 MiB free"
    )


def test_unprotected_guests_need_no_restart_but_still_take_room_on_the_survivors() -> None:
    hosts = [
        host("h1", 4096, (free("idle", 3072, on="h1"),)),
        host("h2", 4096, (guest("web", "h2", 2048),)),
    ]
    report = capacity(hosts, POLICY)
    assert (report.absorbs, report.protected, report.unprotected) == (0, 1, 1)
    assert report.shortfall is not None and report.shortfall.lost == ("h2",)


def test_a_hosts_rule_counts_the_lost_hosts_as_lost() -> None:
    pinned = guest("db", "h1", 512, rules=GuestRules(hosts=("h1", "h2")))
    hosts = [host("h1", 4096, (pinned,)), host("h2", 4096), host("h3", 4096)]
    report = capacity(hosts, POLICY)
    assert report.absorbs == 1
    assert str(report.shortfall) == (
        "losing h1 and h2 leaves db (512 MiB) without a host: must run on h1, h2: h1: lost; h2: lost"
    )


def test_anti_affinity_counts_as_the_failover_would_keep_it() -> None:
    a = guest("a", "h1", 256, anti_affinity=("pair",))
    b = guest("b", "h2", 256, anti_affinity=("pair",))
    report = capacity([host("h1", 4096, (a,)), host("h2", 4096, (b,))], POLICY)
    assert report.absorbs == 0 and "anti-affinity group 'pair'" in str(report.shortfall)


def test_stopped_guests_and_guests_with_local_disks_need_no_room_and_are_named() -> None:
    local = guest("scratch", "h1", 4096, disks=(Disk("vda", "/var/lib/x.qcow2", "file", shared=False),))
    hosts = [host("h1", 8192, (local, guest("off", "h1", 4096, state="shutoff"))), host("h2", 1024)]
    report = capacity(hosts, POLICY)
    assert report.shortfall is None and report.stays_down == ("scratch",)
    assert report.summary() == "any number of host failures: no protected guest runs on the 2 hosts counted"


def test_hosts_down_or_unreachable_are_not_counted_and_maintenance_hosts_only_fail() -> None:
    hosts = [
        host("h1", 4096, (guest("a", "h1", 1024),)),
        host("h2", 4096, state="maintenance"),
        host("h3", 4096, state="unreachable"),
        host("h4", 4096),
    ]
    report = capacity(hosts, POLICY)
    assert report.not_counted == (("h3", "unreachable"),)
    assert report.absorbs == 1 and report.hosts == 3  # losing h1 and h4 leaves nothing that takes guests
    assert report.total_mib == 8192  # the memory of hosts up


# ---------------------------------------------------------------- never claims more than it can
@st.composite
def fleets(draw: st.DrawFn) -> list[HostView]:
    count = draw(st.integers(1, 10))
    names = [f"h{i}" for i in range(count)]
    views = []
    for name in names:
        guests = tuple(
            guest(
                f"{name}-g{j}",
                name,
                draw(st.sampled_from([256, 512, 1024, 2048])),
                state=draw(st.sampled_from(["running", "running", "running", "shutoff"])),
                anti_affinity=draw(st.sampled_from([(), (), ("pair",)])),
                rules=GuestRules(
                    protected=draw(st.sampled_from([True, True, False])),
                    hosts=draw(st.sampled_from([(), (), tuple(draw(st.lists(st.sampled_from(names), max_size=2)))])),
                ),
            )
            for j in range(draw(st.integers(0, 3)))
        )
        state = draw(st.sampled_from(["up", "up", "up", "maintenance", "unreachable"]))
        views.append(
            host(name, draw(st.sampled_from([2048, 4096, 8192])), guests if state != "unreachable" else (), state=state)
        )
    return views


def restarts_everything(views: list[HostView], lost: tuple[str, ...]) -> bool:
    """Written apart from the module: one lost host after the other, each restart landing."""
    for source in lost:
        src = next(v for v in views if v.name == source)
        todo = [g for g in src.guests if g.state in ("running", "paused") and g.rules.protected is not False]
        if not todo:
            continue
        moves, stuck = place(todo, source, views, POLICY, exclude=lost)
        if stuck:
            return False
        views = landed(views, todo, moves)
    return True


def landed(views: list[HostView], guests: list[Guest], moves: list[Move]) -> list[HostView]:
    by_name = {g.name: g for g in guests}
    return [
        replace(v, guests=v.guests + tuple(replace(by_name[m.guest], host=v.name) for m in moves if m.target == v.name))
        for v in views
    ]


@settings(max_examples=150, deadline=None)
@given(views=fleets())
def test_for_the_number_claimed_every_set_of_that_many_worst_hosts_leaves_a_placement(views: list[HostView]) -> None:
    report = capacity(views, POLICY)
    if report.absorbs and report.shortfall is not None:
        for lost in combinations(report.worst, report.absorbs):
            assert restarts_everything(views, lost), f"claimed {report.absorbs}, but losing {lost} strands a guest"


@settings(max_examples=150, deadline=None)
@given(views=fleets())
def test_the_failure_named_beyond_the_claim_really_strands_its_guest(views: list[HostView]) -> None:
    report = capacity(views, POLICY)
    if report.shortfall is not None:
        assert len(report.shortfall.lost) == report.absorbs + 1
        assert not restarts_everything(views, report.shortfall.lost)
    else:
        assert report.protected == 0


@settings(max_examples=100, deadline=None)
@given(views=fleets(), n=st.integers(0, 3))
def test_a_host_reserve_holds_only_if_every_set_of_that_many_worst_hosts_leaves_a_placement(
    views: list[HostView], n: int
) -> None:
    verdict = check(views, Reserve(n), POLICY)
    ordered = admission.candidates(views)
    if verdict.holds and 0 < n <= len(ordered):
        for lost in combinations(admission.window(ordered, n), n):
            assert restarts_everything(views, lost)


def big_fleet(hosts: int = 100, per_host: int = 6) -> list[HostView]:
    return [
        host(
            f"h{i:03}", 65536, tuple(guest(f"h{i:03}-g{j}", f"h{i:03}", 1024 + 256 * (i % 5)) for j in range(per_host))
        )
        for i in range(hosts)
    ]


def test_a_hundred_hosts_cost_a_bounded_number_of_placements(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counted(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        return place(*args, **kw)

    monkeypatch.setattr(admission, "place", counted)
    report = capacity(big_fleet(), POLICY)
    assert report.absorbs > 10 and report.shortfall is not None
    assert len(calls) < 1000  # every set of up to 100 hosts would be 2**100 sets
    assert len(report.worst) >= report.absorbs
    assert report.summary().startswith(f"{report.absorbs} host failures: the {report.absorbs} most loaded hosts'")
    assert f"not {report.absorbs + 1}: losing {report.absorbs + 1} hosts (h" in report.summary()


# ---------------------------------------------------------------- the reserve
def test_a_host_reserve_holds_while_that_many_failures_are_absorbed() -> None:
    assert check(fleet3(), Reserve(1), POLICY).holds
    broken = check(fleet3(), Reserve(2), POLICY)
    assert not broken.holds
    assert broken.why.startswith("reserve 2 hosts broken: losing host1 and host2 leaves web-1 (4096 MiB)")


def test_a_percent_reserve_is_the_share_of_the_fleets_memory_kept_free() -> None:
    verdict = check(fleet3(), Reserve(percent=50), POLICY)
    assert not verdict.holds
    assert verdict.why == "reserve 50% of memory broken: 44.4% of the fleet's memory free (9092 of 20480 MiB)"
    assert check(fleet3(), Reserve(percent=40), POLICY).holds


def test_a_reserve_of_zero_hosts_always_holds() -> None:
    assert check([host("h1", 1024, (guest("a", "h1", 1024),))], Reserve(0), POLICY).holds


# ---------------------------------------------------------------- admission
def test_admission_enforce_refuses_the_guest_that_would_break_n_plus_1() -> None:
    hosts = [
        host("h1", 4096, (free("big", 3072, on="h1"),)),
        host("h2", 3584, (free("small", 1024, on="h2"),)),
    ]
    assert admit(hosts, "small", Reserve(1), POLICY).breaks is False  # 1024 fits beside big on h1
    found = admit(hosts, "big", Reserve(1), POLICY)
    assert found.breaks and found.before.holds
    assert found.why() == (
        "protecting big would break the reserve: reserve 1 host broken: losing h1 leaves big (3072 MiB) "
        "without room: h2: memory: needs 3072 MiB, 2560 MiB free"
    )


def test_protecting_a_guest_protected_already_stopped_or_on_local_disks_changes_nothing() -> None:
    local = free("local", 4096, on="h1", disks=(Disk("vda", "/var/x", "file", shared=False),))
    hosts = [host("h1", 8192, (guest("on", "h1", 4096), free("off", 4096, on="h1", state="shutoff"), local))]
    notes = {name: admit(hosts, name, Reserve(1), POLICY).note for name in ("on", "off", "local")}
    assert notes == {
        "on": "protected already",
        "off": "shutoff: counted once it runs",
        "local": "local disks: a failover cannot restart it elsewhere",
    }
    assert not any(admit(hosts, name, Reserve(1), POLICY).breaks for name in notes)


def test_a_guest_no_host_defines_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        admit(fleet3(), "nope", Reserve(1), POLICY)


# ---------------------------------------------------------------- the ha: section
def test_admission_and_reserve_default_to_warn_and_one_host(tmp_path: Path) -> None:
    found = HaSettings.of(sections(tmp_path, "ha:\n  max_restart: 2\n", guestha))
    assert (found.admission, found.reserve) == (AdmissionMode.WARN, Reserve(1))


@pytest.mark.parametrize(
    ("text", "reserve"),
    [("2", Reserve(2)), ("0", Reserve(0)), ("'25%'", Reserve(percent=25)), ("12.5%", Reserve(percent=12.5))],
)
def test_the_reserve_is_hosts_or_a_percent_of_memory(tmp_path: Path, text: str, reserve: Reserve) -> None:
    found = HaSettings.of(sections(tmp_path, f"ha:\n  admission: enforce\n  reserve: {text}\n", guestha))
    assert (found.admission, found.reserve) == (AdmissionMode.ENFORCE, reserve)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ha:\n  admission: strict\n", "evac.yaml:2: ha.admission: expected warn or enforce, got 'strict'"),
        ("ha:\n  admission: [warn]\n", "evac.yaml:2: ha.admission: expected warn or enforce, got ['warn']"),
        ("ha:\n  reserve: -1\n", "evac.yaml:2: ha.reserve: expected host failures (a whole number 0-1000)"),
        ("ha:\n  reserve: true\n", "evac.yaml:2: ha.reserve: expected host failures"),
        ("ha:\n  reserve: 1.5\n", "evac.yaml:2: ha.reserve: expected host failures"),
        ("ha:\n  reserve: 100%\n", "evac.yaml:2: ha.reserve: expected host failures"),
        ("ha:\n  reserve: lots%\n", "evac.yaml:2: ha.reserve: expected host failures"),
        ("ha:\n  reserv: 1\n", "evac.yaml:2: ha.reserv: unknown field (did you mean 'reserve'?)"),
    ],
)
def test_a_bad_admission_or_reserve_is_one_line_naming_file_line_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    assert section_error(tmp_path, text, guestha).startswith(message)


# ---------------------------------------------------------------- the metadata, through libvirt
@pytest.fixture
def test_driver() -> Iterator[Hypervisor]:
    hv = Hypervisor.connect("t", "test:///default", keepalive=None)
    try:
        yield hv
    finally:
        hv.close()


def test_setting_one_attribute_keeps_the_others_live_and_in_the_persistent_definition(
    test_driver: Hypervisor,
) -> None:
    test_driver.set_guest_metadata("test", "priority", "3")
    test_driver.set_guest_metadata("test", "ha-protected", "no")
    test_driver.set_guest_metadata("test", "ha-protected", "yes")
    for inactive in (False, True):
        xml = test_driver.domain_xml("test", inactive=inactive)
        assert 'ha-protected="yes"' in xml and 'priority="3"' in xml, xml
    assert test_driver.guest("test").rules.protected is True


def test_the_rewritten_element_keeps_its_children_and_drops_a_removed_attribute() -> None:
    given_ = '<guest priority="2" ha-protected="no"><anti-affinity group="web"/></guest>'
    assert with_attribute(given_, "ha-protected", None) == '<guest priority="2"><anti-affinity group="web" /></guest>'
    assert with_attribute(None, "ha-protected", "yes") == '<guest ha-protected="yes" />'


# ---------------------------------------------------------------- protect, on a fake fleet
@dataclass
class Written:
    calls: list[tuple[str, str, str, str | None]] = field(default_factory=list)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeFleet, Written]:
    fleet = FakeFleet()
    monkeypatch.setattr(Hypervisor, "connect", staticmethod(fleet.connect))
    written = Written()

    kept = FakeHypervisor.set_guest_metadata

    def set_guest_metadata(self: FakeHypervisor, name: str, attribute: str, value: str | None) -> None:
        written.calls.append((self.name, name, attribute, value))
        kept(self, name, attribute, value)

    monkeypatch.setattr(FakeHypervisor, "set_guest_metadata", set_guest_metadata)
    fleet.add_host("host1", memory_mib=4352)  # 4096 MiB for guests after the 256 MiB headroom
    fleet.add_host("host2", memory_mib=3840)  # 2560 MiB free beside small: big would not fit
    fleet.add_guest("host1", "big", memory_mib=3072)  # neither says whether it is protected: the config does
    fleet.add_guest("host2", "small", memory_mib=1024)
    return fleet, written


def kit_app(fleet: FakeFleet, tmp_path: Path, config: str = "") -> Any:
    from evac.config import load_config

    pm = make_plugin_manager("guestha", "guests", "admission")
    app = EvacKit(pm, SqliteJournal(":memory:"), fleet, tmp_path).app
    if config:
        (tmp_path / "evac.yaml").write_text(config)
        app.config = load_config(tmp_path / "evac.yaml", pm)
    return app


ME = Actor(Channel.CLI, "ops")
ENFORCE = "guests: {protect: false}\nha: {admission: enforce, reserve: 1}\n"


def test_enforce_refuses_a_protection_that_breaks_the_reserve_writes_nothing_and_audits_it(
    fake: tuple[FakeFleet, Written], tmp_path: Path
) -> None:
    fleet, written = fake
    app = kit_app(fleet, tmp_path, ENFORCE)
    with pytest.raises(AdmissionRefused) as info:
        protect(app, "big", ME)
    assert str(info.value).startswith("protect big: refused by ha.admission: enforce (protecting big would break")
    assert str(info.value).endswith("; nothing changed") and "\n" not in str(info.value)
    assert written.calls == []
    assert [(a.action, a.target) for a in app.journal.audit_log()] == [("ha.protect.refused", "big")]


def test_a_protection_the_reserve_can_carry_is_written_where_the_guest_runs_and_audited(
    fake: tuple[FakeFleet, Written], tmp_path: Path
) -> None:
    fleet, written = fake
    app = kit_app(fleet, tmp_path, ENFORCE)
    done = protect(app, "small", ME)
    assert (done.hosts, done.warning) == (("host2",), "")
    assert written.calls == [("host2", "small", "ha-protected", "yes")]
    protect(app, "small", ME, on=False)
    assert written.calls[-1] == ("host2", "small", "ha-protected", "no")
    assert [a.action for a in app.journal.audit_log()] == ["ha.unprotect", "ha.protect"]


def test_warn_protects_anyway_and_says_what_broke(fake: tuple[FakeFleet, Written], tmp_path: Path) -> None:
    fleet, written = fake
    done = protect(kit_app(fleet, tmp_path, "guests: {protect: false}\n"), "big", ME)
    assert written.calls == [("host1", "big", "ha-protected", "yes")]
    assert done.warning.startswith("protecting big would break the reserve: reserve 1 host broken: losing host1")


def test_an_unknown_guest_is_one_line_with_a_suggestion(fake: tuple[FakeFleet, Written], tmp_path: Path) -> None:
    fleet, _ = fake
    with pytest.raises(ConfigError, match=r"^guest 'bigg': not on any reachable host \(did you mean 'big'\?\)$"):
        protect(kit_app(fleet, tmp_path), "bigg", ME)


# ---------------------------------------------------------------- the CLI
@pytest.fixture
def cli(fake: tuple[FakeFleet, Written], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Written:
    fleet, written = fake
    lines = ["hosts:", *(f"  - {{name: {h.name}, uri: '{h.spec.uri}'}}" for h in fleet.hosts.values())]
    (tmp_path / "hosts.yaml").write_text("\n".join([*lines, "shared_storage: [/srv/shared]"]) + "\n")
    (tmp_path / "evac.yaml").write_text(ENFORCE)
    monkeypatch.setenv("EVAC_CONFIG", str(tmp_path / "evac.yaml"))
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "hosts.yaml"))
    monkeypatch.setenv("EVAC_JOURNAL", str(tmp_path / "j.db"))
    return written


def test_evac_ha_protect_refused_exits_1_with_one_line(cli: Written, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ha", "protect", "big"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("evac: protect big: refused by ha.admission: enforce") and err.count("\n") == 1
    assert cli.calls == []


def test_evac_ha_protect_says_what_it_did(cli: Written, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ha", "protect", "small"]) == 0
    out = capsys.readouterr().out
    assert "small protected: evac restarts it after a host failure (ha-protected on host2" in out


def test_evac_ha_capacity_prints_the_claim_the_reserve_and_each_host(
    cli: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ha", "capacity"]) == 0
    out = capsys.readouterr().out
    assert "capacity: any number of host failures: no protected guest runs" in out
    assert "reserve 1 host holds" in out and "(ha.admission: enforce)" in out
    assert "hosts, worst first" in out


def test_evac_ha_capacity_json_exits_1_while_the_reserve_is_broken(
    cli: Written, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "evac.yaml").write_text("ha: {reserve: 1}\n")  # every guest protected: big strands
    assert main(["ha", "capacity", "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert (found["absorbs"], found["holds"], found["not_more"]["guest"]) == (0, False, "big")
    assert found["not_more"]["lost"] == ["host1"]


# ---------------------------------------------------------------- the service's reserve watch
@dataclass
class Watched:
    journal: SqliteJournal = field(default_factory=lambda: SqliteJournal(":memory:"))
    leader: bool = True
    pm: Any = None
    settings: Any = None
    inventory: Any = None
    heard: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        from evac import hookimpl

        heard = self.heard

        class Ear:
            @hookimpl
            def evac_event(self, event: Event) -> None:
                heard.append(event)

        self.pm = make_plugin_manager(Ear())

    @property
    def coordination(self) -> Any:
        return type("Coordination", (), {"leads": lambda _self: self.leader})()


def watch(app: Watched, verdicts: list[admission.Verdict], monkeypatch: pytest.MonkeyPatch) -> plugin.ReserveWatch:
    monkeypatch.setattr(plugin, "verdict", lambda _app: verdicts.pop(0))
    return plugin.ReserveWatch(app)


HOLDS = check(fleet3(), Reserve(1), POLICY)
BROKEN = check(fleet3(), Reserve(2), POLICY)


def test_the_watch_alerts_once_when_the_reserve_breaks_and_once_when_it_is_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = Watched()
    running = watch(app, [HOLDS, BROKEN, BROKEN, HOLDS, HOLDS], monkeypatch)
    kinds = [running.tick() for _ in range(5)]
    assert [e.kind if e else None for e in kinds] == [
        None,
        EventKind.HA_RESERVE_BROKEN,
        None,
        EventKind.HA_RESERVE_RESTORED,
        None,
    ]
    broke = kinds[1]
    assert broke is not None and broke.item == "fleet" and broke.data["level"] == "alert"
    assert broke.data["reserve"] == "2 hosts" and broke.message == BROKEN.why
    assert [e.kind for e in app.heard] == [EventKind.HA_RESERVE_BROKEN, EventKind.HA_RESERVE_RESTORED]
    assert [e.kind for _, e in app.journal.events(0)] == [EventKind.HA_RESERVE_BROKEN, EventKind.HA_RESERVE_RESTORED]


def test_a_new_leader_does_not_alert_again_about_a_break_already_told(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Watched()
    watch(app, [BROKEN], monkeypatch).tick()
    assert watch(app, [BROKEN], monkeypatch).tick() is None
    assert len(app.heard) == 1


def test_only_the_leader_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Watched(leader=False)
    assert watch(app, [BROKEN], monkeypatch).tick() is None
    assert recorded(app.journal) is None and app.heard == []


def test_the_recorded_state_is_the_last_check(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Watched()
    assert recorded(app.journal) is None
    watch(app, [HOLDS, BROKEN], monkeypatch).tick()
    state = recorded(app.journal)
    assert isinstance(state, ReserveState) and state.holds and state.reserve == "1 host" and state.absorbs == 1


def test_a_message_longer_than_a_slack_line_is_cut() -> None:
    assert len(plugin._one_line("x " * 400)) == plugin.MAX_MESSAGE


def test_serve_runs_the_watch() -> None:
    assert [type(p) for p in plugin.evac_services(app=Watched(), config=None)] == [plugin.ReserveWatch]

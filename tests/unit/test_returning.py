"""Return after maintenance: which drain counts, and which of its guests go back to the host
and why the others stay; then the plugin reading a real journal and the runbook's dry run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evac.cli import main
from evac.model import Guest, GuestRules, Interface
from evac.placement import HostView, Policy
from evac.returning import JobKind, Moved, Origin, PastJob, origins, plan_return
from evac.sqlitejournal import SqliteJournal
from evac.states import HostMode, ItemState, JobState, StepState
from evac.testing import EvacKit, FakeFleet, make_plugin_manager

POLICY = Policy(headroom_memory_mib=0)
RUNBOOKS = Path(__file__).parents[2] / "runbooks"


def guest(name: str, host: str, mem: int = 512, **kw: Any) -> Guest:
    return Guest(
        name=name,
        uuid=name,
        host=host,
        state=kw.pop("state", "running"),
        memory_mib=mem,
        vcpus=kw.pop("vcpus", 1),
        persistent=True,
        **kw,
    )


def host(name: str, mem: int = 4096, guests: tuple[Guest, ...] = (), **kw: Any) -> HostView:
    return HostView(name=name, state=kw.pop("state", "up"), memory_mib=mem, cpus=kw.pop("cpus", 8), guests=guests, **kw)


def drain(job: int, *moves: tuple[str, str], continues: bool = False) -> PastJob:
    """A drain of host3: ``(guest, target)`` pairs."""
    return PastJob(job, JobKind.DRAIN, tuple(Moved(g, "host3", t) for g, t in moves), continues)


def returned(job: int, *moves: tuple[str, str]) -> PastJob:
    """A return to host3: ``(guest, from)`` pairs."""
    return PastJob(job, JobKind.RETURN, tuple(Moved(g, s, "host3") for g, s in moves))


def back(found: dict[str, Origin], *hosts: HostView) -> Any:
    return plan_return("host3", (1,), found, hosts, POLICY)


def origin(name: str, to: str = "host2", job: int = 1) -> dict[str, Origin]:
    return {name: Origin(name, to, job)}


def skipped(plan: Any) -> dict[str, str]:
    return {s.guest: s.reason for s in plan.skipped}


# ---------------------------------------------------------------- which drain counts
def test_the_latest_drain_says_where_each_guest_went() -> None:
    drains, found = origins("host3", [drain(1, ("a", "host1")), drain(4, ("b", "host2"), ("c", "host1"))])
    assert drains == (4,)
    assert found == {"b": Origin("b", "host2", 4), "c": Origin("c", "host1", 4)}


def test_a_drain_begun_in_maintenance_continues_the_one_before_it() -> None:
    history = [drain(1, ("a", "host1")), drain(2, ("b", "host2")), drain(3, ("c", "host1"), continues=True)]
    drains, found = origins("host3", history)
    assert drains == (2, 3)
    assert sorted(found) == ["b", "c"]


def test_a_return_between_drains_ends_the_maintenance_before_it() -> None:
    history = [drain(1, ("a", "host1")), returned(2, ("a", "host1")), drain(3, ("b", "host2"), continues=True)]
    drains, found = origins("host3", history)
    assert (drains, sorted(found)) == ((3,), ["b"])


def test_a_guest_a_later_return_brought_back_is_marked_returned() -> None:
    _, found = origins(
        "host3", [returned(1, ("a", "host1")), drain(2, ("a", "host1"), ("b", "host1")), returned(3, ("a", "host1"))]
    )
    assert found["a"].returned_by == 3
    assert found["b"].returned_by is None


def test_without_a_drain_nothing_returns_and_the_plan_says_why() -> None:
    drains, found = origins("host3", [returned(1, ("a", "host1"))])
    assert (drains, found) == ((), {})
    plan = plan_return("host3", drains, found, [host("host3")], POLICY)
    assert plan.moves == () and plan.warnings == ("no drain of host3 in the journal: nothing to return",)


# ---------------------------------------------------------------- the plan
def test_a_guest_still_running_where_the_drain_put_it_goes_back() -> None:
    plan = back(origin("a"), host("host2", guests=(guest("a", "host2"),)), host("host3"))
    (move,) = plan.moves
    assert (move.guest, move.source, move.target) == ("a", "host2", "host3")
    assert move.reason == "drained by job 1; 3584 MiB left"
    assert plan.skipped == ()


def test_a_guest_moved_elsewhere_since_the_drain_stays() -> None:
    plan = back(origin("a", "host1"), host("host1"), host("host2", guests=(guest("a", "host2"),)), host("host3"))
    assert (plan.moves, skipped(plan)) == ((), {"a": "moved to host2 since the drain"})


def test_a_guest_stopped_since_the_drain_stays() -> None:
    plan = back(origin("a"), host("host2", guests=(guest("a", "host2", state="shutoff"),)), host("host3"))
    assert skipped(plan) == {"a": "not running (shutoff)"}


def test_a_guest_already_on_the_host_is_not_moved() -> None:
    plan = back(origin("a"), host("host2"), host("host3", guests=(guest("a", "host3"),)))
    assert skipped(plan) == {"a": "already on host3"}


def test_a_guest_returned_by_an_earlier_return_job_is_not_returned_twice() -> None:
    found = {"a": Origin("a", "host2", 1, returned_by=5)}
    plan = back(found, host("host2", guests=(guest("a", "host2"),)), host("host3"))
    assert skipped(plan) == {"a": "returned by job 5"}


def test_a_guest_gone_from_every_host_is_reported_and_an_unread_host_is_named() -> None:
    assert skipped(back(origin("a"), host("host2"), host("host3"))) == {"a": "no longer defined on any host"}
    plan = back(origin("a"), host("host2", state="unreachable"), host("host3"))
    assert skipped(plan) == {"a": "not found on any host that answers (host2 did not)"}


def test_no_room_on_the_host_is_the_reason_and_the_most_important_guest_goes_first() -> None:
    found = {"small": Origin("small", "host2", 1), "vip": Origin("vip", "host2", 1)}
    on2 = host("host2", guests=(guest("small", "host2", mem=1024), guest("vip", "host2", mem=1024, priority=10)))
    plan = back(found, on2, host("host3", mem=1536))
    assert [m.guest for m in plan.moves] == ["vip"]
    assert skipped(plan) == {"small": "does not fit on host3: memory: needs 1024 MiB, 512 MiB free"}


def test_a_guest_whose_rules_exclude_the_host_stays() -> None:
    ruled = guest("a", "host2", rules=GuestRules(hosts=("host1", "host2")))
    plan = back(origin("a"), host("host2", guests=(ruled,)), host("host3"))
    assert skipped(plan) == {"a": "its rules keep it off host3 (hosts: host1, host2)"}


def test_anti_affinity_with_a_guest_now_on_the_host_keeps_it_away() -> None:
    db2 = guest("db2", "host3", anti_affinity=("db",))
    plan = back(
        origin("a"), host("host2", guests=(guest("a", "host2", anti_affinity=("db",)),)), host("host3", guests=(db2,))
    )
    assert skipped(plan) == {"a": "does not fit on host3: anti-affinity group 'db'"}


def test_a_bridge_the_host_lost_keeps_the_guest_away() -> None:
    nic = Interface(kind="bridge", source="br-storage")
    plan = back(
        origin("a"),
        host("host2", guests=(guest("a", "host2", interfaces=(nic,)),), bridges=frozenset({"br-storage"})),
        host("host3", bridges=frozenset({"br0"})),
    )
    assert skipped(plan) == {"a": "does not fit on host3: no bridge 'br-storage'"}


def test_a_host_still_in_maintenance_is_planned_as_enabled_since_the_return_enables_it() -> None:
    plan = back(origin("a"), host("host2", guests=(guest("a", "host2"),)), host("host3", state="maintenance"))
    assert [m.target for m in plan.moves] == ["host3"]


def test_nothing_returns_to_a_host_that_is_down() -> None:
    plan = back(origin("a"), host("host2", guests=(guest("a", "host2"),)), host("host3", state="unreachable"))
    assert skipped(plan) == {"a": "host3 is unreachable"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["host1", "host2", "host3", "gone"]),
            st.sampled_from(["running", "shutoff"]),
            st.integers(1, 4),
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, 8),
)
def test_every_drained_guest_is_either_moved_back_or_skipped_with_a_reason_and_the_host_never_overfills(
    guests: list[tuple[str, str, int]], room_gib: int
) -> None:
    found = {f"g{i}": Origin(f"g{i}", "host2", 1) for i in range(len(guests))}
    on: dict[str, list[Guest]] = {"host1": [], "host2": [], "host3": []}
    for i, (where, state, gib) in enumerate(guests):
        if where != "gone":
            on[where].append(guest(f"g{i}", where, mem=gib * 1024, state=state))
    views = [host(name, mem=room_gib * 1024 if name == "host3" else 65536, guests=tuple(g)) for name, g in on.items()]
    plan = plan_return("host3", (1,), found, views, POLICY)
    assert sorted([m.guest for m in plan.moves] + [s.guest for s in plan.skipped]) == sorted(found)
    assert all(m.target == "host3" and m.source == "host2" for m in plan.moves)
    assert all(s.reason for s in plan.skipped)
    used = sum(g.memory_mib for g in on["host3"] if g.state == "running") + sum(m.memory_mib for m in plan.moves)
    assert not plan.moves or used <= room_gib * 1024


# ---------------------------------------------------------------- the plugin, on a journal and a fake fleet
@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> FakeFleet:
    """host3 was drained: web1 to host1, web2 to host2; db1 then moved on to host1."""
    from evac.hypervisor import Hypervisor

    fleet = FakeFleet()
    monkeypatch.setattr(Hypervisor, "connect", staticmethod(fleet.connect))
    for name in ("host1", "host2", "host3"):
        fleet.add_host(name, memory_mib=8192)
    fleet.add_guest("host1", "web1")
    fleet.add_guest("host2", "web2")
    fleet.add_guest("host1", "db1")
    fleet.add_guest("host2", "old", state="shutoff")
    return fleet


def record(
    journal: SqliteJournal, runbook: str, moves: dict[str, tuple[str, str]], dry_run: bool = False, was: str = "enabled"
) -> int:
    """A finished job of ``runbook`` for host3 as the engine records one: its migrate items."""
    job = journal.create_job(runbook, str(RUNBOOKS / f"{runbook}.yaml"), {"host": "host3"}, "host3", dry_run, None)
    journal.save_step(job, "disable", StepState.SUCCEEDED, {"host": "host3", "was": was})
    for name, (source, target) in moves.items():
        outputs = {"guest": name, "source": source, "target": target, "seconds": 1.0}
        journal.save_item(job, "migrate", name, ItemState.SUCCEEDED, outputs)
    journal.finish_job(job, JobState.SUCCEEDED)
    return job


def run_return(fleet: FakeFleet, journal: SqliteJournal, workdir: Path) -> Any:
    kit = EvacKit(make_plugin_manager("basics", "drain", "migrate", "returning"), journal, fleet, workdir)
    return kit.run("maintenance-return", {"host": "host3"}, dry_run=True, target="host3")


def test_the_dry_run_plans_the_recorded_drains_guests_back_and_says_why_others_stay(
    fleet: FakeFleet, tmp_path: Path
) -> None:
    journal = SqliteJournal(":memory:")
    moves = {
        "web1": ("host3", "host1"),
        "web2": ("host3", "host2"),
        "db1": ("host3", "host2"),
        "old": ("host3", "host2"),
    }
    drained = record(journal, "maintenance", moves)
    record(journal, "maintenance", {"web1": ("host3", "host2")}, dry_run=True)  # a dry run moved nothing

    result = run_return(fleet, journal, tmp_path)

    assert result.state == "succeeded", result.error
    plan = result.outputs["plan"]
    assert plan["drains"] == [drained]
    assert {(m["guest"], m["source"], m["target"]) for m in plan["moves"]} == {
        ("web1", "host1", "host3"),
        ("web2", "host2", "host3"),
    }
    assert {s["guest"]: s["reason"] for s in plan["skipped"]} == {
        "db1": "moved to host1 since the drain",
        "old": "not running (shutoff)",
    }
    rows = {r["guest"]: r["result"] for r in result.outputs["report"]["rows"]}
    assert rows == {"web1": "would return", "web2": "would return", "db1": "skipped", "old": "skipped"}
    assert result.outputs["report"]["summary"] == "host3: 2 of 4 guests returned, 2 skipped"


def test_guests_an_earlier_return_brought_back_are_not_planned_again(fleet: FakeFleet, tmp_path: Path) -> None:
    journal = SqliteJournal(":memory:")
    record(journal, "maintenance", {"web1": ("host3", "host1"), "web2": ("host3", "host2")})
    again = record(journal, "maintenance-return", {"web1": ("host1", "host3")})
    fleet.move_guest("web1", "host1")  # moved away again since, by someone else

    plan = run_return(fleet, journal, tmp_path).outputs["plan"]

    assert [m["guest"] for m in plan["moves"]] == ["web2"]
    assert plan["skipped"] == [{"guest": "web1", "reason": f"returned by job {again}"}]


def test_a_forced_drain_of_a_host_in_maintenance_returns_the_earlier_drains_guests_too(
    fleet: FakeFleet, tmp_path: Path
) -> None:
    journal = SqliteJournal(":memory:")
    first = record(journal, "maintenance", {"web1": ("host3", "host1")})
    second = record(journal, "maintenance", {"web2": ("host3", "host2")}, was="maintenance")

    plan = run_return(fleet, journal, tmp_path).outputs["plan"]

    assert plan["drains"] == [first, second]
    assert sorted(m["guest"] for m in plan["moves"]) == ["web1", "web2"]


def test_a_fenced_host_that_answers_loses_its_copies_of_guests_running_elsewhere_before_it_is_enabled(
    fleet: FakeFleet, tmp_path: Path
) -> None:
    journal = SqliteJournal(":memory:")
    journal.set_host_state("host3", HostMode.FENCED, "fenced by lab", "job:1")
    fleet.add_guest("host3", "web1", state="shutoff")  # restarted on host1 while host3 was off
    fleet.add_guest("host3", "spare", state="shutoff")  # runs nowhere: host3's own
    kit = EvacKit(make_plugin_manager("basics", "drain", "migrate", "returning"), journal, fleet, tmp_path)

    result = kit.run("maintenance-return", {"host": "host3"}, target="host3")

    assert result.state == "succeeded", result.error
    assert sorted(fleet.hosts["host3"].guests) == ["spare"]
    assert "host3: removed stale definition of web1, which runs elsewhere" in result.messages()
    assert "host3" not in journal.host_states()  # enabled: no state of its own


def test_a_fenced_host_is_enabled_only_by_the_return_that_cleans_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: host3, uri: 'qemu:///system'}\n")
    monkeypatch.setenv("EVAC_JOURNAL", str(tmp_path / "j.db"))
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "hosts.yaml"))
    SqliteJournal(tmp_path / "j.db").set_host_state("host3", HostMode.FENCED, "fenced by lab", "job:1")

    for verb in ("enable", "disable"):  # disabled first, it could then be enabled
        assert main(["host", verb, "host3"]) == 1
        assert capsys.readouterr().err.strip() == (
            f"evac: host {verb}: host3 is fenced: `evac host enable host3 --return` checks that it answers"
            " and removes its stale guests before it enables it"
        )
    assert main(["host", "list", "--json"]) == 0
    assert [s["state"] for s in json.loads(capsys.readouterr().out)] == ["fenced"]


# ---------------------------------------------------------------- the CLI
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["host", "enable", "host3", "--dry-run"], "evac: error: host enable: --dry-run needs --return"),
        (["host", "disable", "host3", "--yes"], "evac: error: host disable: --yes needs --drain"),
        (["host", "disable", "host3", "-p", "tls=true"], "evac: error: host disable: --param needs --drain"),
    ],
)
def test_a_job_option_without_its_move_flag_is_refused_with_one_line(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVAC_JOURNAL", str(tmp_path / "j.db"))
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == message


@pytest.mark.parametrize(
    ("uri", "argv", "message"),
    [
        (
            "qemu:///system",
            ["host", "enable", "host3", "--return"],
            "evac: error: host enable --return: confirm with --yes (or look first with --dry-run)",
        ),
        (
            "qemu:///system",
            ["host", "disable", "host3", "--drain"],
            "evac: error: host disable --drain: confirm with --yes (or look first with --dry-run)",
        ),
        (
            "qemu+tcp://127.0.0.1:9/system",
            ["host", "disable", "host3", "--drain", "--yes"],
            "evac: error: host disable --drain: host3 does not answer and a drain needs it up"
            " (`evac evacuate host3` fails it over; `evac host disable host3` only marks it)",
        ),
    ],
)
def test_a_refused_move_changes_nothing_and_starts_no_job(
    uri: str,
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "hosts.yaml").write_text(f"hosts:\n  - {{name: host3, uri: '{uri}'}}\n")
    monkeypatch.setenv("EVAC_JOURNAL", str(tmp_path / "j.db"))
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "hosts.yaml"))
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["host", "disable", "host3", "--reason", "disks"]) == 0
    capsys.readouterr()

    assert main(argv) == 2

    assert capsys.readouterr().err.strip() == message
    assert main(["host", "list", "--json"]) == 0
    assert [s["reason"] for s in json.loads(capsys.readouterr().out)] == ["disks"]
    assert main(["history", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []

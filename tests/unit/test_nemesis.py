"""The nemesis bench's pure parts: its seeded schedule, its invariants on recorded
samples, and its report."""

from __future__ import annotations

import random
import time

from hypothesis import given
from hypothesis import strategies as st

from bench.nemesis.faults import (
    AGENT_FAULTS,
    DESTINATION,
    LEADER,
    Fault,
    FaultKind,
    LabShape,
    kinds_for,
    may_overlap,
    schedule,
    takes_member,
)
from bench.nemesis.inject import LOST_HOST_LEFT
from bench.nemesis.invariants import (
    REFUSED,
    Claim,
    Sample,
    double_runs,
    excused,
    fences_by_non_leaders,
    journal_disagrees,
    leader_claims,
    lost_hosts_left,
    refused_starts,
    runs_once,
    transient,
    unfinished,
)
from bench.nemesis.report import Injected, Outcome, as_json, fault_rows, said, text
from bench.nemesis.workload import pick

SHAPE = LabShape(("host1", "host2", "host3", "host4"), ("host1", "host2", "host3"), ("g1", "g2"), agents=True)


def s(t: float, **running: set[str]) -> Sample:
    return Sample(t, {h: frozenset(g) for h, g in running.items()})


@given(st.integers(min_value=0, max_value=2**31))
def test_the_same_seed_gives_the_same_faults(seed: int) -> None:
    assert schedule(seed, SHAPE, 12) == schedule(seed, SHAPE, 12)


def test_different_seeds_give_different_faults() -> None:
    assert schedule(1, SHAPE, 12) != schedule(2, SHAPE, 12)


@given(st.integers(min_value=0, max_value=2**31))
def test_each_fault_targets_what_its_kind_applies_to(seed: int) -> None:
    for rnd in schedule(seed, SHAPE, 20):
        for fault in (rnd.first, rnd.second) if rnd.second else (rnd.first,):
            if fault.kind is FaultKind.KILL_DESTINATION:
                assert fault.target == DESTINATION  # found when a migration is in flight
            elif fault.kind.on_guest:
                assert fault.target in SHAPE.guests
            elif fault.kind in (FaultKind.KILL_CONTROLLER, FaultKind.RESTART_SERVICE):
                assert fault.target in (*SHAPE.members, LEADER)
            elif fault.kind.on_replica_host:
                assert fault.target in SHAPE.members
            else:
                assert fault.target in SHAPE.hosts
            assert 2.0 <= fault.hold <= 6.0


@given(st.integers(min_value=0, max_value=2**31))
def test_overlapping_faults_never_take_two_etcd_members_and_come_while_the_first_holds(seed: int) -> None:
    for rnd in schedule(seed, SHAPE, 30):
        if rnd.second is not None:
            assert not (takes_member(rnd.first, SHAPE) and takes_member(rnd.second, SHAPE))
            assert 0.0 <= rnd.delay <= rnd.first.hold


def test_about_a_third_of_rounds_overlap_and_none_when_overlap_is_off() -> None:
    rounds = schedule(5, SHAPE, 300)
    assert 60 <= sum(r.second is not None for r in rounds) <= 130
    assert all(r.second is None for r in schedule(5, SHAPE, 100, overlap=0.0))


def test_faults_on_one_host_never_overlap_and_a_second_host_fails_only_beside_the_memberless_one() -> None:
    power = Fault(FaultKind.POWER_OFF, "host1", 3.0)
    assert not may_overlap(power, Fault(FaultKind.KILL_CONTROLLER, "host1", 3.0), SHAPE)
    assert not may_overlap(power, Fault(FaultKind.CUT_HOST, "host2", 3.0), SHAPE)
    assert may_overlap(power, Fault(FaultKind.CUT_HOST, "host4", 3.0), SHAPE)
    assert may_overlap(power, Fault(FaultKind.KILL_CONTROLLER, LEADER, 3.0), SHAPE)
    assert may_overlap(Fault(FaultKind.KILL_ETCD, "host2", 3.0), Fault(FaultKind.KILL_QEMU, "g1", 3.0), SHAPE)
    assert not may_overlap(Fault(FaultKind.KILL_ETCD, "host2", 3.0), Fault(FaultKind.KILL_DESTINATION, "", 3.0), SHAPE)


def test_agent_faults_are_drawn_only_where_agents_run() -> None:
    without = LabShape(SHAPE.hosts, SHAPE.members, SHAPE.guests)
    assert not AGENT_FAULTS & set(kinds_for(without))
    assert set(kinds_for(SHAPE)) == set(FaultKind)


def test_the_workload_returns_a_drained_host_before_anything_else() -> None:
    rng = random.Random(3)
    picks = [pick(rng, ["host1", "host2"], None) for _ in range(60)]
    assert {channel for channel, _, _ in picks} == {"cli", "api", "slack"}
    assert {verb for _, verb, _ in picks} == {"drain", "rebalance"}
    assert all(host == "" for _, verb, host in picks if verb == "rebalance")
    assert all(pick(rng, ["host1"], "host2")[1:] == ("return", "host2") for _ in range(10))


def test_a_guest_running_on_two_hosts_in_samples_in_a_row_is_one_violation_however_long_it_lasts() -> None:
    samples = [
        s(0.0, host1={"g1"}, host2=set()),
        s(0.25, host1={"g1"}, host2={"g1"}),
        s(0.5, host1={"g1"}, host2={"g1"}),
        s(0.75, host1={"g1"}, host2={"g1"}),
        s(1.0, host1=set(), host2={"g1"}),
    ]
    (violation,) = double_runs(samples)
    assert violation.t == 0.25 and violation.detail == "g1 running on host1, host2 in 3 samples in a row"


def test_a_double_listing_in_one_sample_only_is_a_switchover_counted_apart() -> None:
    samples = [s(0.0, host1={"g1"}, host2={"g1"}), s(0.25, host1=set(), host2={"g1"})]
    assert double_runs(samples) == [] and transient(samples) == 1


def test_a_paused_incoming_guest_is_not_running_so_a_migration_is_no_violation() -> None:
    # --state-running leaves the paused incoming QEMU out: only one host lists the guest
    assert double_runs([s(0.0, host1={"g1"}, host2=set()), s(0.25, host2={"g1"})]) == []


def test_a_host_that_did_not_answer_hides_nothing_it_did_not_show() -> None:
    assert double_runs([s(0.0, host1={"g1"}), s(0.25, host2={"g1"})]) == []


def test_after_settle_a_guest_must_run_exactly_once_unless_a_job_stopped_it() -> None:
    final = s(9.0, host1={"g1", "g2"}, host2={"g2"})
    lines = [v.detail for v in runs_once(final, ["g1", "g2", "g3", "g4"], stopped=["g4"])]
    assert lines == ["g2 running on host1, host2", "g3 running nowhere"]


def test_a_guest_evac_left_stopped_is_excused_only_until_it_runs_again() -> None:
    samples = [s(1.0, host1={"g1", "g2"}), s(2.0, host1={"g2"}), s(3.0, host1={"g2"}), s(4.0, host1=set())]
    # g1 left stopped at 2.5 s and not run since; g2 left stopped at 2.5 s but ran at 3 s; g3 never ran
    assert excused({"g1": 2.5, "g2": 2.5, "g3": 0.0}, samples) == {"g1", "g3"}


def test_refused_starts_are_counted_per_guest_log() -> None:
    logs = {"host1/g1": f"x\n{REFUSED} on /img\n{REFUSED} again\n", "host2/g1": "fine\n"}
    assert refused_starts(logs) == {"host1/g1": 2}


def test_a_job_still_running_after_the_bound_is_a_violation() -> None:
    jobs = [(1, "maintenance", "host1", "succeeded", True), (2, "host-failure", "host2", "running", False)]
    assert [v.detail for v in unfinished(jobs)] == ["job 2 host-failure host2 still running"]


def test_a_lost_host_evac_did_not_fail_over_within_the_bound_is_a_violation() -> None:
    """Seed 1449909988: host3, reset by its watchdog as its cut healed, stayed down unfenced
    until the nemesis powered it on."""
    notes = [
        "t=288.4s host3 found powered off; reviving it",
        f"t=508.3s ! {LOST_HOST_LEFT}: host3 within 60 s; powering it on anyway; state enabled",
    ]
    (violation,) = lost_hosts_left(notes, LOST_HOST_LEFT)
    assert (violation.invariant, violation.t) == ("every lost host is failed over", 508.3)
    assert violation.detail.startswith(f"! {LOST_HOST_LEFT}: host3")


def test_the_journal_must_record_each_guest_where_virsh_defines_it() -> None:
    defined = {"host1": frozenset({"g1", "other"}), "host2": frozenset()}
    recorded = {"host1": frozenset(), "host2": frozenset({"g1"})}
    details = [v.detail for v in journal_disagrees(defined, recorded, ["g1"])]
    assert details == ["g1 is defined on host1; its snapshot lacks it", "host2's snapshot has g1; virsh does not"]


def test_leader_claims_are_read_from_the_replicas_logs_with_their_time() -> None:
    logs = {
        "host1": "a\n2026-11-28 05:14:10,658 INFO evac.leadership: this replica leads (revision 41)\n",
        "host2": "x\n",
    }
    (claim,) = leader_claims(logs)
    assert (claim.host, claim.revision) == ("host1", 41)
    assert claim.ts == time.mktime(time.strptime("2026-11-28 05:14:10", "%Y-%m-%d %H:%M:%S")) + 0.658


def press(ts: float, token: int | None, caller: str = "host1:10", accepted: bool = True) -> dict[str, object]:
    return {"ts": ts, "host": "host4", "caller": caller, "token": token, "accepted": accepted}


CLAIMS = [Claim(10.0, "host1", 41), Claim(20.0, "host2", 57)]


def test_a_fence_under_the_leadership_of_its_moment_is_no_violation_whoever_pressed() -> None:
    presses = [press(12.0, 41), press(19.0, 41, "vm:99"), press(20.5, 41), press(25.0, 57, "host3:12")]
    assert fences_by_non_leaders(presses, CLAIMS, since=0.0) == []  # 20.5: within SKEW of the new claim


def test_a_fence_with_a_deposed_leaders_token_or_one_nobody_led_with_is_a_violation() -> None:
    presses = [press(22.0, 41), press(23.0, 50), press(24.0, 41, accepted=False), press(1.0, 9), press(26.0, None)]
    stale, unknown = fences_by_non_leaders(presses, CLAIMS, since=2.0)
    assert stale.t == 20.0 and "token 41, after host2 led with revision 57 (2.0 s before)" in stale.detail
    assert unknown.t == 21.0 and "token 50, a revision no replica led with" in unknown.detail


def test_the_report_gives_counts_and_settle_times_per_fault_kind() -> None:
    injected = [
        Injected(1.0, Fault(FaultKind.CUT_HOST, "host2", 3.0), 4.0, recovered=7.0),
        Injected(9.0, Fault(FaultKind.CUT_HOST, "host3", 3.0), None),
        Injected(20.0, Fault(FaultKind.CUT_ETCD, "host1", 2.0), 1.5, recovered=3.5),
        Injected(25.0, Fault(FaultKind.KILL_DESTINATION, "", 3.0), 1.0, overlapping=True),
        Injected(26.0, Fault(FaultKind.CUT_ETCD, "host2", 2.0), 1.0, overlapping=True, recovered=3.0),
    ]
    assert fault_rows(injected) == [
        ["cut etcd traffic", 2, 1, 1.5, 1.5, 3.5, 3.5, 0],
        ["cut host", 2, 0, 4.0, 4.0, 7.0, 7.0, 1],
    ]
    outcome = Outcome(seed=7, seconds=30.0, injected=injected, jobs={"host-failure succeeded": 1})
    assert "seed 7" in text(outcome) and "violations: 0" in text(outcome)
    assert as_json(outcome)["faults_by_kind"] == {"cut host": 2, "cut etcd traffic": 2}


def test_alike_workload_outcomes_are_counted_in_one_row() -> None:
    assert said("job 12") == said("job 7") == "job N"

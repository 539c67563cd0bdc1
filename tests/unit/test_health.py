"""A host is declared down only on evidence from two independent sources, or its BMC.

The rules are data: each source's ``Rule`` says how many dead verdicts in a row confirm
its loss and whether that loss alone is proof. These specs state today's rules for the
built-in sources, and how a source added by a plugin fits them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evac.evidence import Evidence, Rule, Verdict
from evac.health import HostHealth, Loss, judge
from evac.sqlitejournal import SqliteJournal
from evac.states import Health
from evac.stormbrake import StormBrake

RULES = {"libvirt": Rule(), "probe": Rule(confirm=2), "power": Rule(conclusive=True)}


def seen(source: str, verdict: Verdict, at: float, detail: str = "", host: str = "h1") -> Evidence:
    return Evidence(source, host, verdict, detail, at)


def lost(source: str, at: float, detail: str = "") -> Evidence:
    return seen(source, Verdict.DEAD, at, detail)


def fine(source: str, at: float) -> Evidence:
    return seen(source, Verdict.ALIVE, at)


def test_a_host_nothing_is_known_about_yet_is_up() -> None:
    assert HostHealth("h1", RULES).state is Health.UP


def test_lost_libvirt_connection_alone_is_only_suspect() -> None:
    h = HostHealth("h1", RULES)
    assert h.observe(lost("libvirt", 1.0, "libvirt connection lost: keepalive")) is Health.SUSPECT
    assert h.observe(fine("probe", 1.5)) is None
    assert h.reason == "libvirt connection lost: keepalive"


def test_probe_misses_alone_never_make_a_host_down() -> None:
    h = HostHealth("h1", RULES)
    for t in range(10):
        h.observe(lost("probe", float(t), "probe missed"))
    assert h.state is Health.SUSPECT


def test_lost_connection_confirmed_by_probe_misses_is_down() -> None:
    h = HostHealth("h1", RULES)
    h.observe(lost("libvirt", 1.0, "libvirt connection lost: eof"))
    assert h.observe(lost("probe", 1.5, "probe missed")) is None
    assert h.observe(lost("probe", 2.0, "probe missed")) is Health.DOWN
    assert h.reason == "libvirt connection lost: eof and probe missed 2 times in a row"


def test_probe_misses_before_the_connection_is_lost_count_too() -> None:
    h = HostHealth("h1", RULES)
    h.observe(lost("probe", 1.0))
    h.observe(lost("probe", 1.5))
    assert h.observe(lost("libvirt", 2.0)) is Health.DOWN


def test_an_answered_probe_resets_the_miss_count() -> None:
    h = HostHealth("h1", RULES)
    h.observe(lost("libvirt", 1.0))
    h.observe(lost("probe", 1.5))
    h.observe(fine("probe", 2.0))
    h.observe(lost("probe", 2.5))
    assert h.state is Health.SUSPECT


def test_the_miss_count_follows_the_configured_confirmation() -> None:
    h = HostHealth("h1", {**RULES, "probe": Rule(confirm=3)})
    h.observe(lost("libvirt", 1.0))
    h.observe(lost("probe", 1.5))
    assert h.observe(lost("probe", 2.0)) is None
    assert h.observe(lost("probe", 2.5)) is Health.DOWN


def test_bmc_power_off_is_proof_enough() -> None:
    h = HostHealth("h1", RULES)
    assert h.observe(lost("power", 1.0, "power is off (BMC)")) is Health.DOWN
    assert h.reason == "power is off (BMC)"


def test_bmc_power_on_does_not_outvote_two_confirmed_losses() -> None:
    h = HostHealth("h1", RULES)
    h.observe(fine("power", 0.5))
    h.observe(lost("libvirt", 1.0))
    h.observe(lost("probe", 1.5))
    assert h.observe(lost("probe", 2.0)) is Health.DOWN


def test_all_signals_back_is_up_again() -> None:
    h = HostHealth("h1", RULES)
    h.observe(lost("libvirt", 1.0))
    assert h.observe(fine("libvirt", 2.0)) is Health.UP
    assert h.reason == ""


def test_an_unknown_verdict_withdraws_a_sources_loss() -> None:
    h = HostHealth("h1", RULES)
    h.observe(lost("libvirt", 1.0))
    assert h.observe(seen("libvirt", Verdict.UNKNOWN, 2.0)) is Health.UP


def test_every_change_is_kept_with_its_time_and_reason() -> None:
    h = HostHealth("h1", RULES)
    h.observe(lost("libvirt", 1.0, "libvirt connection lost: eof"))
    h.observe(fine("libvirt", 3.0))
    assert h.history == [(1.0, Health.SUSPECT, "libvirt connection lost: eof"), (3.0, Health.UP, "")]
    assert h.since == 3.0


def test_a_plugin_source_counts_as_one_of_the_two_losses() -> None:
    h = HostHealth("h1", {**RULES, "lease": Rule()})
    h.observe(lost("lease", 1.0, "agent lease expired"))
    assert h.state is Health.SUSPECT
    assert h.observe(lost("libvirt", 2.0, "libvirt connection lost: eof")) is Health.DOWN
    assert h.reason == "libvirt connection lost: eof and agent lease expired"  # in the rules' order


def test_a_plugin_source_may_be_declared_conclusive() -> None:
    h = HostHealth("h1", {**RULES, "replicas": Rule(conclusive=True)})
    assert h.observe(lost("replicas", 1.0, "2 of 3 replicas see it dead")) is Health.DOWN


def test_more_losses_can_be_required_when_there_are_more_sources() -> None:
    h = HostHealth("h1", {**RULES, "lease": Rule()}, required_losses=3)
    h.observe(lost("libvirt", 1.0))
    h.observe(lost("lease", 1.0))
    assert h.state is Health.SUSPECT


def test_evidence_from_an_unknown_source_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown evidence source 'lease'; known: libvirt, probe, power"):
        HostHealth("h1", RULES).observe(lost("lease", 1.0))


def test_evidence_about_another_host_is_refused() -> None:
    with pytest.raises(ValueError, match="'h2'"):
        HostHealth("h1", RULES).observe(seen("probe", Verdict.DEAD, 1.0, host="h2"))


def test_judge_is_up_without_losses_and_names_a_dead_sayer_without_detail() -> None:
    assert judge([]) == (Health.UP, "")
    assert judge([Loss("lease", "", 1, Rule())]) == (Health.SUSPECT, "lease says dead")


def test_storm_brake_lets_one_host_fail_over_and_holds_the_second() -> None:
    brake = StormBrake(max_hosts=1, window=60)
    assert brake.host_down("h1", 0.0, fleet_size=3)
    assert not brake.host_down("h2", 1.0, fleet_size=3)
    assert brake.engaged and "2 of 3 hosts down" in brake.reason


def test_storm_brake_forgets_failures_outside_its_window() -> None:
    brake = StormBrake(max_hosts=1, window=60)
    brake.host_down("h1", 0.0, fleet_size=3)
    assert brake.host_down("h2", 61.0, fleet_size=3)


def test_storm_brake_scales_with_the_fleet() -> None:
    brake = StormBrake(max_hosts=1, max_fraction=0.2, window=60)
    assert all(brake.host_down(f"h{i}", float(i), fleet_size=20) for i in range(4))
    assert not brake.host_down("h9", 5.0, fleet_size=20)


def test_released_brake_allows_failover_again() -> None:
    brake = StormBrake(max_hosts=1)
    brake.host_down("h1", 0.0, 3)
    brake.host_down("h2", 0.0, 3)
    brake.release()
    assert brake.host_down("h3", 1.0, 3)


def test_engaged_brake_is_kept_in_the_journal_with_its_first_reason(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    journal.engage_brake("2 of 3 hosts down")
    journal.engage_brake("3 of 3 hosts down")
    held = SqliteJournal(tmp_path / "j.db").brake()  # another process sees it
    assert held is not None and held.reason == "2 of 3 hosts down"


def test_releasing_the_journal_brake_says_whether_one_was_engaged(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    journal.engage_brake("2 of 3 hosts down")
    assert journal.release_brake() is True
    assert journal.brake() is None
    assert journal.release_brake() is False

"""A host is declared down only on evidence from two signals, or its BMC."""

from __future__ import annotations

from pathlib import Path

from evac.health import HostHealth
from evac.sqlitejournal import SqliteJournal
from evac.stormbrake import StormBrake


def test_lost_libvirt_connection_alone_is_only_suspect() -> None:
    h = HostHealth("h1")
    assert h.observe("libvirt", False, 1.0, "keepalive") == "suspect"
    assert h.observe("probe", True, 1.5) is None
    assert h.reason == "libvirt connection lost: keepalive"


def test_probe_misses_alone_never_make_a_host_down() -> None:
    h = HostHealth("h1")
    for t in range(10):
        h.observe("probe", False, float(t))
    assert h.state == "suspect"


def test_lost_connection_confirmed_by_probe_misses_is_down() -> None:
    h = HostHealth("h1", confirm_misses=2)
    h.observe("libvirt", False, 1.0)
    assert h.observe("probe", False, 1.5) is None
    assert h.observe("probe", False, 2.0) == "down"
    assert "2 probes missed" in h.reason


def test_an_answered_probe_resets_the_miss_count() -> None:
    h = HostHealth("h1", confirm_misses=2)
    h.observe("libvirt", False, 1.0)
    h.observe("probe", False, 1.5)
    h.observe("probe", True, 2.0)
    h.observe("probe", False, 2.5)
    assert h.state == "suspect"


def test_bmc_power_off_is_proof_enough() -> None:
    assert HostHealth("h1").observe("power", False, 1.0) == "down"


def test_all_signals_back_is_up_again() -> None:
    h = HostHealth("h1")
    h.observe("libvirt", False, 1.0)
    assert h.observe("libvirt", True, 2.0) == "up"


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

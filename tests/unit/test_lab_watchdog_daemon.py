"""The lab's stand-in for a hardware watchdog: device semantics over a FIFO.

The timer is pure and runs on a given clock here; the daemon's loop runs for real over a
FIFO in a temporary directory, with "power off" recorded instead of killing a lab host
(``tests/integration/test_lab_watchdog.py`` does that).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from evac.lab.plugin import lab_watchdog
from evac.lab.rig import Lab
from evac.lab.watchdog import DEFAULT_TIMEOUT, Timer, watch
from evac.plugins import plugin_manager
from evac.watchdog import FileWatchdog, WatchdogError, watchdog_for, watchdog_methods
from tests.conftest import poll_until


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


# ---------------------------------------------------------------- the timer, on a given clock
def test_the_first_feed_arms_the_timer_with_the_timeout_set_before_it() -> None:
    timer = Timer("host1")
    events = timer.take(b"T3\n\0", mono=100.0, wall=5.0)
    assert kinds(events) == ["timeout_set", "armed"]
    assert events[1] == {
        "ts": 5.0,
        "mono": 100.0,
        "host": "host1",
        "event": "armed",
        "timeout": 3.0,
        "last_fed_ts": 5.0,
    }


def test_an_armed_timer_not_fed_for_its_timeout_is_due() -> None:
    timer = Timer("host1")
    timer.take(b"T3\n\0", mono=100.0, wall=5.0)
    assert not timer.due(102.9)
    assert timer.due(103.0)


def test_each_feed_restarts_the_timer_and_logs_nothing() -> None:
    timer = Timer("host1")
    timer.take(b"T3\n\0", mono=100.0, wall=5.0)
    assert timer.take(b"\0", mono=102.0, wall=7.0) == []
    assert not timer.due(104.9)
    assert timer.due(105.0)


def test_v_then_close_disarms_for_good() -> None:
    timer = Timer("host1")
    timer.take(b"T3\n\0", mono=100.0, wall=5.0)
    timer.take(b"V", mono=101.0, wall=6.0)
    assert kinds(timer.closed(mono=101.0, wall=6.0)) == ["disarmed"]
    assert not timer.due(10_000.0)


def test_a_close_without_v_leaves_the_timer_running() -> None:
    timer = Timer("host1")
    timer.take(b"T3\n\0", mono=100.0, wall=5.0)
    assert kinds(timer.closed(mono=101.0, wall=6.0)) == ["abandoned"]
    assert timer.due(103.0)


def test_a_feed_after_v_takes_the_magic_close_back() -> None:
    timer = Timer("host1")
    timer.take(b"T3\n\0V\0", mono=100.0, wall=5.0)
    assert kinds(timer.closed(mono=101.0, wall=6.0)) == ["abandoned"]


def test_setting_the_timeout_of_an_armed_timer_also_feeds_it() -> None:
    timer = Timer("host1")
    timer.take(b"T3\n\0", mono=100.0, wall=5.0)
    assert kinds(timer.take(b"T10\n", mono=102.0, wall=7.0)) == ["timeout_set"]
    assert not timer.due(111.9)


def test_a_fired_timer_ignores_its_writer_until_it_closes_then_serves_the_next() -> None:
    timer = Timer("host1")
    timer.take(b"T1\n\0", mono=100.0, wall=5.0)
    assert timer.fire(mono=101.0, wall=6.0)["event"] == "fired"
    assert timer.take(b"\0", mono=101.1, wall=6.1) == []  # written before the reset took it
    assert timer.closed(mono=101.2, wall=6.2) == []
    assert kinds(timer.take(b"\0", mono=200.0, wall=9.0)) == ["armed"]


def test_a_bad_timeout_line_is_ignored_and_said_on_stderr() -> None:
    timer = Timer("host1")
    assert timer.take(b"Tsoon\nT-1\n", mono=100.0, wall=5.0) == []
    assert timer.timeout == DEFAULT_TIMEOUT
    assert len(timer.complaints) == 2


# ---------------------------------------------------------------- the daemon's loop over a real FIFO
@dataclass
class Daemon:
    path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    powered_off: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    boots: list[int] = field(default_factory=lambda: [1])  # the host's power-ons so far

    def dog(self) -> FileWatchdog:
        return lab_watchdog({"path": str(self.path), "host": "host1"})

    def logged(self, *wanted: str) -> bool:
        return kinds(self.events)[: len(wanted)] == list(wanted)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    served = Daemon(tmp_path / "watchdog")
    ready = threading.Event()
    thread = threading.Thread(
        target=watch,
        args=(served.path, "host1", served.powered_off.set, served.events.append, served.stop),
        kwargs={"ready": ready.set, "boot": lambda: len(served.boots)},
        daemon=True,
    )
    thread.start()
    assert ready.wait(10), "the watchdog loop never made its FIFO"
    yield served
    served.stop.set()
    thread.join(10)


def test_a_watchdog_armed_over_the_fifo_and_abandoned_powers_the_host_off(daemon: Daemon) -> None:
    dog = daemon.dog()
    assert dog.arm(0.2) == 0.2
    dog.abandon()
    assert daemon.powered_off.wait(10)
    assert kinds(daemon.events) == ["timeout_set", "armed", "abandoned", "fired"]


def test_a_watchdog_whose_host_was_power_cycled_since_it_armed_does_not_reset_the_new_boot(daemon: Daemon) -> None:
    """Fenced by the power switch, the host's agent dies without the magic close; the host
    is powered on again before the old timer is due. A real watchdog lost power too."""
    dog = daemon.dog()
    dog.arm(3.0)  # time enough to see it armed before it is due
    poll_until(lambda: daemon.logged("timeout_set", "armed"), 10, "the timer armed")
    daemon.boots.append(2)
    dog.abandon()
    poll_until(lambda: daemon.logged("timeout_set", "armed", "abandoned", "powered_off"), 10, "the timer's end")
    assert not daemon.powered_off.is_set()


def test_a_watchdog_disarmed_over_the_fifo_is_logged_as_disarmed(daemon: Daemon) -> None:
    dog = daemon.dog()
    dog.arm(60)
    dog.feed()
    dog.disarm()
    poll_until(lambda: daemon.logged("timeout_set", "armed", "disarmed"), 10, "the magic close")
    assert not daemon.powered_off.is_set()


def test_the_fifo_serves_one_writer_after_another(daemon: Daemon) -> None:
    first = daemon.dog()
    first.arm(60)
    first.disarm()
    poll_until(lambda: daemon.logged("timeout_set", "armed", "disarmed"), 10, "the first writer's magic close")
    second = daemon.dog()
    second.arm(0.2)
    assert daemon.powered_off.wait(10)
    assert kinds(daemon.events)[3:] == ["timeout_set", "armed", "fired"]
    second.disarm()


def test_the_fifo_is_removed_when_the_daemon_stops(daemon: Daemon) -> None:
    daemon.stop.set()
    poll_until(lambda: not daemon.path.exists(), 10, "the FIFO removed")


# ---------------------------------------------------------------- the lab watchdog method
def test_opening_a_fifo_no_daemon_reads_fails_at_once_saying_the_daemon_is_not_running(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "watchdog")
    dog = lab_watchdog({"path": str(tmp_path / "watchdog"), "host": "host2"})
    with pytest.raises(WatchdogError, match=r"^lab watchdog for host2 is not running \(evac lab up starts it\)$"):
        dog.arm(3)


def test_a_missing_fifo_is_a_daemon_that_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(WatchdogError, match="lab watchdog for host2 is not running"):
        lab_watchdog({"path": str(tmp_path / "watchdog"), "host": "host2"}).arm(3)


def test_the_lab_method_finds_the_hosts_fifo_in_the_lab_directory(tmp_path: Path) -> None:
    pm = plugin_manager(load_entrypoints=False, modules=("evac.lab.plugin",))
    assert "lab" in watchdog_methods(pm)
    dog = watchdog_for(pm, {"method": "lab", "lab_dir": str(tmp_path), "host": "host2"})
    assert isinstance(dog, FileWatchdog)
    assert dog.path == Lab(tmp_path).watchdog_path("host2") == tmp_path / "hosts" / "host2" / "watchdog"


def test_the_lab_method_defaults_to_this_machines_name_as_inside_a_lab_host(tmp_path: Path) -> None:
    dog = lab_watchdog({"lab_dir": str(tmp_path)})
    assert dog.path == tmp_path / "hosts" / os.uname().nodename / "watchdog"

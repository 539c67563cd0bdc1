"""The lab's watchdog daemon powers its host off, as a hardware watchdog resets a machine.

On the shared test lab: each test starts host3's daemon, and leaves it stopped and host3
powered on, as the other tests expect to find it. Outcomes are read outside the code under
test where they can be: the lab's power state, and the daemon's ``watchdog.log``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evac.lab import Lab
from evac.lab.processes import alive
from evac.lab.provisioning import INVENTORY_PLUGINS
from evac.lab.watchdog import watch
from evac.plugins import plugin_manager
from evac.watchdog import Watchdog, watchdog_for
from tests.conftest import poll_until

HOST = "host3"
POWER_OFF_WAIT = 30.0  # a deadline for the poll, not a promise about the timer


@pytest.fixture
def daemon(lab: Lab) -> Iterator[Lab]:
    """host3's watchdog daemon; afterwards stopped first (an armed timer dies with it), then
    host3 powered on again."""
    lab.start_watchdog(HOST)
    try:
        yield lab
    finally:
        lab.stop_watchdog(HOST)
        if lab.power_state(HOST) == "off":
            lab.start_host(HOST)


def lab_dog(lab: Lab) -> Watchdog:
    pm = plugin_manager(load_entrypoints=False, modules=INVENTORY_PLUGINS)
    return watchdog_for(pm, {"method": "lab", "lab_dir": str(lab.root), "host": HOST})


def logged(lab: Lab, since: float) -> list[dict[str, Any]]:
    return [e for e in lab.watchdog_log() if e["host"] == HOST and e["ts"] >= since]


def kinds(lab: Lab, since: float) -> list[str]:
    return [e["event"] for e in logged(lab, since)]


def test_the_watchdog_fifo_is_at_the_same_path_inside_the_host(daemon: Lab) -> None:
    assert daemon.exec(HOST, "test", "-p", str(daemon.watchdog_path(HOST)), check=False).returncode == 0


def test_starting_a_running_watchdog_daemon_again_keeps_it(daemon: Lab) -> None:
    pid = daemon.watchdog_pid(HOST)
    daemon.start_watchdog(HOST)
    assert pid is not None and daemon.watchdog_pid(HOST) == pid


def test_a_stopped_watchdog_daemon_leaves_no_fifo_and_no_process(daemon: Lab) -> None:
    pid = daemon.watchdog_pid(HOST)
    daemon.stop_watchdog(HOST)
    assert not daemon.watchdog_running(HOST)
    assert not daemon.watchdog_path(HOST).exists()
    assert pid is not None and not alive(pid)


def test_a_watchdog_armed_for_1_s_and_never_fed_again_powers_its_host_off(daemon: Lab) -> None:
    since = time.time()
    dog = lab_dog(daemon)
    assert dog.arm(1.0) == 1.0
    try:
        poll_until(lambda: daemon.power_state(HOST) == "off", POWER_OFF_WAIT, f"{HOST} powered off by its watchdog")
    finally:
        dog.abandon()
    assert kinds(daemon, since) == ["timeout_set", "armed", "fired"]
    assert daemon.watchdog_running(HOST), "the daemon lives outside the host: it outlives the power off"


def test_a_disarmed_watchdog_does_not_power_its_host_off(daemon: Lab, tmp_path: Path) -> None:
    """Proved against a witness rather than a sleep: a second timer running the daemon's
    code, armed after the magic close with twice the timeout. Had the disarmed timer kept
    running, it would have fired before the witness did."""
    since = time.time()
    dog = lab_dog(daemon)
    dog.arm(1.0)
    dog.disarm()
    poll_until(lambda: "disarmed" in kinds(daemon, since), 10, "the magic close logged")
    witnessed, stop, ready = threading.Event(), threading.Event(), threading.Event()
    witness_path = tmp_path / "witness"
    thread = threading.Thread(
        target=watch, args=(witness_path, "witness", witnessed.set, lambda _e: None, stop), kwargs={"ready": ready.set}
    )
    thread.start()
    try:
        assert ready.wait(10)
        witness = watchdog_for(
            plugin_manager(load_entrypoints=False, modules=INVENTORY_PLUGINS),
            {"method": "lab", "path": str(witness_path), "host": "witness"},
        )
        witness.arm(2.0)
        witness.abandon()
        assert witnessed.wait(POWER_OFF_WAIT), "the witness never fired"
    finally:
        stop.set()
        thread.join(10)
    assert kinds(daemon, since) == ["timeout_set", "armed", "disarmed"]
    assert daemon.power_state(HOST) == "on"


def test_an_abandoned_watchdog_powers_its_host_off(daemon: Lab) -> None:
    """Armed from inside the host, by a process that exits without the magic close (a
    crash): the FIFO's path and the host's own name as the default both hold in there."""
    code = (
        "from evac.plugins import plugin_manager\n"
        "from evac.watchdog import watchdog_for\n"
        f"pm = plugin_manager(load_entrypoints=False, modules={INVENTORY_PLUGINS!r})\n"
        f"watchdog_for(pm, {{'method': 'lab', 'lab_dir': {str(daemon.root)!r}}}).arm(1.0)\n"
    )
    since = time.time()
    daemon.exec(HOST, sys.executable, "-c", code)
    poll_until(lambda: daemon.power_state(HOST) == "off", POWER_OFF_WAIT, f"{HOST} powered off by its watchdog")
    assert kinds(daemon, since) == ["timeout_set", "armed", "abandoned", "fired"]
    (fired,) = [e for e in logged(daemon, since) if e["event"] == "fired"]
    assert fired["timeout"] == 1.0 and fired["last_fed_ts"] >= since

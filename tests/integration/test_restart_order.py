"""`after:` ordering is honoured in a failover: B starts only after A answers.

Proved from outside evac: B's QEMU process on its new host started after the lab's
client saw A's first echo answer once A came back, whatever evac itself reports.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from evac.app import App
from evac.domainxml import EVAC_NS
from evac.hypervisor import Hypervisor
from evac.jobs import Actor, Channel
from evac.lab import Lab
from evac.lab.guests import qemu_pids, wait_console
from evac.snapshots import take_snapshot
from tests.conftest import poll_until
from tests.integration.conftest import placements

TICK = 1 / os.sysconf("SC_CLK_TCK")  # the resolution of a process's start time


def set_guest_metadata(lab: Lab, host: str, name: str, **attrs: str) -> None:
    """Replace the guest's ``<evac:guest>`` element, live and in its definition, as an
    operator would with ``virsh metadata`` (the lab's guests carry only priority and address)."""
    element = "<guest" + "".join(f' {key}="{value}"' for key, value in attrs.items()) + "/>"
    virsh = ["virsh", "-q", "-c", lab.host(host).uri, "metadata", name, EVAC_NS, "--key", "evac"]
    subprocess.run(
        [*virsh, "--set", element, "--live", "--config"],
        check=True,
        capture_output=True,
    )


def started_at(pid: int) -> float:
    """When a process started, as ``time.monotonic()`` (which the lab's probe uses)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return ticks * TICK - (time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic())


def test_a_guest_restarted_after_another_starts_only_once_that_one_answers_echoes(
    lab: Lab, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    a, b = make_guest("host2", wait=False), make_guest("host2", wait=False)
    set_guest_metadata(lab, "host2", a, priority="0", address=lab.guest_address(a), ready="echo")
    set_guest_metadata(lab, "host2", b, priority="9", address=lab.guest_address(b), after=a)
    app = App(inventory_path=lab.inventory_file, journal_path=tmp_path / "j.db")
    with Hypervisor.connect("host2", lab.host("host2").uri) as hv:
        assert take_snapshot(app, "host2", hv) == 2
    wait_console(lab, a, timeout=300)
    wait_console(lab, b, timeout=300)
    try:
        with lab.probe([a]) as probe:
            poll_until(lambda: a in probe.latest and probe.latest[a].answering, 60, f"{a} answers the client")
            killed = time.monotonic()
            lab.kill_host("host2")
            started = app.jobs.fail_over("host2", Actor(Channel.CLI, "test"), "killed by the test")
            result = app.jobs.run(started)
            assert result.state == "succeeded", result.error
            echoes = probe.stop()[a]
    finally:
        lab.start_host("host2")
    plan = result.outputs["plan"]
    assert [(m["guest"], m["wave"], m["after"]) for m in plan["moves"]] == [(a, 1, []), (b, 2, [a])]
    assert result.outputs["restart"]["items"][b]["waited"] == ""  # A was ready in time
    back = echoes.back_after(killed)
    assert back is not None, f"{a} never answered again"
    (pid,) = qemu_pids(b)
    assert started_at(pid) >= back - TICK, f"{b} started {back - started_at(pid):.3f} s before {a} answered"
    for name in (a, b):
        running = [h for h, (state, _) in placements(app.inventory, name).items() if state == "running"]
        assert len(running) == 1 and running != ["host2"], (name, running)

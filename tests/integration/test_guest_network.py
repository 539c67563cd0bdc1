"""What a guest's users see: the lab's guest segment, its client's echoes, and announces."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from evac.app import App, make_app
from evac.inventory import Inventory
from evac.lab import Lab
from evac.lab.fabric import guest_mac
from evac.runbook import parse_runbook
from evac.yamldoc import load_text
from tests.conftest import poll_until
from tests.integration.test_drain import assert_once_elsewhere, drain


def answering(probe: object, name: str, more_than: int = 0) -> Callable[[], bool]:
    def test() -> bool:
        latest = probe.latest.get(name)  # type: ignore[attr-defined]
        return latest is not None and latest.answered > more_than and latest.answering

    return test


def test_a_guest_paused_for_two_seconds_shows_as_a_gap_to_the_client(lab: Lab, make_guest: Callable[..., str]) -> None:
    name = make_guest("host1")
    uri = lab.host("host1").uri
    with lab.probe([name]) as probe:
        poll_until(answering(probe, name), 30, f"{name} answers the client")
        subprocess.run(["virsh", "-q", "-c", uri, "suspend", name], check=True, capture_output=True)
        paused = time.monotonic()
        poll_until(lambda: time.monotonic() - paused >= 2, 10, "two seconds of pause")
        subprocess.run(["virsh", "-q", "-c", uri, "resume", name], check=True, capture_output=True)
        sent = probe.latest[name].sent
        poll_until(answering(probe, name, more_than=sent), 30, f"{name} answers again")
        echoes = probe.stop()[name]

    whole = echoes.stats()
    assert whole.longest_gap >= 2.0
    assert echoes.stats(after=paused + 2.1).first_answer is not None


def checked_app(lab: Lab, tmp_path: Path, timeout: float = 5) -> App:
    """An app whose config checks every guest's network with ping after a move."""
    config = tmp_path / "evac.yaml"
    config.write_text(
        f"inventory: {lab.inventory_file}\njournal: {tmp_path / 'j.db'}\n"
        f"verify: {{network: {{check: icmp, timeout: {timeout}}}}}\n"
    )
    return make_app(config)


def test_a_drained_guest_answers_the_client_from_its_new_host_which_announced_it(
    lab: Lab, inventory: Inventory, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    app = checked_app(lab, tmp_path)
    name = make_guest("host3")
    with lab.capture() as capture, lab.probe([name]) as probe:
        poll_until(answering(probe, name), 30, f"{name} answers the client")
        started = time.time()
        result = drain(app, "host3")
        moved = time.monotonic()
        sent = probe.latest[name].sent
        poll_until(answering(probe, name, more_than=sent), 30, f"{name} answers from its new host")
        echoes = probe.stop()[name]
        poll_until(lambda: capture.first(guest_mac(name), started) is not None, 10, "an announce on the segment")

    assert result.state == "succeeded", result.error  # vm.verify pinged it at its new host
    assert_once_elsewhere(inventory, name, "host3")
    assert echoes.stats(after=moved).first_answer is not None
    (row,) = [r for r in result.outputs["report"]["rows"] if r["guest"] == name]
    assert row["unanswered_s"] is not None  # evac watched it during the move, and says so


def test_a_guest_moved_in_post_copy_is_announced_too(lab: Lab, make_guest: Callable[..., str]) -> None:
    name = make_guest("host1", memory_mib=256, dirty_mb=32)  # busy: its first pass leaves pages behind
    source = lab.host("host1").uri
    with lab.capture() as capture:
        started = time.time()
        subprocess.run(
            [
                "virsh", "-q", "-c", source, "migrate", "--live", "--p2p", "--persistent", "--unsafe",
                "--postcopy", "--postcopy-after-precopy", "--bandwidth", "50", name, lab.host("host2").uri,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        poll_until(lambda: capture.first(guest_mac(name), started) is not None, 10, "an announce after post-copy")
    job = subprocess.run(["virsh", "-c", source, "domjobinfo", "--completed", name], capture_output=True, text=True)
    subprocess.run(["virsh", "-q", "-c", source, "undefine", name], check=True, capture_output=True)

    assert "Postcopy requests" in job.stdout, job.stdout  # the move did finish in post-copy
    assert capture.first(guest_mac(name), started) is not None


def test_a_guest_that_does_not_answer_on_its_target_fails_verify_with_the_reason(
    lab: Lab, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    app = checked_app(lab, tmp_path, timeout=2)
    name = make_guest("host1")
    target = lab.host("host2").uri
    subprocess.run(
        ["virsh", "-q", "-c", lab.host("host1").uri, "migrate", "--live", "--p2p", "--persistent",
         "--undefinesource", "--unsafe", name, target],
        check=True,
        capture_output=True,
    )  # fmt: skip
    book = parse_runbook(
        load_text(
            f"name: check\nsteps:\n  - id: verify\n    action: vm.verify\n"
            f"    with: {{guest: {name}, target: host2, source: host1}}\n",
            "test",
        ),
        "test",
    )
    setlink = ["virsh", "-q", "-c", target, "domif-setlink", name, guest_mac(name)]
    subprocess.run([*setlink, "down"], check=True, capture_output=True)  # the NIC unplugged on the target

    unplugged = app.engine.execute(book, {})
    subprocess.run([*setlink, "up"], check=True, capture_output=True)
    plugged = app.engine.execute(book, {})

    assert unplugged.state == "failed"
    address = lab.known_guest_addresses()[name]
    assert f"{name} runs on host2 but does not answer icmp at {address}" in str(unplugged.error)
    assert plugged.state == "succeeded", plugged.error


def test_a_cut_host_takes_its_guests_off_the_network_with_it(lab: Lab, make_guest: Callable[..., str]) -> None:
    name = make_guest("host3")
    with lab.probe([name]) as probe:
        poll_until(answering(probe, name), 30, f"{name} answers the client")
        lab.cut("host3")
        try:
            poll_until(lambda: not probe.latest[name].answering, 30, f"{name} stops answering")
        finally:
            lab.heal("host3")
        poll_until(answering(probe, name, more_than=probe.latest[name].answered), 30, f"{name} answers again")

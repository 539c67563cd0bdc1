"""The built-in ``evac_verify_guest``: a moved guest that has a network check must answer it
within its timeout, probed for real on loopback."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pluggy
import pytest

from evac.config import ServiceConfig, load_config
from evac.inventory import HostSpec
from evac.model import Guest, VerifyMetadata
from evac.plugins import plugin_manager
from evac_plugins import reachability
from tests.conftest import require
from tests.udpecho import UdpEcho

HOST = HostSpec("host2", "qemu+tcp://host2/system")


@dataclass
class App:
    """What the hook reads of the application: its settings."""

    pm: pluggy.PluginManager
    settings: ServiceConfig


def app(tmp_path: Path, text: str = "") -> App:
    pm = plugin_manager(load_entrypoints=False)
    if not pm.is_registered(reachability):  # $EVAC_PLUGINS may name it
        pm.register(reachability)
    path = tmp_path / "evac.yaml"
    path.write_text(text or "journal: j.db\n")
    return App(pm, load_config(path, pm))


def guest(
    address: str | None = "127.0.0.1",
    network: str | None = None,
    timeout: str | None = None,
    tags: tuple[str, ...] = (),
) -> Guest:
    return Guest(
        "web1",
        "u-1",
        "host2",
        "running",
        256,
        1,
        True,
        address=address,
        tags=tags,
        verify=VerifyMetadata(network, timeout),
    )


def verify(application: App, moved: Guest) -> list[str]:
    reasons: list[str] = application.pm.hook.evac_verify_guest(guest=moved, host=HOST, app=application)
    return reasons


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def test_the_plugin_claims_the_verify_section(tmp_path: Path) -> None:
    assert "verify" in app(tmp_path, "verify:\n  network: {check: icmp}\n").settings.sections


def test_a_guest_without_a_check_passes_unprobed(tmp_path: Path) -> None:
    assert verify(app(tmp_path), guest(address=None)) == []


def test_a_guest_that_answers_its_check_passes(tmp_path: Path, listening_port: int) -> None:
    assert verify(app(tmp_path), guest(network=f"tcp {listening_port}")) == []


def test_a_guest_that_answers_icmp_passes(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "ICMP echo needs root (a raw socket); CI runs as root")
    assert verify(app(tmp_path), guest(network="icmp")) == []


def test_a_guest_that_answers_only_after_a_moment_passes(tmp_path: Path) -> None:
    late = UdpEcho(deaf_for=3)
    try:
        assert verify(app(tmp_path), guest(network=f"udp-echo {late.port}", timeout="10")) == []
    finally:
        late.close()
    assert late.received > 3


def test_a_guest_that_does_not_answer_in_time_fails_naming_host_check_address_and_probes(tmp_path: Path) -> None:
    port = closed_port()
    (reason,) = verify(app(tmp_path), guest(network=f"tcp {port}", timeout="0.6"))
    pattern = rf"web1 runs on host2 but does not answer tcp {port} at 127\.0\.0\.1 \((\d+) probes over [\d.]+ s; last: connection refused\)"
    found = re.fullmatch(pattern, reason)
    assert found is not None, reason
    assert int(found.group(1)) >= 2


def test_a_check_from_the_guests_tag_in_evac_yaml_is_run(tmp_path: Path) -> None:
    port = closed_port()
    application = app(tmp_path, f"verify:\n  network:\n    timeout: 0.3\n    tags:\n      web: {{check: tcp {port}}}\n")
    (reason,) = verify(application, guest(tags=("web",)))
    assert reason.startswith(f"web1 runs on host2 but does not answer tcp {port} at 127.0.0.1 (")


def test_a_guest_with_a_check_but_no_address_fails_saying_so(tmp_path: Path) -> None:
    assert verify(app(tmp_path), guest(address=None, network="icmp")) == [
        "web1 runs on host2 but cannot be checked for icmp: it has no address (set address in its evac:guest metadata)"
    ]


def test_bad_metadata_fails_naming_the_guest_and_the_attribute(tmp_path: Path) -> None:
    assert verify(app(tmp_path), guest(network="ping")) == [
        "guest web1 on host2: metadata verify-network: expected icmp, tcp PORT, udp-echo PORT or none, got 'ping'"
    ]

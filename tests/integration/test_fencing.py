"""Fencing against BMCs evac did not write: a Redfish one (sushy-tools' emulator), through
evac's own client and the standard fence_redfish agent; and an IPMI one (pyghmi's BMC
server) whose power switch is a lab host's, through the standard fence_ipmilan agent."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from evac.errors import FencingError
from evac.fencing import fence_host
from evac.inventory import FenceSpec, HostSpec
from evac.lab import Lab
from evac.plugins import plugin_manager
from tests.conftest import poll_until, require
from tests.integration.ipmibmc import running_bmc

UUID = "3e5d5f2a-0000-4000-8000-00000000beef"
INSECURE = ssl._create_unverified_context()  # the emulator's certificate is a throwaway self-signed one


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[str]:
    """sushy-tools' Redfish emulator with one fake system, powered on."""
    exe = shutil.which("sushy-emulator") or str(Path(__file__).parents[2] / ".venv" / "bin" / "sushy-emulator")
    require(Path(exe).exists(), "sushy-tools not installed (pip install sushy-tools)")
    port = free_port()
    config = tmp_path / "sushy.conf"
    config.write_text(
        f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {port}\n"
        f"SUSHY_EMULATOR_STATE_DIR = '{tmp_path}/state'\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': '{UUID}', 'name': 'host9', 'power_state': 'On', 'nics': []}}]\n"
    )
    cert, key = tmp_path / "bmc.crt", tmp_path / "bmc.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [exe, "--fake", "--config", str(config), "--ssl-certificate", str(cert), "--ssl-key", str(key)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"https://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, "sushy-emulator exited"
        try:
            urllib.request.urlopen(url + "/redfish/v1/", timeout=1, context=INSECURE).read()
        except OSError:
            return False
        return True

    poll_until(answers, 30, "sushy-emulator to answer")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def power_state(url: str) -> str:
    with urllib.request.urlopen(f"{url}/redfish/v1/Systems/{UUID}", timeout=5, context=INSECURE) as r:
        return str(json.load(r)["PowerState"])


def host(*chain: FenceSpec) -> HostSpec:
    return HostSpec(name="host9", uri="qemu+tcp://127.0.0.1/system", fence=chain)


def test_redfish_force_off_is_confirmed_by_reading_power_state_back(bmc: str) -> None:
    result = fence_host(
        plugin_manager(), host(FenceSpec("redfish", {"url": bmc, "verify_tls": False})), confirm_timeout=30
    )
    assert result.method == "redfish"
    assert power_state(bmc) == "Off"


def test_standard_fence_agent_speaks_to_the_same_bmc(bmc: str) -> None:
    require(shutil.which("fence_redfish", path="/usr/sbin:/usr/bin") is not None, "fence-agents not installed")
    port = bmc.rsplit(":", 1)[1]
    options = {
        "agent": "fence_redfish",
        "ip": "127.0.0.1",
        "ipport": port,
        "login": "admin",
        "passwd": "x",
        "systems_uri": f"/redfish/v1/Systems/{UUID}",
        "ssl_insecure": 1,
        "power_timeout": 30,
    }
    result = fence_host(plugin_manager(), host(FenceSpec("agent", options)), confirm_timeout=30)
    assert result.method == "agent"
    assert power_state(bmc) == "Off"


def test_chain_falls_through_to_the_next_method_and_records_the_failure(bmc: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = fence_host(
        plugin_manager(),
        host(
            FenceSpec("redfish", {"url": dead, "timeout": 2}), FenceSpec("redfish", {"url": bmc, "verify_tls": False})
        ),
        confirm_timeout=30,
    )
    assert [(a.method, a.ok) for a in result.attempts] == [("redfish", False), ("redfish", True)]
    assert power_state(bmc) == "Off"


def test_every_method_failing_is_a_fencing_error_that_says_what_to_do() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(FencingError, match="every fence method failed.*NOT restarted.*--confirm-manually"):
        fence_host(plugin_manager(), host(FenceSpec("redfish", {"url": dead, "timeout": 1}), FenceSpec("nosuch", {})))


@pytest.fixture
def ipmi_bmc(lab: Lab) -> Iterator[int]:
    """An IPMI 2.0 BMC on loopback whose chassis power is lab host3's power switch."""
    require(shutil.which("ipmitool") is not None, "ipmitool not installed (apt-get install ipmitool)")
    with running_bmc(lab, "host3") as port:
        yield port


def test_fence_ipmilan_powers_a_lab_host_off_through_its_ipmi_bmc(lab: Lab, ipmi_bmc: int) -> None:
    require(shutil.which("fence_ipmilan", path="/usr/sbin:/usr/bin") is not None, "fence-agents not installed")
    options = {
        "agent": "fence_ipmilan",
        "ip": "127.0.0.1",
        "ipport": ipmi_bmc,
        "lanplus": 1,
        "username": "admin",
        "password": "s3cret",
        "power_timeout": 30,
    }
    spec = HostSpec(name="host3", uri=lab.host("host3").uri, fence=(FenceSpec("agent", options),))
    result = fence_host(plugin_manager(), spec, confirm_timeout=30)
    assert result.method == "agent"
    assert lab.power_state("host3") == "off"  # every process of the host is gone


def test_fence_ipmilan_with_a_wrong_password_fails_and_the_host_keeps_running(lab: Lab, ipmi_bmc: int) -> None:
    options = {"agent": "fence_ipmilan", "ip": "127.0.0.1", "ipport": ipmi_bmc, "lanplus": 1}
    options |= {"username": "admin", "password": "wrong", "timeout": 30}
    spec = HostSpec(name="host3", uri=lab.host("host3").uri, fence=(FenceSpec("agent", options),))
    with pytest.raises(FencingError, match="every fence method failed"):
        fence_host(plugin_manager(), spec, confirm_timeout=10)
    assert lab.power_state("host3") == "on"

"""Unambiguous hosts, strict validators and trusted files: an inventory names every host one
way only, refuses what it would misread, and is refused when others could have written it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evac import HostSpec
from evac.errors import ConfigError, NotFound
from evac.inventory import AmbiguousHost, Inventory, load_inventory, parse_inventory
from evac.lab.provisioning import write_inventory
from evac.yamldoc import load_text


def parse(text: str) -> Inventory:
    return parse_inventory(load_text(text, "h.yaml"), "h.yaml")


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- unambiguous hosts
def test_two_hosts_with_one_address_are_refused_however_it_is_written() -> None:
    text = (
        "hosts:\n"
        "  - {name: kvm1, uri: 'qemu+tcp://kvm1/system', address: 10.0.0.1}\n"
        "  - name: kvm2\n"
        "    uri: qemu+tcp://kvm2/system\n"
        "    address: fd00:0::1\n"
    )
    text = text.replace("address: 10.0.0.1", "address: 'fd00::1'")
    assert refused(text) == (
        "h.yaml:5: hosts[1].address: duplicate address 'fd00:0::1': host 'kvm1' has it too (line 2); "
        "each host needs its own address"
    )


def test_an_address_that_is_another_hosts_name_is_refused() -> None:
    # The webhook for kvm4 drained kvm3: kvm3's address was kvm4, and the first match won.
    text = (
        "hosts:\n"
        "  - name: kvm3\n"
        "    uri: qemu+tcp://kvm3/system\n"
        "    address: kvm4\n"
        "  - {name: kvm4, uri: 'qemu+tcp://kvm4/system'}\n"
    )
    assert refused(text) == (
        "h.yaml:4: hosts[0].address: 'kvm4' is the name of host 'kvm4' (line 5): an alert naming it would "
        "match two hosts; give 'kvm3' its own address"
    )


def test_host_names_differing_only_in_case_are_duplicates() -> None:
    text = "hosts:\n  - {name: kvm1, uri: 'qemu:///system'}\n  - {name: KVM1, uri: 'qemu:///system'}\n"
    assert refused(text).startswith("h.yaml:3: hosts[1].name: duplicate host 'KVM1' (first at line 2)")


def test_a_host_may_have_its_own_name_as_address() -> None:
    inventory = parse("hosts:\n  - {name: kvm1, uri: 'qemu+tcp://kvm1/system', address: kvm1}\n")
    assert inventory.lookup("kvm1").name == "kvm1"


def _memory(*hosts: tuple[str, str | None]) -> Inventory:
    """An inventory built in memory: the loader's checks do not apply to it."""
    return Inventory(
        hosts=tuple(HostSpec(name, f"qemu+tcp://{name}/system", address=address) for name, address in hosts),
        source="fleet",
    )


def test_a_webhook_style_lookup_of_kvm4_never_picks_the_host_whose_address_is_kvm4() -> None:
    inventory = _memory(("kvm3", "kvm4"), ("kvm4", "10.0.0.4"))
    with pytest.raises(AmbiguousHost) as caught:
        inventory.lookup("kvm4")
    assert caught.value.candidates == ["kvm4", "kvm3"]
    assert str(caught.value) == (
        "fleet: 'kvm4' is ambiguous: it is the name of host 'kvm4' and the address of host 'kvm3'; nothing done. "
        "Give each host an address no other host has as its name or address"
    )


def test_lookup_is_by_name_then_by_address() -> None:
    inventory = _memory(("kvm3", "10.0.0.3"), ("kvm4", "10.0.0.4"))
    assert (inventory.lookup("kvm3").name, inventory.lookup("10.0.0.4").name) == ("kvm3", "kvm4")


def test_addresses_are_compared_as_addresses() -> None:
    inventory = _memory(("kvm3", "fd00::3"), ("kvm4", "KVM4.example.net"))
    assert inventory.lookup("fd00:0::3").name == "kvm3"
    assert inventory.lookup("kvm4.example.net").name == "kvm4"


def test_two_hosts_with_one_address_make_a_lookup_ambiguous() -> None:
    inventory = _memory(("kvm3", "10.0.0.9"), ("kvm4", "10.0.0.9"))
    with pytest.raises(
        AmbiguousHost, match=r"'10.0.0.9' is ambiguous: it is the address of host 'kvm3' and the address of host 'kvm4'"
    ):
        inventory.lookup("10.0.0.9")


def test_a_lookup_that_matches_nothing_is_not_found() -> None:
    with pytest.raises(NotFound, match=r"unknown host 'kvm5' \(did you mean 'kvm3'\?\)"):
        _memory(("kvm3", "10.0.0.3")).lookup("kvm5")


# ---------------------------------------------------------------- strict validators
@pytest.mark.parametrize(
    ("host", "message"),
    [
        ('{name: "kvm1\\n", uri: "qemu:///system"}', "h.yaml:2: hosts[0].name: invalid host name 'kvm1\\n'"),
        (
            '{name: kvm1, uri: "qemu+tcp://kvm1/system\\n"}',
            "h.yaml:2: hosts[0].uri: expected a libvirt URI like qemu+tcp://HOST/system, got 'qemu+tcp://kvm1/system\\n'",
        ),
        (
            '{name: kvm1, uri: "qemu:///system", networks: {vm: "br0\\n"}}',
            "h.yaml:2: hosts[0].networks.vm: expected a bridge name like br0, got 'br0\\n'",
        ),
        (
            '{name: kvm1, uri: "qemu:///system", address: "10.0.0.1\\n"}',
            "h.yaml:2: hosts[0].address: expected a host name or IP address, got '10.0.0.1\\n'",
        ),
    ],
    ids=["name", "uri", "bridge", "address"],
)
def test_a_trailing_newline_is_refused(host: str, message: str) -> None:
    assert refused(f"hosts:\n  - {host}\n").startswith(message)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("qemu+htp://kvm1/system", "unknown libvirt transport 'htp' in 'qemu+htp://kvm1/system'"),
        ("http://kvm1/system", "unknown libvirt driver 'http' in 'http://kvm1/system'"),
    ],
)
def test_a_uri_needs_a_known_driver_and_transport(uri: str, message: str) -> None:
    assert message in refused(f"hosts:\n  - {{name: kvm1, uri: '{uri}'}}\n")


@pytest.mark.parametrize("port", ["99999", "0", "true"])
def test_an_ssh_port_is_1_to_65535(port: str) -> None:
    text = f"hosts:\n  - name: kvm1\n    uri: qemu:///system\n    ssh: {{host: kvm1, port: {port}}}\n"
    assert refused(text).startswith("h.yaml:4: hosts[0].ssh.port: expected a port number (1-65535)")


@pytest.mark.parametrize("timeout", [".nan", ".inf", "0", "-1", "soon"])
def test_a_fence_timeout_is_finite_and_positive(timeout: str) -> None:
    text = (
        f"hosts:\n  - name: kvm1\n    uri: qemu:///system\n    fence:\n      - {{method: agent, timeout: {timeout}}}\n"
    )
    assert refused(text).startswith("h.yaml:5: hosts[0].fence[0].timeout: expected seconds > 0")


def test_relative_secret_paths_are_taken_from_the_inventorys_directory(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(
        "hosts:\n  - name: kvm1\n    uri: qemu:///system\n    ssh: {host: kvm1, key: keys/id}\n"
        "    fence:\n      - {method: redfish, url: 'https://bmc', password_file: bmc.pw}\n"
    )
    (spec,) = load_inventory(path).hosts
    assert spec.fence[0].options["password_file"] == str(tmp_path / "bmc.pw")
    assert spec.ssh is not None and spec.ssh.key == str(tmp_path / "keys" / "id")


# ---------------------------------------------------------------- no inventory from world-writable places
GOOD = "hosts:\n  - {name: kvm1, uri: 'qemu:///system'}\n"


def _inventory_in(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / "hosts.yaml"
    path.write_text(GOOD)
    path.chmod(0o644)
    directory.chmod(0o755)
    return path


def test_an_inventory_others_can_write_is_refused(tmp_path: Path) -> None:
    path = _inventory_in(tmp_path / "lab")
    path.chmod(0o666)
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert str(caught.value) == (
        f"{path}: refusing an inventory whose file {path} is writable by others (mode 0666); "
        f"fix: chmod go-w {path}, or move it to /etc/evac/hosts.yaml"
    )


def test_an_inventory_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    # The default inventory was /tmp/evac-lab/hosts.yaml, read whoever had made that directory.
    path = _inventory_in(tmp_path / "lab")
    path.parent.chmod(0o1777)
    with pytest.raises(
        ConfigError, match=r"whose directory .*/lab is writable by others \(mode 1777\); fix: chmod go-w"
    ):
        load_inventory(path)


def test_an_inventory_its_group_can_write_is_refused(tmp_path: Path) -> None:
    path = _inventory_in(tmp_path / "lab")
    path.chmod(0o664)
    with pytest.raises(ConfigError, match=r"is writable by its group \(mode 0664\)"):
        load_inventory(path)


def test_an_inventory_owned_by_someone_else_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _inventory_in(tmp_path / "lab")
    if os.geteuid() == 0:
        os.chown(path, 12345, -1)
    else:  # the file is ours: evac running as another user sees it as someone else's
        monkeypatch.setattr("evac.inventory.os.geteuid", lambda: 12345)
    with pytest.raises(ConfigError, match=r"is owned by uid \d+, not root or you \(uid \d+\); fix: chown root"):
        load_inventory(path)


def test_an_inventory_owned_by_root_or_the_user_and_not_writable_by_others_loads(tmp_path: Path) -> None:
    assert [h.name for h in load_inventory(_inventory_in(tmp_path / "lab")).hosts] == ["kvm1"]


def test_the_lab_writes_an_inventory_evac_accepts_whatever_the_umask(tmp_path: Path) -> None:
    lab = tmp_path / "evac-lab"
    lab.mkdir()
    lab.chmod(0o777)
    old = os.umask(0)
    try:
        write_inventory(lab / "hosts.yaml", GOOD)
    finally:
        os.umask(old)
    assert (lab.stat().st_mode & 0o777, (lab / "hosts.yaml").stat().st_mode & 0o777) == (0o755, 0o644)
    assert [h.name for h in load_inventory(lab / "hosts.yaml").hosts] == ["kvm1"]


def test_any_ip_address_python_parses_is_an_address_even_one_starting_with_colons(tmp_path: Path) -> None:
    text = "hosts:\n  - {name: a, uri: 'qemu+tcp://127.0.0.1/system', address: '::1', ssh: {host: '::1'}}\n"
    (spec,) = parse_inventory(load_text(text, "h.yaml"), "h.yaml").hosts
    assert spec.address == "::1"

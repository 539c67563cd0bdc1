"""Inventory files: valid ones load, broken ones name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from evac.errors import ConfigError
from evac.inventory import load_inventory, parse_inventory
from evac.yamldoc import load_text

GOOD = """\
shared_storage:
  - /srv/shared
hosts:
  - name: host1
    uri: qemu+tcp://198.18.0.1/system
    address: 198.18.0.1
    ssh: {user: root, key: /root/.ssh/id}
    fence:
      - method: redfish
        url: http://127.0.0.1:8000
    tags: [rack1]
    reserved: {memory_mib: 512, cpus: 1}
  - name: host2
    uri: qemu+tcp://198.18.0.2/system
"""


def test_valid_inventory_loads_hosts_in_order(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(GOOD)
    inv = load_inventory(path)
    assert [h.name for h in inv.hosts] == ["host1", "host2"]
    host1 = inv.host("host1")
    assert host1.fence[0].method == "redfish"
    assert host1.fence[0].options == {"url": "http://127.0.0.1:8000"}
    assert host1.ssh is not None and host1.ssh.host == "198.18.0.1"
    assert (host1.reserved_memory_mib, host1.reserved_cpus) == (512, 1)


def test_networks_map_network_names_to_this_hosts_bridges() -> None:
    text = "hosts:\n  - name: a\n    uri: qemu:///system\n    networks: {vm: br-vm, storage: br-st}\n"
    (spec,) = parse_inventory(load_text(text, "h.yaml"), "h.yaml").hosts
    assert spec.networks == (("storage", "br-st"), ("vm", "br-vm"))


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu+tcp://kvm1:16509/system",
        "qemu+tls://kvm1/system?pkipath=/etc/evac/pki",
        "qemu+libssh2://root@kvm1/system?keyfile=/etc/evac/id&known_hosts=/etc/evac/kh&sshauth=privkey",
    ],
)
def test_libvirt_uris_with_users_ports_and_options_are_accepted(uri: str) -> None:
    text = f"hosts:\n  - name: a\n    uri: '{uri}'\n"
    assert parse_inventory(load_text(text, "h.yaml"), "h.yaml").hosts[0].uri == uri


def test_paths_under_shared_storage_are_shared() -> None:
    inv = parse_inventory(load_text(GOOD, "h.yaml"), "h.yaml")
    assert inv.is_shared("/srv/shared/disks/a.img")
    assert not inv.is_shared("/srv/sharedother/a.img")
    assert not inv.is_shared(None)


def test_unknown_host_suggests_the_closest_name() -> None:
    inv = parse_inventory(load_text(GOOD, "h.yaml"), "h.yaml")
    with pytest.raises(ConfigError, match="unknown host 'hots1' \\(did you mean 'host1'\\?\\)"):
        inv.host("hots1")


BROKEN = [
    ("hosts: []\n", "h.yaml:1: hosts: at least one host is required"),
    ("hostz: []\n", "h.yaml:1: hostz: unknown field (did you mean 'hosts'?)"),
    ("hosts:\n  - uri: qemu+tcp://a/system\n", "h.yaml:2: hosts[0].name: required field missing"),
    (
        "hosts:\n  - name: a\n    uri: http://a\n",
        "h.yaml:3: hosts[0].uri: expected a libvirt URI like qemu+tcp://HOST/system, got 'http://a'",
    ),
    (
        "hosts:\n  - name: a\n    uri: qemu:///system\n  - name: a\n    uri: qemu:///system\n",
        "h.yaml:4: hosts[1].name: duplicate host 'a' (first at line 2)",
    ),
    (
        "hosts:\n  - name: a\n    uri: qemu:///system\n    reserved: {memory_mib: -1}\n",
        "h.yaml:4: hosts[0].reserved.memory_mib: expected a whole number >= 0, got -1",
    ),
    (
        "hosts:\n  - name: a\n    uri: qemu:///system\n    fence:\n      - url: x\n",
        "h.yaml:5: hosts[0].fence[0].method: required: the fence method's name",
    ),
    (
        "hosts:\n  - name: a\n    uri: qemu:///system\n    ssh: {port: 0}\n",
        "h.yaml:4: hosts[0].ssh.host: required when the host has no address",
    ),
    (
        "hosts:\n  - name: a\n    uri: qemu:///system\n    networks:\n      vm: 'br 0'\n",
        "h.yaml:5: hosts[0].networks.vm: expected a bridge name like br0, got 'br 0'",
    ),
    (
        "hosts:\n  - name: a\n    uri: qemu:///system\n    networks: {vm: br0, db: br0}\n",
        "h.yaml:4: hosts[0].networks: bridge 'br0' is named by two networks",
    ),
    ("hosts:\n  - name: a\n   uri: x\n", "h.yaml:3: invalid YAML"),
    ("hosts: {a: 1}\n", "h.yaml:1: hosts: expected a list, got a mapping"),
]


@pytest.mark.parametrize(("text", "message"), BROKEN, ids=[m.split(": ", 1)[1][:40] for _, m in BROKEN])
def test_broken_inventory_names_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_inventory(load_text(text, "h.yaml"), "h.yaml")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_missing_inventory_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_inventory(tmp_path / "nope.yaml")


def test_the_shipped_example_inventory_is_valid() -> None:
    inventory = load_inventory(Path(__file__).parents[2] / "contrib" / "hosts.yaml")
    assert [h.name for h in inventory.hosts] == ["kvm1", "kvm2", "kvm3"]
    assert dict(inventory.host("kvm2").networks)["vm"] == "br-vm"

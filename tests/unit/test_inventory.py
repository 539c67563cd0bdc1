"""Inventory files: valid ones load, broken ones name file, line and field."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from evac import FenceAgent, FenceMethod, HostSpec
from evac.app import App
from evac.errors import ConfigError
from evac.fencing import fence_methods
from evac.inventory import load_inventory, parse_inventory
from evac.plugins import plugin_manager
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


# ---------------------------------------------------------------- fence entries, checked against the registered methods
def _methods() -> dict[str, FenceMethod]:
    def agent(host: HostSpec, settings: Mapping[str, Any]) -> FenceAgent:
        raise AssertionError("not built while loading")

    return {
        "redfish": FenceMethod("redfish", agent, required=("url",), optional=("username", "password", "timeout")),
        "agent": FenceMethod("agent", agent, required=("agent",), optional=None),
    }


def _fenced(entry: str) -> str:
    return f"hosts:\n  - name: a\n    uri: qemu:///system\n    fence:\n      - {entry}\n"


FENCE_BROKEN = [
    (
        "{method: redfsh, url: x}",
        "h.yaml:5: hosts[0].fence[0].method: unknown fence method 'redfsh' (did you mean 'redfish'?); known: agent, redfish",
    ),
    ("{method: redfish, username: root}", "h.yaml:5: hosts[0].fence[0].url: required by fence method 'redfish'"),
    (
        "{method: redfish, url: x, pasword: y}",
        "h.yaml:5: hosts[0].fence[0].pasword: unknown setting for fence method 'redfish' (did you mean 'password'?)",
    ),
    ("{method: off}", "h.yaml:5: hosts[0].fence[0].method: expected a string; YAML reads off as false"),
]


@pytest.mark.parametrize(("entry", "message"), FENCE_BROKEN, ids=[m.split(": ", 2)[2][:40] for _, m in FENCE_BROKEN])
def test_fence_entries_are_checked_against_the_registered_methods(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_inventory(load_text(_fenced(entry), "h.yaml"), "h.yaml", _methods())
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_a_method_that_accepts_any_setting_passes_them_all() -> None:
    inv = parse_inventory(
        load_text(_fenced("{method: agent, agent: fence_ipmilan, ip: 10.0.0.5, lanplus: 1}"), "h.yaml"),
        "h.yaml",
        _methods(),
    )
    assert inv.hosts[0].fence[0].options == {"agent": "fence_ipmilan", "ip": "10.0.0.5", "lanplus": 1}


def test_without_registered_methods_fence_entries_are_not_checked() -> None:
    inv = parse_inventory(load_text(_fenced("{method: anything, x: 1}"), "h.yaml"), "h.yaml")
    assert inv.hosts[0].fence[0].method == "anything"


def test_an_unlisted_method_passes_while_an_evac_fence_agent_plugin_may_provide_it() -> None:
    text = _fenced("{method: lab, host: a}")
    inv = parse_inventory(load_text(text, "h.yaml"), "h.yaml", _methods(), allow_unlisted_methods=True)
    assert inv.hosts[0].fence[0].method == "lab"


def test_the_built_in_fence_methods_check_the_shipped_example_inventory() -> None:
    methods = fence_methods(plugin_manager())
    path = Path(__file__).parents[2] / "contrib" / "hosts.yaml"
    assert load_inventory(path, methods, allow_unlisted_methods=True).hosts


def test_load_inventory_passes_the_methods_on(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(_fenced("{method: redfish}"))
    with pytest.raises(ConfigError, match=f"^{path}:5: hosts\\[0\\].fence\\[0\\].url: required"):
        load_inventory(path, _methods())


@pytest.mark.parametrize(
    ("field", "text"),
    [("address", "    address: on\n"), ("ssh.user", "    ssh: {host: a, user: no}\n")],
)
def test_a_yaml_boolean_where_the_inventory_expects_text_says_to_quote_it(field: str, text: str) -> None:
    data = "hosts:\n  - name: a\n    uri: qemu:///system\n" + text
    with pytest.raises(ConfigError, match=f"^h.yaml:4: hosts\\[0\\].{field}: expected a string; YAML reads"):
        parse_inventory(load_text(data, "h.yaml"), "h.yaml")


def test_an_inventory_names_the_plugins_it_needs_and_the_app_registers_them(tmp_path: Path) -> None:
    (tmp_path / "hosts.yaml").write_text(
        "plugins: [tests.unit.inline_plugin]\nhosts:\n  - {name: a, uri: 'qemu:///system'}\n"
    )
    app = App(inventory_path=tmp_path / "hosts.yaml", journal_path=tmp_path / "j.db")
    assert app.inventory.plugins == ("tests.unit.inline_plugin",)
    assert app.pm.has_plugin("tests.unit.inline_plugin")


def test_a_plugin_that_is_not_a_module_name_is_refused_with_its_line() -> None:
    text = "plugins: ['evac lab']\nhosts:\n  - {name: a, uri: 'qemu:///system'}\n"
    with pytest.raises(ConfigError, match=r"h.yaml:1: plugins\[0\]: expected a module name"):
        parse_inventory(load_text(text, "h.yaml"), "h.yaml")

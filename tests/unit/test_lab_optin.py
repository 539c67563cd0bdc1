"""The lab's fence (it kills processes) is opt-in: installed plugins never offer it; the lab's inventory asks for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evac.fencing import agent_for, fence_methods
from evac.inventory import FenceSpec, HostSpec
from evac.plugins import plugin_manager

HOST = HostSpec(name="host1", uri="qemu+tcp://198.18.0.1/system")


def test_installed_plugins_offer_no_lab_fence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVAC_PLUGINS", raising=False)
    pm = plugin_manager()
    assert pm.hook.evac_fence_agent(host=HOST, method="lab", options={}) is None
    modules = [getattr(plugin, "__name__", "") for _, plugin in pm.list_name_plugin()]
    assert not [m for m in modules if m.startswith("evac.lab") or m.endswith("fence_lab")]


def test_installed_plugins_register_no_lab_fence_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVAC_PLUGINS", raising=False)
    assert "lab" not in fence_methods(plugin_manager())


def test_installed_plugins_import_nothing_of_the_lab() -> None:
    code = "import sys; from evac.plugins import plugin_manager; plugin_manager(); print(sorted(m for m in sys.modules if m.startswith('evac.lab')))"
    env = {k: v for k, v in os.environ.items() if k != "EVAC_PLUGINS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]"


def test_lab_inventory_names_the_lab_plugin(tmp_path: Path) -> None:
    from evac.lab import Lab

    (tmp_path / "lab.json").write_text(json.dumps({"hosts": ["host1", "host2"], "prefix": "evx", "net": "198.18.9"}))
    data = yaml.safe_load(Lab.open(tmp_path).inventory_text())
    assert data["plugins"] == ["evac.lab.plugin"]
    assert [h["fence"] for h in data["hosts"]] == [[{"method": "lab", "lab_dir": str(tmp_path)}]] * 2


def test_lab_plugin_fences_through_the_lab_power_switch(tmp_path: Path) -> None:
    from evac.lab.plugin import LabSwitch
    from evac.lab.provisioning import INVENTORY_PLUGINS

    pm = plugin_manager(load_entrypoints=False, modules=INVENTORY_PLUGINS)
    switch = agent_for(pm, HOST, FenceSpec("lab", {"lab_dir": str(tmp_path)}))
    assert isinstance(switch, LabSwitch)
    assert (switch.lab.root, switch.host) == (tmp_path, "host1")
    assert switch.power_state() == "unknown"  # no lab there: the switch says so rather than guessing


def test_lab_plugin_registers_only_the_lab_method_with_its_settings() -> None:
    pm = plugin_manager(load_entrypoints=False, modules=["evac.lab.plugin"])
    (method,) = fence_methods(pm).values()
    assert (method.name, method.required, method.optional) == ("lab", (), ("lab_dir", "host"))


def test_evac_plugins_lists_the_lab_fence_only_for_an_inventory_that_asks_for_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from evac.cli import main

    monkeypatch.delenv("EVAC_PLUGINS", raising=False)
    fleet = "hosts:\n  - {name: host1, uri: 'qemu+tcp://198.18.0.1/system'}\n"
    for name, text in (("real.yaml", fleet), ("lab.yaml", "plugins: [evac.lab.plugin]\n" + fleet)):
        (tmp_path / name).write_text(text)
    listed = {}
    for name in ("real.yaml", "lab.yaml"):
        assert (
            main(["--inventory", str(tmp_path / name), "--journal", str(tmp_path / "j.db"), "plugins", "--json"]) == 0
        )
        listed[name] = {m for row in json.loads(capsys.readouterr().out) for m in row.get("fence_methods", [])}
    assert "lab" not in listed["real.yaml"] and {"redfish", "agent", "ssh"} <= listed["real.yaml"]
    assert "lab" in listed["lab.yaml"]

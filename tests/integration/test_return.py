"""Return after maintenance on the real lab: what a drain took off a host comes back to it,
each guest exactly once, through the operator's own commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from evac.cli import main
from evac.inventory import Inventory
from evac.lab import Lab
from tests.integration.conftest import placements, qemu_processes


def running_once_on(inventory: Inventory, name: str) -> str:
    """The one host a guest runs on, persistent, with one QEMU process for it."""
    where = placements(inventory, name)
    assert len(where) == 1 and next(iter(where.values())) == ("running", True), f"{name}: {where}"
    assert qemu_processes(name) == 1, name
    return next(iter(where))


def test_drain_then_enable_with_return_brings_every_guest_back_exactly_once(
    lab: Lab, inventory: Inventory, make_guest: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [make_guest("host3", wait=False) for _ in range(2)]
    evac = ["--inventory", str(lab.inventory_file), "--journal", str(tmp_path / "journal.db")]

    assert main([*evac, "host", "disable", "host3", "--drain", "--yes", "--reason", "firmware"]) == 0
    assert all(running_once_on(inventory, name) != "host3" for name in names)

    capsys.readouterr()
    assert main([*evac, "host", "enable", "host3", "--return", "--yes", "--json"]) == 0

    assert [running_once_on(inventory, name) for name in names] == ["host3", "host3"]
    report = json.loads(capsys.readouterr().out)["steps"]["report"]
    assert sorted((r["guest"], r["result"]) for r in report["rows"]) == sorted((n, "returned") for n in names)
    assert main([*evac, "host", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # host3 is enabled again

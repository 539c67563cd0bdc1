"""Rebalancing a real, deliberately skewed lab: the load evens out and every guest runs exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from evac.app import App
from evac.inventory import Inventory
from evac.jobs import Actor, Channel
from evac.lab import Lab
from tests.integration.conftest import inventory_copy, placements, qemu_processes


def test_a_skewed_lab_is_evened_out_and_each_guest_runs_exactly_once(
    lab: Lab, inventory: Inventory, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    # 1 GiB per host (768 MiB for guests after the headroom), so three 128 MiB guests are 50% of host1
    sized = inventory_copy(lab, tmp_path, **{h: {"capacity": {"memory_mib": 1024}} for h in lab.host_names()})
    app = App(inventory_path=sized, journal_path=tmp_path / "j.db")
    names = [make_guest("host1", wait=False) for _ in range(3)]

    started = app.jobs.start("rebalance", {"threshold": 10}, Actor(Channel.CLI, "test"), target="fleet")
    result = app.jobs.run(started)

    assert result.state == "succeeded", result.error
    planned = result.outputs["plan"]
    assert (planned["spread_before"], planned["spread_after"]) == (50.0, 0.0)
    landed = {}
    for name in names:
        where = placements(inventory, name)
        assert len(where) == 1 and list(where.values()) == [("running", True)], f"{name}: {where}"
        assert qemu_processes(name) == 1
        landed[name] = next(iter(where))
    assert Counter(landed.values()) == {"host1": 1, "host2": 1, "host3": 1}
    assert {m["guest"]: m["target"] for m in planned["moves"]} == {n: h for n, h in landed.items() if h != "host1"}
    assert [r["result"] for r in result.outputs["report"]["rows"]] == ["moved", "moved"]

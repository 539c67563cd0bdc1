"""`evac ha protect` on the real lab: it writes a running guest's metadata (live and
persistent, its other attributes kept), and `admission: enforce` refuses the guest that
would break N+1, changing nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from evac.cli import main
from evac.hypervisor import Hypervisor
from evac.inventory import Inventory
from evac.lab import Lab
from tests.integration.conftest import inventory_copy


def metadata(inventory: Inventory, host: str, name: str) -> tuple[str, str]:
    with Hypervisor.connect(host, inventory.host(host).uri) as hv:
        return hv.domain_xml(name), hv.domain_xml(name, inactive=True)


def test_protect_writes_a_running_guests_metadata_and_enforce_refuses_the_guest_that_would_break_n_plus_1(
    lab: Lab,
    inventory: Inventory,
    make_guest: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # room for guests after the 256 MiB headroom: host1 768, host2 768, host3 256 MiB
    sizes = {"host1": 1024, "host2": 1024, "host3": 512}
    hosts = inventory_copy(lab, tmp_path, **{h: {"capacity": {"memory_mib": m}} for h, m in sizes.items()})
    config = tmp_path / "evac.yaml"
    config.write_text("guests: {protect: false}\nha: {admission: enforce, reserve: 1}\n")
    big = make_guest("host1", wait=False, memory_mib=640)  # host1 lost: 512 free on host2, 256 on host3
    small = make_guest("host2", wait=False, memory_mib=256)  # host2 lost: host3 takes it
    evac = ["--config", str(config), "--inventory", str(hosts), "--journal", str(tmp_path / "j.db"), "ha"]

    assert main([*evac, "protect", small]) == 0
    assert f"{small} protected" in capsys.readouterr().out
    for xml in metadata(inventory, "host2", small):  # live, then persistent
        assert 'ha-protected="yes"' in xml and 'priority="0"' in xml, xml

    assert main([*evac, "protect", big]) == 1
    refused = capsys.readouterr().err
    assert refused.startswith(f"evac: protect {big}: refused by ha.admission: enforce (protecting {big} would break")
    assert f"losing host1 leaves {big} (640 MiB) without room" in refused and refused.count("\n") == 1
    assert all("ha-protected" not in xml for xml in metadata(inventory, "host1", big))

    assert main([*evac, "capacity", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["absorbs"], found["holds"], found["protected"]) == (1, True, 1)

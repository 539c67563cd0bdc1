"""Migration parameters come from plugins through evac_migration_tuning, merged safely."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from evac import hookimpl
from evac.app import App
from evac.convergence import MigrationTuning
from evac.errors import ConfigError
from evac.inventory import HostSpec
from evac.model import Guest
from evac.plugins import plugin_manager
from evac.remote import parse_bridges
from evac_plugins import compression
from evac_plugins.drain import chooser
from evac_plugins.migrate import merge_tuning

GUEST = Guest("g", "u", "h1", "running", 256, 1, True)
H1, H2 = HostSpec("h1", "qemu+tcp://h1/system"), HostSpec("h2", "qemu+tcp://h2/system")


def tune(options: dict[str, object], *plugins: object) -> MigrationTuning:
    pm = plugin_manager(load_entrypoints=False, modules=["evac_plugins.migrate", "evac_plugins.compression"])
    for plugin in plugins:
        pm.register(plugin)
    merged: MigrationTuning = merge_tuning(
        pm.hook.evac_migration_tuning(guest=GUEST, source=H1, target=H2, options=options)
    )
    return merged


def test_bandwidth_parallel_and_tls_options_become_params_and_flags() -> None:
    t = tune({"bandwidth_mib": 50, "parallel_connections": 4, "tls": True})
    assert t.params == {"bandwidth": 50, "parallel.connections": 4}
    assert set(t.flags) == {"PARALLEL", "TLS"}


def test_xbzrle_sets_compressed_with_its_cache_size() -> None:
    t = tune({"compression": "xbzrle", "xbzrle_cache_mib": 128})
    assert t.params == {"compression": ["xbzrle"], "compression.xbzrle-cache": 128 * 2**20}
    assert t.flags == ("COMPRESSED",)


def test_unknown_compression_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="compression: expected one of none, xbzrle"):
        tune({"compression": "lz4"})


def test_multifd_compression_falls_back_where_libvirt_lacks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    class OldLibvirt:
        def __init__(self, *a: object, **k: object) -> None: ...
        def __enter__(self) -> OldLibvirt:
            return self

        def __exit__(self, *a: object) -> None: ...
        def library_version(self) -> int:
            return 9_000_000

    monkeypatch.setattr(compression, "Hypervisor", SimpleNamespace(connect=OldLibvirt))
    t = tune({"compression": "multifd-zstd"})
    assert t.flags == ("PARALLEL",) and "no multifd compression" in t.notes[0]


def test_two_plugins_disagreeing_on_a_parameter_is_an_error() -> None:
    class Other:
        @hookimpl
        def evac_migration_tuning(self, guest, source, target, options):  # type: ignore[no-untyped-def]
            return MigrationTuning({"bandwidth": 10})

    with pytest.raises(ConfigError, match="migration parameter 'bandwidth' set twice"):
        tune({"bandwidth_mib": 50}, Other())


def test_evac_choose_target_answer_is_used_by_the_drain_planner(tmp_path: Path) -> None:
    class Rack:
        @hookimpl
        def evac_choose_target(self, guest, candidates):  # type: ignore[no-untyped-def]
            return candidates[-1]

    pm = plugin_manager(load_entrypoints=False)
    pm.register(Rack())
    app = App(inventory_path=tmp_path / "hosts.yaml", journal_path=tmp_path / "j.db", pm=pm)
    assert chooser(app)(GUEST, ["h2", "h3"]) == "h3"


def test_bridges_and_mtus_are_read_from_ip_link_output() -> None:
    out = (
        "4: br0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT\\    link/ether aa\n"
        "7: br-jumbo: <BROADCAST,MULTICAST> mtu 9000 qdisc noop state DOWN mode DEFAULT\\    link/ether bb\n"
    )
    assert parse_bridges(out) == {"br0": 1500, "br-jumbo": 9000}

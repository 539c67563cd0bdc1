"""What runs where, always: the snapshotter records each host's guests, on libvirt's test driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from evac.app import App
from evac.hypervisor import Hypervisor
from evac.snapshots import Snapshotter
from tests.conftest import poll_until


@pytest.fixture
def app(tmp_path: Path) -> App:
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: host1, uri: 'test:///default'}\n")
    return App(inventory_path=tmp_path / "hosts.yaml", journal_path=tmp_path / "journal.db")


@pytest.fixture
def host() -> Iterator[Hypervisor]:
    """One libvirt test-driver connection, shared by the snapshotter and the test (its state is per connection)."""
    hv = Hypervisor.connect("host1", "test:///default", keepalive=None)
    yield hv
    hv.close()


def test_a_host_is_snapshotted_as_soon_as_the_snapshotter_starts(app: App, host: Hypervisor) -> None:
    assert app.journal.snapshot_taken("host1") is None
    snapshots = Snapshotter(app, every=3600, connect=lambda _name, _uri: host)
    snapshots.start()
    try:
        poll_until(lambda: app.journal.snapshot_taken("host1") is not None, 30, "the first snapshot")
    finally:
        snapshots.stop()
    assert set(app.journal.definitions("host1")) == {"test"}
    assert "<name>test</name>" in app.journal.definitions("host1")["test"]
    assert snapshots.ages()["host1"] is not None


def test_a_guest_stopping_updates_the_snapshot_at_once_not_at_the_next_period(app: App, host: Hypervisor) -> None:
    snapshots = Snapshotter(app, every=3600, connect=lambda _name, _uri: host)
    snapshots.start()
    try:
        poll_until(lambda: "test" in app.journal.definitions("host1"), 30, "the first snapshot")
        host.destroy("test")  # a lifecycle event: the hour-long period never comes into it
        poll_until(lambda: app.journal.definitions("host1") == {}, 30, "a snapshot without the stopped guest")
    finally:
        snapshots.stop()
    assert app.journal.snapshot_taken("host1") is not None  # an empty host is known to be empty


def test_a_host_never_reached_has_no_snapshot(tmp_path: Path) -> None:
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: gone, uri: 'qemu+tcp://127.0.0.1:1/system'}\n")
    app = App(inventory_path=tmp_path / "hosts.yaml", journal_path=tmp_path / "journal.db")
    assert Snapshotter(app).ages() == {"gone": None}


def test_a_guest_stopped_by_a_fault_reads_crashed_and_stays_in_the_snapshot() -> None:
    import libvirt

    from evac.hypervisor import state_name
    from evac.snapshots import KEPT

    assert state_name(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED) == "crashed"
    assert state_name(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED) == "crashed"
    assert state_name(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED) == "shutoff"
    assert state_name(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN) == "shutoff"
    assert "crashed" in KEPT and "shutoff" not in KEPT

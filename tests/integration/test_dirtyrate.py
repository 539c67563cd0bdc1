"""QEMU measures a real guest's dirty rate (under TCG here): a busy guest reads more than an
idle one, a stopped guest says so, and a measurement started just before a migration is
answered while the migration runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import libvirt

from evac.dirtyrate import DirtyRateMeasurement, DirtyRateStatus, measure_dirty_rate
from evac.errors import EvacError
from evac.hypervisor import Hypervisor
from evac.inventory import Inventory
from tests.conftest import poll_until


@contextmanager
def domain(inventory: Inventory, host: str, name: str) -> Iterator[Any]:
    """The guest's ``virDomain``: what the measurement is handed."""
    conn = libvirt.open(inventory.host(host).uri)
    try:
        yield conn.lookupByName(name)
    finally:
        conn.close()


def test_a_busy_guest_measures_a_higher_dirty_rate_than_an_idle_one(
    inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    idle = make_guest("host1", memory_mib=256)
    busy = make_guest("host1", memory_mib=256, dirty_mb=48)
    with domain(inventory, "host1", idle) as dom:
        quiet = measure_dirty_rate(dom)
    with domain(inventory, "host1", busy) as dom:
        loud = measure_dirty_rate(dom)
    assert quiet.measured and loud.measured, (quiet, loud)
    assert loud.bytes_per_second > quiet.bytes_per_second


def test_a_stopped_guest_is_told_apart(inventory: Inventory, make_guest: Callable[..., str]) -> None:
    name = make_guest("host1", memory_mib=256, wait=False)
    with Hypervisor.connect("host1", inventory.host("host1").uri) as hv:
        hv.destroy(name)
    with domain(inventory, "host1", name) as dom:
        assert measure_dirty_rate(dom).status is DirtyRateStatus.NOT_RUNNING


def test_a_measurement_started_before_a_migration_is_answered_while_it_runs(
    inventory: Inventory, make_guest: Callable[..., str]
) -> None:
    name = make_guest("host1", memory_mib=256, dirty_mb=48)  # at 50 MiB/s its first pass alone takes seconds
    with domain(inventory, "host1", name) as dom, Hypervisor.connect("host1", inventory.host("host1").uri) as hv:
        measurement = DirtyRateMeasurement(dom)
        done = threading.Event()
        errors: list[EvacError] = []

        def migrate() -> None:
            try:
                hv.live_migrate(name, inventory.host("host2").uri, {"bandwidth": 50}, ["UNSAFE"])
            except EvacError as exc:
                errors.append(exc)  # aborted below: the guest stays on host1
            finally:
                done.set()

        threading.Thread(target=migrate, daemon=True).start()
        poll_until(lambda: measurement.poll() is not None, 10, "the measurement's answer")
        running = not done.is_set()
        if running:
            hv.abort_job(name)
        poll_until(done.is_set, 60, "the migration to end")
    answer = measurement.poll()
    assert answer is not None and answer.measured, answer
    assert running, errors  # answered while the migration ran: libvirt reads the answer during the job

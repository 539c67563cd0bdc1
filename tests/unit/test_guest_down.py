"""Which libvirt events and shut-off reasons mean a guest went down by a fault: what
``Hypervisor.on_guest_down`` reports and ``guest_stop_reason`` reads (the lab test kills
a real QEMU)."""

from __future__ import annotations

import libvirt
import pytest

from evac.hypervisor import down_reason, stop_reason


@pytest.mark.parametrize(
    ("event", "detail", "reason"),
    [
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED, "failed"),  # QEMU killed
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED, "crashed"),
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED, "crashed"),  # pvpanic
    ],
)
def test_a_guest_stopped_by_a_fault_is_reported_down(event: int, detail: int, reason: str) -> None:
    assert down_reason(event, detail) == reason


@pytest.mark.parametrize(
    "detail",
    [
        libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN,
        libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
        libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
        libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED,
        libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT,
    ],
)
def test_a_guest_stopped_on_purpose_is_not_reported_down(detail: int) -> None:
    assert down_reason(libvirt.VIR_DOMAIN_EVENT_STOPPED, detail) is None


def test_other_lifecycle_events_are_not_reported_down() -> None:
    assert down_reason(libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED) is None


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, "crashed"),  # a killed QEMU, libvirt 9.0
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED, "failed"),
        (libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED, "crashed"),  # on_crash: preserve
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, None),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED, None),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED, None),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, None),
    ],
)
def test_the_state_tells_a_fault_from_a_stop_on_purpose(state: int, reason: int, expected: str | None) -> None:
    assert stop_reason(state, reason) == expected

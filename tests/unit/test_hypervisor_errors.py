"""libvirt error codes become evac's own exceptions, so retry policies can name them."""

from __future__ import annotations

import libvirt
import pytest

from evac.errors import DiskInUse, EvacError, HostUnreachable, NotFound, TransientError
from evac.hypervisor import error_class, translate


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (libvirt.VIR_ERR_SYSTEM_ERROR, HostUnreachable),
        (libvirt.VIR_ERR_NO_CONNECT, HostUnreachable),
        (libvirt.VIR_ERR_RPC, HostUnreachable),
        (libvirt.VIR_ERR_NO_DOMAIN, NotFound),
        (libvirt.VIR_ERR_OPERATION_TIMEOUT, TransientError),
        (libvirt.VIR_ERR_OPERATION_INVALID, EvacError),
    ],
)
def test_libvirt_error_code_maps_to_evac_class(code: int, expected: type[EvacError]) -> None:
    assert error_class(code) is expected


def test_unreachable_is_retryable_as_transient() -> None:
    assert issubclass(HostUnreachable, TransientError)


@pytest.mark.parametrize(
    "message",
    [
        "resource busy: Lockspace resource '530121fe' is locked",  # libvirt's lockd
        'internal error: qemu unexpectedly closed the monitor: Failed to get "write" lock',  # QEMU's image lock
    ],
)
def test_a_refused_second_writer_is_disk_in_use_and_retryable(message: str) -> None:
    libvirt.virResetLastError()  # a libvirtError takes this thread's last error over its own text
    err = translate(libvirt.libvirtError(message), "host2: starting 'g1'")
    assert isinstance(err, DiskInUse) and isinstance(err, TransientError)
    assert str(err) == f"host2: starting 'g1': {message}"

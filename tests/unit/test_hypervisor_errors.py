"""libvirt error codes become evac's own exceptions, so retry policies can name them."""

from __future__ import annotations

import libvirt
import pytest

from evac.errors import EvacError, HostUnreachable, NotFound, TransientError
from evac.hypervisor import error_class


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

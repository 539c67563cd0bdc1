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


def _agent_error(code: int, text: str) -> libvirt.libvirtError:
    libvirt.virResetLastError()
    err = libvirt.libvirtError(text)
    err.err = (code, 0, text, 2, "", None, None, 0, 0)
    return err


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, None),  # "QEMU guest agent is not configured": never will
        (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, False),  # "not connected" or a timeout: not yet
    ],
)
def test_agent_ping_tells_no_agent_channel_from_an_agent_not_answering_yet_by_error_code(
    monkeypatch: pytest.MonkeyPatch, code: int, expected: bool | None
) -> None:
    import libvirt_qemu

    from evac.hypervisor import Hypervisor

    def refuse(*args: object) -> None:
        raise _agent_error(code, "some words in another language")

    monkeypatch.setattr(libvirt_qemu, "qemuAgentCommand", refuse)
    hypervisor = Hypervisor("h1", "test:///default", None)
    monkeypatch.setattr(hypervisor, "_lookup", lambda name: object())
    assert hypervisor.agent_ping("g1") is expected

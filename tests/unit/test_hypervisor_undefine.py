"""A definition evac removes goes with its managed save (stale memory), keeps its NVRAM,
and is still refused while snapshot metadata may be the only record of its snapshots."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

from evac.errors import EvacError
from evac.hypervisor import UNDEFINE_BASIC, UNDEFINE_STALE, Hypervisor

STALE = "<domain type='test'><name>stale</name><memory>65536</memory><os><type>hvm</type></os></domain>"


@pytest.fixture
def host() -> Iterator[Hypervisor]:
    """A test-driver connection with a guest of its own, ``stale``, running."""
    hv = Hypervisor.connect("host1", "test:///default", keepalive=None)
    hv.define(STALE)
    hv.start("stale")
    yield hv
    if hv.has_guest("stale"):
        domain = hv._lookup("stale")
        if domain.isActive():
            domain.destroy()
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | UNDEFINE_BASIC)
    hv.close()


def test_a_stale_copy_with_a_managed_save_is_undefined_with_it(host: Hypervisor) -> None:
    host._lookup("stale").managedSave()
    host.undefine("stale")
    assert not host.has_guest("stale")


def test_a_stale_copy_with_snapshots_is_left_defined_and_the_error_says_why(host: Hypervisor) -> None:
    host.destroy("stale")
    host._lookup("stale").snapshotCreateXML("<domainsnapshot><name>before</name></domainsnapshot>")
    with pytest.raises(EvacError, match=r"host1: undefining 'stale': .*snapshot"):
        host.undefine("stale")
    assert host.has_guest("stale")


class Domain:
    """A domain whose driver refuses ``refused`` flags as libvirt drivers do (INVALID_ARG)."""

    def __init__(self, refused: int, code: int = libvirt.VIR_ERR_INVALID_ARG) -> None:
        self.refused, self.code = refused, code
        self.asked: list[int] = []

    def undefineFlags(self, flags: int) -> None:
        self.asked.append(flags)
        if flags & self.refused:
            error = libvirt.libvirtError("unsupported flags")
            error.err = (self.code, 0, "unsupported flags", 2, "", None, None, 0, 0)
            raise error


def undefined(monkeypatch: pytest.MonkeyPatch, host: Hypervisor, domain: Domain) -> list[int]:
    monkeypatch.setattr(host, "_lookup", lambda name: domain)
    libvirt.virResetLastError()
    try:
        host.undefine("stale")
    except EvacError:
        pass
    return domain.asked


def test_the_flags_are_asked_for_first_and_a_driver_that_knows_fewer_is_asked_with_those(
    host: Hypervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert undefined(monkeypatch, host, Domain(refused=0)) == [UNDEFINE_STALE]
    keep_nvram = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
    assert undefined(monkeypatch, host, Domain(refused=keep_nvram)) == [UNDEFINE_STALE, UNDEFINE_BASIC]


def test_any_other_refusal_is_not_asked_again(host: Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    refusing = Domain(refused=UNDEFINE_STALE, code=libvirt.VIR_ERR_OPERATION_INVALID)
    assert undefined(monkeypatch, host, refusing) == [UNDEFINE_STALE]

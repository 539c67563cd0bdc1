"""A definition evac removes goes whole: snapshot metadata does not keep a stale copy defined."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

from evac.hypervisor import Hypervisor


@pytest.fixture
def host() -> Iterator[Hypervisor]:
    """One libvirt test-driver connection (its state is per connection)."""
    hv = Hypervisor.connect("host1", "test:///default", keepalive=None)
    yield hv
    hv.close()


def test_a_stale_definition_with_snapshots_is_undefined_with_their_metadata(host: Hypervisor) -> None:
    host.destroy("test")
    raw = host._conn.lookupByName("test")
    raw.snapshotCreateXML("<domainsnapshot><name>before</name></domainsnapshot>")
    with pytest.raises(libvirt.libvirtError, match="snapshot"):
        raw.undefine()  # what evac called before: refused while snapshots exist

    host.undefine("test")

    assert not host.has_guest("test")

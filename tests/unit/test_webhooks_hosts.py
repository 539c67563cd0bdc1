"""Which host a webhook means: by name, then by address; never a guess between two."""

from __future__ import annotations

import pytest

from evac.inventory import AmbiguousHost, HostSpec, Inventory
from evac.webhooks import find_host, host_from_label

URI = "qemu+tcp://127.0.0.1/system"


def hosts(*pairs: tuple[str, str | None]) -> tuple[HostSpec, ...]:
    return tuple(HostSpec(name=name, uri=URI, address=address) for name, address in pairs)


def test_a_webhook_finds_its_host_through_the_inventorys_lookup() -> None:
    fleet = Inventory(hosts(("kvm3", "198.18.0.3"), ("kvm4", "198.18.0.4")))
    assert (find_host(fleet, "kvm4"), find_host(fleet, "198.18.0.4"), find_host(fleet, "kvm9")) == (
        "kvm4",
        "kvm4",
        None,
    )


def test_a_label_that_could_mean_two_hosts_is_refused_naming_both() -> None:
    fleet = Inventory(hosts(("kvm3", "kvm4"), ("kvm4", "198.18.0.4")))
    with pytest.raises(AmbiguousHost) as caught:
        find_host(fleet, "kvm4")
    assert caught.value.candidates == ["kvm4", "kvm3"]


@pytest.mark.parametrize(
    ("label", "host"),
    [("198.18.0.1:9100", "198.18.0.1"), ("host3", "host3"), ("host3:9100", "host3"), ("[::1]:9100", "::1")],
)
def test_an_alert_label_loses_its_port(label: str, host: str) -> None:
    assert host_from_label(label) == host

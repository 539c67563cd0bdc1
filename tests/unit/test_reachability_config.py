"""Which guests are checked, where and how long: the ``verify:`` section of evac.yaml (claimed
by the reachability plugin), the guests' own metadata, which wins, and their tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from evac.domainxml import EVAC_NS, parse_guest
from evac.errors import ConfigError
from evac.model import Guest, HaMetadata, VerifyMetadata
from evac.reachability import Kind, Reachability
from evac.verification import DEFAULT_TIMEOUT, NetworkCheck, NetworkRule, VerifySettings
from evac_plugins import reachability
from tests.sections import section_error, sections

ICMP = Reachability(Kind.ICMP)
TCP80 = Reachability(Kind.TCP, 80)


def load(tmp_path: Path, text: str) -> VerifySettings:
    return VerifySettings.of(sections(tmp_path, text, reachability))


def error(tmp_path: Path, text: str) -> str:
    return section_error(tmp_path, text, reachability)


# ---------------------------------------------------------------- the section
def test_the_section_sets_a_default_check_and_timeout_and_per_tag_overrides(tmp_path: Path) -> None:
    text = (
        "verify:\n  network:\n    check: icmp\n    timeout: 10\n"
        "    tags:\n      web: {check: tcp 80}\n      db: {timeout: 60}\n      batch: {check: none}\n"
    )
    assert load(tmp_path, text) == VerifySettings(
        network=NetworkRule(check=ICMP, timeout=10),
        tags={"web": NetworkRule(check=TCP80), "db": NetworkRule(timeout=60), "batch": NetworkRule(off=True)},
    )


@pytest.mark.parametrize("text", ["verify:\n", "verify:\n  network:\n", "verify: {network: {tags: {}}}\n"])
def test_an_empty_section_checks_nobody_by_itself(tmp_path: Path, text: str) -> None:
    assert load(tmp_path, text) == VerifySettings()


def test_without_the_section_the_settings_are_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "journal: j.db\n") == VerifySettings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("verify: 5\n", "evac.yaml:1: verify: expected a mapping, got int 5"),
        ("verify:\n  netwrok: {}\n", "evac.yaml:2: verify.netwrok: unknown field (did you mean 'network'?)"),
        ("verify:\n  network: icmp\n", "evac.yaml:2: verify.network: expected a mapping, got str 'icmp'"),
        (
            "verify:\n  network:\n    chek: icmp\n",
            "evac.yaml:3: verify.network.chek: unknown field (did you mean 'check'?)",
        ),
        (
            "verify:\n  network:\n    check: ping\n",
            "evac.yaml:3: verify.network.check: expected icmp, tcp PORT, udp-echo PORT or none, got 'ping'",
        ),
        (
            "verify:\n  network:\n    check: tcp\n",
            "evac.yaml:3: verify.network.check: tcp needs a port (tcp PORT), got 'tcp'",
        ),
        (
            "verify:\n  network:\n    check: tcp 0\n",
            "evac.yaml:3: verify.network.check: tcp: expected a port 1-65535, got '0'",
        ),
        ("verify:\n  network:\n    check: 22\n", "evac.yaml:3: verify.network.check: expected a string, got int 22"),
        (
            "verify:\n  network:\n    check: off\n",
            'evac.yaml:3: verify.network.check: expected a string; YAML reads off as false — quote it: "off"',
        ),
        (
            "verify:\n  network:\n    timeout: 0\n",
            "evac.yaml:3: verify.network.timeout: expected seconds > 0 and at most 3600, got 0",
        ),
        (
            "verify:\n  network:\n    timeout: soon\n",
            "evac.yaml:3: verify.network.timeout: expected seconds > 0 and at most 3600, got 'soon'",
        ),
        ("verify:\n  network:\n    tags: [web]\n", "evac.yaml:3: verify.network.tags: expected a mapping, got a list"),
        (
            "verify:\n  network:\n    tags:\n      web: tcp 80\n",
            "evac.yaml:4: verify.network.tags.web: expected a mapping, got str 'tcp 80'",
        ),
        (
            "verify:\n  network:\n    tags:\n      'web,db': {check: icmp}\n",
            "evac.yaml:4: verify.network.tags.web,db: expected a tag as guests name it in tags (no commas)",
        ),
        (
            "verify:\n  network:\n    tags:\n      web: {check: icmp, tags: [x]}\n",
            "evac.yaml:4: verify.network.tags.web.tags: unknown field",
        ),
        (
            "verify:\n  network:\n    tags:\n      web: {check: udp-echo 99999}\n",
            "evac.yaml:4: verify.network.tags.web.check: udp-echo: expected a port 1-65535, got '99999'",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    assert error(tmp_path, text) == message


# ---------------------------------------------------------------- the guest's own metadata
XML = f"""<domain type='kvm'><name>web1</name><uuid>u-1</uuid><memory>262144</memory>
  <metadata><evac:guest xmlns:evac="{EVAC_NS}" address="198.19.3.17" tags="web, db" verify-network="tcp 22"
    verify-timeout="30" ha-tags="critical"/></metadata><devices/></domain>"""


def test_address_tags_and_the_check_are_read_from_the_guests_metadata() -> None:
    guest = parse_guest(XML, "host1", "running", True, lambda _p: True)
    assert (guest.address, guest.tags, guest.verify) == (
        "198.19.3.17",
        ("web", "db"),
        VerifyMetadata(network="tcp 22", timeout="30"),
    )


def test_a_guest_without_that_metadata_has_none() -> None:
    bare = f"""<domain><name>g</name><metadata><evac:guest xmlns:evac="{EVAC_NS}" priority="1"/></metadata></domain>"""
    guest = parse_guest(bare, "host1", "running", True, lambda _p: True)
    assert (guest.address, guest.tags, guest.verify) == (None, (), VerifyMetadata())


def guest(
    address: str | None = "198.19.3.17",
    tags: tuple[str, ...] = (),
    network: str | None = None,
    timeout: str | None = None,
    ha_tags: tuple[str, ...] = (),
) -> Guest:
    return Guest(
        "web1",
        "u-1",
        "host2",
        "running",
        256,
        1,
        True,
        address=address,
        tags=tags,
        verify=VerifyMetadata(network, timeout),
        ha=HaMetadata(tags=ha_tags),
    )


SETTINGS = VerifySettings(
    network=NetworkRule(timeout=8),
    tags={
        "web": NetworkRule(check=TCP80),
        "db": NetworkRule(check=Reachability(Kind.TCP, 5432), timeout=60),
        "batch": NetworkRule(off=True),
    },
)


def test_a_guest_with_no_check_anywhere_is_not_checked() -> None:
    assert SETTINGS.network_check(guest()) is None


def test_a_tag_gives_the_check_and_the_section_the_timeout() -> None:
    assert SETTINGS.network_check(guest(tags=("web",))) == NetworkCheck(TCP80, "198.19.3.17", 8)


def test_ha_tags_count_as_tags() -> None:
    assert SETTINGS.network_check(guest(ha_tags=("web",))) == NetworkCheck(TCP80, "198.19.3.17", 8)


def test_the_first_of_the_guests_tags_that_sets_a_check_wins() -> None:
    found = SETTINGS.network_check(guest(tags=("other", "db", "web")))
    assert found == NetworkCheck(Reachability(Kind.TCP, 5432), "198.19.3.17", 60)


def test_the_guests_own_check_wins_over_its_tags() -> None:
    assert SETTINGS.network_check(guest(tags=("web",), network="icmp")) == NetworkCheck(ICMP, "198.19.3.17", 8)


def test_the_guests_own_timeout_wins_over_its_tags() -> None:
    assert SETTINGS.network_check(guest(tags=("db",), timeout="2.5")).timeout == 2.5  # type: ignore[union-attr]


def test_none_in_the_guests_metadata_turns_its_tags_check_off() -> None:
    assert SETTINGS.network_check(guest(tags=("web",), network="none")) is None


def test_a_tag_with_check_none_turns_the_sections_default_off() -> None:
    everyone = VerifySettings(network=NetworkRule(check=ICMP), tags={"batch": NetworkRule(off=True)})
    assert (everyone.network_check(guest()), everyone.network_check(guest(tags=("batch",)))) == (
        NetworkCheck(ICMP, "198.19.3.17", DEFAULT_TIMEOUT),
        None,
    )


def test_a_guest_with_a_check_and_no_address_still_has_its_check() -> None:
    assert VerifySettings().network_check(guest(address=None, network="icmp")) == NetworkCheck(ICMP, None, 5.0)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"network": "ping"}, "metadata verify-network: expected icmp, tcp PORT, udp-echo PORT or none, got 'ping'"),
        ({"network": "tcp"}, "metadata verify-network: tcp needs a port (tcp PORT), got 'tcp'"),
        (
            {"network": "icmp", "timeout": "soon"},
            "metadata verify-timeout: expected seconds > 0 and at most 3600, got 'soon'",
        ),
        (
            {"network": "icmp", "timeout": "-1"},
            "metadata verify-timeout: expected seconds > 0 and at most 3600, got -1.0",
        ),
        (
            {"network": "icmp", "address": "not an address"},
            "metadata address: expected an IP address or a host name, got 'not an address'",
        ),
    ],
)
def test_bad_metadata_is_one_line_naming_the_guest_its_host_and_the_attribute(
    metadata: dict[str, str], message: str
) -> None:
    bad = guest(
        address=metadata.get("address", "198.19.3.17"), network=metadata.get("network"), timeout=metadata.get("timeout")
    )
    with pytest.raises(ConfigError) as info:
        VerifySettings().network_check(bad)
    assert str(info.value) == f"guest web1 on host2: {message}"


@pytest.mark.parametrize("address", ["198.19.3.17", "fd00::17", "web1.lab.example", "web1"])
def test_an_address_is_an_ip_address_or_a_host_name(address: str) -> None:
    found = VerifySettings().network_check(guest(address=address, network="icmp"))
    assert found is not None and found.address == address

"""Rules for guests by tag (the ``guests:`` section), and a guest's own metadata over them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from evac.errors import ConfigError
from evac.guestrules import GuestSettings, find_cycle, resolve
from evac.model import Guest, GuestRules, HaMetadata, Readiness
from evac_plugins import guests
from tests.sections import sections

GUEST = Guest("web-1", "u", "host1", "running", 512, 1, True, tags=("web",))


def settings(tmp_path: Path, text: str) -> GuestSettings:
    return GuestSettings.of(sections(tmp_path, text, guests))


def test_without_a_section_every_guest_is_protected_ready_when_started_and_free_to_go_anywhere() -> None:
    rules = resolve(GUEST, GuestSettings()).rules
    assert rules == GuestRules(ready=Readiness.STARTED, protected=True)


def test_a_tag_fills_in_what_the_guests_metadata_does_not_say(tmp_path: Path) -> None:
    found = settings(
        tmp_path,
        "guests:\n  protect: false\n  tags:\n"
        "    web: {priority: 5, hosts: [host2, host3], prefer: [host3], after: [db], ready: echo, protect: true}\n",
    )
    guest = resolve(replace(GUEST, rules=GuestRules(prefer=("host2",))), found)
    assert guest.priority == 5
    assert guest.rules == GuestRules(("host2", "host3"), ("host2",), ("db",), Readiness.ECHO, True)


def test_the_first_tag_that_sets_a_rule_wins_and_ha_tags_count_too(tmp_path: Path) -> None:
    found = settings(tmp_path, "guests:\n  tags:\n    a: {after: [x]}\n    b: {after: [y], hosts: [host9]}\n")
    guest = resolve(replace(GUEST, tags=("a",), ha=HaMetadata(tags=("b",))), found)
    assert (guest.rules.after, guest.rules.hosts) == (("x",), ("host9",))


def test_membership_follows_the_section_default_unless_the_guest_or_a_tag_says(tmp_path: Path) -> None:
    found = settings(tmp_path, "guests:\n  protect: false\n  tags:\n    web: {protect: true}\n")
    assert resolve(GUEST, found).rules.protected is True
    assert resolve(replace(GUEST, tags=()), found).rules.protected is False
    assert resolve(replace(GUEST, rules=GuestRules(protected=False)), found).rules.protected is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("guests:\n  tags:\n    web: {ready: soon}\n", "evac.yaml:3: guests.tags.web.ready: expected one of started"),
        ("guests:\n  tags:\n    web:\n      hosts: host1\n", "evac.yaml:4: guests.tags.web.hosts: expected a list"),
        ("guests:\n  protect: maybe\n", "evac.yaml:2: guests.protect: expected true or false"),
        ("guests:\n  tags:\n    web: {colour: red}\n", "guests.tags.web.colour"),
        (
            "guests:\n  tags:\n    web:\n      after: [db]\n    db:\n      after: [web]\n",
            "evac.yaml:6: guests.tags.db.after: restart order goes round in a cycle: db -> web -> db",
        ),
    ],
)
def test_a_bad_rule_is_one_line_naming_the_field_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_cycle_is_named_by_the_nodes_around_it() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None

"""A guest whose QEMU died: restarted in place, then relocated, then left stopped, as
Proxmox HA counts within a window; its limits from evac.yaml's tags and its own metadata."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from evac.domainxml import EVAC_NS, parse_guest
from evac.errors import ConfigError
from evac.model import Guest, HaMetadata
from evac.restartpolicy import (
    Attempt,
    HaSettings,
    Recovery,
    RestartPolicy,
    TagRule,
    decide,
    duration,
)

NOW = 100_000.0
RESTART, RELOCATE, GIVE_UP = Recovery.RESTART, Recovery.RELOCATE, Recovery.GIVE_UP


def ago(seconds: float, action: Recovery) -> Attempt:
    return Attempt(NOW - seconds, action)


def test_a_first_death_is_restarted_in_place() -> None:
    decision = decide(RestartPolicy(), [], NOW)
    assert (decision.action, decision.reason) == (RESTART, "restart 1 of 1 within 1 h")


def test_restarts_are_counted_up_to_max_restart() -> None:
    decision = decide(RestartPolicy(max_restart=2), [ago(60, RESTART)], NOW)
    assert (decision.action, decision.reason) == (RESTART, "restart 2 of 2 within 1 h")


def test_a_death_after_max_restart_restarts_is_relocated() -> None:
    decision = decide(RestartPolicy(max_restart=1), [ago(60, RESTART)], NOW)
    assert (decision.action, decision.reason) == (RELOCATE, "relocation 1 of 1 within 1 h, after 1 restart")


def test_a_death_after_every_restart_and_relocation_gives_up() -> None:
    attempts = [ago(120, RESTART), ago(60, RELOCATE)]
    decision = decide(RestartPolicy(), attempts, NOW)
    assert decision.action == GIVE_UP
    assert decision.reason == "1 restart and 1 relocation within 1 h already (max_restart 1, max_relocate 1)"


def test_attempts_older_than_the_window_are_forgotten() -> None:
    attempts = [ago(700, RESTART), ago(650, RELOCATE)]
    assert decide(RestartPolicy(window=600), attempts, NOW).action == RESTART


def test_an_attempt_exactly_one_window_old_is_forgotten() -> None:
    assert decide(RestartPolicy(window=600), [ago(600, RESTART)], NOW).action == RESTART


def test_max_restart_zero_relocates_at_once() -> None:
    assert decide(RestartPolicy(max_restart=0), [], NOW).action == RELOCATE


def test_zero_restarts_and_zero_relocations_leave_the_guest_stopped_at_once() -> None:
    assert decide(RestartPolicy(max_restart=0, max_relocate=0), [], NOW).action == GIVE_UP


def test_a_relocation_does_not_give_the_guest_new_restarts() -> None:
    attempts = [ago(300, RESTART), ago(200, RELOCATE)]
    assert decide(RestartPolicy(max_restart=1, max_relocate=2), attempts, NOW).reason == (
        "relocation 2 of 2 within 1 h, after 1 restart"
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(3600, "1 h"), (7200, "2 h"), (600, "10 min"), (5400, "90 min"), (90, "90 s"), (1.5, "1.5 s")]
)
def test_the_window_reads_in_the_largest_whole_unit(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# ---------------------------------------------------------------- per guest and per tag
XML = f"""<domain type='qemu'><name>web1</name><uuid>u-1</uuid><memory unit='MiB'>128</memory>
  <metadata><evac:guest xmlns:evac="{EVAC_NS}" priority="1" ha-max-restart="2" ha-max-relocate="0"
    ha-window="600" ha-tags="web, db"/></metadata><devices/></domain>"""


def web1(**ha: Any) -> Guest:
    guest = parse_guest(XML, "host2", "crashed", True, lambda _p: True)
    return replace(guest, ha=replace(guest.ha, **ha)) if ha else guest


def test_the_guest_metadata_is_read_as_written() -> None:
    assert web1().ha == HaMetadata(max_restart="2", max_relocate="0", window="600", tags=("web", "db"))


def test_a_guest_without_ha_metadata_has_none() -> None:
    bare = "<domain><name>g</name><devices/></domain>"
    assert parse_guest(bare, "host1", "running", True, lambda _p: True).ha == HaMetadata()


def test_the_guests_own_metadata_wins_over_its_tags_and_the_defaults() -> None:
    settings = HaSettings(tags={"web": TagRule(max_restart=5, window=60)})
    policy, _ = settings.for_guest(web1())
    assert policy == RestartPolicy(max_restart=2, max_relocate=0, window=600)


def test_a_tag_sets_what_the_guest_does_not() -> None:
    settings = HaSettings(policy=RestartPolicy(max_relocate=3), tags={"web": TagRule(max_restart=5, runbook="web-ha")})
    policy, runbook = settings.for_guest(web1(max_restart=None, max_relocate=None, window=None))
    assert (policy, runbook) == (RestartPolicy(max_restart=5, max_relocate=3, window=3600), "web-ha")


def test_the_first_of_the_guests_tags_that_sets_a_limit_wins() -> None:
    settings = HaSettings(tags={"db": TagRule(max_restart=9, window=60), "web": TagRule(window=120)})
    policy, _ = settings.for_guest(web1(max_restart=None, window=None))
    assert (policy.max_restart, policy.window) == (9, 120)


def test_a_guest_without_tags_or_metadata_gets_the_defaults() -> None:
    settings = HaSettings(policy=RestartPolicy(max_restart=4), tags={"web": TagRule(max_restart=5)})
    assert settings.for_guest(web1(max_restart=None, max_relocate=None, window=None, tags=())) == (
        RestartPolicy(max_restart=4),
        "guest-failure",
    )


@pytest.mark.parametrize(
    ("ha", "message"),
    [
        (
            {"max_restart": "two"},
            "guest web1 on host2: metadata ha-max-restart: expected a whole number >= 0, got 'two'",
        ),
        ({"max_relocate": "-1"}, "guest web1 on host2: metadata ha-max-relocate: expected a whole number >= 0, got -1"),
        ({"max_restart": "1.5"}, "guest web1 on host2: metadata ha-max-restart: expected a whole number >= 0, got 1.5"),
        ({"window": "0"}, "guest web1 on host2: metadata ha-window: expected seconds > 0 and at most 604800"),
        ({"window": "soon"}, "guest web1 on host2: metadata ha-window: expected seconds > 0 and at most 604800"),
        ({"window": "inf"}, "guest web1 on host2: metadata ha-window: expected seconds > 0 and at most 604800"),
    ],
)
def test_bad_guest_metadata_is_one_line_naming_the_guest_and_the_attribute(ha: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        HaSettings().for_guest(web1(**ha))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_every_runbook_a_recovery_may_run_is_known_to_the_settings() -> None:
    settings = HaSettings(runbook="mine", tags={"web": TagRule(runbook="web-ha"), "db": TagRule(max_restart=1)})
    assert settings.runbooks() == {"mine", "web-ha"}


def test_a_config_without_an_ha_section_gets_the_defaults() -> None:
    assert HaSettings.of({}) == HaSettings()

"""Slack's HTTP endpoint (bots/endpoint.py), signed and not: a status under 500, and no listener logs an exception."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from hypothesis import Phase, example, given, settings

from tests.fuzz.cases import (
    RESPONSE_URL,
    TARGETS,
    Driver,
    Outcome,
    SlackCase,
    action_payload,
    ci_settings,
    outcome,
)

TARGET = TARGETS["slack"]
FORM = "application/x-www-form-urlencoded"


def command(**fields: str) -> SlackCase:
    return SlackCase(urlencode(fields).encode(), "signed", FORM)


@ci_settings(TARGET)
@given(case=TARGET.strategy)
def test_any_slack_request_is_answered_under_500_and_no_listener_fails(drive: Driver, case: SlackCase) -> None:
    assert outcome(drive, case) in Outcome


@settings(phases=[Phase.explicit], database=None, deadline=None)
@example(case=command(command="/evac", text=" ", user_id="UOPS", channel_id="C1", response_url=RESPONSE_URL))
@given(case=TARGET.strategy)
def test_a_blank_evac_command_is_answered_without_a_listener_error(drive: Driver, case: SlackCase) -> None:
    drive(case)


@settings(phases=[Phase.explicit], database=None, deadline=None)
@example(case=command(command="/evac", text="help", channel_id="C1", response_url=RESPONSE_URL))
@given(case=TARGET.strategy)
def test_a_signed_command_without_user_id_is_answered_without_a_listener_error(drive: Driver, case: SlackCase) -> None:
    drive(case)


@settings(phases=[Phase.explicit], database=None, deadline=None)
@example(case=command(command="/evac", text="help", user_id="UOPS", channel_id="C1"))
@given(case=TARGET.strategy)
def test_a_signed_command_without_response_url_is_answered_without_a_listener_error(
    drive: Driver, case: SlackCase
) -> None:
    drive(case)


def button(**changes: object) -> SlackCase:
    payload = {**action_payload("evac_cancel_job", "1", "UOPS"), **changes}
    return SlackCase(urlencode({"payload": json.dumps(payload)}).encode(), "signed", FORM)


@settings(phases=[Phase.explicit], database=None, deadline=None)
@example(case=button(actions=[]))  # bolt's own action lookup failed on it
@example(case=button(response_url="1"))  # not a URL: the answer could not be posted
@example(case=button(message={"ts": ["1.000"]}))  # Web API calls failed on it
@example(case=button(user="UOPS"))  # not an object
@example(case=SlackCase(json.dumps({"type": "event_callback", "event": "x"}).encode(), "signed", "application/json"))
@given(case=TARGET.strategy)
def test_a_signed_button_press_not_shaped_as_slacks_is_a_400_and_no_listener_runs(
    drive: Driver, case: SlackCase
) -> None:
    assert drive(case) is Outcome.CLEAR

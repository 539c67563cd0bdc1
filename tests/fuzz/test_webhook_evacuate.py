"""``POST /hooks/evacuate``, bodies and headers: an answer under 500; a 4xx has a one-line JSON error."""

from __future__ import annotations

from hypothesis import given

from tests.fuzz.cases import TARGETS, Driver, Outcome, WebhookCase, ci_settings, outcome

TARGET = TARGETS["webhook evacuate"]


@ci_settings(TARGET)
@given(case=TARGET.strategy)
def test_any_evacuate_request_is_answered_under_500_with_a_one_line_error(drive: Driver, case: WebhookCase) -> None:
    assert outcome(drive, case) in Outcome

"""Templates (``evac.templating.render``): any template renders within its bounds, or fails with one line."""

from __future__ import annotations

from typing import Any

from hypothesis import Phase, example, given, settings

from tests.fuzz.cases import TARGETS, Driver, Outcome, ci_settings, outcome

TARGET = TARGETS["templates"]


@ci_settings(TARGET)
@given(case=TARGET.strategy)
def test_any_template_renders_or_fails_with_one_line(drive: Driver, case: Any) -> None:
    assert outcome(drive, case) in Outcome


@settings(phases=[Phase.explicit], database=None)
@example(case="{{ \x11 }}")
@example(case="{{ $ }}")
@given(case=TARGET.strategy)
def test_a_template_jinjas_lexer_refuses_fails_with_one_line(drive: Driver, case: Any) -> None:
    assert drive(case) is Outcome.CLEAR

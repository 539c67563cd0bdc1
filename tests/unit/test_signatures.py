"""The v1 webhook signature: what a sender computes and what evac checks (pure)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evac.signatures import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WINDOW,
    Flaw,
    SignatureError,
    sign,
    signed_headers,
    verify,
)

SECRET = "s3cret"
NOW = 1_767_225_600.0
PATH = "/hooks/evacuate"
BODY = b'{"host": "kvm3", "mode": "drain"}'
DOCS = Path(__file__).parents[2] / "docs" / "webhooks.md"


def lowered(headers: dict[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def flaw_of(headers: dict[str, str], path: str = PATH, body: bytes = BODY, now: float = NOW) -> Flaw:
    with pytest.raises(SignatureError) as caught:
        verify(SECRET, lowered(headers), path, body, now)
    return caught.value.flaw


def test_the_worked_example_in_the_senders_docs_signs_as_the_docs_say() -> None:
    documented = re.search(r"signs as\s+`(v1=[0-9a-f]{64})`", DOCS.read_text())
    assert documented is not None, "docs/webhooks.md: the worked example is gone"
    assert sign(SECRET, "1767225600", PATH, BODY) == documented.group(1)


def test_a_signed_request_verifies_and_gives_its_digest_to_remember() -> None:
    headers = signed_headers(SECRET, PATH, BODY, NOW)
    assert verify(SECRET, lowered(headers), PATH, BODY, NOW) == headers[SIGNATURE_HEADER].removeprefix("v1=")


def test_the_signature_covers_the_path() -> None:
    assert flaw_of(signed_headers(SECRET, "/hooks/alertmanager", BODY, NOW)) is Flaw.MISMATCH


def test_the_signature_covers_the_body() -> None:
    assert flaw_of(signed_headers(SECRET, PATH, BODY, NOW), body=BODY + b" ") is Flaw.MISMATCH


def test_the_signature_covers_the_timestamp() -> None:
    headers = signed_headers(SECRET, PATH, BODY, NOW)
    headers[TIMESTAMP_HEADER] = str(int(NOW) + 1)
    assert flaw_of(headers) is Flaw.MISMATCH


def test_another_secret_does_not_match() -> None:
    assert flaw_of(signed_headers("other", PATH, BODY, NOW)) is Flaw.MISMATCH


@pytest.mark.parametrize("skew", [-WINDOW - 1, WINDOW + 1])
def test_a_timestamp_over_five_minutes_from_evacs_clock_either_way_is_stale(skew: float) -> None:
    assert flaw_of(signed_headers(SECRET, PATH, BODY, NOW + skew)) is Flaw.STALE


@pytest.mark.parametrize("skew", [-WINDOW, 0, WINDOW])
def test_a_timestamp_within_five_minutes_either_way_is_accepted(skew: float) -> None:
    assert verify(SECRET, lowered(signed_headers(SECRET, PATH, BODY, NOW + skew)), PATH, BODY, NOW)


def test_the_old_body_only_signature_is_refused_saying_how_to_sign_now() -> None:
    with pytest.raises(SignatureError, match=r"sha256= signs the body only .*v1:\{timestamp\}:\{path\}:\{body\}"):
        verify(SECRET, {"x-evac-signature": "sha256=" + "0" * 64}, PATH, BODY, NOW)


@pytest.mark.parametrize("missing", [SIGNATURE_HEADER, TIMESTAMP_HEADER])
def test_a_missing_header_is_named(missing: str) -> None:
    headers = signed_headers(SECRET, PATH, BODY, NOW)
    del headers[missing]
    with pytest.raises(SignatureError, match=f"^{missing}: required"):
        verify(SECRET, lowered(headers), PATH, BODY, NOW)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (SIGNATURE_HEADER, "v1=" + "A" * 64),  # upper case would be a second spelling of one signature
        (SIGNATURE_HEADER, "v1=zz"),
        (SIGNATURE_HEADER, "v2=" + "0" * 64),
        (TIMESTAMP_HEADER, "soon"),
        (TIMESTAMP_HEADER, "9" * 5000),
        (TIMESTAMP_HEADER, "-5"),
    ],
)
def test_a_malformed_header_is_refused(header: str, value: str) -> None:
    headers = signed_headers(SECRET, PATH, BODY, NOW)
    headers[header] = value
    assert flaw_of(headers) is Flaw.MALFORMED


def test_signed_headers_are_stamped_with_the_current_time() -> None:
    import time

    before = int(time.time())
    assert before <= int(signed_headers(SECRET, PATH, BODY)[TIMESTAMP_HEADER]) <= before + 1

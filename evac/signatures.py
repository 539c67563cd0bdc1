"""Webhook signatures in Slack's style: what a sender computes and what evac checks.

A sender that can sign (a script, the evacuate hook's callers) sends two headers::

    X-Evac-Timestamp: 1767225600                      (unix seconds, now)
    X-Evac-Signature: v1=HEX                          (HMAC-SHA256 of the base string)

where the base string is ``v1:{timestamp}:{path}:{body}``: the request's path (no query
string) and its body byte for byte. evac refuses a timestamp more than five minutes
from its own clock, either way, and remembers each signature until it can no longer be
valid, so a captured request cannot be sent again (that part needs the journal and lives
in ``evac.webhooks``). Everything here is pure: senders' docs and tests use it as is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from enum import StrEnum

VERSION = "v1"
TIMESTAMP_HEADER = "X-Evac-Timestamp"
SIGNATURE_HEADER = "X-Evac-Signature"
WINDOW = 300.0  # seconds a signed request is good for, before or after evac's clock
REMEMBER = 2 * WINDOW  # how long a signature must be remembered to refuse every replay of it
HOW_TO_SIGN = (
    f"send {TIMESTAMP_HEADER}: <unix seconds> and {SIGNATURE_HEADER}: v1=<hex HMAC-SHA256 of "
    "'v1:{timestamp}:{path}:{body}' with webhooks.hmac_secret> (docs/webhooks.md)"
)
_SIGNATURE = re.compile(r"v1=([0-9a-f]{64})")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class Flaw(StrEnum):
    """Why a signature was refused: a small vocabulary, fit for a metric or an audit row."""

    MISSING = "missing"
    BODY_ONLY = "body_only"  # the old ``sha256=HMAC(body)``: replayable forever
    MALFORMED = "malformed"
    STALE = "stale"
    MISMATCH = "mismatch"


class SignatureError(Exception):
    def __init__(self, flaw: Flaw, message: str) -> None:
        super().__init__(message)
        self.flaw = flaw


def bearer_matches(headers: Mapping[str, str], token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    given = headers.get("authorization", "")
    return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())


def base_string(timestamp: str, path: str, body: bytes) -> bytes:
    """What is signed: ``v1:{timestamp}:{path}:{body}``."""
    return f"{VERSION}:{timestamp}:{path}:".encode() + body


def sign(secret: str, timestamp: str, path: str, body: bytes) -> str:
    """The ``X-Evac-Signature`` value: ``v1=`` and the hex HMAC-SHA256 of the base string."""
    digest = hmac.new(secret.encode(), base_string(timestamp, path, body), hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def signed_headers(secret: str, path: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The two headers a sender adds to a request of ``body`` to ``path``, signed now."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, timestamp, path, body)}


def verify(secret: str, headers: Mapping[str, str], path: str, body: bytes, now: float) -> str:
    """The signature's hex digest when ``headers`` sign ``body`` for ``path`` within the
    window around ``now``; ``SignatureError`` saying why not. ``headers`` are looked up by
    their lower-case names. The digest is what a caller remembers to refuse replays."""
    given = headers.get(SIGNATURE_HEADER.lower(), "").strip()
    stamp = headers.get(TIMESTAMP_HEADER.lower(), "").strip()
    if given.startswith("sha256="):
        raise SignatureError(
            Flaw.BODY_ONLY,
            f"{SIGNATURE_HEADER}: sha256= signs the body only and can be replayed forever; {HOW_TO_SIGN}",
        )
    if not given or not stamp:
        missing = SIGNATURE_HEADER if not given else TIMESTAMP_HEADER
        raise SignatureError(Flaw.MISSING, f"{missing}: required; {HOW_TO_SIGN}")
    match = _SIGNATURE.fullmatch(given)
    if not match:
        raise SignatureError(
            Flaw.MALFORMED, f"{SIGNATURE_HEADER}: expected v1=<64 lower-case hex digits>; {HOW_TO_SIGN}"
        )
    if not _TIMESTAMP.fullmatch(stamp):
        raise SignatureError(Flaw.MALFORMED, f"{TIMESTAMP_HEADER}: expected unix seconds, got {stamp[:20]!r}")
    skew = int(stamp) - now
    if abs(skew) > WINDOW:
        side = "ahead of" if skew > 0 else "behind"
        raise SignatureError(
            Flaw.STALE,
            f"{TIMESTAMP_HEADER}: {abs(skew):.0f} s {side} evac's clock, over the {WINDOW:.0f} s window; "
            "sign each request when it is sent (and check the sender's clock)",
        )
    if not hmac.compare_digest(sign(secret, stamp, path, body), given):
        raise SignatureError(
            Flaw.MISMATCH, f"{SIGNATURE_HEADER}: does not match this path and body for webhooks.hmac_secret"
        )
    return match.group(1)

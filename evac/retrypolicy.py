"""A step's ``retry:`` block as a tenacity policy.

The sleep function is injectable so tests assert the waits without sleeping; a
cancelled job is never retried whatever ``on`` names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import tenacity

from .errors import Cancelled, Interrupted
from .runbook import Retry, Wait


def wait_strategy(wait: Wait) -> tenacity.wait.wait_base:
    if wait.kind == "fixed":
        return tenacity.wait_fixed(wait.seconds)
    if wait.kind == "exponential":
        return tenacity.wait_exponential_jitter(
            initial=wait.initial, max=wait.maximum, exp_base=wait.base, jitter=wait.jitter
        )
    return tenacity.wait_none()


def retrying(
    spec: Retry,
    classes: Mapping[str, type[BaseException]],
    sleep: Callable[[float], None],
    before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
) -> tenacity.Retrying:
    retry_on = tuple(classes[name] for name in spec.on if name in classes)
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(spec.attempts),
        wait=wait_strategy(spec.wait),
        retry=tenacity.retry_if_exception_type(retry_on)
        & tenacity.retry_if_not_exception_type((Cancelled, Interrupted)),
        reraise=True,
        sleep=sleep,
        before_sleep=before_sleep,
    )

"""Built-in actions any runbook can use: ``notify.log`` and ``wait.seconds``.

Registered through the ``evac`` entry-point group like any third-party plugin; it is the
smallest example of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evac import Action, StepContext, hookimpl


def log(ctx: StepContext) -> Mapping[str, Any]:
    text = str(ctx.inputs.get("text", ""))
    ctx.progress(text, level=ctx.inputs.get("level", "info"))
    return {"text": text}


def wait_seconds(ctx: StepContext) -> Mapping[str, Any]:
    """Waits in small slices so a cancel or timeout ends it at once."""
    seconds = float(ctx.inputs.get("seconds", 0))
    ctx.abort.wait(seconds)
    ctx.check_abort()
    return {"waited": seconds}


@hookimpl
def evac_actions() -> list[Action]:
    return [
        Action(
            "notify.log",
            log,
            plan=lambda ctx: {"would_log": ctx.inputs.get("text")},
            description="Write a message to the job's events (and every observer: terminal, Slack).",
            inputs=("text", "level"),
            required=("text",),
        ),
        Action(
            "wait.seconds",
            wait_seconds,
            plan=lambda ctx: {"would_wait": ctx.inputs.get("seconds")},
            description="Wait; ends early when the job is cancelled.",
            inputs=("seconds",),
            required=("seconds",),
        ),
    ]

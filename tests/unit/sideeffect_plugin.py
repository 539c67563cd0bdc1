"""Actions with real side effects on files, for the kill-and-resume test.

``effect.append`` is idempotent the way evac actions must be: it looks at the real state
(the file) first and appends only what is missing. ``effect.count`` is not idempotent on
purpose: each call leaves a line, so the test sees whether the engine called it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evac import Action, StepContext, hookimpl


def append(ctx: StepContext) -> Mapping[str, Any]:
    path = Path(ctx.inputs["path"])
    line = str(ctx.inputs["line"])
    with open(Path(ctx.inputs["calls"]), "a") as calls:
        calls.write(f"append {line}\n")
    if path.exists() and line in path.read_text().splitlines():
        return {"line": line, "already": True}
    ctx.abort.wait(float(ctx.inputs.get("delay", 0)))  # work that takes a while, as a real action would
    with open(path, "a") as f:
        f.write(line + "\n")
    ctx.abort.wait(float(ctx.inputs.get("delay", 0)))  # work that takes a while, as a real action would
    return {"line": line, "already": False}


def count(ctx: StepContext) -> Mapping[str, Any]:
    with open(Path(ctx.inputs["calls"]), "a") as calls:
        calls.write(f"count {ctx.step}\n")
    return {}


@hookimpl
def evac_actions() -> list[Action]:
    return [Action("effect.append", append), Action("effect.count", count)]

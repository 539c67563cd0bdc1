"""Events: every state change of a job, as one small record every observer receives.

The engine emits them through the ``evac_event`` hook and writes them to the journal;
the CLI, the Slack bot and metrics subscribe to the hook and never poll the engine.
``kind`` is an :class:`evac.states.EventKind` (a ``StrEnum``, so also its string);
``docs/plugins.md`` lists every kind with its job id, step/item, message and ``data`` keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str  # an EventKind: job.started, step.finished, item.retry, progress, ...
    job_id: int
    step: str = ""
    item: str = ""
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

"""What a runbook step does: an ``Action`` a plugin registers, run with a ``StepContext``.

An action must be idempotent: after a crash the engine runs an unfinished item again,
so ``run`` checks the real state first (is the guest already on the target?) and acts
only on what is left. ``plan`` describes what ``run`` would do, for ``--dry-run``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import tokens
from .events import Event
from .states import EventKind

if TYPE_CHECKING:
    from .appview import AppView

ACTION_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


@dataclass(eq=False)
class StepContext:
    """Everything an action may use; ``inputs`` is the step's rendered ``with``.

    ``app`` is the running evac (inventory, journal, plugin manager), typed so an action
    finds what it needs without string keys; it is None only for an engine built without
    one (unit tests of actions that need nothing from it).
    """

    job_id: int
    step: str
    inputs: dict[str, Any]
    params: dict[str, Any]
    item: Any = None
    dry_run: bool = False
    attempt: int = 1
    abort: threading.Event = field(default_factory=threading.Event)
    emit: Callable[[Event], None] = lambda _e: None
    app: AppView | None = None

    def progress(self, message: str, **data: Any) -> None:
        """Report progress of this step (and item) to every observer."""
        self.emit(Event(EventKind.PROGRESS, self.job_id, self.step, item_key(self.item), message, data))

    def guard(self) -> int:
        """Call right before an effect (a fence, a restart, a migration start): proves this
        process still owns the job, or raises ``OwnershipLost`` so nothing happens. The
        returned fencing token is also kept for the thread (:mod:`evac.tokens`), for an
        outside party that checks it, such as the lab's power switch."""
        token = self.app.journal.fence_token(self.job_id) if self.app is not None else 0
        tokens.current.set(token)
        return token

    def check_abort(self) -> None:
        """Raise ``Cancelled`` if the job was cancelled or the step timed out."""
        if self.abort.is_set():
            from .errors import Cancelled

            raise Cancelled(f"step '{self.step}' aborted")


@dataclass(frozen=True)
class Action:
    """A runbook action, registered through ``evac_actions``.

    ``run(ctx)`` does the work and returns the step's outputs (a mapping, or None).
    ``plan(ctx)`` returns what ``run`` would do, changing nothing; without it a dry run
    reports the rendered inputs. ``inputs`` names the ``with`` keys the action accepts
    (``None``: any) and ``required`` those it needs, so runbooks are checked before a run.
    """

    name: str
    run: Callable[[StepContext], Mapping[str, Any] | None]
    plan: Callable[[StepContext], Any] | None = None
    description: str = ""
    inputs: tuple[str, ...] | None = None
    required: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not ACTION_NAME.match(self.name):
            raise ValueError(f"action name {self.name!r}: expected area.verb, like vm.live_migrate")


def item_key(item: Any) -> str:
    """A short, stable name for a ``for_each`` item (a guest's name, a host's)."""
    if item is None:
        return ""
    if isinstance(item, Mapping):
        for key in ("name", "guest", "id", "host"):
            if key in item:
                return str(item[key])
    return str(item)

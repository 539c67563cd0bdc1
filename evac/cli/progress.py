"""Live progress on the terminal: an ``evac_event`` observer registered by the CLI."""

from __future__ import annotations

import time

from rich.console import Console

from ..events import Event
from ..hooks import hookimpl
from ..states import EventKind, ItemState, StepState

# Keyed by StepState; item and job states share its values (a StrEnum is its string).
MARK: dict[str, str] = {
    StepState.SUCCEEDED: "[green]ok[/]",
    StepState.FAILED: "[red]FAILED[/]",
    StepState.PARTIAL: "[yellow]partial[/]",
    StepState.CANCELLED: "[yellow]cancelled[/]",
    StepState.SKIPPED: "[dim]skipped[/]",
}


class TerminalProgress:
    """Prints one line per meaningful event; item counts for ``for_each`` steps."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.items: dict[str, list[int]] = {}

    def _line(self, event: Event, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
        self.console.print(f"[dim]{stamp}[/] job {event.job_id} {text}", highlight=False)

    @hookimpl
    def evac_event(self, event: Event) -> None:
        kind, data = event.kind, event.data
        if kind in (EventKind.JOB_STARTED, EventKind.JOB_RESUMED):
            dry = " (dry run)" if data.get("dry_run") else ""
            self._line(event, f"[bold]{kind.split('.')[1]}[/] {data.get('runbook')} {data.get('params')}{dry}")
        elif kind == EventKind.STEP_STARTED:
            self._line(event, f"step [bold]{event.step}[/] ({data.get('action')})")
        elif kind == EventKind.ITEM_FINISHED:
            done = self.items.setdefault(event.step, [0, 0])
            done[0 if data.get("state") == ItemState.SUCCEEDED else 1] += 1
            tail = f": {event.message}" if event.message else ""
            self._line(event, f"  {event.item} {MARK.get(str(data.get('state')), '')}{tail}")
        elif kind == EventKind.ITEM_RETRY:
            self._line(event, f"  {event.item or event.step} retry in {data.get('wait', 0):.1f} s: {event.message}")
        elif kind == EventKind.PROGRESS:
            self._line(event, f"  {event.item or event.step}: {event.message}")
        elif kind == EventKind.STEP_FINISHED:
            counts = self.items.get(event.step)
            extra = f" ({counts[0]} ok, {counts[1]} failed)" if counts else ""
            self._line(
                event, f"step {event.step} {MARK.get(str(data.get('state')), '')}{extra} in {data.get('seconds')} s"
            )
        elif kind in (
            EventKind.STEP_SKIPPED,
            EventKind.STEP_FAILED,
            EventKind.APPROVAL_REQUESTED,
            EventKind.APPROVAL_GRANTED,
            EventKind.JOB_CANCEL_REQUESTED,
            EventKind.ROLLBACK_STARTED,
        ):
            self._line(event, f"{kind} {event.step} {event.message}".rstrip())
        elif kind == EventKind.JOB_FINISHED:
            state = str(data.get("state"))
            self._line(event, f"[bold]finished[/] {MARK.get(state, state)} {event.message}".rstrip())

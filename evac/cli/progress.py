"""Live progress on the terminal: an ``evac_event`` observer registered by the CLI."""

from __future__ import annotations

import time

from rich.console import Console

from ..events import Event
from ..hooks import hookimpl

MARK = {
    "succeeded": "[green]ok[/]",
    "failed": "[red]FAILED[/]",
    "partial": "[yellow]partial[/]",
    "cancelled": "[yellow]cancelled[/]",
    "skipped": "[dim]skipped[/]",
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
        if kind in ("job.started", "job.resumed"):
            dry = " (dry run)" if data.get("dry_run") else ""
            self._line(event, f"[bold]{kind.split('.')[1]}[/] {data.get('runbook')} {data.get('params')}{dry}")
        elif kind == "step.started":
            self._line(event, f"step [bold]{event.step}[/] ({data.get('action')})")
        elif kind == "item.finished":
            done = self.items.setdefault(event.step, [0, 0])
            done[0 if data.get("state") == "succeeded" else 1] += 1
            tail = f": {event.message}" if event.message else ""
            self._line(event, f"  {event.item} {MARK.get(str(data.get('state')), '')}{tail}")
        elif kind == "item.retry":
            self._line(event, f"  {event.item or event.step} retry in {data.get('wait', 0):.1f} s: {event.message}")
        elif kind == "progress":
            self._line(event, f"  {event.item or event.step}: {event.message}")
        elif kind == "step.finished":
            counts = self.items.get(event.step)
            extra = f" ({counts[0]} ok, {counts[1]} failed)" if counts else ""
            self._line(
                event, f"step {event.step} {MARK.get(str(data.get('state')), '')}{extra} in {data.get('seconds')} s"
            )
        elif kind in (
            "step.skipped",
            "step.failed",
            "approval.requested",
            "approval.granted",
            "job.cancel_requested",
            "rollback.started",
        ):
            self._line(event, f"{kind} {event.step} {event.message}".rstrip())
        elif kind == "job.finished":
            state = str(data.get("state"))
            self._line(event, f"[bold]finished[/] {MARK.get(state, state)} {event.message}".rstrip())

"""The run's report: faults by kind, jobs by outcome, violations, settle times, the seed."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.report import table

from .faults import Fault
from .invariants import Violation
from .workload import Action


@dataclass(frozen=True)
class Injected:
    t: float  # s into the run, when injected
    fault: Fault
    settle: float | None  # s from its round's last heal to settled again; None: not within the bound
    overlapping: bool = False  # one of a round's two faults
    recovered: float | None = None  # s from its injection to settled again (what users of the guests see)


@dataclass
class Outcome:
    seed: int
    seconds: float
    injected: list[Injected] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)  # "runbook state" -> count
    violations: list[Violation] = field(default_factory=list)
    refused_starts: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    sample_gaps: int = 0  # sampling rounds slower than 0.5 s
    transient: int = 0  # double listings in one sample only (a switchover between two hosts' answers)
    notes: list[str] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)  # guest -> why evac left it stopped (not a violation)


def fault_rows(injected: Sequence[Injected]) -> list[list[Any]]:
    """One row per kind: how many (of them overlapping another), the settle times after
    the heal (median, worst), the recovery times from the injection (median, worst), and
    how many never settled. A fault that found no target is not counted."""
    by_kind: dict[str, list[Injected]] = {}
    for i in injected:
        if i.fault.target:
            by_kind.setdefault(str(i.fault.kind), []).append(i)
    rows: list[list[Any]] = []
    for kind, hits in sorted(by_kind.items()):
        settles = sorted(i.settle for i in hits if i.settle is not None)
        recoveries = sorted(i.recovered for i in hits if i.recovered is not None)
        unsettled = len(hits) - len(settles)
        rows.append(
            [kind, len(hits), sum(i.overlapping for i in hits), *spread(settles), *spread(recoveries), unsettled]
        )
    return rows


def spread(values: Sequence[float]) -> tuple[float | str, float | str]:
    """The median and the worst of sorted ``values``; "-" for none."""
    return (values[len(values) // 2], values[-1]) if values else ("-", "-")


FAULT_COLUMNS = (
    "fault",
    "injected",
    "overlapping",
    "settle median s",
    "settle worst s",
    "recovered median s",
    "recovered worst s",
    "unsettled",
)


def said(outcome: str) -> str:
    """An action's outcome with its numbers as N, so alike outcomes count in one row."""
    return re.sub(r"[0-9]+", "N", outcome)[:70]


def text(outcome: Outcome) -> str:
    parts = [
        table(f"Nemesis, seed {outcome.seed}: faults", FAULT_COLUMNS, fault_rows(outcome.injected)),
        table("Jobs by outcome", ("runbook outcome", "jobs"), sorted(outcome.jobs.items())),
        table(
            "Workload",
            ("channel verb outcome", "count"),
            sorted(Counter(f"{a.channel} {a.verb} {said(a.outcome)}" for a in outcome.actions).items()),
        ),
    ]
    lines = [f"violations: {len(outcome.violations)}"] + [f"  {v.line()}" for v in outcome.violations]
    lines.append(f"samples: {outcome.samples} ({outcome.sample_gaps} rounds slower than 0.5 s)")
    lines.append(f"double listings in one sample only (switchovers): {outcome.transient}")
    refused = outcome.refused_starts
    lines.append(f"QEMU starts refused by an image lock: {sum(refused.values())} {refused}")
    lines += [f"left stopped by evac, as its restart policy says: {g}: {why}" for g, why in outcome.stopped.items()]
    lines += [f"note: {n}" for n in outcome.notes]
    return "\n\n".join(parts) + "\n\n" + "\n".join(lines)


def as_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "seed": outcome.seed,
        "seconds": round(outcome.seconds, 1),
        "faults": [
            {
                "t": i.t,
                "kind": str(i.fault.kind),
                "target": i.fault.target,
                "hold": i.fault.hold,
                "settle": i.settle,
                "recovered": i.recovered,
                "overlapping": i.overlapping,
            }
            for i in outcome.injected
        ],
        "faults_by_kind": dict(Counter(str(i.fault.kind) for i in outcome.injected if i.fault.target)),
        "workload": [a.__dict__ for a in outcome.actions],
        "jobs": outcome.jobs,
        "violations": [v.__dict__ for v in outcome.violations],
        "refused_starts": outcome.refused_starts,
        "samples": outcome.samples,
        "sample_gaps": outcome.sample_gaps,
        "transient": outcome.transient,
        "notes": outcome.notes,
        "stopped": outcome.stopped,
    }

"""Fuzz evac's entry points: ``--cases`` generated inputs per target, counted by outcome.

    .venv/bin/python -m bench.fuzz [--cases 10000] [--seed 0] [--target NAME ...]

The inputs and drivers are tests/fuzz/cases.py's, the same the CI suite runs a few hundred
of: the YAML loader, runbooks (in process and ``evac runbook validate``), ``-p`` params,
templates, ``hosts.yaml``, ``evac.yaml``, both webhooks (bodies and headers, in process on
a real App whose hosts do not exist) and Slack's endpoint (signed and not, on a mock Web
API). Each case ends as accepted, a clear one-line error, or a crash: any other exception,
a 500, an error over several lines, a listener's logged exception, or a case slower than
its target's deadline. Target: 0 crashes. The first crashes of each target are printed
with their input and the head of their traceback, and kept in bench/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.configuration import set_hypothesis_home_dir

from bench.report import publish
from tests.fuzz.cases import TARGETS, Outcome, Target, known_crash

COLUMNS = ["target", "cases", "clear errors", "accepted", "crashes", "slowest ms", "deadline s"]
KEEP = 5  # crashes kept per target, with input and traceback head


@dataclass
class Tally:
    cases: int = 0
    clear: int = 0
    accepted: int = 0
    crashes: list[dict[str, Any]] = field(default_factory=list)
    crash_count: int = 0
    slowest: float = 0.0
    slowest_case: str = ""

    def crash(self, case: Any, what: str, head: str, known: str | None) -> None:
        self.crash_count += 1
        if len(self.crashes) < KEEP:
            self.crashes.append({"input": repr(case)[:400], "error": what, "traceback": head, "known": known})


def traceback_head(exc: BaseException) -> str:
    """The exception and the innermost frames, evac's or the test kit's."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    return f"{type(exc).__name__}: {str(exc)[:300]} at {where}"


def fuzz(target: Target, cases: int, first_seed: int) -> Tally:
    tally = Tally()
    step = max(1, cases // 10)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="evac-fuzz-") as tmp, target.open(Path(tmp)) as drive:

        def one(case: Any) -> None:
            started = time.perf_counter()
            try:
                outcome = drive(case)
            except Exception as exc:
                outcome = None
                tally.crash(case, type(exc).__name__, traceback_head(exc), known_crash(exc))
            elapsed = time.perf_counter() - started
            if outcome is Outcome.CLEAR:
                tally.clear += 1
            elif outcome is Outcome.ACCEPTED:
                tally.accepted += 1
            if outcome is not None and elapsed > target.deadline:
                tally.crash(case, f"over the {target.deadline} s deadline ({elapsed:.2f} s)", "", None)
            tally.cases += 1
            if elapsed > tally.slowest:
                tally.slowest, tally.slowest_case = elapsed, repr(case)[:200]
            if tally.cases % step == 0:
                print(
                    f"  {target.name}: {tally.cases}/{cases} cases, {tally.crash_count} crashes, "
                    f"{time.monotonic() - began:.0f} s",
                    flush=True,
                )

        # Rounds of fresh seeds until ``cases`` have run: hypothesis may stop a round early
        # when it has tried everything a small strategy can make.
        round_ = 0
        while tally.cases < cases:
            run = given(target.strategy)(one)
            run = settings(
                max_examples=cases - tally.cases,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(run)
            seed(first_seed + round_)(run)()
            round_ += 1
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=10_000, help="cases per target (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", action="append", choices=list(TARGETS), help="only these (repeatable)")
    args = parser.parse_args()
    home = tempfile.TemporaryDirectory(prefix="evac-hypothesis-")  # nothing left in the tree
    set_hypothesis_home_dir(home.name)
    warnings.filterwarnings("ignore")  # hypothesis's large-repr and starlette's deprecation notes
    rows, crashes, slowest = [], {}, {}
    began = time.monotonic()
    for name in args.target or list(TARGETS):
        target = TARGETS[name]
        print(f"{name}: {args.cases} cases (seed {args.seed})", flush=True)
        tally = fuzz(target, args.cases, args.seed)
        rows.append(
            [
                name,
                tally.cases,
                tally.clear,
                tally.accepted,
                tally.crash_count,
                round(tally.slowest * 1000, 1),
                target.deadline,
            ]
        )
        crashes[name] = tally.crashes
        slowest[name] = tally.slowest_case
        for crash in tally.crashes:
            print(f"  CRASH {crash['error']}: {crash['input'][:200]}\n    {crash['traceback'][:400]}", flush=True)
    total = sum(r[4] for r in rows)
    publish(
        "fuzz",
        f"fuzz: {sum(r[1] for r in rows)} cases over {len(rows)} targets in {time.monotonic() - began:.0f} s, "
        f"seed {args.seed}; crashes {total} (target 0)",
        COLUMNS,
        rows,
        {"seed": args.seed, "cases_per_target": args.cases, "crashes": crashes, "slowest_cases": slowest},
    )
    home.cleanup()
    return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main())

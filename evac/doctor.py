"""``evac doctor``: evidence that a fleet is safe to automate, before evac fences anything.

Automatic failover is only as safe as the parts it relies on: a lock manager that refuses
a second writer, fence methods that answer, guests that do not start twice by themselves.
The doctor runs checks against each inventory host and records what it found, so the
question "may evac fence this host?" has an answer with evidence behind it
(:meth:`DoctorRun.safe_to_fence`), and a check nobody ran reads "never checked".

Checks come from plugins (``evac_doctor_checks``; the built-ins are ``plugins/doctor*.py``).
A check is a function ``run(ctx, host) -> Finding``; the runner gives each its own thread
and deadline, so one hung BMC cannot stall the report, and turns any exception into a
``fail`` with its one-line message, never a traceback. Hosts are checked concurrently.

Each host's run is stored in the journal (``doctor:HOST``, see :func:`record`) as JSON:

    {"checks": [{"evidence": str, "fix": str, "name": str, "result": "pass|warn|fail|skip",
                 "safety": bool, "seconds": float}, ...],
     "host": str, "safety_failed": bool, "schema": 1, "seconds": float, "started": float}

``evac doctor --json`` prints ``{"hosts": [run, ...], "ok": bool, "schema": 1}`` with the
same run objects; keys are sorted, checks keep their registration order.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import pluggy

from .appview import AppView
from .inventory import HostSpec
from .journal import Journal
from .registry import by_name

SCHEMA = 1
JOURNAL_PREFIX = "doctor:"


class Result(StrEnum):
    """A check's verdict. ``skip`` means the check does not apply (and says why); it is
    not a pass: a skipped safety check proves nothing."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Finding:
    """What a check function returns: its verdict, the evidence behind it (what was looked
    at, and what was not proven) and, unless it passed, how to fix it."""

    result: Result
    evidence: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorContext:
    """What a check may use: the application (inventory, journal, plugins) and the run's options."""

    app: AppView
    power_cycle_test: bool = False
    clock_bound: float = 0.5  # seconds a host's clock may differ from the controller's


@dataclass(frozen=True)
class DoctorCheck:
    """A check a plugin registers through ``evac_doctor_checks``.

    ``run(ctx, host)`` inspects one host and returns a :class:`Finding`; it changes nothing
    (a check that must, like the lock probe, says so in ``description`` and cleans up).
    ``safety`` marks the checks whose failure makes automatic fencing unsafe (lock
    manager, fencing, autostart): :meth:`DoctorRun.safe_to_fence` looks at those only.
    """

    name: str
    run: Callable[[DoctorContext, HostSpec], Finding]
    description: str = ""
    safety: bool = False
    timeout: float = 30.0


@dataclass(frozen=True)
class Check:
    """One check's outcome on one host, as stored and reported."""

    name: str
    result: Result
    evidence: str
    fix: str = ""
    safety: bool = False
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "evidence": self.evidence,
            "fix": self.fix,
            "name": self.name,
            "result": str(self.result),
            "safety": self.safety,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class DoctorRun:
    """Every check's outcome on one host, at one time."""

    host: str
    started: float
    checks: tuple[Check, ...] = ()
    seconds: float = 0.0

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.result is Result.FAIL)

    @property
    def safety_failed(self) -> bool:
        return any(c.safety for c in self.failed)

    def safe_to_fence(self) -> tuple[bool, str]:
        """(True, what passed) when every safety check ran and none failed; else (False, why):
        ``failed CHECK: FIX`` for the first failed safety check, ``never checked`` when the
        run has no safety check that ran (all skipped, or none registered)."""
        for check in self.checks:
            if check.safety and check.result is Result.FAIL:
                return False, f"failed {check.name}: {check.fix or check.evidence}"
        ran = [c.name for c in self.checks if c.safety and c.result is not Result.SKIP]
        if not ran:
            return False, "never checked"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return True, f"{', '.join(ran)} passed at {when}"

    def as_json(self) -> dict[str, Any]:
        return {
            "checks": [c.as_json() for c in self.checks],
            "host": self.host,
            "safety_failed": self.safety_failed,
            "schema": SCHEMA,
            "seconds": round(self.seconds, 3),
            "started": round(self.started, 3),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DoctorRun:
        checks = tuple(
            Check(
                name=str(c["name"]),
                result=Result(c["result"]),
                evidence=str(c.get("evidence", "")),
                fix=str(c.get("fix", "")),
                safety=bool(c.get("safety", False)),
                seconds=float(c.get("seconds", 0.0)),
            )
            for c in data.get("checks", [])
        )
        return cls(
            host=str(data["host"]),
            started=float(data["started"]),
            checks=checks,
            seconds=float(data.get("seconds", 0.0)),
        )


def registered_checks(pm: pluggy.PluginManager) -> dict[str, DoctorCheck]:
    """Every check by name, in registration order; a name registered twice is an error naming both plugins."""
    hook = getattr(pm.hook, "evac_doctor_checks", None)
    if hook is None:
        return {}
    pairs: list[tuple[str, DoctorCheck]] = []
    for impl in hook.get_hookimpls():  # registration order: the built-ins first
        checks = cast("Iterable[DoctorCheck] | None", impl.function())
        pairs.extend((impl.plugin_name, check) for check in checks or ())
    by_name("doctor check", pairs)  # raises on a duplicate
    return {check.name: check for _, check in pairs}


def one_line(exc: BaseException) -> str:
    """An exception as one line: its class and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def run_check(ctx: DoctorContext, check: DoctorCheck, host: HostSpec) -> Check:
    """Run one check on its own daemon thread with its deadline. A check that raises is a
    ``fail`` carrying its one-line error; one that overruns is a ``fail`` too, and its
    thread is left behind (a daemon thread: it cannot keep the command alive)."""
    outcome: list[Finding | BaseException] = []
    done = threading.Event()

    def target() -> None:
        try:
            outcome.append(check.run(ctx, host))
        except BaseException as exc:  # every failure of a check, SystemExit included, is a finding
            outcome.append(exc)
        finally:
            done.set()

    started = time.monotonic()
    threading.Thread(target=target, name=f"doctor-{host.name}-{check.name}", daemon=True).start()
    finished = done.wait(check.timeout)
    seconds = time.monotonic() - started
    if not finished:
        return Check(
            check.name,
            Result.FAIL,
            f"no answer within {check.timeout:g} s",
            "find what hangs (a BMC, SSH, libvirtd) and run evac doctor again",
            check.safety,
            seconds,
        )
    found = outcome[0]
    if isinstance(found, BaseException):
        return Check(check.name, Result.FAIL, one_line(found), "see the error", check.safety, seconds)
    if not isinstance(found, Finding):
        evidence = f"the check returned {type(found).__name__}, not a Finding"
        return Check(check.name, Result.FAIL, evidence, "fix the plugin's check", check.safety, seconds)
    return Check(check.name, Result(found.result), found.evidence, found.fix, check.safety, seconds)


def examine_host(
    ctx: DoctorContext, host: HostSpec, checks: Sequence[DoctorCheck], clock: Callable[[], float] = time.time
) -> DoctorRun:
    """Every check on one host, one after the other (a host's checks share its SSH and libvirt)."""
    started, t0 = clock(), time.monotonic()
    results = tuple(run_check(ctx, check, host) for check in checks)
    return DoctorRun(host=host.name, started=started, checks=results, seconds=time.monotonic() - t0)


def examine(
    ctx: DoctorContext, hosts: Sequence[HostSpec], checks: Sequence[DoctorCheck], clock: Callable[[], float] = time.time
) -> list[DoctorRun]:
    """Every check on every host, hosts concurrently; runs come back in the hosts' order."""
    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(hosts)), thread_name_prefix="doctor") as pool:
        return list(pool.map(lambda h: examine_host(ctx, h, checks, clock), hosts))


def diagnose(app: AppView, hosts: Sequence[HostSpec] | None = None, power_cycle_test: bool = False) -> list[DoctorRun]:
    """Run every registered check on ``hosts`` (default: every inventory host) and record
    each host's run: the one way the CLI, Slack and the tests run the doctor."""
    chosen = list(app.inventory.hosts) if hosts is None else list(hosts)
    runs = examine(
        DoctorContext(app=app, power_cycle_test=power_cycle_test), chosen, list(registered_checks(app.pm).values())
    )
    for run in runs:
        record(app.journal, run)
    return runs


def record(journal: Journal, run: DoctorRun) -> None:
    """Keep a host's latest run in the journal (SQLite or etcd alike), for :func:`last_doctor`."""
    journal.remember(f"{JOURNAL_PREFIX}{run.host}", json.dumps(run.as_json(), sort_keys=True))


def last_doctor(journal: Journal, host: str) -> DoctorRun | None:
    """The latest recorded run for ``host``, or None when the doctor never checked it
    (or what is stored cannot be read: treated as never checked, never as safe)."""
    text = journal.recall(f"{JOURNAL_PREFIX}{host}")
    if text is None:
        return None
    try:
        return DoctorRun.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError):
        return None


def safe_to_fence(journal: Journal, host: str) -> tuple[bool, str]:
    """:meth:`DoctorRun.safe_to_fence` of the host's latest run; ``(False, "never checked")`` without one."""
    run = last_doctor(journal, host)
    return run.safe_to_fence() if run is not None else (False, "never checked")


def report_json(runs: Sequence[DoctorRun]) -> str:
    """The ``--json`` output: stable keys (sorted), hosts and checks in a stable order."""
    body = {"hosts": [r.as_json() for r in runs], "ok": not any(r.failed for r in runs), "schema": SCHEMA}
    return json.dumps(body, indent=2, sort_keys=True)


def table_rows(runs: Sequence[DoctorRun]) -> list[tuple[str, str, str, str, str]]:
    """(host, check, result, evidence, fix) rows, safety checks marked with ``*``."""
    return [
        (r.host, c.name + (" *" if c.safety else ""), str(c.result), c.evidence, c.fix) for r in runs for c in r.checks
    ]


def exit_code(runs: Sequence[DoctorRun]) -> int:
    """0 when no check failed, 1 when one did."""
    return 1 if any(r.failed for r in runs) else 0

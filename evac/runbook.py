"""The runbook language: YAML in, checked dataclasses out, every error with file:line.

A runbook has ``name``, ``description``, typed ``params``, step ``defaults``, an optional
``lock`` (a template naming what one job at a time may hold, e.g. ``host:{{ params.host }}``)
and ``steps``. See ``docs/runbooks.md`` for the whole language.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex

from .actions import ACTION_NAME, Action
from .errors import ConfigError
from .templating import as_condition, check_syntax, names_used
from .yamldoc import Mapping, Sequence, Where, load_file, shown, suggest

PARAM_TYPES = ("string", "integer", "number", "boolean", "list", "host")
STEP_FIELDS = (
    "id",
    "action",
    "with",
    "when",
    "for_each",
    "concurrency",
    "retry",
    "timeout",
    "on_failure",
    "rollback",
    "approval",
    "description",
)
TOP_FIELDS = ("name", "description", "params", "defaults", "steps", "lock")
DEFAULT_FIELDS = ("retry", "timeout", "concurrency", "on_failure")
RETRY_FIELDS = ("attempts", "wait", "on")
STEP_ID = re.compile(r"[a-z][a-z0-9_]*")  # used with fullmatch: "migrate\n" is not an id
# Seconds (timeouts, retry waits) are finite and at most a week: threading refuses larger waits.
MAX_SECONDS = 7 * 24 * 3600
# A parameter's ``pattern`` is a regular expression matched against every value given, which
# may come from a webhook. It is matched with the ``regex`` module and a time limit, so a
# pattern prone to catastrophic backtracking (``(a|aa)+``) fails one value instead of hanging.
MAX_PATTERN = 1000  # characters
PATTERN_TIMEOUT = 0.1  # seconds for one match
# What templates may read: the engine's step context (``item`` only in a for_each step's
# ``with``, the one place the engine adds it), and what ``Engine.submit`` renders a lock with.
STEP_NAMES = ("params", "steps", "job")
ITEM_NAMES = (*STEP_NAMES, "item")
LOCK_NAMES = ("params", "target")


@dataclass(frozen=True)
class Param:
    name: str
    type: str = "string"
    required: bool = False
    default: Any = None
    pattern: str | None = None
    description: str = ""
    line: int = 0
    minimum: float | None = None  # for integer and number params: the smallest value accepted


@dataclass(frozen=True)
class Wait:
    kind: str = "none"  # none, fixed, exponential
    seconds: float = 0.0
    initial: float = 1.0
    maximum: float = 60.0
    jitter: float = 0.0
    base: float = 2.0


@dataclass(frozen=True)
class Retry:
    attempts: int = 1
    wait: Wait = field(default_factory=Wait)
    on: tuple[str, ...] = ("TransientError",)


@dataclass(frozen=True)
class Approval:
    text: str
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    id: str
    action: str
    line: int
    inputs: dict[str, Any] = field(default_factory=dict)
    when: Any = None
    for_each: Any = None
    concurrency: int | str = 1  # a whole number, or a template rendered when the step starts
    retry: Retry = field(default_factory=Retry)
    timeout: float | None = None
    on_failure: str = "abort"  # abort, continue, handle
    handler: tuple[Step, ...] = ()
    rollback: tuple[Step, ...] = ()
    approval: Approval | None = None
    description: str = ""
    # Line of each templated field ("when", "for_each", "concurrency", "with.KEY"), so the
    # checks that need the plugins or the whole runbook still point at the right line.
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Runbook:
    name: str
    source: str
    steps: tuple[Step, ...]
    params: tuple[Param, ...] = ()
    description: str = ""
    lock: str | None = None
    lock_line: int = 0

    def all_steps(self) -> list[Step]:
        """Main steps with their handlers and rollbacks, for checks that span them all."""
        out: list[Step] = []

        def walk(steps: tuple[Step, ...]) -> None:
            for step in steps:
                out.append(step)
                walk(step.handler)
                walk(step.rollback)

        walk(self.steps)
        return out


def load_runbook(path: Path | str) -> Runbook:
    return parse_runbook(load_file(path), str(path))


def parse_runbook(data: Any, source: str) -> Runbook:
    where = Where(source)
    top = where.require_mapping(data, 1, "runbook")
    where.reject_unknown(top, TOP_FIELDS, "")
    for required in ("name", "steps"):
        if required not in top:
            raise where.error(top.line, required, "required field missing")
    name = top["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise where.error(top.line_of("name"), "name", f"expected a lowercase name like 'maintenance', got {name!r}")
    params = _params(where, top)
    defaults = where.require_mapping(top.get("defaults", Mapping()), top.line_of("defaults"), "defaults")
    where.reject_unknown(defaults, DEFAULT_FIELDS, "defaults.")
    steps_data = where.require_sequence(top["steps"], top.line_of("steps"), "steps")
    if not steps_data:
        raise where.error(top.line_of("steps"), "steps", "at least one step is required")
    steps = _steps(where, steps_data, "steps", defaults, set())
    lock = top.get("lock")
    if lock is not None:
        _check_template(where, lock, top.line_of("lock"), "lock")
    return Runbook(
        name=name,
        source=source,
        steps=steps,
        params=params,
        description=str(top.get("description", "")),
        lock=lock,
        lock_line=top.line_of("lock") if lock is not None else 0,
    )


def _params(where: Where, top: Mapping) -> tuple[Param, ...]:
    if "params" not in top:
        return ()
    data = where.require_mapping(top["params"], top.line_of("params"), "params")
    params = []
    for pname, spec in data.items():
        line = data.line_of(pname)
        field_name = f"params.{pname}"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", pname):
            raise where.error(line, field_name, "parameter names are lowercase words")
        spec = where.require_mapping(spec, line, field_name)
        where.reject_unknown(
            spec, ("type", "required", "default", "pattern", "description", "minimum"), f"{field_name}."
        )
        ptype = spec.get("type", "string")
        if ptype not in PARAM_TYPES:
            raise where.error(
                spec.line_of("type"),
                f"{field_name}.type",
                f"expected one of {', '.join(PARAM_TYPES)}{suggest(str(ptype), PARAM_TYPES)}",
            )
        pattern = spec.get("pattern")
        if pattern is not None:
            try:
                compile_pattern(pattern)
            except ValueError as exc:
                raise where.error(spec.line_of("pattern"), f"{field_name}.pattern", str(exc)) from None
        required = spec.get("required", False)
        if not isinstance(required, bool):
            raise where.error(spec.line_of("required"), f"{field_name}.required", "expected true or false")
        minimum = spec.get("minimum")
        if minimum is not None and (
            ptype not in ("integer", "number")
            or isinstance(minimum, bool)
            or not isinstance(minimum, int | float)
            or not math.isfinite(minimum)
        ):
            raise where.error(
                spec.line_of("minimum"),
                f"{field_name}.minimum",
                "expected a finite number, on an integer or number param",
            )
        param = Param(
            pname, ptype, required, spec.get("default"), pattern, str(spec.get("description", "")), line, minimum
        )
        if param.default is not None:
            try:
                convert_param(param, param.default)
            except ConfigError as exc:
                raise where.error(spec.line_of("default"), f"{field_name}.default", str(exc)) from None
        params.append(param)
    return tuple(params)


def _steps(where: Where, data: Sequence, field_name: str, defaults: Mapping, seen: set[str]) -> tuple[Step, ...]:
    steps = []
    for index, raw in enumerate(data):
        steps.append(_step(where, raw, data.line_of(index), f"{field_name}[{index}]", defaults, seen))
    return tuple(steps)


def _step(where: Where, raw: Any, line: int, field_name: str, defaults: Mapping, seen: set[str]) -> Step:
    step = where.require_mapping(raw, line, field_name)
    where.reject_unknown(step, STEP_FIELDS, f"{field_name}.")
    sid = step.get("id")
    if not isinstance(sid, str) or not STEP_ID.fullmatch(sid):
        raise where.error(
            step.line_of("id") if "id" in step else step.line,
            f"{field_name}.id",
            "required: a lowercase identifier like 'migrate'",
        )
    if sid in seen:
        raise where.error(step.line_of("id"), f"{field_name}.id", f"duplicate step id '{sid}'")
    seen.add(sid)
    label = f"step '{sid}'"
    action = step.get("action")
    if not isinstance(action, str) or not ACTION_NAME.fullmatch(action):
        raise where.error(
            step.line_of("action") if "action" in step else step.line,
            f"{label}: action",
            f"required: an action name like 'vm.live_migrate', got {action!r}",
        )
    inputs = step.get("with", Mapping())
    where.require_mapping(inputs, step.line_of("with"), f"{label}: with")
    lines = {key: step.line_of(key) for key in ("when", "for_each", "concurrency") if key in step}
    for key, value in inputs.items():
        lines[f"with.{key}"] = inputs.line_of(key)
        _check_template(where, value, inputs.line_of(key), f"{label}: with.{key}")
    if "when" in step:
        _check_template(where, as_condition(step["when"]), step.line_of("when"), f"{label}: when")
    if "for_each" in step:
        _check_template(where, step["for_each"], step.line_of("for_each"), f"{label}: for_each")
    if "for_each" in step and not isinstance(step["for_each"], str | list):
        raise where.error(step.line_of("for_each"), f"{label}: for_each", "expected a list or a template")
    concurrency = step.get("concurrency", defaults.get("concurrency", 1))
    if isinstance(concurrency, str) and "{{" in concurrency:
        _check_template(where, concurrency, step.line_of("concurrency"), f"{label}: concurrency")
    elif not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise where.error(
            step.line_of("concurrency"), f"{label}: concurrency", f"expected a whole number >= 1, got {concurrency!r}"
        )
    if "concurrency" in step and "for_each" not in step:
        raise where.error(step.line_of("concurrency"), f"{label}: concurrency", "only meaningful with for_each")
    timeout = step.get("timeout", defaults.get("timeout"))
    if timeout is not None and not (_is_number(timeout) and 0 < timeout <= MAX_SECONDS):
        raise where.error(
            step.line_of("timeout"), f"{label}: timeout", f"expected seconds > 0 and <= {MAX_SECONDS}, got {timeout!r}"
        )
    retry = _retry(where, step.get("retry", defaults.get("retry")), step.line_of("retry"), label)
    on_failure, handler = _on_failure(where, step, defaults, label, seen)
    rollback: tuple[Step, ...] = ()
    if "rollback" in step:
        rb = where.require_sequence(step["rollback"], step.line_of("rollback"), f"{label}: rollback")
        rollback = _steps(where, rb, f"{label}: rollback", Mapping(), seen)
    approval = None
    if "approval" in step:
        ap = where.require_mapping(step["approval"], step.line_of("approval"), f"{label}: approval")
        where.reject_unknown(ap, ("text", "approvers"), f"{label}: approval.")
        if not isinstance(ap.get("text"), str):
            raise where.error(ap.line, f"{label}: approval.text", "required: what the approver is asked")
        approvers = ap.get("approvers", [])
        if not isinstance(approvers, list) or not all(isinstance(a, str) for a in approvers):
            raise where.error(
                ap.line_of("approvers"), f"{label}: approval.approvers", "expected a list of user or group IDs"
            )
        approval = Approval(ap["text"], tuple(approvers))
    return Step(
        id=sid,
        action=action,
        line=line,
        inputs=dict(inputs),
        when=step.get("when"),
        for_each=step.get("for_each"),
        concurrency=concurrency,
        retry=retry,
        timeout=float(timeout) if timeout is not None else None,
        on_failure=on_failure,
        handler=handler,
        rollback=rollback,
        approval=approval,
        description=str(step.get("description", "")),
        lines=lines,
    )


def _on_failure(
    where: Where, step: Mapping, defaults: Mapping, label: str, seen: set[str]
) -> tuple[str, tuple[Step, ...]]:
    value = step.get("on_failure", defaults.get("on_failure", "abort"))
    line = step.line_of("on_failure")
    if isinstance(value, list):
        handler = _steps(
            where, where.require_sequence(value, line, f"{label}: on_failure"), f"{label}: on_failure", Mapping(), seen
        )
        return "handle", handler
    if value not in ("abort", "continue"):
        raise where.error(line, f"{label}: on_failure", f"expected abort, continue or a list of steps, got {value!r}")
    return str(value), ()


def _retry(where: Where, raw: Any, line: int, label: str) -> Retry:
    if raw is None:
        return Retry()
    data = where.require_mapping(raw, line, f"{label}: retry")
    where.reject_unknown(data, RETRY_FIELDS, f"{label}: retry.")
    attempts = data.get("attempts", 1)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 100:
        raise where.error(data.line_of("attempts"), f"{label}: retry.attempts", f"expected 1 to 100, got {attempts!r}")
    on = data.get("on", ["TransientError"])
    if isinstance(on, str):
        on = [on]
    if not isinstance(on, list) or not all(isinstance(o, str) for o in on):
        raise where.error(data.line_of("on"), f"{label}: retry.on", "expected a list of error class names")
    return Retry(attempts=attempts, wait=_wait(where, data.get("wait"), data.line_of("wait"), label), on=tuple(on))


def _wait(where: Where, raw: Any, line: int, label: str) -> Wait:
    if raw is None:
        return Wait()
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return Wait(kind="fixed", seconds=_seconds(where, Mapping(wait=raw), "wait", f"{label}: retry", line=line))
    data = where.require_mapping(raw, line, f"{label}: retry.wait")
    where.reject_unknown(data, ("fixed", "exponential"), f"{label}: retry.wait.")
    if "fixed" in data:
        return Wait(kind="fixed", seconds=_seconds(where, data, "fixed", f"{label}: retry.wait"))
    if "exponential" in data:
        exp = where.require_mapping(
            data["exponential"], data.line_of("exponential"), f"{label}: retry.wait.exponential"
        )
        where.reject_unknown(exp, ("initial", "max", "jitter", "base"), f"{label}: retry.wait.exponential.")
        f = f"{label}: retry.wait.exponential"
        return Wait(
            kind="exponential",
            initial=_seconds(where, exp, "initial", f, 1.0),
            maximum=_seconds(where, exp, "max", f, 60.0),
            jitter=_seconds(where, exp, "jitter", f, 0.0),
            base=_seconds(where, exp, "base", f, 2.0),
        )
    raise where.error(data.line, f"{label}: retry.wait", "expected 'fixed: SECONDS' or 'exponential: {...}'")


def _seconds(
    where: Where, data: Mapping, key: str, field_name: str, default: float | None = None, line: int | None = None
) -> float:
    value: Any = data.get(key, default)
    if not (_is_number(value) and 0 <= value <= MAX_SECONDS):
        raise where.error(
            data.line_of(key) if line is None else line,
            f"{field_name}.{key}",
            f"expected seconds >= 0 and <= {MAX_SECONDS}, got {value!r}",
        )
    return float(value)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool): YAML reads ``.nan`` and ``.inf`` as floats."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def compile_pattern(pattern: Any) -> regex.Pattern[str]:
    """A parameter's ``pattern``, compiled; ``ValueError`` saying what is wrong otherwise."""
    if not isinstance(pattern, str):
        raise ValueError(f"expected a regular expression as text, got {pattern!r}")
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"{len(pattern):,} characters; at most {MAX_PATTERN:,} are allowed")
    try:
        return regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None


def matches_pattern(pattern: str, text: str) -> bool:
    """Whether all of ``text`` matches ``pattern`` (a trailing newline is not ignored).

    ``TimeoutError`` when the match takes longer than :data:`PATTERN_TIMEOUT`.
    """
    return compile_pattern(pattern).fullmatch(text, timeout=PATTERN_TIMEOUT) is not None


def _check_template(where: Where, value: Any, line: int, field_name: str) -> None:
    problem = check_syntax(value)
    if problem:
        raise where.error(line, field_name, f"template error: {problem}")


def check_names(runbook: Runbook) -> list[ConfigError]:
    """Names templates read that will not exist at run time (``when: nosuch``, ``{{ parms.x }}``).

    Without this check such a runbook is accepted and fails only when the step is reached,
    after earlier steps have changed the fleet.
    """
    where = Where(runbook.source)
    problems: list[ConfigError] = []

    def check(value: Any, line: int, field_name: str, known: tuple[str, ...]) -> None:
        for name in sorted(names_used(value) - set(known)):
            hint = "; item exists only in the 'with' of a step with for_each" if name == "item" else ""
            message = f"unknown name '{name}'{suggest(name, known)} (known: {', '.join(known)}){hint}"
            problems.append(where.error(line, field_name, message))

    if runbook.lock is not None:
        check(runbook.lock, runbook.lock_line, "lock", LOCK_NAMES)
    for step in runbook.all_steps():
        label = f"step '{step.id}'"
        check(as_condition(step.when), step.lines.get("when", step.line), f"{label}: when", STEP_NAMES)
        check(step.for_each, step.lines.get("for_each", step.line), f"{label}: for_each", STEP_NAMES)
        check(step.concurrency, step.lines.get("concurrency", step.line), f"{label}: concurrency", STEP_NAMES)
        known = ITEM_NAMES if step.for_each is not None else STEP_NAMES
        for key, value in step.inputs.items():
            check(value, step.lines.get(f"with.{key}", step.line), f"{label}: with.{key}", known)
    return problems


def check_runbook(runbook: Runbook, actions: AbcMapping[str, Action], error_names: set[str]) -> list[ConfigError]:
    """Checks beyond the YAML: template names, action names and inputs, retry error classes.

    Returns every problem found, so ``evac runbook validate`` can list them all (and
    ``Engine.submit`` refuses a runbook with any, before a job exists).
    """
    where = Where(runbook.source)
    problems = check_names(runbook)
    for step in runbook.all_steps():
        label = f"step '{step.id}'"
        action = actions.get(step.action)
        if action is None:
            problems.append(
                where.error(
                    step.line, f"{label}: action", f"unknown action '{step.action}'{suggest(step.action, actions)}"
                )
            )
            continue
        if action.inputs is not None:
            for key in step.inputs:
                if key not in action.inputs:
                    problems.append(
                        where.error(
                            step.line,
                            f"{label}: with.{key}",
                            f"'{step.action}' takes no input '{key}'{suggest(key, action.inputs)}",
                        )
                    )
        for key in action.required:
            if key not in step.inputs:
                problems.append(
                    where.error(step.line, f"{label}: with.{key}", f"'{step.action}' requires input '{key}'")
                )
        for name in step.retry.on:
            if name not in error_names:
                problems.append(
                    where.error(
                        step.line, f"{label}: retry.on", f"unknown error class '{name}'{suggest(name, error_names)}"
                    )
                )
    return problems


def convert_param(param: Param, value: Any) -> Any:
    """A parameter value (often a CLI string) converted to the parameter's type."""
    try:
        if param.type in ("string", "host"):
            if not isinstance(value, str | int | float):
                raise ValueError("expected text")
            converted: Any = str(value)
        elif param.type == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected a whole number")
            converted = int(value)
        elif param.type == "number":
            converted = float(value)
            if not math.isfinite(converted):
                raise ValueError("expected a finite number")
        elif param.type == "boolean":
            if isinstance(value, bool):
                converted = value
            elif str(value).lower() in ("true", "yes", "1", "on"):
                converted = True
            elif str(value).lower() in ("false", "no", "0", "off"):
                converted = False
            else:
                raise ValueError("expected true or false")
        else:
            converted = value if isinstance(value, list) else [v for v in str(value).split(",") if v]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"param '{param.name}': {exc} (type {param.type}), got {shown(value)}") from None
    if param.minimum is not None and converted < param.minimum:
        raise ConfigError(f"param '{param.name}': expected at least {param.minimum:g}, got {shown(value)}")
    if param.pattern:
        try:
            matched = matches_pattern(param.pattern, str(converted))
        except TimeoutError:
            raise ConfigError(
                f"param '{param.name}': matching {shown(converted)} against {param.pattern!r} took longer than"
                f" {PATTERN_TIMEOUT:g} s; simplify the pattern"
            ) from None
        if not matched:
            raise ConfigError(f"param '{param.name}': {shown(converted)} does not match {param.pattern}")
    return converted


def bind_params(runbook: Runbook, given: AbcMapping[str, Any], hosts: list[str] | None = None) -> dict[str, Any]:
    """Checked, typed parameters for a run; unknown, missing or malformed ones are errors."""
    known = {p.name: p for p in runbook.params}
    for key in given:
        if key not in known:
            raise ConfigError(
                f"{runbook.source}: unknown param {key!r}{suggest(key, known)}; "
                f"this runbook takes: {', '.join(known) or 'none'}"
            )
    bound = {}
    for param in runbook.params:
        if param.name in given:
            value = convert_param(param, given[param.name])
        elif param.default is not None:
            value = convert_param(param, param.default)
        elif param.required:
            raise ConfigError(f"{runbook.source}:{param.line}: param '{param.name}' is required")
        else:
            value = None
        if param.type == "host" and value is not None and hosts is not None and value not in hosts:
            raise ConfigError(
                f"param '{param.name}': unknown host {value!r}{suggest(value, hosts)}; known: {', '.join(hosts)}"
            )
        bound[param.name] = value
    return bound

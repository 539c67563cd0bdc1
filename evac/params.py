"""Runbook parameters from the command line: ``-p key=value`` read by the parameter's type.

The runbook declares each parameter's type, so the text after ``=`` is read the way that
type needs: a ``string`` (or ``host``) keeps the raw text (``reason=no`` stays ``no``,
never a YAML boolean), an ``integer``, ``number`` or ``boolean`` is parsed as one, and a
``list`` takes a YAML flow list (``-p hosts='[kvm1, kvm2]'``). Every problem is one line
naming the parameter; giving a key twice is an error, never "the last one wins".
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError
from .runbook import Param, Runbook
from .yamldoc import load_text

TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


def parse_cli_params(runbook: Runbook, pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as typed values, ready for ``bind_params``.

    A key the runbook does not declare keeps its raw text, so ``bind_params`` reports it
    with the runbook's own parameter list.
    """
    declared = {p.name: p for p in runbook.params}
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param: expected KEY=VALUE, got {pair!r}")
        if key in values:
            hint = f" (a list parameter takes a YAML list: -p {key}='[a, b]')" if _is_list(declared.get(key)) else ""
            raise ConfigError(f"--param: {key!r} is given twice{hint}")
        param = declared.get(key)
        values[key] = text if param is None else parse_param_text(param, text)
    return values


def parse_param_text(param: Param, text: str) -> Any:
    """One parameter's command-line text as its declared type; ``ConfigError`` naming it otherwise."""
    if param.type in ("string", "host"):
        return text
    stripped = text.strip()
    if param.type == "integer":
        try:
            return int(stripped, 10)
        except ValueError:
            raise _bad(param, "a whole number", text) from None
    if param.type == "number":
        try:
            number = float(stripped)
        except ValueError:
            raise _bad(param, "a number", text) from None
        if not math.isfinite(number):
            raise _bad(param, "a finite number", text)
        return number
    if param.type == "boolean":
        if stripped.lower() in TRUE:
            return True
        if stripped.lower() in FALSE:
            return False
        raise _bad(param, "true or false", text)
    if param.type == "list":
        return _parse_list(param, stripped)
    return text


def _parse_list(param: Param, text: str) -> list[Any]:
    example = f"-p {param.name}='[a, b]'"
    if not text.startswith("["):
        raise _bad(param, f"a YAML list like {example}", text)
    try:
        # The loader every evac file goes through, with its limits: no aliases, bounded depth.
        value = load_text(text, f"param '{param.name}'")
    except ConfigError as exc:
        problem = str(exc).split(": ", 1)[-1].removeprefix("invalid YAML: ")
        raise ConfigError(f"param '{param.name}': invalid YAML list ({problem}): {text!r}; like {example}") from None
    if not isinstance(value, list):
        raise _bad(param, f"a YAML list like {example}", text)
    return list(value)


def _bad(param: Param, expected: str, text: str) -> ConfigError:
    return ConfigError(f"param '{param.name}': expected {expected} (type {param.type}), got {text!r}")


def _is_list(param: Param | None) -> bool:
    return param is not None and param.type == "list"

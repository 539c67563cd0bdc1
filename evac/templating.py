"""Templates in runbooks, evaluated in Jinja2's sandbox: no code runs from YAML.

A string that is exactly one ``{{ expression }}`` keeps the expression's type (a list
stays a list); any other string with ``{{ }}`` renders to text. Undefined names are
errors, not empty strings.
"""

from __future__ import annotations

import re
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ConfigError

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.S)
ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


class TemplateError(ConfigError):
    """A template failed to parse or evaluate."""


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def as_condition(expression: Any) -> Any:
    """A ``when`` value as a template: a bare expression (``params.force``) is wrapped in ``{{ }}``.

    Shared by the engine and the checks, so ``validate`` reads ``when`` the way a run does.
    """
    if isinstance(expression, bool) or expression is None:
        return expression
    text = str(expression)
    return text if is_template(text) else "{{ " + text + " }}"


def names_used(value: Any) -> set[str]:
    """The context names templates in ``value`` read (recursively), minus Jinja's own globals.

    A template that does not parse reads nothing here: ``check_syntax`` reports it.
    """
    if isinstance(value, dict | list):
        found: set[str] = set()
        for inner in value.values() if isinstance(value, dict) else value:
            found |= names_used(inner)
        return found
    if not is_template(value):
        return set()
    try:
        parsed = ENV.parse(value)
    except jinja2.TemplateSyntaxError:
        return set()
    return set(meta.find_undeclared_variables(parsed)) - set(ENV.globals)


def check_syntax(value: Any) -> str | None:
    """The syntax error in a template (or in templates nested in lists/mappings), else None."""
    if isinstance(value, dict):
        return next((e for e in (check_syntax(v) for v in value.values()) if e), None)
    if isinstance(value, list):
        return next((e for e in (check_syntax(v) for v in value) if e), None)
    if not is_template(value):
        return None
    try:
        single = _SINGLE.match(value)
        if single and "}}" not in single.group("expr"):
            ENV.compile_expression(single.group("expr"))
        else:
            ENV.parse(value)
    except jinja2.TemplateSyntaxError as exc:
        return exc.message or str(exc)
    return None


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render templates inside ``value`` (recursively through lists and mappings)."""
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if not is_template(value):
        return value
    try:
        single = _SINGLE.match(value)
        if single and "}}" not in single.group("expr"):
            result = ENV.compile_expression(single.group("expr"), undefined_to_none=False)(**context)
            if isinstance(result, jinja2.Undefined):
                result._fail_with_undefined_error()
            return result
        return ENV.from_string(value).render(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"undefined in template {value!r}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {value!r}: {exc}") from None
    except Exception as exc:  # a filter or operator failing on the values given
        raise TemplateError(f"template {value!r}: {type(exc).__name__}: {exc}") from None


def truthy(expression: Any, context: dict[str, Any]) -> bool:
    """A ``when`` condition: a bare expression or a ``{{ }}`` template."""
    if isinstance(expression, bool):
        return expression
    result = render(as_condition(expression), context)
    if isinstance(result, str):
        return result.strip().lower() not in ("", "false", "0", "none", "no")
    return bool(result)

"""Templates in runbooks, evaluated in Jinja2's sandbox: no code runs from YAML.

A string that is exactly one ``{{ expression }}`` keeps the expression's type (a list
stays a list); any other string with ``{{ }}`` renders to text. Undefined names are
errors, not empty strings.

Rendering is bounded as well as sandboxed, so a template ends in a value or a one-line
``TemplateError`` and never burns a CPU or memory without limit. Per render:

- every value a template builds (a string, a list, a ``~`` concatenation, the result of an
  operator, a call or a filter) holds at most :data:`MAX_SIZE` characters and items, and
  the operators and methods that multiply sizes (``*``, ``**``, ``%``, ``center``,
  ``replace``, ``join``, widths in format strings...) are checked before they run;
- all the text a render outputs, including what ``set`` blocks and macros capture, is at
  most :data:`MAX_SIZE` characters;
- ``range`` gives at most :data:`MAX_RANGE` items;
- loop iterations and calls together number at most :data:`MAX_STEPS`, and a render stops
  after :data:`DEADLINE` seconds.
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .errors import ConfigError
from .yamldoc import shown

MAX_SIZE = 1024 * 1024  # characters and items in one value, and in one render's output
MAX_RANGE = 10_000  # items from one range()
MAX_STEPS = 1_000_000  # loop iterations plus calls in one render
MAX_INT_BITS = 4096  # integers from * and ** (a 1,234-digit number)
MAX_TEMPLATE = 64 * 1024  # characters of template source
DEADLINE = 2.0  # seconds for one render

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.S)


class TemplateError(ConfigError):
    """A template failed to parse or evaluate."""


class TemplateLimit(TemplateError):
    """A template went past one of the limits above."""


# ------------------------------------------------------------------ the budget of one render
@dataclass
class _Budget:
    deadline: float
    steps: int = 0
    output: int = 0
    sizes: dict[int, tuple[Any, int]] = field(default_factory=dict)  # id -> (object, size)


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("evac_template_budget", default=None)


def _step() -> None:
    """Count one loop iteration or call against the render's budget and deadline."""
    budget = _BUDGET.get()
    if budget is None:  # constant folding while compiling: nothing runs for long there
        return
    budget.steps += 1
    if budget.steps > MAX_STEPS:
        raise TemplateLimit(f"more than {MAX_STEPS:,} loop iterations and calls")
    if time.monotonic() > budget.deadline:
        raise TemplateLimit(f"took longer than {DEADLINE:g} s")


def _size(value: Any) -> int:
    """Characters in strings plus items in containers (shared parts counted each time they
    appear, as ``str()`` would print them), counted until past :data:`MAX_SIZE`."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if not isinstance(value, list | tuple | dict | set | frozenset):
        return 1
    budget = _BUDGET.get()
    if budget is not None and id(value) in budget.sizes:
        return budget.sizes[id(value)][1]
    total = 0
    stack = [value]
    while stack and total <= MAX_SIZE:
        item = stack.pop()
        if isinstance(item, dict):
            total += 1 + len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 1 + len(item)
            stack.extend(item)
        else:
            total += _size(item) - 1  # the container counted it as one item already
    if budget is not None:
        budget.sizes[id(value)] = (value, total)  # keep the object, so its id is not reused
    return total


def _checked(value: Any) -> Any:
    if _size(value) > MAX_SIZE:
        raise TemplateLimit(f"a value larger than {MAX_SIZE:,} characters or items")
    return value


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise TemplateLimit(f"{what} would be larger than {MAX_SIZE:,} characters or items")


def _as_int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


# ---------------------------------------------------------------- checks before an operation
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_widths(numbers: list[str], what: str) -> None:
    for number in numbers:
        if number == "*" or len(number) > 7 or int(number) > MAX_SIZE:
            raise TemplateLimit(f"{what}: a width or precision of {number[:20]} is not allowed")


def _check_percent(fmt: Any) -> None:
    """``'%10s' % x`` and the ``format`` filter: widths at most MAX_SIZE, no ``*`` widths."""
    if isinstance(fmt, str):
        for spec in _PERCENT_SPEC.finditer(fmt):
            _check_widths([n for n in spec.groups() if n], "format")


def _check_brace_format(fmt: str) -> None:
    """``'{:>10}'.format(x)``: widths at most MAX_SIZE, no widths taken from arguments."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the call itself reports the broken format string
    for _literal, _name, spec, _conversion in fields:
        if spec and "{" in spec:
            raise TemplateLimit("format: a width taken from an argument is not allowed")
        _check_widths(_DIGITS.findall(spec or ""), "format")


def _check_repeat(left: Any, right: Any) -> None:
    """``'ab' * 3``, ``[x] * 3``, and integers that would grow past MAX_INT_BITS."""
    if isinstance(left, int) and isinstance(right, int):
        if abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise TemplateLimit(f"an integer larger than {MAX_INT_BITS} bits")
        return
    seq, count = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(seq, str | bytes | list | tuple) and isinstance(count, int):
        _require(_size(seq) * count <= MAX_SIZE, "repeating")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:  # noqa: SIM102
        if abs(base).bit_length() * exponent > MAX_INT_BITS:  # checked before the power is computed
            raise TemplateLimit(f"an integer larger than {MAX_INT_BITS} bits")


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> None:
    if isinstance(text, str | bytes) and isinstance(old, str | bytes) and isinstance(new, str | bytes):
        found = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
        if isinstance(count, int) and count >= 0:
            found = min(found, count)
        _require(len(text) + found * len(new) <= MAX_SIZE, "replace")


def _joined_size(separator: Any, items: list[Any], what: str = "join") -> None:
    length = sum(_size(item) for item in items)
    _require(length + len(separator) * len(items) <= MAX_SIZE, what)


_WIDTH_METHODS = ("center", "ljust", "rjust", "zfill")


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Checks for the ``str`` methods that grow text; returns ``args`` (``join``'s made a list)."""
    inner = getattr(method, "__wrapped__", method)  # the sandbox wraps str.format
    text = getattr(inner, "__self__", None)
    if not isinstance(text, str | bytes):
        return args
    name = getattr(inner, "__name__", "")
    if name in _WIDTH_METHODS and args:
        _require(_as_int(args[0]) <= MAX_SIZE, name)
    elif name == "expandtabs":
        tabsize = _as_int(args[0] if args else kwargs.get("tabsize", 8), 8)
        tabs = text.count(b"\t" if isinstance(text, bytes) else "\t")  # type: ignore[arg-type]
        _require(len(text) + tabs * tabsize <= MAX_SIZE, name)
    elif name == "replace" and len(args) >= 2:
        _replaced_size(text, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))
    elif name == "join" and args:
        items = list(_loop_items(args[0]))
        _joined_size(text, items)
        return (items, *args[1:])
    elif name in ("format", "format_map") and isinstance(text, str):
        _check_brace_format(text)
    return args


def _loop_items(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        _step()
        yield item


# Filters that grow their input, checked before they run: name -> check(value, *args, **kwargs).
def _center(value: Any, width: Any = 80, *args: Any, **kwargs: Any) -> None:
    _require(_as_int(width) <= MAX_SIZE, "center")


def _indent(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> None:
    step = len(width) if isinstance(width, str) else _as_int(width)
    _require(len(str(value)) + step * (str(value).count("\n") + 1) <= MAX_SIZE, "indent")


def _wordwrap(value: Any, width: Any = 79, break_long: Any = True, wrapstring: Any = None, *a: Any, **k: Any) -> None:
    wrap = k.get("wrapstring", wrapstring)
    text = str(value)
    _require(len(text) + (len(text) + 1) * len(str(wrap or "\n")) <= MAX_SIZE, "wordwrap")


def _replace(value: Any, old: Any = "", new: Any = "", count: Any = None, *args: Any, **kwargs: Any) -> None:
    _replaced_size(str(value), str(old), str(new), kwargs.get("count", count))


def _batch(value: Any, count: Any = 1, *args: Any, **kwargs: Any) -> None:
    _require(_as_int(count) <= MAX_SIZE, "batch")


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "replace": _replace,
    "format": lambda value, *args, **kwargs: _check_percent(value),
    "batch": _batch,
    "slice": _batch,
}
_DROPPED_FILTERS = ("urlize",)  # HTML for web pages: no use in a runbook, and hard to bound


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0  # the context, eval context or environment

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _step()
        values = args[skip:]
        for value in (*values, *kwargs.values()):
            _checked(value)
        if name == "join" and values:
            items = list(_loop_items(values[0]))
            separator = kwargs.get("d", values[1] if len(values) > 1 else "")
            if "attribute" not in kwargs and len(values) < 3:
                _joined_size(str(separator), items)
            args = (*args[:skip], items, *values[1:])
        elif name in _FILTER_CHECKS and values:
            _FILTER_CHECKS[name](*values, **kwargs)
        return _checked(func(*args, **kwargs))

    return bounded


# ------------------------------------------------------------- the environment and compiler
@jinja2.pass_context
def _bounded_loop(context: Context, iterable: Any) -> Iterator[Any]:
    """What ``{% for %}`` iterates: the same items, each counted against the budget."""
    return _loop_items(iterable)


@jinja2.pass_context
def _bounded_concat(context: Context, parts: list[Any]) -> str:
    """``a ~ b``: sizes checked before the text is joined."""
    _joined_size("", parts, "~ (joining text)")
    return "".join(str(part) for part in parts)


@jinja2.pass_context
def _bounded_value(context: Context, value: Any) -> Any:
    """A list, tuple or mapping written in the template: at most MAX_SIZE."""
    return _checked(value)


@jinja2.pass_context
def _bounded_output(context: Context, value: Any) -> Any:
    """What ``{{ }}`` and template text output: counted against the render's output."""
    size = _size(value)
    budget = _BUDGET.get()
    if budget is not None:
        budget.output += size
        if budget.output > MAX_SIZE:
            raise TemplateLimit(f"output larger than {MAX_SIZE:,} characters")
    elif size > MAX_SIZE:
        raise TemplateLimit(f"output larger than {MAX_SIZE:,} characters")
    return value


def _wrap(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Bounds(NodeTransformer):
    """Routes loops, concatenation, literal containers and output through the checks above."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _wrap(node.iter, "_evac_loop")
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _wrap(nodes.List(node.nodes, lineno=node.lineno), "_evac_concat")

    def _literal(self, node: nodes.List | nodes.Tuple | nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        if isinstance(node, nodes.Tuple) and node.ctx != "load":  # a target: {% for k, v in ... %}
            return node
        return _wrap(node, "_evac_value")

    visit_List = visit_Tuple = visit_Dict = _literal

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_wrap(child, "_evac_output") for child in node.nodes]
        return node


class _BoundedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _Bounds().visit(node)
        node.set_environment(self.environment)
        super().visit_Template(node, frame)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with the size, range and time limits of this module."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, autoescape=False)
        self.globals["range"] = self._range
        self.globals.pop("lipsum", None)
        filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        for name in _DROPPED_FILTERS:
            filters.pop(name, None)
        filters.update(
            _evac_loop=_bounded_loop,
            _evac_concat=_bounded_concat,
            _evac_value=_bounded_value,
            _evac_output=_bounded_output,
        )
        self.filters = filters

    @staticmethod
    def _range(*args: int) -> range:
        numbers = range(*args)
        if len(numbers) > MAX_RANGE:
            raise TemplateLimit(f"range of {len(numbers):,} items; at most {MAX_RANGE:,} are allowed")
        return numbers

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _step()
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_percent(left)
        return _checked(super().call_binop(context, operator, left, right))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _step()
        args = _check_method(obj, args, kwargs)
        return _checked(super().call(context, obj, *args, **kwargs))


ENV = BoundedSandbox()


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
    if not is_template(value) or len(value) > MAX_TEMPLATE:
        return set()
    try:
        parsed = ENV.parse(value)
        return set(meta.find_undeclared_variables(parsed)) - set(ENV.globals)
    except (jinja2.TemplateSyntaxError, RecursionError):
        return set()


def check_syntax(value: Any) -> str | None:
    """The syntax error in a template (or in templates nested in lists/mappings), else None."""
    if isinstance(value, dict):
        return next((e for e in (check_syntax(v) for v in value.values()) if e), None)
    if isinstance(value, list):
        return next((e for e in (check_syntax(v) for v in value) if e), None)
    if not is_template(value):
        return None
    if len(value) > MAX_TEMPLATE:
        return f"{len(value):,} characters; at most {MAX_TEMPLATE:,} are allowed in a template"
    try:
        single = _SINGLE.match(value)
        if single and "}}" not in single.group("expr"):
            ENV.compile_expression(single.group("expr"))
        else:
            ENV.parse(value)
    except jinja2.TemplateSyntaxError as exc:
        return exc.message or str(exc)
    except RecursionError:
        return "nested too deeply"
    except Exception as exc:  # compiling what the parser accepted: a SyntaxError, MemoryError
        return f"{type(exc).__name__}: {exc}"
    return None


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render templates inside ``value`` (recursively through lists and mappings)."""
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if not is_template(value):
        return value
    if len(value) > MAX_TEMPLATE:
        raise TemplateLimit(f"template {shown(value)}: longer than {MAX_TEMPLATE:,} characters")
    token = _BUDGET.set(_Budget(deadline=time.monotonic() + DEADLINE))
    try:
        single = _SINGLE.match(value)
        if single and "}}" not in single.group("expr"):
            result = ENV.compile_expression(single.group("expr"), undefined_to_none=False)(**context)
            if isinstance(result, jinja2.Undefined):
                result._fail_with_undefined_error()
            return _checked(result)
        return ENV.from_string(value).render(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"undefined in template {shown(value)}: {exc.message}") from None
    except jinja2.TemplateError as exc:  # its str() may run to a second line ("  line 1")
        raise TemplateError(f"template {shown(value)}: {exc.message or type(exc).__name__}") from None
    except TemplateError as exc:
        raise TemplateError(f"template {shown(value)}: {exc}") from None
    except RecursionError:
        raise TemplateError(f"template {shown(value)}: nested or recursing too deeply") from None
    except Exception as exc:  # a filter or operator failing on the values given
        why = " ".join(str(exc).split())  # one line, whatever the value's text held
        raise TemplateError(f"template {shown(value)}: {type(exc).__name__}: {why}") from None
    finally:
        _BUDGET.reset(token)


def truthy(expression: Any, context: dict[str, Any]) -> bool:
    """A ``when`` condition: a bare expression or a ``{{ }}`` template."""
    if isinstance(expression, bool):
        return expression
    result = render(as_condition(expression), context)
    if isinstance(result, str):
        return result.strip().lower() not in ("", "false", "0", "none", "no")
    return bool(result)

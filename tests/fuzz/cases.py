"""What the fuzz suite feeds evac's entry points, and how it judges each answer.

One module for both runners: ``tests/fuzz`` (a few hundred cases in CI, through pytest and
hypothesis) and ``python -m bench.fuzz`` (ten thousand a target). Each :class:`Target` has
a hypothesis strategy of inputs and an ``open`` context manager that sets up what the entry
point needs (a tmp inventory of hosts that do not exist, a real App and journal, a Slack
bot on a mock Web API) and yields the driver: one input in, an :class:`Outcome` out.

A driver returns ``ACCEPTED`` (the input was taken) or ``CLEAR`` (refused with a clear
one-line error: an ``EvacError`` whose message has no newline; a 4xx JSON body whose
``error`` is one line; an exit code 1 or 2 and one stderr line a problem). Anything else
raises: :class:`Crash` for an unclear answer (a 500, a message over several lines, a
listener's exception logged), or the entry point's own traceback.

The inputs mix three kinds: known-good files mutated (a value replaced, a key dropped or
added, a line cut, a character changed), valid YAML or JSON shapes with wrong types and
values (field names evac knows, values it does not expect), and raw text or bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import io
import json
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml
from hypothesis import HealthCheck, reject, settings
from hypothesis import strategies as st

from evac import config as evac_config
from evac import inventory as evac_inventory
from evac import runbook as evac_runbook
from evac.app import App
from evac.config import ServiceConfig, WebhookSettings, default_config, load_config
from evac.errors import EvacError
from evac.fencing import fence_methods
from evac.inventory import load_inventory
from evac.metrics import Metrics
from evac.params import parse_cli_params
from evac.plugins import collect_actions, error_classes, plugin_manager
from evac.runbook import bind_params, check_runbook, load_runbook
from evac.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers
from evac.templating import render
from evac.yamldoc import load_file, load_text

ROOT = Path(__file__).resolve().parents[2]
GOOD_RUNBOOKS = [(ROOT / "runbooks" / name).read_text() for name in ("maintenance.yaml", "host-failure.yaml")]
GOOD_CONFIG = (ROOT / "contrib" / "evac.yaml").read_text()
GOOD_INVENTORY = (ROOT / "contrib" / "hosts.yaml").read_text()
TOKEN, SECRET = "t0ken", "s3cret"
SOURCE = "203.0.113.7"
AM, EVAC = "/hooks/alertmanager", "/hooks/evacuate"


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    CLEAR = "clear error"


class Crash(AssertionError):
    """An answer that is neither success nor a clear one-line error."""


def pick(items: list[Any]) -> st.SearchStrategy[Any]:
    """``sampled_from`` that does not print its items (some are 100 KB) in its repr."""
    return st.sampled_from(range(len(items))).map(items.__getitem__)


def judged(exc: BaseException) -> Outcome:
    """``CLEAR`` for an evac error of one non-empty line; :class:`Crash` for any other."""
    message = str(exc)
    if isinstance(exc, EvacError) and message.strip() and "\n" not in message:
        return Outcome.CLEAR
    raise Crash(f"not a one-line evac error: {type(exc).__name__}: {message[:500]!r}") from exc


# Crashes found and not yet fixed: (what, where, a pattern of the crash's message). The CI
# property tests set an input that meets one aside (``hypothesis.reject``) and the explicit
# regression test with its minimal input is ``xfail(strict=True)``; the bench counts them.
KNOWN_CRASHES: list[tuple[str, str, str]] = []  # all fixed; each kept as an explicit @example


def known_crash(exc: BaseException) -> str | None:
    """The KNOWN_CRASHES entry ``exc`` is, or None."""
    message = f"{type(exc).__name__}: {exc}"
    return next((what for what, _, pattern in KNOWN_CRASHES if re.search(pattern, message)), None)


def outcome(drive: Driver, case: Any) -> Outcome:
    """``drive(case)`` for the CI property tests: a known crash sets the input aside (its
    own xfail test pins it); any other crash fails the test."""
    try:
        return drive(case)
    except Exception as exc:
        if known_crash(exc):
            reject()
        raise


def run(call: Callable[[], object]) -> Outcome:
    try:
        call()
    except EvacError as exc:
        return judged(exc)
    return Outcome.ACCEPTED


Driver = Callable[[Any], Outcome]


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    open: Callable[[Path], contextlib.AbstractContextManager[Driver]]
    deadline: float = 3.0  # seconds for one case
    ci_examples: int = 60  # cases in the default pytest run


def ci_settings(target: Target) -> settings:
    """The default pytest run: ``ci_examples`` cases, reproducible, each within the deadline."""
    return settings(
        max_examples=target.ci_examples,
        deadline=target.deadline * 1000,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---------------------------------------------------------------- values and YAML
KEYS = sorted(
    {
        *evac_runbook.TOP_FIELDS,
        *evac_runbook.STEP_FIELDS,
        *evac_runbook.DEFAULT_FIELDS,
        *evac_runbook.RETRY_FIELDS,
        *evac_inventory.TOP_FIELDS,
        *evac_inventory.HOST_FIELDS,
        *evac_inventory.SSH_FIELDS,
        *evac_inventory.RESERVED_FIELDS,
        *evac_config.TOP,
        *("type", "required", "default", "pattern", "fixed", "exponential", "initial", "max", "jitter"),
        *("method", "url", "username", "password_file", "agent", "command", "token", "hmac_secret", "port"),
        *("bot_token", "app_token", "signing_secret", "mode", "acl", "users", "groups", "level", "format"),
        *("drain", "failover", "every", "enabled", "concurrency", "max_body_kib", "rate_per_second", "burst"),
    }
)
NASTY = [
    "",
    " ",
    "x\n",
    "kvm1\n",
    "kvm1",
    "kvm3",
    "198.18.0.3",
    "{{ params.host }}",
    "{{ params.nope }}",
    "{{",
    "{% for x in range(10**9) %}x{% endfor %}",
    "{{ 'a' * 10**9 }}",
    "(a|aa)+$",
    "[",
    "env:NOPE_NOT_SET",
    "env:",
    "file:/nonexistent/secret",
    "file:",
    "file:../../etc/shadow",
    "qemu+tcp://127.0.0.1:9/system",
    "qemu:///system",
    "qemu+ssh://h/system\n",
    "https://bmc.example.net",
    "/srv/vmstore",
    "relative/path",
    "-1",
    "99999",
    "nan",
    ".inf",
    "1e309",
    "yes",
    "off",
    "0x10",
    "TransientError",
    "NoSuchError",
    "vm.live_migrate",
    "notify.log",
    "host.fence",
    "redfish",
    "agent",
    "ssh",
    "drain",
    "failover",
    "loud",
    "info",
    "json",
    "0.0.0.0",
    "::1",
    "a" * 300,
    "é漢\u202e",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 65535, 65536, 99999, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    pick(NASTY),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=12))
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def _slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a loaded document, where a value can be changed."""
    found: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((value, key))
            found += _slots(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((value, index))
            found += _slots(item)
    return found


@st.composite
def mutated_tree(draw: st.DrawFn, document: Any) -> Any:
    """``document`` with one to three of its values replaced, dropped, added to or wrapped."""
    holder = [copy.deepcopy(document)]
    for _ in range(draw(st.integers(1, 3))):
        slots = [(holder, 0), *_slots(holder[0])]
        container, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["replace", "replace", "drop", "add", "wrap", "stringify"]))
        if action == "replace" or (action == "drop" and container is holder):
            container[key] = draw(values)
        elif action == "drop":
            del container[key]
        elif action == "add":
            target = container[key]
            if isinstance(target, dict):
                target[draw(keys)] = draw(values)
            elif isinstance(target, list):
                target.append(draw(values))
            else:
                container[key] = [target, draw(values)]
        elif action == "wrap":
            container[key] = draw(st.sampled_from([[container[key]], {draw(keys): container[key]}]))
        else:
            container[key] = str(container[key])
    return holder[0]


def dumped(value: Any, flow: bool | None = None) -> str:
    return yaml.safe_dump(value, default_flow_style=flow, allow_unicode=True, sort_keys=False)


@st.composite
def as_yaml(draw: st.DrawFn, trees: st.SearchStrategy[Any]) -> str:
    return dumped(draw(trees), draw(st.sampled_from([None, False, True])))


YAML_BITS = [
    "&a ",
    "*a",
    "[",
    "]",
    "{",
    "}",
    "- ",
    ": ",
    "\n",
    "  ",
    "\t",
    ", ",
    "? ",
    "|",
    ">-",
    "'",
    '"',
    "#",
    "!!python/object/apply:os.system ['true']",
    "!!binary ",
    "!!float ",
    "!!int ",
    "!!timestamp ",
    "!!set ",
    "!!omap ",
    "!custom ",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "---\n",
    "...\n",
    "<<: ",
    "\ufeff",
    "\x00",
    "\x85",
    "\x1b",
    "\ud7ff",
    "2024-13-45",
    "9" * 5000,
    "name",
    "steps",
    "hosts",
    "kvm1",
    "{{ x }}",
]


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """``text`` with lines cut, doubled, swapped or replaced, and characters changed."""
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            lines = [""]
        at = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["cut", "double", "swap", "replace", "char", "truncate"]))
        if action == "cut":
            del lines[at]
        elif action == "double":
            lines.insert(at, lines[at])
        elif action == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif action == "replace":
            indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
            lines[at] = indent + draw(pick(YAML_BITS) | st.text(max_size=30)) + "\n"
        elif action == "char":
            line = lines[at]
            spot = draw(st.integers(0, len(line)))
            lines[at] = line[:spot] + draw(pick(YAML_BITS) | st.text(max_size=3)) + line[spot + 1 :]
        else:
            lines = lines[: at + 1]
            lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1])))]
    return "".join(lines)


def nested(depth: int, kind: str) -> str:
    if kind == "flow":
        return "[" * depth + "]" * depth
    if kind == "map":
        return "{a: " * depth + "1" + "}" * depth
    return "".join("  " * i + "- \n" for i in range(depth)) + "  " * depth + "x\n"


raw_yaml = st.one_of(
    st.text(max_size=200),
    st.lists(pick(YAML_BITS) | st.text(max_size=8), max_size=30).map("".join),
    st.builds(nested, st.integers(1, 120), st.sampled_from(["flow", "map", "block"])),
    st.integers(1, 12).map(
        lambda depth: (
            "a0: &a0 [x, x]\n"
            + "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, depth))
            + f"top: *a{depth - 1}\n"
        )
    ),
)


def yaml_documents(good: list[str], shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """Known-good files mutated, structured-but-wrong documents and raw text, as YAML text."""
    trees = [yaml.safe_load(text) for text in good]
    return st.one_of(
        pick(good),
        pick(trees).flatmap(lambda tree: as_yaml(mutated_tree(tree))),
        pick(good).flatmap(mutated_text),
        as_yaml(shaped),
        raw_yaml,
    )


def file_bytes(texts: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Text as UTF-8, sometimes with bytes that are not UTF-8 put in."""
    spoil = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\x00", b"\xfe\xff"])

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = draw(texts).encode("utf-8", "surrogatepass")
        if draw(st.integers(0, 4)) == 0:
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(spoil) + data[at:]
        return data

    return st.one_of(build(), st.binary(max_size=200))


# ---------------------------------------------------------------- the YAML loader
@contextlib.contextmanager
def open_yaml(tmp: Path) -> Iterator[Driver]:
    path = tmp / "doc.yaml"

    def drive(case: str | bytes) -> Outcome:
        if isinstance(case, bytes):
            path.write_bytes(case)
            return run(lambda: load_file(path))
        return run(lambda: load_text(case, "doc.yaml"))

    yield drive


ALL_GOOD = [*GOOD_RUNBOOKS, GOOD_CONFIG, GOOD_INVENTORY]
yaml_cases = st.one_of(yaml_documents(ALL_GOOD, values), file_bytes(yaml_documents(ALL_GOOD, values)))


# ---------------------------------------------------------------- runbooks
step_shapes = st.fixed_dictionaries(
    {"id": scalars, "action": st.sampled_from(["vm.live_migrate", "notify.log", "host.fence", "x"]) | scalars},
    optional={name: values for name in evac_runbook.STEP_FIELDS if name not in ("id", "action")},
)
runbook_shapes = st.fixed_dictionaries(
    {"name": st.sampled_from(["t", "maintenance", "T", "x\n"]) | scalars, "steps": st.lists(step_shapes, max_size=3)},
    optional={
        "params": st.dictionaries(
            keys,
            st.fixed_dictionaries(
                {}, optional={k: values for k in ("type", "required", "default", "pattern", "description")}
            )
            | values,
            max_size=3,
        ),
        "defaults": values,
        "lock": values,
        "description": values,
    },
)
runbook_cases = file_bytes(yaml_documents(GOOD_RUNBOOKS, runbook_shapes))


@contextlib.contextmanager
def open_runbook(tmp: Path) -> Iterator[Driver]:
    """What ``evac runbook validate`` does, in process: load the file, then check it against
    every registered action and error class."""
    pm = plugin_manager()
    actions, errors = collect_actions(pm), set(error_classes(pm))
    path = tmp / "rb.yaml"

    def drive(case: bytes) -> Outcome:
        path.write_bytes(case)
        try:
            runbook = load_runbook(path)
        except EvacError as exc:
            return judged(exc)
        for problem in check_runbook(runbook, actions, errors):
            judged(problem)
        return Outcome.ACCEPTED

    yield drive


@contextlib.contextmanager
def open_runbook_cli(tmp: Path) -> Iterator[Driver]:
    """``evac runbook validate FILE``: exit 0, or 1/2 with each stderr line one problem."""
    from evac.cli import main

    inventory = tmp / "hosts.yaml"
    inventory.write_text("hosts:\n  - {name: kvm1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
    config = tmp / "evac.yaml"
    config.write_text(f"inventory: hosts.yaml\njournal: {tmp / 'journal.db'}\nmonitor: {{enabled: false}}\n")
    path = tmp / "rb.yaml"

    def drive(case: bytes) -> Outcome:
        path.write_bytes(case)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--config", str(config), "runbook", "validate", str(path)])
        lines = [line for line in err.getvalue().split("\n") if line]  # only a newline ends a line
        if code == 0 and not lines:
            return Outcome.ACCEPTED
        if code in (1, 2) and lines and all(line.startswith((str(path), "evac: ")) for line in lines):
            return Outcome.CLEAR
        raise Crash(f"exit {code}, stderr {err.getvalue()[:500]!r}")

    yield drive


# ---------------------------------------------------------------- params
PARAMS_RUNBOOK = """
name: params
params:
  host: {type: host, required: true}
  reason: {type: string, default: test, pattern: "[a-z ]{1,40}"}
  count: {type: integer, default: 4}
  ratio: {type: number}
  on: {type: boolean, default: true}
  hosts: {type: list}
  slow: {type: string, pattern: "(a|aa)+$"}
steps:
  - {id: a, action: notify.log, with: {text: "{{ params.reason }}"}}
"""
PARAM_NAMES = ["host", "reason", "count", "ratio", "on", "hosts", "slow", "nope"]
param_texts = st.one_of(
    pick(NASTY),
    st.text(max_size=40),
    pick(["[a, b]", "[kvm1, kvm3]", "[", "{a: 1}", "[[[[]]]]", "1" * 5000, "a" * 60 + "!"]),
    raw_yaml,
)
param_pairs = st.lists(
    st.one_of(
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(PARAM_NAMES) | st.text(max_size=8), param_texts),
        st.text(max_size=20),
    ),
    max_size=6,
)


@contextlib.contextmanager
def open_params(tmp: Path) -> Iterator[Driver]:
    """``-p KEY=VALUE`` pairs as ``evac evacuate``/``run`` take them, then bound to the runbook."""
    path = tmp / "params.yaml"
    path.write_text(PARAMS_RUNBOOK)
    runbook = load_runbook(path)

    def drive(case: list[str]) -> Outcome:
        return run(lambda: bind_params(runbook, parse_cli_params(runbook, case), ["kvm1", "kvm3"]))

    yield drive


# ---------------------------------------------------------------- templates
ATOMS = [
    "params.host",
    "params.count",
    "params.names",
    "steps.plan.moves",
    "item",
    "item.guest",
    "job.id",
    "nope",
    "nope.deeper",
    "params['host']",
    "range(10)",
    "range(100000)",
    "range(10**9)",
    "'a' * 1000",
    "'x' * 10**7",
    "2 ** 100000",
    "10 ** 10 ** 10",
    "[1, 2] * 100",
    "[1] * 10**8",
    "'%s' % 'x'",
    "'%999999999s' % 'x'",
    "'{:>999999999}'.format('x')",
    "'a'.ljust(10**9)",
    "'ab'.replace('', 'x' * 1000)",
    "lipsum(10**6)",
    "cycler",
    "self",
    "().__class__",
    "''.__class__.__mro__",
    "params.__class__.__init__.__globals__",
    "config",
    "namespace(a=1)",
    "dict(a=1)",
    "1 / 0",
    "none",
    "true",
    "1.5",
    "-3",
    "'text'",
    "[1, 2, 3]",
    "{'a': 1}",
]
OPERATORS = [" + ", " * ", " ** ", " ~ ", " // ", " % ", " and ", " or ", " if true else ", " in ", " == "]
FILTERS = [
    "|length",
    "|join(',')",
    "|join('x' * 10**6)",
    "|replace('a', 'bb')",
    "|center(10**8)",
    "|indent(10**8)",
    "|wordwrap(1)",
    "|batch(10**8)",
    "|list",
    "|sort",
    "|unique",
    "|tojson",
    "|format(1)",
    "|int",
    "|float",
    "|string",
    "|first",
    "|default('x')",
    "|map(attribute='guest')|list",
    "|selectattr('x')|list",
    "|sum",
    "|round",
    "|truncate(5)",
    "|urlencode",
    "|xmlattr",
    "|pprint",
    "|attr('__class__')",
    "|nope",
]


@st.composite
def expressions(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(ATOMS))
    for _ in range(draw(st.integers(0, 2))):
        text += draw(st.sampled_from(OPERATORS)) + draw(st.sampled_from(ATOMS))
    for _ in range(draw(st.integers(0, 2))):
        text += draw(st.sampled_from(FILTERS))
    return text


@st.composite
def template_texts(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        expr = draw(expressions())
        parts.append(
            draw(
                st.sampled_from(
                    [
                        f"{{{{ {expr} }}}}",
                        f"{{% for x in {expr} %}}{{{{ x }}}}{{% endfor %}}",
                        f"{{% for x in {expr} %}}{{% for y in {expr} %}}.{{% endfor %}}{{% endfor %}}",
                        f"{{% if {expr} %}}yes{{% else %}}no{{% endif %}}",
                        f"{{% set v = {expr} %}}{{{{ v }}}}",
                        f"{{% macro m(n) %}}{{{{ m(n) }}}}{{% endmacro %}}{{{{ m({expr}) }}}}",
                        f"{{% raw %}}{expr}{{% endraw %}}",
                        f"{{{{ {expr}",
                        f"{{% for %}}{expr}",
                        f"text {expr} ",
                    ]
                )
            )
        )
    return "".join(parts)


template_values = st.one_of(
    template_texts(),
    st.text(max_size=60).map(lambda t: "{{ " + t + " }}"),
    st.lists(
        st.sampled_from(["{{", "}}", "{%", "%}", "{#", "#}", "x", "|", "(", ")", " ", "'", '"']) | st.text(max_size=5),
        max_size=20,
    ).map("".join),
    st.lists(template_texts(), max_size=3),
    st.dictionaries(st.text(max_size=5), template_texts(), max_size=3),
)
TEMPLATE_CONTEXT: dict[str, Any] = {
    "params": {"host": "kvm1", "count": 3, "names": ["a", "b"], "reason": "test"},
    "steps": {"plan": {"moves": [{"guest": "vm1", "target": "kvm2"}, {"guest": "vm2", "target": "kvm3"}]}},
    "item": {"guest": "vm1", "target": "kvm2"},
    "job": {"id": 7},
}


@contextlib.contextmanager
def open_templates(tmp: Path) -> Iterator[Driver]:
    def drive(case: Any) -> Outcome:
        return run(lambda: render(case, copy.deepcopy(TEMPLATE_CONTEXT)))

    yield drive


# ---------------------------------------------------------------- inventory and evac.yaml
host_shapes = st.fixed_dictionaries(
    {"name": st.sampled_from(["kvm1", "kvm3", "KVM1", "kvm1\n", "198.18.0.3"]) | scalars},
    optional={name: values | pick(NASTY) for name in evac_inventory.HOST_FIELDS if name != "name"},
)
inventory_shapes = st.fixed_dictionaries(
    {"hosts": st.lists(host_shapes, max_size=3) | values},
    optional={"shared_storage": values, "plugins": values},
)
inventory_cases = file_bytes(yaml_documents([GOOD_INVENTORY], inventory_shapes))


@contextlib.contextmanager
def open_inventory(tmp: Path) -> Iterator[Driver]:
    """``hosts.yaml`` through ``load_inventory`` with every registered fence method's checks."""
    methods = fence_methods(plugin_manager())
    home = tmp / "inventory"
    home.mkdir(mode=0o755)
    path = home / "hosts.yaml"

    def drive(case: bytes) -> Outcome:
        path.write_bytes(case)
        path.chmod(0o644)
        return run(lambda: load_inventory(path, methods))

    yield drive


config_shapes = st.dictionaries(
    st.sampled_from([*evac_config.TOP, "slack", "nope"]),
    st.dictionaries(keys, values, max_size=4) | values,
    max_size=5,
)
config_cases = file_bytes(yaml_documents([GOOD_CONFIG], config_shapes))
CONFIG_ENV = {"EVAC_WEBHOOK_TOKEN": "t0ken", "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}


@contextlib.contextmanager
def open_config(tmp: Path) -> Iterator[Driver]:
    """``evac.yaml`` through ``load_config`` with every plugin's section (``slack:``), the
    environment variables contrib/evac.yaml names set, and a secret file beside it."""
    pm = plugin_manager()
    home = tmp / "config"
    home.mkdir()
    (home / "hook.key").write_text("s3cret\n")
    (home / "hook.key").chmod(0o600)
    path = home / "evac.yaml"
    saved = {name: os.environ.get(name) for name in CONFIG_ENV}
    os.environ.update(CONFIG_ENV)

    def drive(case: bytes) -> Outcome:
        path.write_bytes(case)
        return run(lambda: load_config(path, pm))

    try:
        yield drive
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ---------------------------------------------------------------- webhooks
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FuzzServed:
    """What ``evac.web.build_app`` needs: a real App on hosts that do not exist; only
    ``jobs.spawn`` is replaced, so a job is started (journal, lock) but nothing runs."""

    app: App
    config: ServiceConfig
    metrics: Metrics = field(default_factory=Metrics)
    accepting: bool = True
    spawned: list[Any] = field(default_factory=list)

    def health(self) -> dict[str, Any]:
        return {"ok": True}


@dataclass(frozen=True)
class WebhookCase:
    body: bytes
    auth: str  # bearer, wrong, signed, forged, none
    headers: tuple[tuple[str, bytes], ...] = ()

    def __repr__(self) -> str:
        return f"WebhookCase(body={self.body[:400]!r}, auth={self.auth!r}, headers={self.headers!r})"


def alert(instance: str, status: str = "firing", fingerprint: str = "fp1") -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "HostDown", "instance": instance},
        "annotations": {"summary": "down"},
        "startsAt": "2026-11-27T07:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": fingerprint,
    }


GOOD_BATCH = {
    "version": "4",
    "status": "firing",
    "receiver": "evac",
    "groupKey": "{}:{}",
    "alerts": [alert("198.18.0.3:9100"), alert("kvm4", "resolved", "fp2"), alert("unknown-host", fingerprint="fp3")],
}
GOOD_EVACUATE = {"host": "kvm3", "reason": "kernel update", "mode": "drain"}
HOST_LABELS = ["kvm3", "kvm4", "198.18.0.3:9100", "[198.18.0.4]:9100", "[::1]:x", "kvm3\n", "KVM3", ":", "", "kvm9"]
json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.sampled_from([*HOST_LABELS, "4", "firing", "resolved", "drain", "failover"]),
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(keys | st.sampled_from(list(GOOD_EVACUATE)), inner, max_size=4)
    ),
    max_leaves=10,
)
raw_json = st.one_of(
    st.binary(max_size=100),
    pick(
        [
            b"",
            b"{",
            b"null",
            b"[]",
            b"\xff\xfe{}",
            b'{"version": "4", "alerts": [' + b"[" * 3000 + b"]" * 3000 + b"]}",
            b"[" * 100_000 + b"]" * 100_000,
            b'{"host": ' + b"9" * 5000 + b"}",
            b'{"host": "kvm3", "host": "kvm4"}',
            b'{"host": "\\ud800"}',
            b'{"host": NaN}',
        ]
    ),
    st.lists(
        st.sampled_from(['{"', '":', "[", "]", "{", "}", ",", '"4"', "1e999", "\\u0000", "kvm3", " "]), max_size=20
    )
    .map("".join)
    .map(str.encode),
)


def json_bodies(good: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.just(json.dumps(good).encode()),
        mutated_tree(good).map(lambda v: json.dumps(v).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        raw_json,
    )


header_bytes = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00"))
extra_headers = st.lists(
    st.tuples(
        st.sampled_from(
            ["content-type", "content-length", "authorization", TIMESTAMP_HEADER.lower(), SIGNATURE_HEADER.lower()]
        ),
        header_bytes
        | pick(
            [
                b"application/json",
                b"text/plain",
                b"application/json; charset=latin-1",
                b"\xc2\xb2",
                b"-1",
                b"9" * 5000,
                b"0",
                b"5",
                b"Bearer t0ken",
                b"Bearer  t0ken",
                b"bearer t0ken",
                b"Bearer ",
                b"v1=" + b"0" * 64,
                b"sha256=" + b"0" * 64,
                b"1767225600",
                b"99999999999999999999",
                b" 1 ",
            ]
        ),
    ),
    max_size=3,
)


def webhook_cases(good: dict[str, Any]) -> st.SearchStrategy[WebhookCase]:
    return st.builds(
        WebhookCase,
        body=json_bodies(good),
        auth=st.sampled_from(["bearer", "bearer", "signed", "signed", "forged", "wrong", "none"]),
        headers=extra_headers.map(tuple),
    )


@contextlib.contextmanager
def open_webhooks(tmp: Path, path: str) -> Iterator[Driver]:
    """``build_app(served)`` in process (fastapi's TestClient) on a real App whose hosts do
    not exist. Any answer under 500 with, when it is a 4xx, a one-line JSON ``error``."""
    from fastapi.testclient import TestClient

    from evac.web import build_app

    home = tmp / "webhooks"
    home.mkdir()
    uri = f"qemu+tcp://127.0.0.1:{closed_port()}/system"
    inventory = home / "hosts.yaml"
    inventory.write_text(
        "hosts:\n"
        f"  - {{name: kvm3, uri: '{uri}', address: 198.18.0.3}}\n"
        f"  - {{name: kvm4, uri: '{uri}', address: 198.18.0.4}}\n"
    )
    hooks = WebhookSettings(token=TOKEN, hmac_secret=SECRET, rate_per_second=1e6, burst=10**6)
    config = replace(default_config(inventory, home / "journal.db"), webhooks=hooks)
    served = FuzzServed(App.from_config(config), config)
    setattr(served.app.jobs, "spawn", served.spawned.append)  # noqa: B010 - stubbed: nothing runs
    http = TestClient(build_app(served), client=(SOURCE, 50000))

    def drive(case: WebhookCase) -> Outcome:
        headers: dict[str, str | bytes] = {"content-type": "application/json"}
        if case.auth == "bearer":
            headers["authorization"] = f"Bearer {TOKEN}"
        elif case.auth == "wrong":
            headers["authorization"] = "Bearer wrong"
        elif case.auth == "signed":
            headers.update({k.lower(): v for k, v in signed_headers(SECRET, path, case.body).items()})
        elif case.auth == "forged":
            headers.update({k.lower(): v for k, v in signed_headers("not-it", path, case.body).items()})
        for name, value in case.headers:
            headers[name] = value
        response = http.post(path, content=case.body, headers=headers)
        if response.status_code >= 500:
            raise Crash(f"{response.status_code}: {response.text[:500]}")
        if response.status_code >= 400:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                raise Crash(f"{response.status_code} without a JSON error: {response.text[:500]!r}") from None
            if not isinstance(message, str) or not message.strip() or "\n" in message:
                raise Crash(f"{response.status_code} with an unclear error: {message!r}")
            return Outcome.CLEAR
        for result in response.json().get("results", []):
            if "\n" in result.get("why", ""):
                raise Crash(f"an alert's result over several lines: {result!r}")
        return Outcome.ACCEPTED

    try:
        yield drive
    finally:
        http.close()


# ---------------------------------------------------------------- Slack
@dataclass(frozen=True)
class SlackCase:
    body: bytes
    signing: str  # signed, stale, forged, none
    content_type: str

    def __repr__(self) -> str:
        return f"SlackCase(body={self.body[:400]!r}, signing={self.signing!r}, content_type={self.content_type!r})"


SLACK_USERS = ["UOPS", "UOTHER", "UGROUPIE", "", "U\n"]
SLACK_TEXTS = [
    "",
    " ",
    "help",
    "status",
    "status 1",
    "status x",
    "hosts",
    "brake",
    "brake release",
    "cancel",
    "cancel 1",
]
SLACK_TEXTS += ["host3", "host3 kernel update", "host9", "host4", "HOST3", "host3\n", "evacuate host3", "\u202ehost3"]
RESPONSE_URL = "{response_url}"  # filled in with the mock's when the case is sent


@st.composite
def slash_commands(draw: st.DrawFn) -> tuple[bytes, str]:
    fields = {
        "command": draw(st.sampled_from(["/evacuate", "/evac", "/other", "evac", ""]) | st.text(max_size=10)),
        "text": draw(st.sampled_from(SLACK_TEXTS) | st.text(max_size=40)),
        "user_id": draw(st.sampled_from(SLACK_USERS) | st.text(max_size=8)),
        "user_name": "someone",
        "channel_id": draw(st.sampled_from(["C1", "CALERTS", ""]) | st.text(max_size=8)),
        "team_id": "T1",
        "response_url": RESPONSE_URL,
        "trigger_id": "t1",
        "token": "legacy",
    }
    if draw(st.integers(0, 29)) == 0:  # Slack always sends these; without one a listener takes 3 s to fail
        for key in draw(st.lists(st.sampled_from(list(fields)), min_size=1, max_size=2, unique=True)):
            del fields[key]
    return urlencode(fields).encode(), "application/x-www-form-urlencoded"


def action_payload(action: str, value: Any, user: Any) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user, "name": "someone"},
        "team": {"id": "T1"},
        "channel": {"id": "C1"},
        "message": {"ts": "1.000"},
        "container": {"message_ts": "1.000"},
        "response_url": RESPONSE_URL,
        "trigger_id": "t1",
        "api_app_id": "A1",
        "token": "legacy",
        "actions": [{"action_id": action, "block_id": "b", "value": value, "type": "button", "action_ts": "1"}],
    }


ACTIONS = ["evac_confirm", "evac_cancel_preview", "evac_cancel_job", "evac_fence_manual", "evac_approve", "other"]


@st.composite
def button_presses(draw: st.DrawFn) -> tuple[bytes, str]:
    payload = action_payload(
        draw(st.sampled_from(ACTIONS)),
        draw(st.sampled_from(["", "1", "tok", "host4", "1:host4", "{}", "x" * 300]) | st.text(max_size=20)),
        draw(st.sampled_from(SLACK_USERS)),
    )
    if draw(st.booleans()):
        payload = draw(mutated_tree(payload))
    return urlencode({"payload": json.dumps(payload)}).encode(), "application/x-www-form-urlencoded"


@st.composite
def events(draw: st.DrawFn) -> tuple[bytes, str]:
    envelope = {
        "token": "legacy",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": draw(st.sampled_from(["event_callback", "url_verification", "app_rate_limited", "other"])),
        "challenge": "c",
        "event_id": "Ev1",
        "event_time": 1,
        "event": {
            "type": draw(st.sampled_from(["subteam_members_changed", "subteam_updated", "app_mention", "message"])),
            "event_ts": "1.0",
            "subteam_id": "SOPS",
        },
    }
    if draw(st.booleans()):
        envelope = draw(mutated_tree(envelope))
    return json.dumps(envelope).encode(), "application/json"


slack_bodies = st.one_of(
    slash_commands(),
    slash_commands(),
    button_presses(),
    events(),
    st.tuples(raw_json, st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""])),
    st.tuples(
        st.lists(
            st.sampled_from(["payload=", "command=", "%7B", "%5B", "&", "=", "%ff", "%", "text=", "+"])
            | st.text(max_size=5),
            max_size=10,
        )
        .map("".join)
        .map(str.encode),
        st.just("application/x-www-form-urlencoded"),
    ),
)
slack_cases = st.builds(
    lambda body, signing: SlackCase(body[0], signing, body[1]),
    slack_bodies,
    st.sampled_from(["signed", "signed", "signed", "stale", "forged", "none"]),
)


class Errors(logging.Handler):
    """Records logged at ERROR or above: a listener's exception after its ack."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def open_slack(tmp: Path) -> Iterator[Driver]:
    """bots/endpoint.py's ASGI app on a real bot (the mock Web API of tests/slackmock.py,
    hosts 1-3 answering, host4 down): a status under 500, and nothing logged as an error
    once every listener the request started has finished."""
    import time

    from evac_bots.endpoint import SlackEndpoint
    from tests.slackmock import signed_headers as slack_signed
    from tests.slackmock import slack_mock
    from tests.unit.test_slack import SECRET as SLACK_SECRET
    from tests.unit.test_slack import Clock, FakeDrain, answering_port, running_bot
    from tests.unit.test_slack_http import Loop

    home = tmp / "slack"
    home.mkdir()
    errors = Errors()
    root = logging.getLogger()
    with (
        slack_mock(groups={"SOPS": ["UGROUPIE"]}) as mock,
        answering_port() as port,
        running_bot(home, mock, FakeDrain(), Clock(), port) as bot,
    ):
        loop = Loop(SlackEndpoint(bot))

        async def settle(timeout: float) -> None:
            others = asyncio.all_tasks() - {asyncio.current_task()}
            if others:
                await asyncio.wait(others, timeout=timeout)

        def drive(case: SlackCase) -> Outcome:
            body = case.body.replace(RESPONSE_URL.encode(), mock.response_url.encode())
            body = body.replace(
                urlencode({"": RESPONSE_URL})[1:].encode(), urlencode({"": mock.response_url})[1:].encode()
            )
            headers = {"content-type": case.content_type} if case.content_type else {}
            if case.signing == "signed":
                headers.update({**slack_signed(SLACK_SECRET, body), **headers})
            elif case.signing == "stale":
                headers.update({**slack_signed(SLACK_SECRET, body, int(time.time()) - 600), **headers})
            elif case.signing == "forged":
                headers.update({**slack_signed("not-it", body), **headers})
            errors.records.clear()
            response = loop.post(body, headers).result(10)
            asyncio.run_coroutine_threadsafe(settle(10), loop.loop).result(15)
            if response.status_code >= 500:
                raise Crash(f"{response.status_code}: {response.text[:500]!r}")
            if errors.records:
                record = errors.records[0]
                raise Crash(
                    f"logged: {record.getMessage()[:300]} ({record.exc_info[1]!r})"
                    if record.exc_info
                    else record.getMessage()[:300]
                )
            return Outcome.CLEAR if response.status_code >= 400 else Outcome.ACCEPTED

        root.addHandler(errors)
        try:
            yield drive
        finally:
            root.removeHandler(errors)
            loop.close()


# ---------------------------------------------------------------- the targets
def _webhook_opener(path: str) -> Callable[[Path], contextlib.AbstractContextManager[Driver]]:
    return lambda tmp: open_webhooks(tmp, path)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("yaml", yaml_cases, open_yaml, ci_examples=80),
        Target("runbook", runbook_cases, open_runbook, ci_examples=80),
        Target("runbook validate (CLI)", runbook_cases, open_runbook_cli, ci_examples=30),
        Target("params", param_pairs, open_params, ci_examples=60),
        Target("templates", template_values, open_templates, deadline=5.0, ci_examples=60),
        Target("inventory", inventory_cases, open_inventory, ci_examples=80),
        Target("evac.yaml", config_cases, open_config, ci_examples=80),
        Target("webhook alertmanager", webhook_cases(GOOD_BATCH), _webhook_opener(AM), ci_examples=60),
        Target("webhook evacuate", webhook_cases(GOOD_EVACUATE), _webhook_opener(EVAC), ci_examples=60),
        Target("slack", slack_cases, open_slack, deadline=5.0, ci_examples=40),
    )
}

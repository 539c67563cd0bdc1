"""The layers, read from the source: no import circle, the core imports neither plugins
nor bots, libvirt behind one adapter, and runbook names only in the config."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parents[2]
CORE = ROOT / "evac"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in CORE.rglob("*.py")}


def top_level_imports(path: Path) -> Iterator[str]:
    """Imports at module level, those under ``if TYPE_CHECKING:`` included (a circle of
    type hints is still a circle); imports inside functions are deferred on purpose."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]

    def walk(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.If):
                yield from walk(node.body)
            elif isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                subs = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in MODULES]
                yield from subs
                if len(subs) < len(node.names):
                    yield module

    yield from walk(ast.parse(path.read_text()).body)


def graph() -> dict[str, set[str]]:
    return {name: {m for m in top_level_imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_the_core_has_no_import_circle() -> None:
    edges = graph()
    circles: list[list[str]] = []

    def visit(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges[node]):
            if nxt == start:
                circles.append([*path, start])
            elif nxt > start and nxt not in path:
                visit(start, nxt, [*path, nxt])

    for name in sorted(edges):
        visit(name, name, [name])
    assert circles == []


def test_the_web_stack_depends_on_a_protocol_not_on_the_service() -> None:
    edges = graph()
    assert "evac.service" not in edges["evac.web"] | edges["evac.webhooks"]


def test_the_core_imports_neither_plugins_nor_bots_and_only_the_adapter_imports_libvirt() -> None:
    for name, path in MODULES.items():
        every = (
            set(top_level_imports(path))
            | {
                n.module or ""
                for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.ImportFrom) and not n.level
            }
            | {a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import) for a in n.names}
        )
        assert not {m for m in every if m.split(".")[0] in ("evac_plugins", "evac_bots", "plugins", "bots")}, name
        if name != "evac.hypervisor":
            assert "libvirt" not in every, name


def test_the_app_does_not_import_the_lab() -> None:
    source = (CORE / "app.py").read_text() + (CORE / "config.py").read_text()
    assert "evac.lab" not in source and ".lab" not in source.replace("evac-lab", "")


def string_constants(path: Path) -> set[str]:
    return {
        n.value
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_the_drain_and_failover_runbooks_are_named_only_in_the_config() -> None:
    sources = [*CORE.rglob("*.py"), *(ROOT / "plugins").glob("*.py"), *(ROOT / "bots").glob("*.py")]
    naming = {str(p.relative_to(ROOT)) for p in sources if {"maintenance", "host-failure"} & string_constants(p)}
    assert naming == {"evac/config.py", "evac/states.py"}  # states: the host mode "maintenance", not a runbook

"""Shared output for the bench scripts: a printed table and a JSON file, nothing timed in tests."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    cpus = sum(1 for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("processor"))
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return {"cpus": cpus, "memory_gib": mem, "kernel": platform.release(), "python": platform.python_version()}


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in columns]] + [
        [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
    return "\n".join(lines)


def publish(
    name: str, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], extra: dict[str, Any]
) -> None:
    print(table(title, columns, rows), flush=True)
    OUT.mkdir(exist_ok=True)
    data = {
        "bench": name,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "columns": list(columns),
        "rows": [list(r) for r in rows],
        **extra,
    }
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))

"""The layering rules: catalog, fleet, workload, perf and sched import nothing from the layers above them; control
does not import api."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "suanli"
LOWER = ("catalog", "fleet", "workload", "perf", "sched")
UPPER = ("sim", "control", "api", "cli", "web", "devices")


def imports_of(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_do_not_import_upper_ones(layer: str) -> None:
    pkg = SRC / layer
    if not pkg.is_dir():
        pytest.skip(f"{layer} is not there yet")
    bad = []
    for f in pkg.rglob("*.py"):
        for mod in imports_of(f):
            parts = mod.split(".")
            if parts[0] == "suanli" and len(parts) > 1 and parts[1] in UPPER:
                bad.append(f"{f.relative_to(SRC)} imports {mod}")
    assert not bad, bad


def test_scheduler_reads_no_clock_and_does_no_io() -> None:
    for f in (SRC / "sched").rglob("*.py"):
        mods = imports_of(f)
        assert not mods & {"time", "datetime", "socket", "subprocess", "os", "random", "threading"}, f
        text = f.read_text(encoding="utf-8")
        assert "open(" not in text and "print(" not in text, f


def test_control_does_not_import_api() -> None:
    """The control plane (store, controller, executor) knows nothing of HTTP: the API is built on top of it
    (suanli.api.server puts the two together)."""
    bad = [f"{f.relative_to(SRC)} imports {mod}" for f in (SRC / "control").rglob("*.py") for mod in imports_of(f)
           if mod == "suanli.api" or mod.startswith("suanli.api.")]
    assert not bad, bad

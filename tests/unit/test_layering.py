"""Layering: traceflow and the kube-proxy model sit below antctl and the lab.

Every module under src/pyantrea/traceflow and src/pyantrea/kubeproxy is parsed (not imported) and
every import statement in it, at any depth (function bodies, `if TYPE_CHECKING:` blocks), is
checked: none may name pyantrea.antctl or pyantrea.lab, absolutely or relatively.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
FORBIDDEN = ("pyantrea.antctl", "pyantrea.lab")
LAYERS = ("pyantrea/traceflow", "pyantrea/kubeproxy")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; `from X import y` also yields X.y."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = _module_name(path, root)
    if path.name != "__init__.py":
        pkg = pkg.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = pkg.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.append((node.lineno, base))
            out.extend((node.lineno, f"{base}.{a.name}") for a in node.names)
    return out


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def _modules(layer: str) -> list[Path]:
    return sorted((SRC / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_exists(layer: str) -> None:
    assert _modules(layer), f"no modules under src/{layer}"


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_neither_antctl_nor_lab(layer: str) -> None:
    bad = [f"{p.relative_to(SRC)}:{line}: imports {name}"
           for p in _modules(layer) for line, name in imported_modules(p) if _forbidden(name)]
    assert not bad, "\n".join(bad)


def test_checker_sees_every_form(tmp_path: Path) -> None:
    """The checker itself: absolute, from-, relative and TYPE_CHECKING/function-level imports are seen."""
    mod = tmp_path / "pyantrea" / "traceflow" / "x.py"
    mod.parent.mkdir(parents=True)
    mod.write_text(
        "import pyantrea.lab.state\n"
        "from pyantrea import lab\n"
        "from pyantrea.antctl.backends import TraceResult\n"
        "from ..antctl import output\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pyantrea.lab.lab import Lab\n"
        "def f():\n"
        "    from .. import lab\n"
        "import pyantrea.labx\n"
        "from pyantrea.kubeproxy import build_rules\n"
        "from . import engine\n"
    )
    hits = sorted({line for line, n in imported_modules(mod, tmp_path) if _forbidden(n)})
    assert hits == [1, 2, 3, 4, 7, 9]

"""The layering of `lab`, checked by walking every import statement (module level and inside functions).

Rules (DESIGN.md, "Layers"):
- no product package imports a study (`lab.studies`);
- the product packages engine, server, gateway, bench and scale import none of each other, except
  server -> engine;
- the lab plane below them (track, gpu, tiers, errors, paths) imports no product package and no study;
- `lab.tiers` imports nothing (it is the one dependency-free tier table).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1] / "lab"
PRODUCTS = ("engine", "server", "gateway", "bench", "scale")
ALLOWED_BETWEEN_PRODUCTS = {("server", "engine")}
LOWER = ("track", "gpu", "tiers", "errors", "paths")


def lab_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every `import lab...` / `from lab... import` in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "lab"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "lab":
            if node.module == "lab":  # `from lab import studies`: the names are subpackages
                found += [(node.lineno, f"lab.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def top_package(module: str) -> str:
    """`lab.engine.models.mla` -> "engine"; `lab.tiers` -> "tiers"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations() -> list[str]:
    found = []
    for path in sorted(LAB.rglob("*.py")):
        relative = path.relative_to(LAB)
        owner = relative.parts[0].removesuffix(".py") if relative.parts else ""
        for line, module in lab_imports(path):
            target = top_package(module)
            where = f"lab/{relative}:{line} imports {module}"
            if owner in PRODUCTS and target == "studies":
                found.append(f"{where}: a product package imports a study")
            elif owner in PRODUCTS and target in PRODUCTS and target != owner \
                    and (owner, target) not in ALLOWED_BETWEEN_PRODUCTS:
                found.append(f"{where}: {owner} may not import {target}")
            elif owner in LOWER and (target in PRODUCTS or target == "studies"):
                found.append(f"{where}: the lab plane below the products imports {target}")
            elif owner == "tiers":
                found.append(f"{where}: lab.tiers is dependency-free")
    return found


def test_the_layers_hold() -> None:
    assert violations() == []


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from lab.studies.roofline import suite\n    import lab.gateway.app\n")
    assert lab_imports(module) == [(4, "lab.studies.roofline"), (5, "lab.gateway.app")]


@pytest.mark.parametrize(("module", "package"), [("lab.engine.models.mla", "engine"), ("lab.tiers", "tiers"),
                                                 ("lab", "")])
def test_top_package(module: str, package: str) -> None:
    assert top_package(module) == package

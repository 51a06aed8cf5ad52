"""The layering of `lab`, checked by walking every import statement (module level and inside functions).

Rules (DESIGN.md, "Layers"):
- no product package imports a study (`lab.studies`);
- the product packages engine, server, gateway, bench, scale and comm import none of each other, except
  server -> engine;
- the lab plane below them (track, gpu, tiers, errors, paths) imports no product package and no study;
- `lab.tiers` imports nothing (it is the one dependency-free tier table);
- the composition layer (`lab.service`, which runs replicas, gateway and Prometheus together, and
  `lab.chaos`, which drills them) may import product packages, never a study; no product package and
  nothing of the lab plane below imports it; `lab.service` does not import `lab.chaos` (chaos drives it).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1] / "lab"
PRODUCTS = ("engine", "server", "gateway", "bench", "scale", "comm")
ALLOWED_BETWEEN_PRODUCTS = {("server", "engine")}
LOWER = ("track", "gpu", "tiers", "errors", "paths")
COMPOSITION = ("service", "chaos")


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


def violations(root: Path = LAB) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        owner = relative.parts[0].removesuffix(".py") if relative.parts else ""
        for line, module in lab_imports(path):
            target = top_package(module)
            where = f"lab/{relative}:{line} imports {module}"
            if owner in PRODUCTS and target == "studies":
                found.append(f"{where}: a product package imports a study")
            elif owner in PRODUCTS and target in PRODUCTS and target != owner \
                    and (owner, target) not in ALLOWED_BETWEEN_PRODUCTS:
                found.append(f"{where}: {owner} may not import {target}")
            elif owner in PRODUCTS and target in COMPOSITION:
                found.append(f"{where}: a product package imports the composition layer ({target})")
            elif owner in LOWER and (target in PRODUCTS or target in COMPOSITION or target == "studies"):
                found.append(f"{where}: the lab plane below the products imports {target}")
            elif owner in COMPOSITION and target == "studies":
                found.append(f"{where}: the composition layer imports a study (studies sit above it)")
            elif owner == "service" and target == "chaos":
                found.append(f"{where}: lab.service may not import lab.chaos (chaos drives the service)")
            elif owner == "tiers":
                found.append(f"{where}: lab.tiers is dependency-free")
    return found


def test_the_layers_hold() -> None:
    assert violations() == []


def test_the_composition_layer_imports_products_and_nothing_imports_it(tmp_path: Path) -> None:
    files = {"service/ok.py": "import lab.gateway.config\nfrom lab.scale import local_pool\n",
             "chaos/ok.py": "from lab.service import supervisor\nimport lab.gateway\n",
             "gateway/bad.py": "from lab.service import supervisor\n",
             "track/bad.py": "import lab.chaos.actions\n",
             "service/bad.py": "from lab.studies import launcher\nimport lab.chaos\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = violations(tmp_path)
    assert [line.split(" imports ")[0] for line in found] == [
        "lab/gateway/bad.py:1", "lab/service/bad.py:1", "lab/service/bad.py:2", "lab/track/bad.py:1"]


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from lab.studies.roofline import suite\n    import lab.gateway.app\n")
    assert lab_imports(module) == [(4, "lab.studies.roofline"), (5, "lab.gateway.app")]


@pytest.mark.parametrize(("module", "package"), [("lab.engine.models.mla", "engine"), ("lab.tiers", "tiers"),
                                                 ("lab", "")])
def test_top_package(module: str, package: str) -> None:
    assert top_package(module) == package

"""Every notebook keeps the house shape: it calls one `lab.studies.<study>` module, has one `parameters`
cell of UPPER_CASE typed literals with a comment each, and records its parameters the same way."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
STUDIES = Path(__file__).resolve().parents[1] / "lab" / "studies"


def code_cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [c for c in cells if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def lab_imports(path: Path) -> set[str]:
    found = set()
    for cell in code_cells(path):
        for node in ast.walk(ast.parse(source(cell))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lab"):
                found |= {f"{node.module}.{a.name}" if node.module == "lab.studies" else node.module for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("lab")}
    return found


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_calls_one_study_and_the_tracker_only(path: Path) -> None:
    imports = lab_imports(path)
    studies = {name for name in imports if name.startswith("lab.studies.")}
    assert len(studies) == 1, f"{path.name} imports {sorted(studies)}: one study module per notebook"
    (study,) = studies
    assert (STUDIES / study.split(".")[2]).is_dir()
    assert imports - studies <= {"lab.track"}, f"{path.name}: logic lives in the study, not in other lab imports"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_of_commented_upper_case_typed_literals(path: Path) -> None:
    tagged = [c for c in code_cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    text = source(tagged[0])
    tree = ast.parse(text)
    assert tree.body and all(isinstance(node, ast.AnnAssign) for node in tree.body)
    lines = text.splitlines()
    for node in tree.body:
        name = node.target.id
        assert name.isupper(), name
        ast.literal_eval(node.value)  # a literal papermill can override
        assert "#" in lines[node.lineno - 1], f"{name} has no comment"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_last_cell_records_the_parameters_the_same_way(path: Path) -> None:
    last = source(code_cells(path)[-1])
    assert "record_notebook(" in last
    assert "notebook_parameters(globals())" in last

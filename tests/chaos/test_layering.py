"""lab.chaos sits above the product packages: it may import them (lab.bench), no product imports it, and it
imports no study. Checked with the import walk of tests/test_import_rules.py."""

from __future__ import annotations

from pathlib import Path

from tests.test_import_rules import LAB, PRODUCTS, lab_imports, top_package


def test_lab_chaos_imports_no_study() -> None:
    found = [f"{path.name}:{line} {module}" for path in sorted((LAB / "chaos").rglob("*.py"))
             for line, module in lab_imports(path) if top_package(module) == "studies"]
    assert found == []


def test_no_product_package_imports_lab_chaos() -> None:
    found = [f"{path.relative_to(LAB)}:{line}" for product in PRODUCTS for path in sorted((LAB / product).rglob("*.py"))
             for line, module in lab_imports(path) if top_package(module) == "chaos"]
    assert found == []


def test_the_extension_discovers_every_exported_activity() -> None:
    import lab.chaos
    from lab.chaos import network, processes

    names = {a["name"]: a["type"] for a in lab.chaos.discover()["activities"]}
    assert {names[n] for n in processes.__all__ + network.__all__} == {"action"}
    assert names["steady_state"] == names["replica_is_ejected"] == names["network_fault_backend"] == "probe"


def test_every_chaos_module_opens_with_its_contract() -> None:
    for path in sorted((LAB / "chaos").glob("*.py")):
        source = Path(path).read_text()
        assert source.startswith('"""'), f"{path.name} has no module docstring"
        assert len(source.splitlines()) <= 300, f"{path.name} is over 300 lines"

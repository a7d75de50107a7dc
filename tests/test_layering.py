"""The house's layers, read from the imports of every module (at any depth: lazy imports inside
functions count too). Data flows one way: configuration → cost → model → device → study →
report; an arrow back up is a failure here, naming the module and the import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "harness"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _modules(*prefixes: str) -> list[str]:
    return [name for name in MODULES
            if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)]


def _violations(importers: list[str], forbidden: tuple[str, ...],
                allowed: tuple[str, ...] = ()) -> list[str]:
    """``importer imports target`` for each import of a forbidden module (or its children)."""
    bad = []
    for importer in importers:
        for target in sorted(MODULES[importer]):
            hit = any(target == f or target.startswith(f + ".") for f in forbidden)
            ok = any(target == a or target.startswith(a + ".") for a in allowed)
            if hit and not ok:
                bad.append(f"{importer} imports {target}")
    return bad


# What sits above the model: everything that measures, searches, benchmarks or reports.
ABOVE_MODELS = ("harness.devices", "harness.runtimes", "harness.search", "harness.bench",
                "harness.report", "harness.accuracy", "harness.rank_check", "harness.cli",
                "harness.export", "harness.environment", "harness.fpga")
SEARCH = ("harness.search",)
BENCH = ("harness.bench",)
REPORT = ("harness.report",)


def test_every_rule_sees_the_modules_it_is_about():
    # a rule over no module cannot fail: each group must exist
    for group in (("harness.models", "harness.layers"), ("harness.cost", "harness.workload"),
                  ("harness.devices",), ("harness.records",), REPORT, SEARCH, BENCH):
        assert _modules(*group), group


def test_models_and_layers_import_nothing_above_them():
    assert _violations(_modules("harness.models", "harness.layers"), ABOVE_MODELS) == []


def test_the_analytic_cost_imports_no_torch_and_no_model():
    assert _violations(_modules("harness.cost", "harness.workload", "harness.tokens",
                                "harness.config"),
                       ("torch", "harness.models", "harness.layers", "fvcore")) == []


def test_result_records_sit_below_everything_that_fills_or_reads_them():
    # devices return them, search, bench and report read them: they import none of these
    assert _violations(["harness.records"], ("torch", "harness.models", "harness.layers",
                                             *ABOVE_MODELS)) == []


def test_a_rank_check_builds_models_without_the_search():
    assert _violations(["harness.rank_check"], SEARCH) == []


def test_devices_never_import_search_bench_or_report():
    assert _violations(_modules("harness.devices"), (*SEARCH, *BENCH, *REPORT)) == []


def test_the_report_imports_no_torch_and_no_model():
    assert _violations(_modules(*REPORT, "harness.search.results"),
                       ("torch", "harness.models", "harness.layers", "harness.search",
                        "harness.runtimes", "harness.devices.base"),
                       allowed=("harness.search.results", "harness.search.pareto")) == []


@pytest.mark.parametrize("rule", ["models", "devices"])
def test_a_violation_is_named(rule, monkeypatch):
    # the check itself fails on an arrow back up
    importer = "harness.models" if rule == "models" else "harness.devices.cpu"
    monkeypatch.setitem(MODULES, importer, MODULES[importer] | {"harness.search.study"})
    found = (_violations([importer], ABOVE_MODELS) if rule == "models"
             else _violations([importer], SEARCH))
    assert found == [f"{importer} imports harness.search.study"]


def test_every_page_is_built_in_report_without_pyplot():
    """One page style (report/page.py) and figures without pyplot's global state or a backend
    chosen at import."""
    pages, pyplot = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if "<!DOCTYPE html" in text:
            pages.append(_module_name(path))
        if "matplotlib.pyplot" in text or "matplotlib.use(" in text:
            pyplot.append(_module_name(path))
    assert pages == ["harness.report.page"] and pyplot == []


# What may print besides the CLI's modules: the entry point (its error line comes before the CLI
# is imported), the progress display, the handler that shows library notices on the CLI's
# stderr, and the competing-load child process's handshake to its parent.
PRINTERS = {"harness.__main__", "harness.search.progress", "harness.notices",
            "harness.devices.competing_load"}


def test_nothing_below_the_cli_prints():
    printing = {_module_name(path) for path in sorted(PACKAGE.rglob("*.py"))
                if any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                       and node.func.id == "print"
                       for node in ast.walk(ast.parse(path.read_text())))}
    below_the_cli = {name for name in printing if not name.startswith("harness.cli")}
    assert below_the_cli <= PRINTERS, sorted(below_the_cli - PRINTERS)
    assert "harness.cli.measure" in printing  # the check sees prints where they are

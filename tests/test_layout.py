"""The code's shape that keeps it carried on: stages are entry points that share library modules,
never each other; executor code never imports the driver side."""

import ast
import re
from pathlib import Path

from segrec.jobs.pipeline import STAGES

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every ``segrec.*`` module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("segrec"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("segrec"))
    return found


def test_no_stage_module_imports_another_stage():
    stages = {f"segrec.jobs.{name}" for name in STAGES}
    crossing = {
        name: sorted(imported_modules(ROOT / "jobs" / f"{name}.py") & (stages - {f"segrec.jobs.{name}"}))
        for name in STAGES
    }
    assert {name: found for name, found in crossing.items() if found} == {}


def test_only_the_pipeline_and_cli_know_the_stages():
    stages = {f"segrec.jobs.{name}" for name in STAGES}
    users = sorted(
        path.name
        for path in (ROOT / "jobs").glob("*.py")
        if path.stem not in STAGES and imported_modules(path) & stages
    )
    assert users == ["pipeline.py"]


def test_executor_code_never_imports_the_driver_side():
    offenders = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "udfs").rglob("*.py")
        if any(module.startswith("segrec.jobs") for module in imported_modules(path))
    )
    assert offenders == []


def undocumented(path: Path) -> list[str]:
    """Public functions and classes of ``path`` without a docstring, or whose docstring leaves out one
    of their parameters (named as written, ``like_this`` or in prose)."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in getattr(node, "body", []):
            if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                if ast.get_docstring(child) is None:
                    found.append(f"{prefix}{child.name}: no docstring")
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef) and not child.name.startswith("_"):
                text = ast.get_docstring(child)
                if text is None:
                    found.append(f"{prefix}{child.name}: no docstring")
                    continue
                arguments = child.args.args + child.args.kwonlyargs
                names = [a.arg for a in arguments if a.arg not in ("self", "cls")]
                missing = [name for name in names if not re.search(rf"\b{re.escape(name)}\b", text)]
                if missing:
                    found.append(f"{prefix}{child.name}: does not name {missing}")

    visit(ast.parse(path.read_text(encoding="utf-8")), f"{path.relative_to(ROOT)}:")
    return found


def test_executor_functions_document_their_parameters():
    assert [line for path in sorted((ROOT / "udfs").rglob("*.py")) for line in undocumented(path)] == []


def test_each_stage_entry_point_says_what_it_reads_writes_and_returns():
    for name in STAGES:
        text = ast.get_docstring(
            next(
                node
                for node in ast.parse((ROOT / "jobs" / f"{name}.py").read_text(encoding="utf-8")).body
                if isinstance(node, ast.FunctionDef) and node.name == "run"
            )
        )
        assert text and "ctx" in text and "Returns" in text, name

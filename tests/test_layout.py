"""The code's shape that keeps it carried on: the stages sit together in jobs/stages/ and share library
modules grouped by domain, never each other; executor code never imports the driver side; no module
imports itself back through others."""

import ast
import re
from pathlib import Path

from segrec.jobs.pipeline import STAGES

ROOT = Path(__file__).resolve().parents[1]
STAGE_MODULES = {f"segrec.jobs.stages.{name}" for name in STAGES}
# The run's machinery at the top of jobs/ (its config in jobs/config/); everything else in a domain package.
MACHINERY = {"__init__", "cli", "context", "errors", "pipeline", "session", "spark_submit"}
DOMAINS = {
    "config",
    "stages",
    "audiences",
    "sources",
    "vectors",
    "towers",
    "segments",
    "recommendations",
    "evaluation",
    "io",
    "bootstrap",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["segrec", *parts])


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


def runtime_files() -> list[Path]:
    return sorted(
        path
        for folder in ("jobs", "udfs")
        for path in (ROOT / folder).rglob("*.py")
        if "bootstrap" not in path.relative_to(ROOT).parts
    )


def test_the_stages_sit_together_and_nothing_else_does():
    found = {path.stem for path in (ROOT / "jobs" / "stages").glob("*.py")} - {"__init__"}
    assert found == set(STAGES)


def test_the_top_of_jobs_holds_only_the_run_machinery_and_domain_packages():
    assert {path.stem for path in (ROOT / "jobs").glob("*.py")} == MACHINERY
    packages = {path.name for path in (ROOT / "jobs").iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert packages == DOMAINS


def test_no_stage_module_imports_another_stage():
    crossing = {
        name: sorted(
            imported_modules(ROOT / "jobs" / "stages" / f"{name}.py") & (STAGE_MODULES - {f"segrec.jobs.stages.{name}"})
        )
        for name in STAGES
    }
    assert {name: found for name, found in crossing.items() if found} == {}


def test_only_the_pipeline_knows_the_stages():
    users = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "jobs").rglob("*.py")
        if "stages" not in path.parts and imported_modules(path) & (STAGE_MODULES | {"segrec.jobs.stages"})
    )
    assert users == ["jobs/pipeline.py"]


def test_executor_code_never_imports_the_driver_side():
    offenders = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "udfs").rglob("*.py")
        if any(module.startswith("segrec.jobs") for module in imported_modules(path))
    )
    assert offenders == []


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module in the graph of segrec's own imports."""
    files = {module_name(path): path for path in runtime_files()}
    graph = {name: sorted(imported_modules(path) & (set(files) - {name})) for name, path in files.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for name in graph:
        if name not in index:
            visit(name)
    return sorted(groups)


def test_no_module_imports_itself_back_through_others():
    assert import_cycles() == []


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


def test_driver_functions_document_their_parameters():
    """jobs/ is held to udfs/' rule: every public function and class documented, every parameter named."""
    found = [
        line
        for path in sorted((ROOT / "jobs").rglob("*.py"))
        if "bootstrap" not in path.relative_to(ROOT).parts
        for line in undocumented(path)
    ]
    assert found == []


def test_each_stage_entry_point_says_what_it_reads_writes_and_returns():
    for name in STAGES:
        text = ast.get_docstring(
            next(
                node
                for node in ast.parse((ROOT / "jobs" / "stages" / f"{name}.py").read_text(encoding="utf-8")).body
                if isinstance(node, ast.FunctionDef) and node.name == "run"
            )
        )
        assert text and "ctx" in text and "Returns" in text, name


def test_the_commands_are_the_stages_and_run():
    from segrec.jobs.cli import COMMANDS, build_parser

    assert set(COMMANDS) == set(STAGES) | {"run"}
    build_parser()  # every command has its help line

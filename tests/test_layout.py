"""The package's layout follows the flow: a module imports only from its own stage or earlier ones.

The stages, in order (README "Development" draws them):

    core       model, errors, config, clock, storage, safe_read: values and footing shared by all
    inventory  read the operator's file into Device | InvalidRow
    store      the durable record: journal, bundles, rescue files, the claimed --out folder;
               planning reads it and renewal writes to it before a request leaves
    plan       decide per row: renew, skip, invalid; the `plan` command and saved plans
    enos       the one place that speaks to EnOS
    renew      per device: keys, rate limit, retries, the call, reconcile, verify
    outputs    report, summary, report.html, metrics, notify, merge, inventory.next.csv
    simulator  the EnOS stand-in (the job starts it for --sandbox)
    run        the run loop and the job around it
    entry      the CLI and the job-level test helpers

Imports are read from the source (every `import`, at any depth), so a lazy import inside a
function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import batch

PACKAGE = Path(batch.__file__).parent

STAGES = [
    (
        "core",
        {
            "batch",
            "batch.model",
            "batch.errors",
            "batch.config",
            "batch.clock",
            "batch.storage",
            "batch.safe_read",
        },
    ),
    ("inventory", {"batch.inventory"}),
    ("store", {"batch.store"}),
    ("plan", {"batch.plan"}),
    ("enos", {"batch.enos"}),
    ("renew", {"batch.renew"}),
    ("outputs", {"batch.outputs"}),
    ("simulator", {"batch.simulator"}),
    ("run", {"batch.run"}),
    ("entry", {"batch.cli", "batch.__main__", "batch.testing"}),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> int:
    """The stage of `module`: the longest prefix listed in STAGES decides."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    if best is None:
        raise AssertionError(f"{module} belongs to no stage: add it to STAGES")
    return best[1]


def imports_of(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "batch")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "batch":  # `from batch import x` names a submodule
                found.update(f"batch.{a.name}" for a in node.names)
            elif node.module.split(".")[0] == "batch":
                found.add(node.module)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_a_module_imports_only_from_its_stage_or_earlier_ones(path: Path) -> None:
    importer = module_name(path)
    own = stage_of(importer)
    late = sorted(m for m in imports_of(path.read_text()) if stage_of(m) > own)
    assert not late, f"{importer} ({STAGES[own][0]}) imports from later stages: " + ", ".join(
        f"{m} ({STAGES[stage_of(m)][0]})" for m in late
    )


def test_the_check_sees_late_imports_at_any_depth_and_in_every_form() -> None:
    source = (
        "import batch.run.job\n"
        "from batch import cli\n"
        "def f():\n"
        "    from batch.outputs.report import Summary\n"
        "from . import sibling\n"  # relative: not ours to read (the package uses none)
    )
    found = imports_of(source)
    assert found == {"batch.run.job", "batch.cli", "batch.outputs.report"}
    plan = stage_of("batch.plan.decide")
    assert all(stage_of(m) > plan for m in found)
    assert stage_of("batch.storage") == 0 and stage_of("batch.cli") == len(STAGES) - 1


def test_the_package_uses_no_relative_imports() -> None:
    relative = [
        module_name(path)
        for path in MODULES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert not relative


def test_every_module_has_a_stage() -> None:
    for path in MODULES:
        stage_of(module_name(path))


MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 150


def oversized(source: str) -> list[str]:
    """What in `source` is too big to read in one sitting: the module, or any class in it."""
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"module: {lines} lines")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if size > MAX_CLASS_LINES:
                found.append(f"class {node.name}: {size} lines")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_over_400_lines_and_no_class_over_150(path: Path) -> None:
    assert not oversized(path.read_text())


def test_the_size_check_sees_a_long_module_and_a_long_class() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_CLASS_LINES))
    assert oversized("class Big:\n" + body) == [f"class Big: {MAX_CLASS_LINES + 1} lines"]
    assert oversized("x = 1\n" * (MAX_MODULE_LINES + 1)) == [
        f"module: {MAX_MODULE_LINES + 1} lines"
    ]
    assert oversized("class Small:\n" + body[: body.index("x149")]) == []

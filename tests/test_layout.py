"""The package layout stays as built: layers follow the data path, no import circles, modules and functions stay small.

Layers, bottom to top (docs/architecture.md): a module may import only from its own layer or the
layers below. Imports are read with `ast` from the whole module, imports inside functions and
``if TYPE_CHECKING:`` blocks included, plus ``importlib.import_module("icon_bench...")`` calls with a
string literal. Type-only imports count for the layers but not for circles (they never run).

Size convention: a module over MAX_MODULE_LINES lines, or a function over MAX_FUNCTION_LINES lines,
needs a line starting with ``Reason:`` in its docstring saying why it is long.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "icon_bench"

#: Longest prefix wins. A new top-level module or subpackage must be placed here.
LAYERS: dict[str, float] = {
    "icon_bench._version": 0,
    "icon_bench.errors": 0,
    "icon_bench.extras": 0,
    "icon_bench.terminal": 0,
    "icon_bench.hooks": 0,
    "icon_bench.data": 1,
    "icon_bench.features": 1,  # backbones, embedding and caches need torch and the data layer only
    "icon_bench.features.command": 7,  # the embed commands (Ray executor from run/)
    "icon_bench.loss": 2,
    "icon_bench.evaluation": 3,
    "icon_bench.train": 4,
    "icon_bench.run": 5,  # run/__init__ only: its code lives in the three subpackages below
    "icon_bench.run.suite": 5.0,  # the suite language and its load-time checks
    "icon_bench.run.execution": 5.1,  # trials, executors, the results store
    "icon_bench.run.tuning": 5.2,  # search on val, then test (builds on execution)
    "icon_bench.run.discovery": 5.3,  # loss discovery, beside tuning (builds on it)
    "icon_bench.report": 6,
    "icon_bench.track": 6,
    "icon_bench.testing": 7,
    "icon_bench.scaffold": 7,
    "icon_bench.runner": 7,
    "icon_bench.run_cli": 7,
    "icon_bench.cli": 7,
    "icon_bench": 7,  # the root __init__: the public API
}

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> float:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                out.update(id(n) for n in ast.walk(child))
    return out


def _resolve(module: str, name: str | None) -> str:
    """``from module import name``: the submodule when ``name`` is one, else ``module`` itself."""
    if name is not None and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """(imported icon_bench module, line, type-only) for every import in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_only = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [_resolve(base, alias.name) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and "import_module" in (getattr(node.func, "attr", None), getattr(node.func, "id", None))
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        for target in targets:
            if target == "icon_bench" or target.startswith("icon_bench."):
                found.append((target, node.lineno, id(node) in type_only))
    return found


def test_every_module_has_a_layer() -> None:
    assert "icon_bench.hooks.registry" in MODULES and "icon_bench.loss.objective" in MODULES
    unplaced = [m for m in MODULES if not any(m == p or m.startswith(p + ".") for p in LAYERS if p != "icon_bench")]
    assert unplaced == ["icon_bench"], f"place these in LAYERS: {unplaced}"


def test_no_module_imports_a_layer_above_it() -> None:
    bad = []
    for module in MODULES:
        for target, line, _ in imports_of(module):
            if target not in MODULES:
                bad.append(f"{MODULES[module]}:{line}: imports {target}, which does not exist")
            elif layer_of(target) > layer_of(module):
                bad.append(
                    f"{MODULES[module]}:{line}: {module} (layer {layer_of(module)}) imports "
                    f"{target} (layer {layer_of(target)})"
                )
    assert not bad, "\n".join(bad)


def test_no_import_circles() -> None:
    graph = {m: sorted({t for t, _, type_only in imports_of(m) if not type_only and t != m}) for m in MODULES}
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in graph:  # a missing module: test_no_module_imports_a_layer_above_it names it
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module)
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_run_is_split_into_suite_execution_and_tuning() -> None:
    # Issue 23: run/ held 29 modules of three kinds; each now lives in its subpackage, and nothing is left loose.
    run = PACKAGE / "run"
    loose = sorted(p.name for p in run.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules directly under run/ (put them in a subpackage): {loose}"
    subpackages = sorted(p.name for p in run.iterdir() if (p / "__init__.py").exists())
    assert {"suite", "execution", "tuning"} <= set(subpackages)
    assert "icon_bench.run.suite.reader" in MODULES and "icon_bench.run.execution.store" in MODULES
    assert "icon_bench.run.tuning.tpe" in MODULES
    # The suite language never imports how suites run: a check of the sublayers above.
    assert layer_of("icon_bench.run.suite.model") < layer_of("icon_bench.run.execution.trial")
    assert layer_of("icon_bench.run.execution.store") < layer_of("icon_bench.run.tuning.search")


def test_the_layout_checks_see_imports_inside_functions_and_import_module() -> None:
    # A guard on the checker itself: runner.py imports the report command lazily, by string.
    targets = {t for t, _, _ in imports_of("icon_bench.runner")}
    assert "icon_bench.report.commands" in targets
    assert "icon_bench.data.load" in {t for t, _, _ in imports_of("icon_bench.run.execution.base")}  # inside a function
    assert ("icon_bench.data.splits", True) in {(t, ty) for t, _, ty in imports_of("icon_bench.evaluation.metrics")}


def _has_reason(doc: str | None) -> bool:
    return any(line.strip().startswith("Reason:") for line in (doc or "").splitlines())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_are_small_or_say_why(module: str) -> None:
    path = MODULES[module]
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    lines = len(text.splitlines())
    problems = []
    if not ast.get_docstring(tree):
        problems.append(f"{path}: needs a docstring saying what it holds")
    if lines > MAX_MODULE_LINES and not _has_reason(ast.get_docstring(tree)):
        problems.append(
            f"{path}: {lines} lines (> {MAX_MODULE_LINES}); split it or give a 'Reason:' line in its docstring"
        )
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - start + 1
            if length > MAX_FUNCTION_LINES and not _has_reason(ast.get_docstring(node)):
                problems.append(
                    f"{path}:{node.lineno}: {node.name} is {length} lines (> {MAX_FUNCTION_LINES}); "
                    "split it or give a 'Reason:' line in its docstring"
                )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py"))
def test_no_reexported_name_hides_a_submodule(package: str) -> None:
    # `from icon_bench.evaluation import protocol` must not mean a function in one place and a module in another.
    tree = ast.parse(MODULES[package].read_text(encoding="utf-8"))
    names = {a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom) for a in node.names}
    names |= {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    hidden = sorted(n for n in names if f"{package}.{n}" in MODULES and not _is_module_import(tree, n))
    assert not hidden, f"{package} re-exports names that are also its submodules: {hidden}"


def _is_module_import(tree: ast.Module, name: str) -> bool:
    return any(
        isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name and a.name == name for a in node.names)
        and f"{node.module}.{name}" in MODULES
        for node in tree.body
    )


def test_module_lists_name_modules_that_exist() -> None:
    # The registry and the CLI import these by name, so a move must update them.
    from icon_bench import cli
    from icon_bench.hooks.registry import BUILTIN_MODULES

    hooked = sorted(
        m
        for m, p in MODULES.items()
        for node in ast.parse(p.read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef) and any(ast.unparse(d) == "hookimpl" for d in node.decorator_list)
    )
    assert sorted(BUILTIN_MODULES) == hooked
    assert all(m in MODULES for m in cli.COMMAND_MODULES)

"""Meta-tests: every hook has a docstring, a section in docs/plugins.md and a test of its own; the docs' code runs."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types
from pathlib import Path

import pytest

from icon_bench import testing
from icon_bench.hooks import registry
from icon_bench.hooks import specs as hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "plugins.md").read_text()
HOOKS = sorted(hookspecs.KINDS.values())


def _code_blocks(lang: str = "python") -> list[str]:
    """Fenced blocks of `lang`, including ones indented inside list items (dedented)."""
    found = re.findall(rf"^( *)```{lang}\n(.*?)^\1```", DOC, flags=re.M | re.S)
    return [textwrap.dedent(body) for _, body in found]


def _test_function_names() -> dict[str, list[str]]:
    """test function name -> files, over tests/ (this file excluded: it must not satisfy itself)."""
    names: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                names.setdefault(node.name, []).append(path.name)
    return names


def test_kinds_list_every_hookspec() -> None:
    specs = {name for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")}
    assert specs == set(HOOKS), "hookspecs.KINDS and the @hookspec functions disagree"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and len(doc.split()) >= 4, f"hookspecs.{hook} needs a docstring saying what its factories return"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_section_in_plugins_md_with_its_exact_signature(hook: str) -> None:
    assert re.search(rf"^#{{2,4}} .*`{hook}\(register\)`", DOC, flags=re.M), (
        f"docs/plugins.md has no heading for {hook}"
    )
    params = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert params == ["register"], f"{hook} changed its signature to {params}: update docs/plugins.md"
    assert f"def {hook}(register: Register) -> None: ..." in DOC


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test_of_its_own(hook: str) -> None:
    mine = [name for name in _test_function_names() if hook in name]
    assert mine, f"no test function in tests/ mentions {hook} in its name"


def test_register_callback_signature_is_documented_exactly() -> None:
    sig = inspect.signature(hookspecs.Register.__call__)
    parts, star = [], False
    for p in list(sig.parameters.values())[1:]:  # skip self
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = f"{p.name}: {p.annotation}"
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        parts.append(text)
    documented = f"register({', '.join(parts)}) -> None"
    assert documented in DOC, f"docs/plugins.md should show {documented}"


@pytest.mark.parametrize(
    "needle",
    [
        registry.ENV_STRICT,
        registry.ENV_DISABLE,
        "--strict",
        "icon-bench plugins",
        "python -c \"import importlib.metadata as m; print(m.entry_points(group='icon_bench'))\"",
        "[project.entry-points.icon_bench]",
        "DuplicateComponentError",
        "did you mean",
        "icon-bench new-plugin",
        *[name for name in testing.__all__ if name.startswith("check")],
    ],
)
def test_plugins_md_covers(needle: str) -> None:
    assert needle in DOC


def test_every_python_block_in_plugins_md_compiles() -> None:
    blocks = _code_blocks()
    assert len(blocks) >= 8
    for block in blocks:
        compile(block, "docs/plugins.md", "exec")


def _exec_block(marker: str) -> types.ModuleType:
    block = next(b for b in _code_blocks() if marker in b)
    module = types.ModuleType("plugins_md_example")
    exec(compile(block, "docs/plugins.md", "exec"), module.__dict__)
    return module


def test_the_example_plugin_in_plugins_md_loads_and_passes_the_kit() -> None:
    module = _exec_block("# plugins.md example")
    reg = registry.load_registry(entry_points=False, extra_plugins={"docs_example": module}, strict=True)
    assert reg.plugins["docs_example"].components == ["kernel:laplace", "divergence:squared_hellinger"]
    assert testing.check_plugin("docs_example", registry=reg) == ["kernel:laplace", "divergence:squared_hellinger"]


def test_the_recipe_example_in_plugins_md_runs() -> None:
    module = _exec_block("def t_clustering()")
    out = testing.check_method(module.t_clustering)
    assert out.train_clusters is not None and out.train_embeddings.shape[1] == 3  # $num_classes of make_data

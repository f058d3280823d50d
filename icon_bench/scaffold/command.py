"""`icon-bench new-plugin`: check the name and kind, then write a plugin package from the templates."""

from __future__ import annotations

import argparse
import keyword
import re
import textwrap
from pathlib import Path

from icon_bench.errors import IconBenchError
from icon_bench.scaffold.component_templates import _COMPONENT
from icon_bench.scaffold.templates import (
    _HOOKS,
    _INIT,
    _PYPROJECT,
    _README,
    _README_KIND,
    _TEST_HEAD,
    _TEST_KIND,
)

__all__ = ["KINDS", "ScaffoldError", "add_commands", "create_plugin", "validate_name"]


#: Kinds a skeleton can be generated for (models and metrics are rarer; docs/plugins.md shows them).
KINDS: tuple[str, ...] = ("kernel", "divergence", "method", "dataset", "backbone")

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class ScaffoldError(IconBenchError):
    """The plugin name or target directory cannot be used."""


def validate_name(name: str) -> str:
    """Check a plugin/component name: lowercase letters, digits and underscores, a letter first, <= 40."""
    if not _NAME.match(name or ""):
        hint = re.sub(r"[^a-z0-9_]+", "_", (name or "").lower()).strip("_")
        suggestion = f"; try {hint!r}" if hint and _NAME.match(hint) else ""
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use lowercase letters, digits and underscores, starting with a "
            f"letter, at most 40 characters (it names the component, the module and the package){suggestion}"
        )
    if keyword.iskeyword(name) or name.endswith("_"):
        raise ScaffoldError(f"invalid plugin name {name!r}: it is a Python keyword or ends with '_'")
    return name


def _check_free(kind: str, name: str) -> None:
    # A plugin that reuses a registered name fails to load (DuplicateComponentError): refuse early.
    from icon_bench.hooks.registry import load_registry

    registry = load_registry(strict=False)
    if name in registry.names(kind):
        comp = registry.get(kind, name)
        raise ScaffoldError(
            f"a {kind} named {name!r} is already registered by {comp.distribution} {comp.version}; choose another name"
        )


def create_plugin(name: str, kind: str, directory: str | Path = ".", *, check_registry: bool = True) -> Path:
    """Write ``<directory>/icon-bench-<name>/`` (pyproject, package, README, test); returns its path.

    Refuses an invalid name, a kind without a template, an existing target, and (with
    `check_registry`) a name already registered for that kind.
    """
    validate_name(name)
    if kind not in KINDS:
        raise ScaffoldError(f"cannot scaffold a {kind!r}; choose one of {', '.join(KINDS)}")
    dist = "icon-bench-" + name.replace("_", "-")
    target = Path(directory) / dist
    if target.exists():
        raise ScaffoldError(f"{target} already exists; refusing to overwrite it (choose another --dir or name)")
    if check_registry:
        _check_free(kind, name)
    pkg = f"icon_bench_{name}"
    values = {
        "__NAME__": name,
        "__DIST__": dist,
        "__PKG__": pkg,
        "__CLASS__": "".join(part.capitalize() for part in name.split("_")),
        "__KIND__": kind,
        "__HOOK__": _HOOKS[kind],
    }
    files = {
        "pyproject.toml": [_PYPROJECT],
        "README.md": [_README, _README_KIND[kind]],
        f"src/{pkg}/__init__.py": [_INIT],
        f"src/{pkg}/{kind}.py": [_COMPONENT[kind]],
        f"tests/test_{name}.py": [_TEST_HEAD, _TEST_KIND[kind]],
    }
    target.mkdir(parents=True)
    for rel, pieces in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(textwrap.dedent(piece) for piece in pieces).lstrip("\n")
        for key, value in values.items():
            text = text.replace(key, value)
        path.write_text(text)
    return target


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``new-plugin`` to the icon-bench command line."""
    p = subparsers.add_parser(
        "new-plugin",
        help="write a new plugin package (pyproject with the entry point, one component, README, test)",
        description="Write icon-bench-NAME/ (underscores in NAME become hyphens): an installable plugin with one working component of KIND "
        "and a test that runs the conformance kit on it. Then: pip install -e icon-bench-NAME && "
        "pytest icon-bench-NAME.",
    )
    p.add_argument("name", metavar="NAME", help="component name: lowercase letters, digits, underscores")
    p.add_argument("--kind", required=True, choices=KINDS, help="what the plugin adds")
    p.add_argument("--dir", default=".", help="parent directory of the new package (default: .)")
    p.set_defaults(func=_cmd_new_plugin)


def _cmd_new_plugin(args: argparse.Namespace) -> int:
    target = create_plugin(args.name, args.kind, args.dir)
    print(f"created {target}/ (a {args.kind} named {args.name!r}):")
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(target)}")
    print(
        f"\nnext:\n  pip install -e {target}\n  icon-bench plugins --kind {args.kind}\n  pytest {target}\n"
        "then edit the maths; docs/plugins.md explains the contract each kind must meet."
    )
    return 0

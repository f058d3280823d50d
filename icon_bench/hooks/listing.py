"""`icon-bench plugins`: every component and plugin as tables wrapped to the terminal, or one component in full."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from tabulate import tabulate

from icon_bench.errors import UnknownNameError
from icon_bench.hooks.registry import (
    BUILTIN_SOURCE,
    ENV_DISABLE,
    ENV_STRICT,
    Component,
    Registry,
    load_registry,
)
from icon_bench.hooks.specs import KINDS

__all__ = ["add_commands", "cmd_plugins", "format_value", "render_component", "render_overview"]

#: Lines a cell may take in the overview: (description, parameters); methods get more for their
#: recipe's defaults. `--kind` and a NAME show everything.
OVERVIEW_LINES = {"description": 1, "params": 2, "method params": 4}
_GAP = 2  # tabulate's "simple" format puts two spaces between columns


def add_commands(subparsers: Any) -> None:
    """Add `icon-bench plugins`."""
    p = subparsers.add_parser(
        "plugins",
        help="list every plugin and component, with parameters and source",
        description="Components by kind, with their parameters (a method's: its recipe's defaults) and the "
        "plugin that provides them, wrapped to the terminal (COLUMNS). --kind shows one kind in full; "
        "a NAME shows that component in full.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="show this component (any kind) in full")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--kind", help=f"only this kind, in full ({', '.join(KINDS)})")
    p.add_argument(
        "--strict", action="store_true", help=f"fail if any plugin fails to load (also {ENV_STRICT}=1)"
    )
    p.set_defaults(func=cmd_plugins)


def cmd_plugins(args: argparse.Namespace) -> int:
    """Handler of `icon-bench plugins`."""
    registry = load_registry(strict=True if args.strict else None)
    kinds = [args.kind] if args.kind else list(registry.components)
    if args.kind:
        registry.names(args.kind)  # validates the kind, with "did you mean"
    width = shutil.get_terminal_size((100, 24)).columns
    if args.name:
        found = _find(registry, args.name, kinds)
        if args.json:
            print(json.dumps([c.to_dict() for c in found], indent=2, default=str))
        else:
            print("\n\n".join(render_component(c, width) for c in found))
        return 0
    if args.json:
        data = registry.to_dict()
        data["components"] = {k: data["components"][k] for k in kinds}
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(render_overview(registry, kinds, width, full=bool(args.kind)))
    if registry.failures:
        print(
            f"\n{len(registry.failures)} plugin(s) failed to load; run with --strict to make this an error, "
            f"or disable them with {ENV_DISABLE}=name,...",
            file=sys.stderr,
        )
    return 0


def _find(registry: Registry, name: str, kinds: Sequence[str]) -> list[Component]:
    """Every component called `name` (or aliased so) among `kinds`; unknown names suggest close ones."""
    found = []
    for kind in kinds:
        try:
            found.append(registry.get(kind, name))
        except UnknownNameError:
            continue
    if not found:
        known = [n for kind in kinds for n in registry.names(kind)]
        raise UnknownNameError("component", name, known)
    return found


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A default as a user would write it: ``{"name": "knn", "k": 10}`` -> ``knn(k=10)``, lists in brackets."""
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        rest = ", ".join(f"{k}={format_value(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({rest})" if rest else value["name"]
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _param_text(param: Mapping[str, Any], with_type: bool) -> str:
    text = f'{param["name"]}: {param["type"]}' if with_type else param["name"]
    if param["required"]:
        return text if with_type else f"{text} (required)"
    return f'{text} = {format_value(param["default"])}' if with_type else f'{text}={format_value(param["default"])}'


def _wrap(text: str, width: int, max_lines: int | None = None) -> tuple[str, bool]:
    """`text` wrapped to `width` (long words broken); with `max_lines`, cut there and ended with "…".

    Returns the text and whether it was cut.
    """
    width = max(width, 8)
    lines = textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]
    if max_lines is None or len(lines) <= max_lines:
        return "\n".join(lines), False
    lines = lines[:max_lines]
    lines[-1] = lines[-1][: width - 2].rstrip() + " …"
    return "\n".join(lines), True


def render_overview(registry: Registry, kinds: Sequence[str], width: int, *, full: bool = False) -> str:
    """Each kind's components, one block each, then the plugins and their errors, all within `width` columns.

    A block is the name, then its description and its parameters wrapped beside it; methods list
    their recipe's defaults as ``key=value`` (kernels, divergence, model, then the settings), other
    kinds their factory's ``name: type = default``; a component from a plugin names its
    distribution. Unless `full`, a block's text stops after OVERVIEW_LINES lines with "…", and a
    footer names the commands that show the rest.
    """
    out, cut = [], False
    for kind in kinds:
        comps = [registry.components[kind][n] for n in sorted(registry.components[kind])]
        name_w = min(max([len(c.name) for c in comps] + [4]), 28)
        text_w = max(width - 2 - name_w - _GAP, 20)
        param_cap = OVERVIEW_LINES["method params" if kind == "method" else "params"]
        lines = [f"{kind}s ({len(comps)})"]
        for c in comps:
            about = c.description + ("" if c.distribution == BUILTIN_SOURCE else f" [{c.distribution} {c.version}]")
            params = ", ".join(_param_text(p, with_type=kind != "method") for p in c.to_dict()["params"])
            about, cut_d = _wrap(about or "(no description)", text_w, None if full else OVERVIEW_LINES["description"])
            params, cut_p = _wrap(params or "(no parameters)", text_w, None if full else param_cap)
            cut = cut or cut_d or cut_p
            names = textwrap.wrap(c.name, name_w, break_long_words=True) or [""]
            body = f"{about}\n{params}".splitlines()
            for k in range(max(len(names), len(body))):
                left = names[k] if k < len(names) else ""
                lines.append(f"  {left:<{name_w}}{' ' * _GAP}{body[k] if k < len(body) else ''}".rstrip())
        out.append("\n".join(lines))
    out.append("plugins\n" + _plugin_table(registry, width))
    if cut:
        out.append(_wrap("…: cut to fit; `icon-bench plugins NAME` shows one component in full, "
                         "`--kind KIND` a whole kind.", width)[0])
    return "\n\n".join(out)


def _plugin_table(registry: Registry, width: int) -> str:
    """Every plugin module with distribution, version and status; each failure's error below, at full width."""
    headers = ["plugin", "distribution", "version", "status"]
    rows = [[p.name, p.distribution, p.version, p.status] for p in registry.plugins.values()]
    table = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    errors = [
        textwrap.fill(f"{p.name}: {p.error}", width, initial_indent="  ", subsequent_indent="    ")
        for p in registry.plugins.values() if p.error
    ]
    return table + ("\n\nerrors:\n" + "\n".join(errors) if errors else "")


def render_component(comp: Component, width: int) -> str:
    """One component in full: what it is, where it comes from, and every parameter with type and default."""
    data = comp.to_dict()
    lines = [f"{comp.kind} {comp.name}: {comp.description}" if comp.description else f"{comp.kind} {comp.name}"]
    lines.append(f"  source: {comp.distribution} {comp.version} (plugin {comp.plugin})")
    if comp.aliases:
        lines.append(f"  aliases: {', '.join(comp.aliases)}")
    if comp.accepts_any:
        lines.append("  accepts any further keyword parameters")
    lines = [textwrap.fill(line, width, subsequent_indent="    ") for line in lines]
    params = data["params"]
    if not params:
        return "\n".join([*lines, "  no parameters"])
    label = "defaults (a suite's settings, p.*, q.*, model.* override them)" if comp.kind == "method" else "parameters"
    lines.append(f"  {label}:")
    name_w = min(max(len(p["name"]) for p in params), 24)
    type_w = min(max(len(p["type"]) for p in params), 26)
    value_w = max(width - 4 - name_w - type_w - 2 * _GAP, 16)
    rows = [
        [p["name"], _wrap(p["type"], type_w)[0],
         "(required)" if p["required"] else _wrap(format_value(p["default"]), value_w)[0]]
        for p in params
    ]
    table = tabulate(rows, headers=["name", "type", "default"], tablefmt="simple", disable_numparse=True)
    lines += ["    " + row for row in table.splitlines()]
    return "\n".join(lines)

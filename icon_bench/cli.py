"""The `icon-bench` command line: one subcommand per step of the data path."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from tabulate import tabulate

from icon_bench import __version__
from icon_bench.errors import IconBenchError
from icon_bench.hooks.registry import ENV_DISABLE, ENV_STRICT, load_registry

#: Modules that add subcommands through ``add_commands(subparsers)``; each owns its own flags.
COMMAND_MODULES: tuple[str, ...] = (
    "icon_bench.run.trial",
    "icon_bench.runner",
    "icon_bench.run.suite_doc",
    "icon_bench.report.commands",
    "icon_bench.report.references",
    "icon_bench.scaffold.command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icon-bench",
        description="Benchmark I-Con losses: methods x kernels x divergences x datasets.",
    )
    parser.add_argument("--version", action="version", version=f"icon-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("plugins", help="list every plugin and component, with parameters and source")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--kind", help="only this kind (kernel, divergence, method, dataset, model, metric, reference)")
    p.add_argument(
        "--strict", action="store_true", help=f"fail if any plugin fails to load (also {ENV_STRICT}=1)"
    )
    p.set_defaults(func=cmd_plugins)

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a real import error inside the module must surface
                raise
            continue
        module.add_commands(sub)
    return parser


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = load_registry(strict=True if args.strict else None)
    data = registry.to_dict()
    if args.kind:
        registry.names(args.kind)  # validates the kind, with "did you mean"
        data["components"] = {args.kind: data["components"][args.kind]}
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    for kind, comps in data["components"].items():
        print(f"\n{kind}s ({len(comps)})")
        rows = [
            [c["name"], c["description"], _format_params(c["params"]), f'{c["distribution"]} {c["version"]}']
            for c in comps
        ]
        print(tabulate(rows, headers=["name", "description", "parameters", "source"], tablefmt="simple"))
    print("\nplugins")
    rows = [[p["name"], p["distribution"], p["version"], p["status"], p["error"]] for p in data["plugins"]]
    print(tabulate(rows, headers=["plugin", "distribution", "version", "status", "error"], tablefmt="simple"))
    failed = registry.failures
    if failed:
        print(
            f"\n{len(failed)} plugin(s) failed to load; run with --strict to make this an error, "
            f"or disable them with {ENV_DISABLE}=name,...",
            file=sys.stderr,
        )
    return 0


def _format_params(params: list[dict]) -> str:
    parts = []
    for p in params:
        text = f'{p["name"]}: {p["type"]}'
        if not p["required"]:
            text += f' = {p["default"]!r}'
        parts.append(text)
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except IconBenchError as exc:  # PluginLoadError, SuiteError, ... : a message, not a traceback
        print(f"icon-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("icon-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

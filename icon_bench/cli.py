"""The `icon-bench` command line: one subcommand per step of the data path."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from icon_bench import __version__
from icon_bench.errors import IconBenchError

#: Modules that add subcommands through ``add_commands(subparsers)``; each owns its own flags. Each
#: imports its heavy dependencies (torch, pandas, matplotlib, ...) only when its command runs, so
#: `icon-bench --help` and every `COMMAND --help` start in a fraction of a second.
COMMAND_MODULES: tuple[str, ...] = (
    "icon_bench.hooks.listing",
    "icon_bench.run.trial",
    "icon_bench.runner",
    "icon_bench.run.suite_doc",
    "icon_bench.report.commands",
    "icon_bench.report.references",
    "icon_bench.scaffold.command",
    "icon_bench.data.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icon-bench",
        description="Benchmark I-Con losses: methods x kernels x divergences x datasets.",
    )
    parser.add_argument("--version", action="version", version=f"icon-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a real import error inside the module must surface
                raise
            continue
        module.add_commands(sub)
    return parser


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
    except BrokenPipeError:  # `icon-bench plugins | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())

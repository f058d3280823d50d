"""The `icon-bench` command line: one subcommand per step of the data path."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from icon_bench import __version__
from icon_bench.errors import IconBenchError, did_you_mean

#: Modules that add subcommands through ``add_commands(subparsers)``; each owns its own flags. Each
#: imports its heavy dependencies (torch, pandas, matplotlib, ...) only when its command runs, so
#: `icon-bench --help` and every `COMMAND --help` start in a fraction of a second.
COMMAND_MODULES: tuple[str, ...] = (
    "icon_bench.hooks.listing",
    "icon_bench.run.execution.trial",
    "icon_bench.run_cli",
    "icon_bench.run.execution.store_repair",
    "icon_bench.run.suite.doc",
    "icon_bench.report.commands",
    "icon_bench.report.references",
    "icon_bench.track.commands",
    "icon_bench.scaffold.command",
    "icon_bench.data.commands",
    "icon_bench.features.command",
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


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of `command` (for its option names), else `parser` itself."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, with "did you mean" for an unknown option (`--dryrun` -> `--dry-run`)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = _subparser(parser, getattr(args, "command", None))
        options = [o for a in command._actions for o in a.option_strings]
        hints = []
        for word in extras:
            close = did_you_mean(word.split("=", 1)[0], options, n=1) if word.startswith("-") else []
            if close:
                hints.append(f"{word}: did you mean {close[0]}?")
        command.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else ""))
    return args


def _format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    """icon-bench's own warnings (a skipped store line, ...) as one line a user reads; others as Python has them."""
    if category.__module__.startswith("icon_bench"):
        return f"icon-bench: warning: {message}\n"
    return _PYTHON_FORMAT(message, category, filename, lineno, line)


_PYTHON_FORMAT = warnings.formatwarning


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    parser = build_parser()
    args = _parse(parser, argv)
    try:
        return int(args.func(args) or 0)
    except IconBenchError as exc:  # PluginLoadError, SuiteError, ... : a message, not a traceback
        print(f"icon-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("icon-bench: interrupted", file=sys.stderr)
        return 130  # `icon-bench run` handles SIGTERM as Ctrl-C and exits 143 (runner.EXIT_TERMINATED)
    except BrokenPipeError:  # `icon-bench plugins | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())

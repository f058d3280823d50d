"""Checks of a suite against the machine it is about to run on: data files present, GPUs for the local executor.

They run when the plan is made (`icon-bench run`, `--dry-run` included), not when the suite is
loaded: a relative path means something only against the folder the run resolves it from, and the
executor may be overridden on the command line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from icon_bench.errors import SuiteError
from icon_bench.run.suite import Suite, resolve_dataset_paths
from icon_bench.run.suite_errors import _format_loc
from icon_bench.run.yaml_lines import Loc

__all__ = ["check_plan", "download_notes"]

#: Dataset options that name an input file (a folder option such as cache_dir may not exist yet).
_FILE_KEYS = ("path", "test_path", "class_file")


def _datasets(suite: Suite) -> Iterator[tuple[Loc, Any]]:
    """Every dataset spec written in the suite, with where it is written."""
    if "dataset" in suite.grid:
        values = suite.grid["dataset"]
        if isinstance(values, list):
            yield from ((("grid", "dataset", i), v) for i, v in enumerate(values))
        else:
            yield ("grid", "dataset"), values
    for i, value in enumerate(suite.datasets or []):
        yield ("datasets", i), value
    for i, entry in enumerate(suite.include):
        values = entry.get("dataset")
        if isinstance(values, list):
            yield from ((("include", i, "dataset", j), v) for j, v in enumerate(values))
        elif values is not None:
            yield ("include", i, "dataset"), values


def _line(suite: Suite, loc: Loc) -> int:
    lines = suite._lines
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _gpu_problem(suite: Suite, executor: str) -> str | None:
    gpus = suite.resources.gpus
    if executor != "local" or gpus == 0:
        return None
    import torch

    if not torch.cuda.is_available():
        return (
            f"{gpus:g} GPU(s) per trial, but this machine has no GPU that torch can use and the local "
            "executor runs here; set resources.gpus: 0, or run on Ray with --executor ray --address HOST:PORT"
        )
    if gpus > 1:
        return f"the local executor gives a trial one GPU, not {gpus:g}; use --executor ray for more"
    return None


def check_plan(
    suite: Suite, executor: str, base: str | os.PathLike[str] | None = None, out: TextIO | None = None, *, dry_run: bool = False
) -> None:
    """Raise SuiteError (file:line: key: message, one line each) for what cannot run here.

    ``base`` is the folder relative dataset paths resolve against (what the executors use). With
    ``out``, say there which datasets are not cached and what a run would download (`download_notes`).
    With ``dry_run`` a missing feature folder (a `features` entry's `path`) is a "missing" note on
    ``out`` with the command that makes it (the entry's `embed`), not an error: a dry run shows the
    plan of a feature suite on a machine that has not embedded yet. Other missing files stay errors.
    """
    problems: list[tuple[int, str]] = []
    missing: list[str] = []
    for loc, spec in _datasets(suite):
        if not isinstance(spec, dict):
            continue
        resolved = resolve_dataset_paths(spec, base)
        for key in _FILE_KEYS:
            value = resolved.get(key)
            if isinstance(value, str) and "://" not in value and not os.path.exists(value):
                line, msg = _line(suite, (*loc, key)), f"{_format_loc((*loc, key))}: no such file: {value}"
                # A feature folder is made by a command the suite can name: a dry run says which.
                if dry_run and spec.get("name") == "features":
                    how = spec.get("embed") or "`icon-bench embed DATASET --backbone NAME -o FOLDER` (README, Frozen features)"
                    missing += [f"missing ({suite.source}:{line}): {msg}", f"  make it with: {how}"]
                else:
                    problems.append((line, msg))
    gpu = _gpu_problem(suite, executor)
    if gpu:
        problems.append((_line(suite, ("resources", "gpus")), f"resources.gpus: {gpu}"))
    if problems:
        raise SuiteError("\n".join(f"{suite.source}:{line}: {msg}" for line, msg in sorted(set(problems))))
    for note in [*missing, *(download_notes(suite) if out is not None else [])]:
        print(note, file=out or sys.stdout)


def download_notes(suite: Suite) -> list[str]:
    """One line per catalogued dataset (data/catalog.py) the suite reads that is not cached yet: what a run downloads.

    Datasets given a `path:` read that copy and download nothing. Nothing here touches the network.
    """
    from icon_bench.data.catalog import CATALOG
    from icon_bench.data.download import ENV_OFFLINE, data_root, human_size, mirror_urls, offline
    from icon_bench.data.vision import cached

    notes: dict[str, str] = {}
    for _, spec in _datasets(suite):
        entry = {"name": spec} if isinstance(spec, str) else spec if isinstance(spec, dict) else {}
        name = entry.get("name")
        if name not in CATALOG or entry.get("path") or name in notes or cached(name):
            continue
        info = CATALOG[name]
        mirror = entry.get("mirror") if isinstance(entry.get("mirror"), str) else None
        source = mirror_urls(name, info.files[0], mirror)[0].rsplit("/", 1)[0] + "/"
        what = f"{human_size(info.size)} ({len(info.files)} file(s), MD5-checked) from {source}"
        if offline():
            notes[name] = (
                f"data: {name} is not cached and {ENV_OFFLINE} is set, so its trials will fail: put its {what} "
                f"into {data_root() / name}, or run `icon-bench datasets import {name} FILE_OR_FOLDER`"
            )
        else:
            notes[name] = f"data: {name} is not cached: the run will download {what} into {data_root() / name}"
    return list(notes.values())

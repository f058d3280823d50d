"""Checks of a suite against the machine it is about to run on: data files present, GPUs for the local executor.

They run when the plan is made (`icon-bench run`, `--dry-run` included), not when the suite is
loaded: a relative path means something only against the folder the run resolves it from, and the
executor may be overridden on the command line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from icon_bench.errors import SuiteError
from icon_bench.run.suite.load_checks import dataset_entries
from icon_bench.run.suite.model import Suite, resolve_dataset_paths
from icon_bench.run.suite.errors import _format_loc
from icon_bench.run.suite.yaml_lines import Loc

__all__ = ["check_plan", "check_run", "download_notes"]

#: Dataset options that name an input file (a folder option such as cache_dir may not exist yet).
_FILE_KEYS = ("path", "test_path", "class_file")


def _not_writable(folder: Path) -> str | None:
    """Why rows could not be written under `folder` (its nearest existing parent decides), or None."""
    probe = folder.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{folder}: {probe} is not a folder"
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        what = "cannot be written" if probe == folder.absolute() else f"cannot be created ({probe} is not writable)"
        return f"{folder}: {what}; give another folder with --results DIR"
    return None


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
    suite: Suite, executor: str, base: str | os.PathLike[str] | None = None, out: TextIO | None = None, *,
    dry_run: bool = False, max_memory: int | None = None, results: str | os.PathLike[str] | None = None,
) -> None:
    """Raise SuiteError (file:line: key: message, one line each) for what cannot run here.

    ``base`` is the folder relative dataset paths resolve against (what the executors use). With
    ``out``, say there which datasets are not cached and what a run would download (`download_notes`).
    With ``dry_run`` a missing feature folder (a `features` entry's `path`) is a "missing" note on
    ``out`` with the command that makes it (the entry's `embed`), not an error: a dry run shows the
    plan of a feature suite on a machine that has not embedded yet. Other missing files stay errors.
    ``max_memory`` is the bytes a trial may take (None: this machine's memory, or $ICON_BENCH_MAX_MEMORY);
    ``results`` the results folder, checked writable (or creatable) without creating it.
    """
    from icon_bench.data.headers import memory_limit
    from icon_bench.run.suite.data_check import check_cells_memory, check_data_files

    limit = max_memory if max_memory is not None else memory_limit()
    problems: list[tuple[int, str]] = []
    missing: list[str] = []
    found, shapes = check_data_files(suite, base, limit)
    if not found:
        found = check_cells_memory(suite, shapes, limit)
    problems.extend((_line(suite, loc), f"{_format_loc(loc)}: {message}") for loc, message in found)
    if results is not None and (why := _not_writable(Path(results))):
        problems.append((_line(suite, ("results",)) if suite.results else 1, f"results: {why}"))
    for loc, spec in dataset_entries(suite):
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


def check_run(
    suite: Suite, kind: str, results_dir: Path | None, max_memory: int | None, timeout: float | None, out: TextIO,
    dry_run: bool,
) -> None:
    """What `icon-bench run` does before planning: the run's limits where its trials read them (memory
    bound, time limit: the flag's, else the suite's), then check_plan against the suite's root (with
    `results_dir` for a dry run, which writes nothing; a run checks its store itself)."""
    from icon_bench.run.suite.limits import apply_limits

    apply_limits(max_memory, timeout if timeout is not None else suite.timeout)
    check_plan(suite, kind, suite.root, out=out, dry_run=dry_run, max_memory=max_memory, results=results_dir)


def download_notes(suite: Suite) -> list[str]:
    """One line per catalogued dataset (data/catalog.py) the suite reads that is not cached yet: what a run downloads.

    Datasets given a `path:` read that copy and download nothing. Nothing here touches the network.
    """
    from icon_bench.data.catalog import CATALOG
    from icon_bench.data.download import ENV_OFFLINE, data_root, human_size, mirror_urls, offline
    from icon_bench.data.vision import cached

    notes: dict[str, str] = {}
    for _, spec in dataset_entries(suite):
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

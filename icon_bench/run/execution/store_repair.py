"""Recovering a results store with the tool, never by hand: `icon-bench store repair` and `icon-bench store merge`."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from icon_bench.errors import DataError, StoreError
from icon_bench.run.execution.lock import results_lock
from icon_bench.run.execution.store_lines import (
    CHECKSUM_KEY,
    FINISHED,
    QUARANTINE_FILE,
    RERUN_KEY,
    RESULTS_FILE,
    LineProblem,
    parse_lines,
    resolve,
)

__all__ = ["MergeResult", "add_commands", "merge", "repair"]

#: `icon-bench store merge` exit status when some rows of the other store were not taken (conflicts, bad lines).
EXIT_REFUSED = 1


def _store_dir(results: str | os.PathLike[str]) -> Path:
    path = Path(results)
    return path.parent if path.name == RESULTS_FILE or path.is_file() else path


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise StoreError(f"cannot read {exc.filename or path}: {exc.strerror or exc}") from None


def _quarantine_entry(problem: LineProblem, source: Path) -> bytes:
    entry: dict[str, Any] = {
        "source": str(source),
        "line": problem.line,
        "kind": problem.kind,
        "reason": problem.reason,
        "quarantined_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "text": problem.raw.decode("utf-8", errors="replace"),
    }
    try:
        problem.raw.decode("utf-8")
    except UnicodeDecodeError:  # the exact bytes, so nothing is lost
        entry["bytes_base64"] = base64.b64encode(problem.raw).decode("ascii")
    return (json.dumps(entry, ensure_ascii=True) + "\n").encode("ascii")


def _write_quarantine(directory: Path, entries: bytes) -> None:
    fd = os.open(directory / QUARANTINE_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.write(fd, entries) != len(entries):
            raise OSError(28, "short write (disk full?)", str(directory / QUARANTINE_FILE))
        os.fsync(fd)
    finally:
        os.close(fd)


def _rewrite(path: Path, kept: list[bytes]) -> None:
    """Replace `path` by `kept` lines atomically (temporary file in the same folder, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(line + b"\n" for line in kept))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def repair(results: str | os.PathLike[str]) -> list[LineProblem]:
    """Move every line of results.jsonl that is not a good, authoritative row to results.quarantine.jsonl.

    The quarantine is written (and synced) first, then results.jsonl is replaced whole, so a failure
    at any point loses no line. Call with the results lock held (the `store` commands and `run` do).
    """
    directory = _store_dir(results)
    path = directory / RESULTS_FILE
    data = _read(path)
    result = parse_lines(data)
    _, conflicts = resolve(result.rows)
    problems = sorted(result.problems + conflicts, key=lambda p: p.line)
    if not problems:
        return []
    bad = {p.line for p in problems}
    raw = [dataclasses.replace(p, raw=result.raw.get(p.line, p.raw)) for p in problems]
    kept = [line for number, line in result.raw.items() if number not in bad]
    try:
        _write_quarantine(directory, b"".join(_quarantine_entry(p, path) for p in raw))
        _rewrite(path, kept)
    except OSError as exc:
        raise StoreError(f"cannot repair the results store: {exc.filename or path}: {exc.strerror or exc}") from None
    return raw


def describe_repair(path: Path, problems: list[LineProblem]) -> str:
    """The message naming what was moved and where."""
    head = f"{path}: moved {len(problems)} line(s) to {path.parent / QUARANTINE_FILE}:"
    return "\n".join([head, *(f"  {p}" for p in problems)])


@dataclasses.dataclass
class MergeResult:
    """What `merge` did: rows added, rows already there, rows refused (with why), the source's bad lines."""

    added: int = 0
    present: int = 0
    refused: list[str] = dataclasses.field(default_factory=list)
    bad_lines: list[LineProblem] = dataclasses.field(default_factory=list)


def _copy_files(row: dict[str, Any], source: Path, target: Path) -> None:
    """The row's artifact and traceback files, from the other store into this one (never overwriting)."""
    for key in ("artifacts", "traceback_file"):
        rel = row.get(key)
        if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            continue
        src, dst = source / rel, target / rel
        if src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def merge(results: str | os.PathLike[str], other: str | os.PathLike[str]) -> MergeResult:
    """Append the good rows of `other` (a fallback store, another run's folder) to `results`.

    A row already in `results` is not repeated; a row for a trial finished in `results` is refused
    as a conflict unless it is a --force rerun; rows go in with their artifacts and tracebacks.
    """
    from icon_bench.run.execution.store import ResultsStore  # numpy: only when rows are merged

    target, source = _store_dir(results), _store_dir(other)
    if not (source / RESULTS_FILE).is_file():
        raise DataError(f"no results file at {source / RESULTS_FILE}")
    if (source / RESULTS_FILE).resolve() == (target / RESULTS_FILE).resolve():
        raise DataError(f"{source} and {target} are the same store")
    store = ResultsStore(target)
    out = MergeResult()
    incoming = parse_lines(_read(source / RESULTS_FILE))
    out.bad_lines = incoming.problems
    here = parse_lines(_read(store.path))
    current, _ = resolve(here.rows)
    seen = {json.dumps(row, sort_keys=True) for _, row in here.rows}
    for number, row in incoming.rows:
        tid = row["trial_id"]
        if json.dumps(row, sort_keys=True) in seen:
            out.present += 1
            continue
        key = next(iter(resolve([(number, row)])[0]))  # (trial_id, protocol version), as resolve keys rows
        held = current.get(key)
        rerun = bool(row.get(RERUN_KEY)) and row.get(CHECKSUM_KEY) is not None
        if held is not None and held[1].get("status", "ok") in FINISHED and not rerun:
            out.refused.append(f"line {number}: trial {tid} is already finished in {store.path} (line {held[0]})")
            continue
        _copy_files(row, source, target)
        store.append_line(incoming.raw[number])
        current[key] = (number, row)
        seen.add(json.dumps(row, sort_keys=True))
        out.added += 1
    return out


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `icon-bench store repair` and `icon-bench store merge`."""
    p = subparsers.add_parser(
        "store",
        help="repair a results store or merge another into it (never edit results.jsonl by hand)",
        description=(
            "Recover a results store. `repair RESULTS` moves every line of RESULTS/results.jsonl that is not a "
            f"good row (torn, not UTF-8, wrong schema, checksum mismatch, a conflicting second row) to {QUARANTINE_FILE} "
            "beside it. `merge RESULTS OTHER` appends the rows of OTHER (the fallback folder a failed run named, or "
            "another run's results) that RESULTS does not hold, with their artifacts. Exit status: 0 done; "
            f"{EXIT_REFUSED} merge refused some rows (listed); 2 an error (nothing changed); 4 a run is writing RESULTS."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    rp = actions.add_parser("repair", help="move bad lines to the quarantine file", description="Move every line of "
                            f"results.jsonl that is not a good row to {QUARANTINE_FILE}, naming each.")
    rp.add_argument("results", metavar="RESULTS", help="a results directory or its results.jsonl")
    rp.set_defaults(func=cmd_store)
    mp = actions.add_parser("merge", help="append another store's rows (a fallback folder) to RESULTS",
                            description="Append the rows of OTHER that RESULTS lacks (with their artifacts); a row "
                            "for a trial already finished in RESULTS is refused as a conflict unless it is a --force rerun.")
    mp.add_argument("results", metavar="RESULTS", help="the results directory (or results.jsonl) to add to")
    mp.add_argument("other", metavar="OTHER", help="the store whose rows to add (directory or results.jsonl)")
    mp.set_defaults(func=cmd_store)


def cmd_store(args: argparse.Namespace) -> int:
    """Handler of `icon-bench store repair|merge` (under the results folder's lock)."""
    from icon_bench.run.execution.lock import RunLocked

    directory = _store_dir(args.results)
    if not directory.is_dir():
        raise DataError(f"no results folder at {directory}")
    try:
        with results_lock(directory):
            problems = repair(directory)
            if problems:
                print(describe_repair(directory / RESULTS_FILE, problems))
            if args.action == "repair":
                if not problems:
                    print(f"{directory / RESULTS_FILE}: every line is a good row; nothing to repair")
                return 0
            result = merge(directory, args.other)
    except RunLocked as exc:
        print(f"icon-bench: error: {exc}", file=sys.stderr)
        return 4
    print(f"{directory / RESULTS_FILE}: {result.added} row(s) added, {result.present} already there")
    for line in result.refused:
        print(f"  refused {line} (a conflict: the row there stays)")
    for problem in result.bad_lines:
        print(f"  skipped {_store_dir(args.other) / RESULTS_FILE}:{problem}")
    return EXIT_REFUSED if result.refused or result.bad_lines else 0

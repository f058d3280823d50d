"""The results store: append-only JSON Lines (results.jsonl), artifacts/<trial_id>.npz, tracebacks/; resumable."""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from icon_bench.errors import IconBenchError, StoreError
from icon_bench.run.execution.store_lines import (
    QUARANTINE_FILE,
    RERUN_KEY,
    RESULTS_FILE,
    LineProblem,
    parse_lines,
    resolve,
    seal,
)

__all__ = ["QUARANTINE_FILE", "RESULTS_FILE", "ResultsStore", "StoreWarning", "read_rows"]

ARTIFACTS_DIR = "artifacts"
#: A failed trial's traceback as plain text, <trial_id>.txt, so a user can read it without parsing JSON.
TRACEBACKS_DIR = "tracebacks"
#: The default report folder inside a results folder (`icon-bench run` and `icon-bench report` write it).
REPORT_DIR = "report"


class StoreWarning(UserWarning):
    """A line of results.jsonl is not a good row (torn, corrupt, wrong schema, a conflict) and was skipped."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _json_default(value: Any) -> Any:
    # numpy / torch scalars and small arrays that slipped into metrics or info.
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _as_array(value: Any) -> np.ndarray | None:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    return None


def _cut_back(fd: int, size: int, expected: int) -> None:
    """After a failed append, cut the file back to `size` so no torn line stays; only when it ends
    where this append left it (no other writer came after: a reader skips a torn line anyway)."""
    try:
        if os.fstat(fd).st_size == expected:
            os.ftruncate(fd, size)
    except OSError:
        pass


def _store_error(exc: OSError, directory: Path, verb: str) -> StoreError:
    where = exc.filename or directory
    return StoreError(f"cannot {verb} the results store: {where}: {exc.strerror or exc}")


class ResultsStore:
    """One directory of results: ``results.jsonl`` (one row per line) and artifacts.

    Appends are atomic at the line level: each row is one ``os.write`` of a complete line on an
    O_APPEND descriptor, then fsync, so a crash leaves at most one torn last line, which readers skip
    (and `icon-bench store repair` moves to results.quarantine.jsonl). Each row carries a checksum
    of its content; which row of a trial counts is `store_lines.resolve`'s rule (a retry replaces a
    failure, only a `rerun` (--force) row replaces a finished one).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        suite: str | None = None,
        run_id: str | None = None,
        fsync: bool = True,
        rerun: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.fsync = fsync  # False only where durability does not matter (benchmarks of other costs)
        self.suite = suite
        self.run_id = run_id
        self.path = self.directory / RESULTS_FILE
        self.rerun = rerun  # recorded in each row (RERUN_KEY): this run replaces finished rows on purpose
        self.reruns: dict[str, str] = {}  # trial_id -> why this run reruns it (a stale recipe), recorded likewise
        self.problems: list[LineProblem] = []  # lines that were not good rows, last read
        self.skipped: list[tuple[int, str]] = []  # the same as (line number, reason)
        self._checked_tail = False
        self._reported: set[tuple[int, str]] = set()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.directory)!r})"

    # -- writing ----------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Raise StoreError unless rows, artifacts and tracebacks can be written here (run before any trial)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self.path.exists():  # else the temporary file below shows it can be created
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND))
            # Artifacts and tracebacks are written as a temporary file in their folder, then renamed.
            for folder in (self.directory, self.directory / ARTIFACTS_DIR, self.directory / TRACEBACKS_DIR):
                if folder.is_dir():
                    with tempfile.TemporaryFile(dir=folder):
                        pass
        except OSError as exc:
            raise _store_error(exc, self.directory, "write") from None

    def append(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Store one result row (artifacts to .npz, then the JSON line); returns the row as stored.

        Raises StoreError (naming the path) when the store cannot be written; `row` is left as given.
        """
        try:
            return self._append(row)
        except OSError as exc:
            raise _store_error(exc, self.directory, "write") from None

    def _append(self, row: Mapping[str, Any]) -> dict[str, Any]:
        row = dict(row)
        if not row.get("trial_id"):
            from icon_bench.run.suite.ids import trial_id

            if "spec" not in row:
                raise IconBenchError("a result row needs 'trial_id' or 'spec'")
            row["trial_id"] = trial_id(row["spec"])
        if self.suite is not None:
            row.setdefault("suite", self.suite)
        if self.run_id is not None:
            row.setdefault("run_id", self.run_id)
        row.setdefault("stored_at", _now())
        row["artifacts"] = self._write_artifacts(row["trial_id"], row.get("artifacts"))
        if row.get("status") != "ok" and isinstance(row.get("traceback"), str) and row["traceback"]:
            text = row["traceback"].encode("utf-8")
            row["traceback_file"] = self._write_file(TRACEBACKS_DIR, f"{row['trial_id']}.txt", lambda fh: fh.write(text))
        if self.rerun or row["trial_id"] in self.reruns:
            row[RERUN_KEY] = self.rerun or self.reruns[row["trial_id"]]
        try:
            # Sealed as a reader will see it (numpy scalars now floats), so the checksum reads back equal.
            row = seal(json.loads(json.dumps(row, default=_json_default, ensure_ascii=False)))
        except (TypeError, ValueError) as exc:
            raise IconBenchError(f"result row of trial {row['trial_id']} is not JSON-serialisable: {exc}") from exc
        self._append_line((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        return row

    def append_line(self, raw: bytes) -> None:
        """Append one already checked line as it is (`icon-bench store merge`), raising StoreError on failure."""
        try:
            self._append_line(raw.rstrip(b"\n") + b"\n")
        except OSError as exc:
            raise _store_error(exc, self.directory, "write") from None

    def _append_line(self, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if not self._checked_tail:
                # A torn line from a crashed run has no newline; end it so this row starts clean.
                self._checked_tail = True
                size = os.fstat(fd).st_size
                if size:
                    with open(self.path, "rb") as fh:
                        fh.seek(size - 1)
                        if fh.read(1) != b"\n":
                            os.write(fd, b"\n")
            before, written = os.fstat(fd).st_size, 0
            try:
                written = os.write(fd, data)
                if written != len(data):  # only on a full disk
                    raise StoreError(f"{self.path}: short write ({written} of {len(data)} bytes); disk full?")
                if self.fsync:
                    os.fsync(fd)
            except (OSError, StoreError):
                _cut_back(fd, before, before + written)
                raise
        finally:
            os.close(fd)

    def _write_file(self, folder: str, name: str, write: Callable[[IO[bytes]], None]) -> str:
        """Write ``folder/name`` under the store with ``write(fh)``; returns its path relative to the store.

        Written to a temporary file and renamed: a crash never leaves a half-written file behind.
        """
        target_dir = self.directory / folder
        target_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, target_dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return f"{folder}/{name}"

    def _write_artifacts(self, tid: str, artifacts: Any) -> Any:
        if not isinstance(artifacts, Mapping):
            return artifacts  # None, or already a path
        arrays = {str(k): a for k, v in artifacts.items() if (a := _as_array(v)) is not None}
        if not arrays:
            return None
        return self._write_file(ARTIFACTS_DIR, f"{tid}.npz", lambda fh: np.savez_compressed(fh, **arrays))

    # -- reading ----------------------------------------------------------------------------------
    def read(self) -> list[dict[str, Any]]:
        """Every good row in file order (reruns included); other lines are skipped and reported once."""
        return [row for _, row in self._read_lines()]

    def _read_lines(self) -> list[tuple[int, dict[str, Any]]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise _store_error(exc, self.directory, "read") from None
        result = parse_lines(data)
        self._note(result.problems, reset=True)
        return result.rows

    def _note(self, problems: list[LineProblem], *, reset: bool = False) -> None:
        if reset:
            self.problems, self.skipped = [], []
        for problem in problems:
            self.problems.append(problem)
            self.skipped.append((problem.line, problem.reason))
            key = (problem.line, problem.reason)
            if key not in self._reported:  # say it once per store, not on every read
                self._reported.add(key)
                warnings.warn(
                    f"{self.path}:{problem.line}: skipped {problem.reason} (`icon-bench store repair "
                    f"{self.directory}` moves it to {QUARANTINE_FILE})",
                    StoreWarning,
                    stacklevel=4,
                )

    def rows(self) -> list[dict[str, Any]]:
        """The row that counts for each trial (`store_lines.resolve`), in the order the trials first appeared."""
        current, conflicts = resolve(self._read_lines())
        self._note(conflicts)
        return [row for _, row in current.values()]

    def done_ids(self) -> set[str]:
        """Trials whose latest row has status ok."""
        return {r["trial_id"] for r in self.rows() if r.get("status") == "ok"}

    def failed_ids(self) -> set[str]:
        """Trials whose latest row did not succeed."""
        return {r["trial_id"] for r in self.rows() if r.get("status") != "ok"}

    def to_dataframe(self, rows: Iterable[Mapping[str, Any]] | None = None) -> Any:
        """The latest rows as a flat pandas DataFrame (``metrics.nmi``, ``timings.total_s``, ...)."""
        import pandas as pd

        rows = list(self.rows() if rows is None else rows)
        return pd.json_normalize(rows) if rows else pd.DataFrame()

    def load_artifacts(self, row: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The arrays a row's trial saved (empty when it saved none)."""
        rel = row.get("artifacts")
        if not rel:
            return {}
        with np.load(self.directory / rel, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows that count in results file `path` (any name), warning once per bad line.

    The one reader of results files: `run` (through ResultsStore), `report`, `compare` and the
    claims read rows through it, so they agree on which rows count.
    """
    path = Path(path)
    store = ResultsStore(path.parent)
    store.path = path
    return store.rows()

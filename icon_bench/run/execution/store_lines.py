"""The one tolerant reader of results.jsonl: row checksums, line checks (torn, non-UTF-8, schema), which row of a trial counts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "CHECKSUM_KEY",
    "FINISHED",
    "QUARANTINE_FILE",
    "RESULTS_FILE",
    "RERUN_KEY",
    "LineProblem",
    "ReadResult",
    "checksum",
    "parse_lines",
    "resolve",
    "seal",
]

RESULTS_FILE = "results.jsonl"
#: Lines moved out of results.jsonl (torn, corrupt, wrong schema, conflicting), with why and when.
QUARANTINE_FILE = "results.quarantine.jsonl"
#: Each row's checksum of its own content (every other key), "sha256:<hex>"; rows written before
#: checksums existed have none and are read as legacy rows.
CHECKSUM_KEY = "checksum"
#: Set on a row written by an explicit rerun (`icon-bench run --force`): only such a row replaces a
#: trial's finished row; any other later row for a finished trial is a conflict and the first stays.
RERUN_KEY = "rerun"
#: Statuses of a finished trial (a tuned suite's search trials end "search").
FINISHED = frozenset({"ok", "search"})


def checksum(row: Mapping[str, Any]) -> str:
    """sha256 of the row's canonical JSON (sorted keys, every key but the checksum itself)."""
    body = {k: v for k, v in row.items() if k != CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def seal(row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` (plain JSON values) with its checksum set."""
    body = {k: v for k, v in row.items() if k != CHECKSUM_KEY}
    body[CHECKSUM_KEY] = checksum(body)
    return body


@dataclasses.dataclass(frozen=True)
class LineProblem:
    """A line of results.jsonl that is not (or not the authoritative) row: where, what, and its bytes."""

    line: int
    kind: str  # torn | unreadable | encoding | checksum | schema | conflict
    reason: str
    raw: bytes = b""

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclasses.dataclass
class ReadResult:
    """Every good row with its line number, in file order, and the lines that were not good rows."""

    rows: list[tuple[int, dict[str, Any]]]
    problems: list[LineProblem]
    raw: dict[int, bytes] = dataclasses.field(default_factory=dict)  # line -> its bytes, for rewriting


def _schema_error(row: Any) -> str | None:
    """Why a parsed line is not a result row (None when it is one)."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not a result row (an object)"
    tid = row.get("trial_id")
    if not isinstance(tid, str) or not tid:
        return "no trial_id (text)"
    expected = {"status": str, "metrics": dict, "spec": dict}
    for key, kind in expected.items():
        value = row.get(key)
        if value is not None and not isinstance(value, kind):
            return f"{key!r} is a JSON {type(value).__name__}, not {'text' if kind is str else 'an object'}"
    return None


def _check_line(number: int, raw: bytes, torn_tail: bool) -> tuple[dict[str, Any] | None, LineProblem | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, LineProblem(number, "encoding", f"not UTF-8 (byte {exc.start + 1})", raw)
    try:
        row = json.loads(text)
    except ValueError as exc:
        if torn_tail:
            return None, LineProblem(number, "torn", "torn last line (interrupted write)", raw)
        return None, LineProblem(number, "unreadable", f"unreadable line ({exc})", raw)
    why = _schema_error(row)
    if why is not None:
        return None, LineProblem(number, "schema", f"not a result row: {why}", raw)
    stated = row.get(CHECKSUM_KEY)
    if stated is not None and stated != checksum(row):
        return None, LineProblem(
            number, "checksum", f"checksum mismatch for trial {row['trial_id']}: the row was changed after it was written", raw
        )
    return row, None


def parse_lines(data: bytes) -> ReadResult:
    """Check every line of a results file; never raises on its content (bytes, JSON or schema)."""
    result = ReadResult(rows=[], problems=[])
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        result.raw[number] = raw
        # The last piece has no newline after it: a write that never finished (or a hand edit).
        row, problem = _check_line(number, raw, torn_tail=number == len(lines))
        if problem is not None:
            result.problems.append(problem)
        else:
            assert row is not None
            result.rows.append((number, row))
    return result


def _finished(row: Mapping[str, Any]) -> bool:
    return row.get("status", "ok") in FINISHED


def _version(row: Mapping[str, Any]) -> str:
    protocol = row.get("protocol")
    return str(protocol.get("version")) if isinstance(protocol, Mapping) else ""


def resolve(rows: Iterable[tuple[int, dict[str, Any]]]) -> tuple[dict[tuple[str, str], tuple[int, dict[str, Any]]], list[LineProblem]]:
    """Which row of each trial counts: (trial_id, protocol version) -> (line, row), in first-seen order,
    and the conflicts.

    A later row replaces an unfinished one (a retry of a failure) and, when it is an explicit rerun
    (`RERUN_KEY`: --force, or a cell whose recipe changed), a finished one; any other later row of a
    finished trial is a conflict: the first finished row stays, so a line appended by hand (or by a
    stray process) cannot replace a result. Protocol versions are measurements of their own.
    """
    current: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    conflicts: list[LineProblem] = []
    for number, row in rows:
        key = (row["trial_id"], _version(row))
        held = current.get(key)
        # A rerun mark counts only on a sealed row: marks and checksums came in together.
        rerun = bool(row.get(RERUN_KEY)) and row.get(CHECKSUM_KEY) is not None
        if held is None or not _finished(held[1]) or rerun:
            current[key] = (number, row)
            continue
        same = row.get(CHECKSUM_KEY) is not None and row.get(CHECKSUM_KEY) == held[1].get(CHECKSUM_KEY)
        what = "a copy of" if same else "a second row for the trial finished at"
        conflicts.append(LineProblem(
            number, "conflict", f"{what} line {held[0]} (trial {key[0]}), not a --force rerun: line {held[0]} stays"
        ))
    return current, conflicts

"""Faults of the results store, each counted in rows before and after: 0 lost, 0 duplicated, 0 forged (issue 22 items 1, 2)."""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ray_trials import fake_load, fake_trial
from test_run_store import _suite

from icon_bench import cli
from icon_bench.report.rows import load_rows, normalise_rows
from icon_bench.run.execution.store import QUARANTINE_FILE, ResultsStore, StoreWarning, read_rows
from icon_bench.run.execution.store_lines import CHECKSUM_KEY, checksum
from icon_bench.run.execution.store_repair import merge, repair
from icon_bench.runner import EXIT_STORE, run_suite

pytestmark = pytest.mark.usefixtures("fake_method")  # every test here runs method "fake"


def _row(tid: str, status: str = "ok", nmi: float = 0.5, **extra: Any) -> dict[str, Any]:
    return {"trial_id": tid, "status": status, "metrics": {"nmi": nmi}, **extra}


def _lines(store: ResultsStore) -> list[dict[str, Any]]:
    """Every line of results.jsonl parsed: raises if any line is torn or not JSON."""
    return [json.loads(line) for line in store.path.read_bytes().splitlines() if line.strip()]


def _quarantined(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / QUARANTINE_FILE).read_text().splitlines()]


# -- checksums ------------------------------------------------------------------------------------
def test_every_row_carries_the_checksum_of_its_own_content(tmp_path: Path) -> None:
    stored = ResultsStore(tmp_path).append(_row("a", nmi=0.25, extra={"x": [1, 2.5, None, "é"]}))
    [line] = _lines(ResultsStore(tmp_path))
    assert line[CHECKSUM_KEY] == stored[CHECKSUM_KEY] == checksum(line)
    assert line[CHECKSUM_KEY].startswith("sha256:") and len(line[CHECKSUM_KEY]) == 7 + 64
    # Independent of key order and of the checksum key itself; any change to the content changes it.
    assert checksum(dict(reversed(list(line.items())))) == line[CHECKSUM_KEY]
    assert checksum({**line, "metrics": {"nmi": 0.26}}) != line[CHECKSUM_KEY]


def test_legacy_rows_without_a_checksum_are_read(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.path.write_text(json.dumps(_row("old")) + "\n")
    store.append(_row("new"))
    assert [r["trial_id"] for r in store.rows()] == ["old", "new"] and store.problems == []


# -- forged lines ---------------------------------------------------------------------------------
def test_a_forged_later_line_never_replaces_a_finished_row(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    real = store.append(_row("a", nmi=0.616))
    store.append(_row("b"))
    before = len(store.rows())
    with open(store.path, "a") as fh:
        # A copy with its number changed and its checksum kept; one with the checksum dropped (legacy-looking);
        # one that claims to be a rerun without a checksum.
        fh.write(json.dumps({**real, "metrics": {"nmi": 0.723}}) + "\n")
        fh.write(json.dumps({k: v for k, v in real.items() if k != CHECKSUM_KEY} | {"metrics": {"nmi": 0.9}}) + "\n")
        fh.write(json.dumps(_row("a", nmi=0.99, rerun="--force")) + "\n")
    with pytest.warns(StoreWarning) as caught:
        rows = ResultsStore(tmp_path).rows()
    assert len(rows) == before == 2 and rows[0]["metrics"]["nmi"] == 0.616
    messages = "\n".join(str(w.message) for w in caught)
    assert "results.jsonl:3: skipped checksum mismatch for trial a" in messages
    assert "results.jsonl:4: skipped a second row for the trial finished at line 1 (trial a)" in messages
    assert ":5: skipped a second row" in messages and "icon-bench store repair" in messages
    # The report reads through the same reader: the real number.
    with pytest.warns(StoreWarning):
        frame = normalise_rows(load_rows(tmp_path))
    assert list(frame["metrics.nmi"]) == [0.616, 0.5]
    # Repair moves the three lines aside, named; the file then holds exactly the two real rows.
    moved = repair(tmp_path)
    assert [p.line for p in moved] == [3, 4, 5] and [p.kind for p in moved] == ["checksum", "conflict", "conflict"]
    assert [r["metrics"]["nmi"] for r in _lines(store)] == [0.616, 0.5]
    assert [q["line"] for q in _quarantined(tmp_path)] == [3, 4, 5]


def test_a_force_rerun_replaces_and_a_retry_of_a_failure_replaces(tmp_path: Path) -> None:
    ResultsStore(tmp_path).append(_row("a", nmi=0.1))
    ResultsStore(tmp_path).append(_row("b", "failed"))
    ResultsStore(tmp_path, rerun="--force").append(_row("a", nmi=0.2))
    ResultsStore(tmp_path).append(_row("b", nmi=0.3))  # --retry-failed: no mark needed
    rows = ResultsStore(tmp_path).rows()
    assert [(r["trial_id"], r["metrics"]["nmi"], r.get("rerun")) for r in rows] == [("a", 0.2, "--force"), ("b", 0.3, None)]
    assert repair(tmp_path) == []


# -- torn, non-UTF-8 and wrong-schema lines -------------------------------------------------------
BAD_LINES = {
    b'{"trial_id": "t", "status": "o': "unreadable line",
    b"\xff\xfe{\"trial_id\": \"u\"}": "not UTF-8 (byte 1)",
    b'[1, 2]': "not a result row: a JSON list",
    b'{"trial_id": 5, "status": "ok"}': "not a result row: no trial_id",
    b'{"trial_id": "v", "metrics": "high"}': "not a result row: 'metrics' is a JSON str",
    b'"just text"': "not a result row: a JSON str",
}


@pytest.mark.parametrize("raw", list(BAD_LINES), ids=["torn", "non-utf8", "list", "id-number", "metrics-text", "text"])
def test_a_bad_line_is_reported_skipped_and_quarantined(tmp_path: Path, raw: bytes) -> None:
    store = ResultsStore(tmp_path)
    store.append(_row("a"))
    with open(store.path, "ab") as fh:
        fh.write(raw + b"\n")
    store.append(_row("b"))
    with pytest.warns(StoreWarning, match=re.escape(f"results.jsonl:2: skipped {BAD_LINES[raw]}")):
        assert [r["trial_id"] for r in ResultsStore(tmp_path).rows()] == ["a", "b"]
    with pytest.warns(StoreWarning):  # report: a warning, never a traceback
        assert list(load_rows(tmp_path)["trial_id"]) == ["a", "b"]
    [moved] = repair(tmp_path)
    assert moved.line == 2 and BAD_LINES[raw] in moved.reason
    assert [r["trial_id"] for r in _lines(store)] == ["a", "b"]  # every remaining line parses
    [entry] = _quarantined(tmp_path)
    kept = base64.b64decode(entry["bytes_base64"]) if "bytes_base64" in entry else entry["text"].encode()
    assert kept == raw and entry["line"] == 2  # the exact bytes, nothing lost


def test_report_on_a_store_with_a_non_utf8_line_does_not_crash(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    for i in range(3):
        store.append(_row(f"t{i}", spec={"method": "fake", "dataset": "digits", "seed": i}, seed=i))
    with open(store.path, "ab") as fh:
        fh.write(b"\x80\x81 garbage\n")
    proc = subprocess.run(["icon-bench", "report", str(tmp_path), "--no-plots"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "results.jsonl:4: skipped not UTF-8" in proc.stderr


def test_a_short_write_leaves_no_torn_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    store.append(_row("a"))
    real_write = os.write

    def half(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(Exception, match="short write"):
        store.append(_row("b"))
    monkeypatch.undo()
    assert [r["trial_id"] for r in _lines(store)] == ["a"]


def test_a_run_moves_a_torn_line_aside_and_names_the_quarantine(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    results = tmp_path / "res"
    assert run_suite(suite, results=results, limit=2, trial_fn=fake_trial, load_fn=fake_load, progress=False,
                     report=False, out=io.StringIO()) == 0
    store = ResultsStore(results)
    with open(store.path, "ab") as fh:
        fh.write(b'{"trial_id": "x", "sta')  # a crash mid-write
    before = store.path.read_bytes()
    dry = io.StringIO()
    with pytest.warns(StoreWarning):
        assert run_suite(suite, results=results, dry_run=True, out=dry) == 0
    assert "note: skipped 1 line(s)" in dry.getvalue() and "icon-bench store repair" in dry.getvalue()
    assert store.path.read_bytes() == before  # a dry run changes nothing
    out = io.StringIO()
    assert run_suite(suite, results=results, trial_fn=fake_trial, load_fn=fake_load, progress=False,
                     report=False, out=out) == 0
    text = out.getvalue()
    assert f"note: {store.path}: moved 1 line(s) to {results / QUARANTINE_FILE}:" in text
    assert "line 3: torn last line (interrupted write)" in text and "running 2 of 4 cells" in text
    assert len(_lines(store)) == 4 and len({r["trial_id"] for r in _lines(store)}) == 4


# -- the full disk ----------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 64 kB tmpfs (root only; skipped where it cannot be mounted)."""
    where = tmp_path / "disk"
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {proc.stderr.strip() or proc.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> Path:
    """Write into `folder` until the disk is full; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:  # unbuffered: closing it has nothing left to flush
        try:
            while True:
                fh.write(b"x" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_loses_no_row_and_merge_puts_the_rescued_rows_back(
    small_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = _suite(tmp_path)
    results = small_disk / "res"
    calls: list[str] = []

    def trial(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
        calls.append(spec["seed"])
        if len(calls) == 2:  # the disk fills up while the second trial runs
            _fill(small_disk)
        return fake_trial(spec, data)

    code = run_suite(suite, results=results, trial_fn=trial, load_fn=fake_load, progress=False, report=False,
                     out=io.StringIO())
    err = capsys.readouterr().err
    assert code == EXIT_STORE, err
    store = ResultsStore(results)
    stored = _lines(store)  # every line parses: no torn line left behind
    assert len(stored) == 1 and len(calls) == 2
    command = err.split("add them (with their artifacts and tracebacks) with:\n")[1].splitlines()[0].split()
    assert command[:3] == ["icon-bench", "store", "merge"] and command[3] == str(results)
    fallback = Path(command[4])
    assert "cat " not in err
    (small_disk / "filler").unlink()
    assert cli.main(["store", "merge", str(results), str(fallback)]) == 0
    assert "1 row(s) added, 0 already there" in capsys.readouterr().out
    rows = _lines(store)
    assert len(rows) == 2 and len({r["trial_id"] for r in rows}) == 2  # 0 lost, 0 duplicated
    assert all((results / r["artifacts"]).is_file() for r in rows)
    # Merging again adds nothing; the rerun runs only the two cells never run.
    assert merge(results, fallback).added == 0
    out = io.StringIO()
    assert run_suite(suite, results=results, trial_fn=trial, load_fn=fake_load, progress=False, report=False, out=out) == 0
    assert "running 2 of 4 cells" in out.getvalue() and len(_lines(store)) == 4


def test_merge_refuses_a_second_row_for_a_finished_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ResultsStore(tmp_path / "a").append(_row("t", nmi=0.6))
    ResultsStore(tmp_path / "b").append(_row("t", nmi=0.7))
    ResultsStore(tmp_path / "b").append(_row("u", nmi=0.1))
    ResultsStore(tmp_path / "b", rerun="--force").append(_row("w", nmi=0.2))
    assert cli.main(["store", "merge", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "2 row(s) added, 0 already there" in out and "refused line 1: trial t is already finished" in out
    assert [(r["trial_id"], r["metrics"]["nmi"]) for r in read_rows(tmp_path / "a" / "results.jsonl")] == [
        ("t", 0.6), ("u", 0.1), ("w", 0.2)
    ]


def test_store_repair_command_says_when_there_is_nothing_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ResultsStore(tmp_path).append(_row("a"))
    assert cli.main(["store", "repair", str(tmp_path)]) == 0
    assert "every line is a good row; nothing to repair" in capsys.readouterr().out
    assert cli.main(["store", "repair", str(tmp_path / "nowhere")]) == 2
    assert "no results folder at" in capsys.readouterr().err


# -- explicit reruns: --force and a changed recipe replace finished rows, and say so ----------------
def test_a_force_run_replaces_finished_rows_and_records_it(tmp_path: Path) -> None:
    path, results = _suite(tmp_path), tmp_path / "res"
    assert run_suite(path, results=results, trial_fn=fake_trial, load_fn=fake_load, progress=False, report=False,
                     out=io.StringIO()) == 0

    def other(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
        return {**fake_trial(spec, data), "metrics": {"hungarian": 0.99}}

    assert run_suite(path, results=results, force=True, trial_fn=other, load_fn=fake_load, progress=False,
                     report=False, out=io.StringIO()) == 0
    store = ResultsStore(results)
    assert len(_lines(store)) == 8
    rows = store.rows()
    assert len(rows) == 4 and store.problems == []
    assert all(r["rerun"] == "--force" and r["metrics"]["hungarian"] == 0.99 for r in rows)


def test_a_cell_whose_recipe_changed_reruns_and_its_new_row_counts(tmp_path: Path) -> None:
    from icon_bench.run.suite.reader import load_suite
    from icon_bench.run.execution.trial import recipe_of

    path, results = _suite(tmp_path, "name: st\ndatasets: [digits]\ngrid:\n  method: [pmi]\n  seed: [0]\n"), tmp_path / "res"
    [spec] = load_suite(path).trials()
    ResultsStore(results).append({**fake_trial(spec), "recipe": {**recipe_of(spec), "q_debias": 0.5}})

    def now(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
        return {**fake_trial(spec, data), "recipe": recipe_of(spec), "metrics": {"hungarian": 0.42}}

    out = io.StringIO()
    assert run_suite(path, results=results, trial_fn=now, load_fn=fake_load, progress=False, report=False, out=out) == 0
    assert "ran under other recipe defaults" in out.getvalue()
    [row] = ResultsStore(results).rows()
    assert row["metrics"]["hungarian"] == 0.42 and row["rerun"].startswith("recipe changed: pmi: q_debias 0.5 -> 0.0")
    again = io.StringIO()
    assert run_suite(path, results=results, trial_fn=now, load_fn=fake_load, progress=False, report=False, out=again) == 0
    assert "nothing to run" in again.getvalue()

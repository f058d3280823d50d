"""`icon-bench run` and its results folder: an unwritable store stops cleanly and loses no row; one run writes a folder at a time."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ray_trials import fake_load, fake_trial

from icon_bench import cli
from icon_bench.run.suite.ids import trial_id
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.reader import load_suite
from icon_bench.runner import EXIT_LOCKED, EXIT_STORE, run_suite

TESTS = Path(__file__).resolve().parent

SUITE = """
name: four
datasets: [digits]
grid:
  method: [fake]
  seed: [0, 1, 2, 3]
"""


@pytest.fixture(autouse=True)
def _fake(fake_method: None) -> None:
    """Every test here runs method "fake"."""


def _suite(folder: Path, text: str = SUITE) -> Path:
    path = folder / "suite.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


class Calls:
    """fake_trial, counting its calls."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
        self.n += 1
        return fake_trial(spec, data)


def _refuse_writes_after(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """The store's folder stops taking lines after `rows` rows, as a chmod or a full disk would make it."""
    original = ResultsStore._append_line
    seen = {"n": 0}

    def append_line(self: ResultsStore, data: bytes) -> None:
        if self.path.name == "results.jsonl" and "icon-bench-unsaved-" not in str(self.path):
            seen["n"] += 1
            if seen["n"] > rows:
                raise PermissionError(13, "Permission denied", str(self.path))
        original(self, data)

    monkeypatch.setattr(ResultsStore, "_append_line", append_line)


# -- issue 14 item 6: an unwritable results folder --------------------------------------------------
def test_an_unwritable_results_folder_is_refused_before_the_first_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _suite(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    results = tmp_path / "a_file" / "results"  # no one, root included, can create a folder in a file
    calls = Calls()
    code = run_suite(path, results=results, trial_fn=calls, load_fn=fake_load, progress=False, report=False)
    err = capsys.readouterr().err
    assert code == EXIT_STORE == 3 and calls.n == 0
    assert f"icon-bench: error: cannot write the results store: {results}: Not a directory; no trial was run" in err
    assert "Traceback" not in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_results_folder_is_refused_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _suite(tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    try:
        assert cli.main(["run", str(path), "--results", str(results), "--no-report"]) == EXIT_STORE
    finally:
        results.chmod(0o755)
    err = capsys.readouterr().err
    assert "cannot write the results store:" in err and "Permission denied" in err and "Traceback" not in err


def test_a_store_failing_mid_run_stops_cleanly_and_keeps_the_finished_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _suite(tmp_path)
    results = tmp_path / "results" / "four"
    _refuse_writes_after(monkeypatch, rows=1)
    calls = Calls()
    code = run_suite(path, trial_fn=calls, load_fn=fake_load, progress=False, report=False, out=io.StringIO())
    err = capsys.readouterr().err
    assert code == EXIT_STORE and calls.n == 2  # the sweep stopped after the row the store refused
    assert f"icon-bench: error: cannot write the results store: {results / 'results.jsonl'}: Permission denied" in err
    assert "the sweep stopped: 1 row(s) stored, 2 cell(s) not run" in err and "Traceback" not in err
    fallback = Path(err.split("the 1 row(s) that finished since are saved in ")[1].split(";")[0])
    assert fallback.name == "results.jsonl" and fallback.parent.name.startswith("icon-bench-unsaved-four-")
    specs = load_suite(path).trials()
    rescued = ResultsStore(fallback.parent)
    [row] = rescued.rows()
    assert row["trial_id"] == trial_id(specs[1]) and row["status"] == "ok" and row["suite"] == "four"
    assert rescued.load_artifacts(row)["labels"].tolist() == [0, 1, 0]  # its arrays too
    # The message's command puts the row back; a rerun then runs only the two cells never run.
    monkeypatch.undo()
    assert f"icon-bench store merge {results} {fallback.parent}" in err and "cat " not in err
    assert cli.main(["store", "merge", str(results), str(fallback.parent)]) == 0
    out = io.StringIO()
    assert run_suite(path, trial_fn=calls, load_fn=fake_load, progress=False, report=False, out=out) == 0
    assert "running 2 of 4 cells" in out.getvalue() and calls.n == 4


def test_rows_that_no_folder_takes_are_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import tempfile

    path = _suite(tmp_path)
    _refuse_writes_after(monkeypatch, rows=0)
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    assert run_suite(path, trial_fn=fake_trial, load_fn=fake_load, progress=False, report=False, out=io.StringIO()) == EXIT_STORE
    err = capsys.readouterr().err
    assert "1 row(s) could not be saved anywhere; here they are as JSON lines:" in err
    row = json.loads(err.strip().splitlines()[-1])
    assert row["trial_id"] == trial_id(load_suite(path).trials()[0]) and row["metrics"]["hungarian"] > 0


# -- issue 14 item 7: two runs of one suite at once --------------------------------------------------
DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from ray_trials import fake_load, fake_trial, use_fake_method
from icon_bench.runner import run_suite
use_fake_method()
sys.exit(run_suite({suite!r}, trial_fn=fake_trial, load_fn=fake_load, report=False, progress=False, wait={wait!r}))
"""

SLOW = SUITE + "  sleep: 0.5\n"


def _start(tmp_path: Path, path: Path, wait: bool = False, name: str = "driver.py") -> subprocess.Popen[str]:
    driver = tmp_path / name
    driver.write_text(DRIVER.format(tests=str(TESTS), suite=str(path), wait=wait))
    return subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(jsonl: Path, n: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 60
    while time.time() < deadline and not (jsonl.exists() and len(jsonl.read_bytes().splitlines()) >= n):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def test_a_second_run_of_the_same_results_is_refused_naming_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _suite(tmp_path, SLOW)
    jsonl = tmp_path / "results" / "four" / "results.jsonl"
    first = _start(tmp_path, path)
    try:
        _wait_for_rows(jsonl, 1, first)
        calls = Calls()
        assert run_suite(path, trial_fn=calls, load_fn=fake_load, progress=False, report=False, out=io.StringIO()) == EXIT_LOCKED
        err = capsys.readouterr().err
        assert calls.n == 0
        assert f"icon-bench: error: another run is writing {jsonl.parent} (pid {first.pid} on " in err
        assert "--wait" in err and "--results DIR" in err
        out = io.StringIO()
        assert run_suite(path, dry_run=True, out=out) == 0  # a dry run still shows the plan, with a note
        assert f"note: another run is writing these results now (pid {first.pid} on " in out.getvalue()
    finally:
        assert first.wait(timeout=60) == 0, first.communicate()
    counts = Counter(r["trial_id"] for r in ResultsStore(jsonl.parent).read())
    assert len(counts) == 4 and set(counts.values()) == {1}  # every cell ran once, not twice


def test_a_run_that_waits_runs_only_what_the_first_left(tmp_path: Path) -> None:
    path = _suite(tmp_path, SLOW)
    jsonl = tmp_path / "results" / "four" / "results.jsonl"
    first = _start(tmp_path, path)
    _wait_for_rows(jsonl, 1, first)
    out = io.StringIO()
    code = run_suite(path, trial_fn=fake_trial, load_fn=fake_load, progress=False, report=False, out=out, wait=True)
    assert first.wait(timeout=60) == 0
    assert code == 0 and f"waiting for the run writing {jsonl.parent} to end (pid {first.pid} on " in out.getvalue()
    assert "nothing to run: 4 of 4 cells done" in out.getvalue()
    assert len(ResultsStore(jsonl.parent).read()) == 4


def test_two_runs_started_together_run_each_cell_once(tmp_path: Path) -> None:
    path = _suite(tmp_path, SLOW)
    runs = [_start(tmp_path, path, wait=True, name=f"driver{i}.py") for i in range(2)]
    assert [p.wait(timeout=120) for p in runs] == [0, 0], [p.communicate() for p in runs]
    counts = Counter(r["trial_id"] for r in ResultsStore(tmp_path / "results" / "four").read())
    assert len(counts) == 4 and set(counts.values()) == {1}


def test_a_killed_run_leaves_no_lock_behind(tmp_path: Path) -> None:
    path = _suite(tmp_path, SLOW)
    jsonl = tmp_path / "results" / "four" / "results.jsonl"
    first = _start(tmp_path, path)
    _wait_for_rows(jsonl, 1, first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    out = io.StringIO()
    assert run_suite(path, trial_fn=fake_trial, load_fn=fake_load, progress=False, report=False, out=out) == 0
    assert "running " in out.getvalue() and len(ResultsStore(jsonl.parent).done_ids()) == 4

"""Reports go beside the rows (untracked) unless told otherwise, and the same rows give byte-identical reports."""

from __future__ import annotations

import importlib.util
import io
import json
import time
from pathlib import Path

import pytest
from ray_trials import fake_load, fake_trial

from icon_bench.cli import main
from icon_bench.report.commands import write_report
from icon_bench.runner import run_suite

_spec = importlib.util.spec_from_file_location(
    "report_fixture", Path(__file__).parent / "fixtures" / "report_fixture.py"
)
report_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_fixture)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_same_rows_give_the_same_bytes_in_every_file(tmp_path: Path) -> None:
    results = report_fixture.make_results(tmp_path / "results")
    first = _snapshot(write_report(results, tmp_path / "a"))
    time.sleep(1.1)  # a clock-based "generated at" would differ by now
    second = _snapshot(write_report(results, tmp_path / "b"))
    again = _snapshot(write_report(results, tmp_path / "a"))  # rewritten in place
    assert {"index.html", "leaderboard.md", "leaderboard.csv", "results.parquet"} <= set(first)
    assert any(name.endswith(".png") for name in first)
    changed = [name for name in first if first[name] != second.get(name) or first[name] != again.get(name)]
    assert not changed and set(first) == set(second) == set(again)
    png = next(v for k, v in first.items() if k.endswith(".png"))
    assert b"Matplotlib" not in png  # no software/version stamp in the figures


def test_the_leaderboard_index_is_byte_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = report_fixture.make_results(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(results), "-o", "reports/fixture", "--no-plots"]) == 0
    assert main(["leaderboard", "reports"]) == 0
    before = (tmp_path / "reports" / "README.md").read_bytes()
    assert main(["report", str(results), "-o", "reports/fixture", "--no-plots"]) == 0
    assert main(["leaderboard", "reports"]) == 0
    assert (tmp_path / "reports" / "README.md").read_bytes() == before


def test_a_run_leaves_committed_reports_alone_and_writes_beside_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clone with a committed reports/quick/: running the suite must not touch it."""
    committed = tmp_path / "reports" / "quick"
    committed.mkdir(parents=True)
    (committed / "leaderboard.md").write_text("# committed example\n")
    (tmp_path / "reports" / "README.md").write_text("# committed index\n")
    before = _snapshot(tmp_path / "reports")
    (tmp_path / "pyproject.toml").write_text("")  # a clone: its root holds results/ and reports/
    suite = tmp_path / "suites" / "quick.yaml"
    suite.parent.mkdir()
    suite.write_text("name: quick\ndatasets: [digits]\ngrid: {method: [pmi], seed: [0, 1]}\nevaluate: [hungarian]\n")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    assert run_suite(suite, trial_fn=fake_trial, load_fn=fake_load, progress=False, out=out) == 0
    assert _snapshot(tmp_path / "reports") == before
    report = tmp_path / "results" / "quick" / "report"
    assert (report / "index.html").is_file() and (report / "leaderboard.md").is_file()
    assert f"report: {report}" in out.getvalue()
    # --report-dir is the explicit way to (re)write a committed report.
    assert run_suite(suite, trial_fn=fake_trial, load_fn=fake_load, progress=False, out=io.StringIO(), force=True,
                     report_dir=committed) == 0
    assert "# icon-bench report: quick" in (committed / "leaderboard.md").read_text()


def test_the_page_carries_no_clock_time_only_the_rows_own(tmp_path: Path) -> None:
    results = report_fixture.make_results(tmp_path / "results")
    out = write_report(results, tmp_path / "report", plots=False)
    md = (out / "leaderboard.md").read_text()
    assert "generated" not in md.lower()
    rows = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines() if line.strip()]
    started = sorted(r["started_at"] for r in rows if r.get("started_at"))
    assert started and started[0] in md  # the "runs" line: the rows' own first start

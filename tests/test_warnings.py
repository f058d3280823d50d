"""Diverged and collapsed trials carry `warnings`: the rules, a real lr=1e9 trial, the run table, reports, fail_on_warnings."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from ray_trials import fake_load, fake_trial

from icon_bench.evaluation.health import LOSS_RISE_MARGIN, collapse_warnings, loss_warnings
from icon_bench.evaluation.metrics import MethodOutput
from icon_bench.report.commands import write_report
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.execution.trial import run_trial
from icon_bench.runner import run_suite

_spec = importlib.util.spec_from_file_location(
    "report_fixture", Path(__file__).parent / "fixtures" / "report_fixture.py"
)
report_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_fixture)


def _output(clusters: list[int] | None = None, embeddings: torch.Tensor | None = None) -> MethodOutput:
    return MethodOutput(
        train_embeddings=None,
        test_embeddings=embeddings,
        train_clusters=None,
        test_clusters=None if clusters is None else torch.tensor(clusters),
    )


def test_loss_rules_rise_beyond_the_margin_and_non_finite() -> None:
    assert loss_warnings([14.7, 15.2, 16.9]) == ["diverged: loss rose from 14.7 (epoch 1) to 16.9 (epoch 3)"]
    assert loss_warnings([10.0, 9.0, 10.0 * (1 + LOSS_RISE_MARGIN / 2)]) == []  # noise within the margin
    assert loss_warnings([-2.0, -1.9]) != []  # a negative loss that rises by 5 % of its magnitude
    assert loss_warnings([3.0, math.inf]) == ["diverged: loss is inf at epoch 2"]
    assert loss_warnings([3.0, math.nan]) == ["diverged: loss is nan at epoch 2"]
    assert loss_warnings([5.0]) == loss_warnings([]) == loss_warnings(None) == []  # nothing to compare


def test_collapse_rules_one_cluster_or_one_point() -> None:
    labels = torch.tensor([0, 1, 2, 0])
    assert collapse_warnings(_output([3, 3, 3, 3]), labels) == ["collapsed: all 4 test points in one cluster (3 classes)"]
    assert collapse_warnings(_output([3, 3, 1, 3]), labels) == []
    assert collapse_warnings(_output([0, 0]), torch.tensor([1, 1])) == []  # one class: one cluster is right
    same = torch.ones(4, 8) * 0.3
    assert collapse_warnings(_output(embeddings=same), labels) == ["collapsed: all 4 test points mapped to one embedding"]
    assert collapse_warnings(_output(embeddings=torch.randn(4, 8)), labels) == []


def test_a_real_trial_at_lr_1e9_is_ok_with_warnings_and_a_sane_one_has_none() -> None:
    """The issue's case: pmi on digits with lr 1e9 rose in loss and put every point in one cluster."""
    spec = {"method": "pmi", "dataset": {"name": "digits", "subset": 600}, "seed": 0, "settings": {"epochs": 2}}
    bad = run_trial({**spec, "settings": {"epochs": 2, "lr": 1.0e9}})
    assert bad["status"] == "ok" and bad["metrics"]["nmi"] == pytest.approx(0.0)
    kinds = [w.split(":")[0] for w in bad["warnings"]]
    assert kinds == ["diverged", "collapsed"], bad["warnings"]
    assert bad["history"]["loss"][-1] > bad["history"]["loss"][0]
    good = run_trial(spec)
    assert good["status"] == "ok" and good["warnings"] == []


def _warning_trial(spec: dict, data: object = None) -> dict:
    """fake_trial, plus a divergence warning on seed 1."""
    row = fake_trial(spec, data)
    if spec["seed"] == 1:
        row["warnings"] = ["diverged: loss rose from 14.7 (epoch 1) to 16.9 (epoch 3)"]
    return row


SUITE = """
name: warned
datasets: [digits]
grid:
  method: [pmi]
  seed: [0, 1]
evaluate: [hungarian, nmi]
"""


def _suite(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(SUITE).lstrip() + extra)
    return path


def test_run_table_shows_warnings_and_the_trial_stays_ok(tmp_path: Path) -> None:
    out = io.StringIO()
    code = run_suite(_suite(tmp_path), results=tmp_path / "res", trial_fn=_warning_trial, load_fn=fake_load,
                     progress=False, out=out, report=False)
    text = out.getvalue()
    assert code == 0, text
    header = next(line for line in text.splitlines() if line.startswith("method"))
    assert "warnings" in header.split()
    warned_line = next(line for line in text.splitlines() if line.startswith("pmi") and " 1 " in line)
    assert "ok" in warned_line and "diverged" in warned_line
    tid = next(r["trial_id"] for r in ResultsStore(tmp_path / "res").rows() if r["seed"] == 1)
    assert f"warning: pmi on digits, seed 1, trial {tid}: diverged: loss rose from 14.7 (epoch 1) to 16.9" in text
    assert "fail_on_warnings: true" in text  # how to make them failures
    statuses = {r["seed"]: r["status"] for r in ResultsStore(tmp_path / "res").rows()}
    assert statuses == {0: "ok", 1: "ok"}


def test_fail_on_warnings_stores_the_trial_as_failed_keeping_its_metrics(tmp_path: Path) -> None:
    out = io.StringIO()
    code = run_suite(_suite(tmp_path, "fail_on_warnings: true\n"), results=tmp_path / "res", trial_fn=_warning_trial,
                     load_fn=fake_load, progress=False, out=out, report=False)
    assert code == 1, out.getvalue()
    rows = {r["seed"]: r for r in ResultsStore(tmp_path / "res").rows()}
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "failed" and rows[1]["metrics"]["hungarian"] > 0
    assert rows[1]["error"] == "fail_on_warnings: diverged: loss rose from 14.7 (epoch 1) to 16.9 (epoch 3)"
    # The failure reruns like any other: --retry-failed picks exactly that cell.
    out = io.StringIO()
    run_suite(_suite(tmp_path, "fail_on_warnings: true\n"), results=tmp_path / "res", trial_fn=fake_trial,
              load_fn=fake_load, progress=False, out=out, report=False, retry_failed=True)
    assert "running 1 of 2 cells" in out.getvalue()


def test_reports_mark_warned_configurations_with_a_legend_and_list_the_trials(tmp_path: Path) -> None:
    rows = report_fixture.load_rows()
    target = next(r for r in rows if r["method"] == "pmi" and r["divergence"] == "tv" and r["status"] == "ok")
    target["warnings"] = ["collapsed: all 360 test points in one cluster (10 classes)"]
    results = tmp_path / "results"
    results.mkdir()
    (results / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = write_report(results, tmp_path / "report", plots=False)

    md = (out / "leaderboard.md").read_text()
    assert "⚠ warning: a trial of this configuration diverged" in md  # the legend
    marked = [line for line in md.splitlines() if line.startswith("|") and "⚠" in line]
    assert marked and all("pmi · tv" in line for line in marked)
    assert "## Warnings" in md and f"`{target['trial_id']}`" in md and "collapsed: all 360 test points" in md
    page = (out / "index.html").read_text()
    assert 'id="warned"' in page and "collapsed: all 360 test points" in page and 'class="warned"' in page
    csv = pd.read_csv(out / "leaderboard.csv", dtype=str)
    flagged = csv[csv["warnings"].notna()]
    assert set(flagged["label"]) == {"pmi · tv"} and set(flagged["warnings"]) == {"collapsed"}
    assert set(flagged["warned_seeds"]) == {str(target["seed"])}


def test_rows_without_warnings_give_no_marker_and_no_legend(tmp_path: Path) -> None:
    out = write_report(report_fixture.make_results(tmp_path / "results"), tmp_path / "report", plots=False)
    md = (out / "leaderboard.md").read_text()
    assert "⚠" not in md and "## Warnings" not in md

"""`icon_bench.load_results`: the reports' rows as one DataFrame, from a results folder, its jsonl or a report's parquet;
the README's three-line plotting example runs and draws the comparison."""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path

import matplotlib
import pytest
from ray_trials import fake_load, fake_trial, tune_load, tune_trial

import icon_bench as ib
from icon_bench.report.build import build_report
from icon_bench.report.commands import write_report
from icon_bench.runner import run_suite

matplotlib.use("Agg")
REPO = Path(__file__).resolve().parents[1]

SUITE = """
name: notebook
datasets: [digits]
seeds: [0, 1, 2]
grid:
  method: [pmi]
  divergence: [kl, tv]
  p.debias: [0.0, 0.6]
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("notebook")
    (tmp / "suite.yaml").write_text(textwrap.dedent(SUITE).lstrip())
    res = tmp / "res"
    code = run_suite(tmp / "suite.yaml", results=res, trial_fn=fake_trial, load_fn=fake_load, report=False,
                     progress=False, out=io.StringIO())
    assert code == 0
    write_report(res, tmp / "report", plots=False)
    return res


def test_the_same_rows_from_every_place(results: Path) -> None:
    report = results.parent / "report"
    frames = [ib.load_results(p) for p in (results, results / "results.jsonl", report, report / "results.parquet")]
    first = frames[0]
    assert len(first) == 12 and first["trial_id"].is_unique
    for col in ("label", "status", "protocol_version", "metrics.hungarian", "spec.method", "spec.p.debias", "seed"):
        assert col in first.columns, col
    built = build_report(results)
    # The labels are the reports' (a configuration's name in the tables), one per configuration.
    assert set(first["label"]) == set(built.aggregated["label"]) == {
        "pmi · kl · p.debias=0.0", "pmi · kl · p.debias=0.6", "pmi · tv · p.debias=0.0", "pmi · tv · p.debias=0.6"}
    for frame in frames[1:]:
        same = frame.set_index("trial_id").loc[first["trial_id"]]
        assert list(same["label"]) == list(first["label"])
        assert list(same["metrics.hungarian"]) == pytest.approx(list(first["metrics.hungarian"]))
        assert list(same["spec.p.debias"]) == pytest.approx(list(first["spec.p.debias"]))
        assert set(same["status"]) == {"ok"}


def test_search_trials_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("name: t\ndatasets: [digits]\ngrid: {method: [pmi]}\nsettings: {epochs: 3}\n"
                                     "tune:\n  budget: 2\n  space: {lr: [0.001, 0.01]}\n  algorithm: grid\n")
    assert run_suite(tmp_path / "s.yaml", results=tmp_path / "r", trial_fn=tune_trial, load_fn=tune_load,
                     report=False, progress=False, out=io.StringIO()) == 0
    assert list(ib.load_results(tmp_path / "r")["tune_role"]) == ["final"]
    assert sorted(ib.load_results(tmp_path / "r", search=True)["tune_role"]) == ["final", "search", "search"]


def test_a_place_without_rows_says_so(tmp_path: Path) -> None:
    with pytest.raises(ib.IconBenchError, match="no results file at"):
        ib.load_results(tmp_path)


def test_the_readme_example_draws_the_comparison(results: Path) -> None:
    import matplotlib.pyplot as plt

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "load_results" in b)
    assert len(block.strip().splitlines()) == 3
    plt.close("all")
    namespace: dict = {}
    exec(block.replace('"results/quickstart"', repr(str(results))), namespace)  # noqa: S102 - our own README
    ax = plt.gca()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(labels) == sorted(set(namespace["df"]["label"]))
    widths = {t: bar.get_width() for t, bar in zip(labels, ax.patches)}
    means = namespace["df"].groupby("label")["metrics.nmi"].mean()
    assert widths == pytest.approx(means.to_dict())
    plt.close("all")

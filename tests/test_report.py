"""Aggregation over seeds, incompleteness, failures, protocol separation, ranking, and `icon-bench report`."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from icon_bench.cli import main
from icon_bench.report.build import aggregate, build_report
from icon_bench.report.commands import write_report
from icon_bench.report.rows import load_rows, normalise_rows

_spec = importlib.util.spec_from_file_location(
    "report_fixture", Path(__file__).parent / "fixtures" / "report_fixture.py"
)
report_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_fixture)

FIXTURE = report_fixture.ROWS


def _row(agg: pd.DataFrame, method: str, divergence: str, version: str = "1") -> pd.Series:
    hit = agg[(agg["method"] == method) & (agg["divergence"] == divergence) & (agg["protocol_version"] == version)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


@pytest.fixture(scope="module")
def agg() -> pd.DataFrame:
    return aggregate(load_rows(FIXTURE))


def test_means_and_sample_stds_match_hand_computation(agg: pd.DataFrame) -> None:
    pmi_kl = _row(agg, "pmi", "kl")
    # hungarian 0.60, 0.62, 0.67: mean 0.63; deviations -.03 -.01 .04 -> var (9+1+16)e-4 / 2 = 13e-4.
    assert pmi_kl["hungarian_mean"] == pytest.approx(0.63)
    assert pmi_kl["hungarian_std"] == pytest.approx(math.sqrt(0.0013))
    assert pmi_kl["hungarian_n"] == 3
    # nmi of pmi/tv 0.60, 0.61, 0.65: mean 0.62; var (4+1+9)e-4 / 2 = 7e-4.
    pmi_tv = _row(agg, "pmi", "tv")
    assert pmi_tv["nmi_mean"] == pytest.approx(0.62)
    assert pmi_tv["nmi_std"] == pytest.approx(math.sqrt(0.0007))
    assert pmi_tv["complete"] and pmi_tv["n"] == 3


def test_missing_seed_marks_configuration_incomplete(agg: pd.DataFrame) -> None:
    kmeans = _row(agg, "kmeans", "default")
    assert kmeans["n"] == 2 and kmeans["n_expected"] == 3
    assert not kmeans["complete"]
    assert kmeans["missing_seeds"] == [2] and kmeans["failed_seeds"] == []
    assert kmeans["hungarian_mean"] == pytest.approx(0.52)
    assert kmeans["hungarian_std"] == pytest.approx(0.04 / math.sqrt(2))


def test_failed_trial_is_listed_and_not_averaged(agg: pd.DataFrame) -> None:
    dic = _row(agg, "debiased_infonce_clustering", "js")
    assert dic["n"] == 2 and not dic["complete"]
    assert dic["failed_seeds"] == [1] and dic["missing_seeds"] == []
    assert dic["hungarian_mean"] == pytest.approx(0.82)  # seeds 0 and 2 only
    report = build_report(FIXTURE)
    assert list(report.failed["seed"]) == [1]
    assert report.failed["error"].iloc[0] == "TrialError: loss became NaN at epoch 2 (lr too high?)"


def test_protocol_versions_are_never_merged(agg: pd.DataFrame) -> None:
    v1, v2 = _row(agg, "pmi", "kl", "1"), _row(agg, "pmi", "kl", "2")
    assert v1["config_id"] == v2["config_id"]  # same configuration ...
    assert v1["n"] == 3 and v2["n"] == 3  # ... but never pooled into n = 6
    assert v2["hungarian_mean"] == pytest.approx(0.92)
    report = build_report(FIXTURE)
    sections = [(s.protocol_version, s.dataset) for s in report.sections]
    assert sections == [("1", "digits"), ("1", "blobs"), ("2", "digits")]
    for section in report.sections:
        assert set(section.table["protocol_version"]) == {section.protocol_version}
    assert report.protocols["2"] == [{"knn_k": 10, "knn_temperature": 0.07, "probe": "logreg"}]


def test_rank_bands_come_from_paired_tests_and_claim_nothing_the_tests_deny(agg: pd.DataFrame) -> None:
    from scipy import stats

    # Protocol 1 on digits. Pairs sharing 3 seeds: pmi·tv, pmi·kl and "<script>" (kmeans and debiased ran
    # 2 seeds); those three pairs are the family, Holm-corrected: all three separate (largest raw p x 1).
    v1 = agg[(agg["protocol_version"] == "1") & (agg["dataset"] == "digits")].set_index("method")
    kl, tv, sc = [0.60, 0.62, 0.67], [0.70, 0.71, 0.72], [0.49, 0.53, 0.56]
    p = sorted(stats.ttest_rel(a, b).pvalue for a, b in ((tv, kl), (kl, sc), (tv, sc)))
    assert p[0] * 3 < 0.05 and p[1] * 2 < 0.05 and p[2] < 0.05
    bands = {m: (v1.at[m, "hungarian_rank_lo"], v1.at[m, "hungarian_rank_hi"]) for m in v1.index}
    pmi = agg[(agg["protocol_version"] == "1") & (agg["dataset"] == "digits") & (agg["method"] == "pmi")]
    pmi_bands = {d: (lo, hi) for d, lo, hi in zip(pmi["divergence"], pmi["hungarian_rank_lo"], pmi["hungarian_rank_hi"])}
    assert pmi_bands == {"tv": (1, 3), "kl": (2, 4)}  # tv is above kl; kl above "<script>" only
    assert bands["<script>alert(1)</script>"] == (3, 5)
    # Two seeds (kmeans) or a shared seed count below 3 (the best by mean, 2 seeds): no test, the whole table.
    assert bands["kmeans"] == (1, 5) and bands["debiased_infonce_clustering"] == (1, 5)
    assert v1["hungarian_tied"].all()  # the best by mean shares fewer than 3 seeds with every other one


def test_flattened_rows_aggregate_like_nested_rows(agg: pd.DataFrame) -> None:
    flat = pd.json_normalize(report_fixture.load_rows(), max_level=1)
    flat = flat.drop(columns=[c for c in flat.columns if c.startswith("spec.")]).assign(
        spec=[r["spec"] for r in report_fixture.load_rows()]
    )
    again = aggregate(flat)
    cols = ["protocol_version", "dataset", "config_id", "n", "complete", "hungarian_mean", "hungarian_std"]
    pd.testing.assert_frame_equal(again[cols], agg[cols])


def test_a_retried_failure_counts_once_as_ok(tmp_path: Path) -> None:
    rows = report_fixture.load_rows()
    failed = next(r for r in rows if r["status"] == "failed")
    retry = {**failed, "status": "ok", "error": None, "traceback": None,
             "metrics": {"hungarian": 0.82, "nmi": 0.7, "ari": 0.6}}
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + [retry]) + '{"torn": ')
    with pytest.warns(UserWarning, match="skipped torn last line"):
        df = normalise_rows(load_rows(path))
    assert len(df) == len(rows)
    dic = _row(aggregate(df), "debiased_infonce_clustering", "js")
    assert dic["n"] == 3 and dic["complete"] and dic["hungarian_mean"] == pytest.approx(0.82)


def test_write_report_produces_every_output(tmp_path: Path) -> None:
    results = report_fixture.make_results(tmp_path / "results")
    out = write_report(results, tmp_path / "report")
    for name in ("leaderboard.md", "leaderboard.csv", "index.html"):
        assert (out / name).stat().st_size > 0
    rows = pd.read_parquet(out / "results.parquet")
    assert len(rows) == 23
    assert "metrics.hungarian" in rows.columns and "versions.plugins.icon-bench-extra" in rows.columns
    kinds = {p.name.split("-")[0] for p in out.glob("*.png")}
    assert kinds == {"metrics", "grid", "embedding", "loss"}
    assert len(list(out.glob("embedding-*.png"))) == 1  # only blobs saved 2-D embeddings


def test_cli_report_and_clean_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = report_fixture.make_results(tmp_path / "results")
    out = tmp_path / "out"
    assert main(["report", str(results / "results.jsonl"), "-o", str(out), "--no-plots"]) == 0
    assert (out / "leaderboard.md").exists() and not list(out.glob("*.png"))
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no results file" in capsys.readouterr().err


def test_grid_is_p_by_q_only_when_the_suite_sets_kernels(tmp_path: Path) -> None:
    from icon_bench.report.plots import plot_grid

    rows = [r for r in report_fixture.load_rows() if r["method"] == "pmi" and r["protocol"]["version"] == "1"]
    def variants(p_names: tuple[str, ...]) -> Path:
        out = []
        for r in rows:
            for q in ("cluster", "student_t"):
                for p in p_names:
                    spec = {**r["spec"], "q": {"name": q}, **({"p": {"name": p}} if len(p_names) > 1 else {})}
                    out.append({**r, "spec": spec, "config_id": f"{r['config_id'][:6]}{q[:5]:0<5}{p[:5]:0<5}",
                                "trial_id": f"{r['trial_id'][:6]}{q[:5]:0<5}{p[:5]:0<5}"})
        path = tmp_path / f"results-{len(p_names)}.jsonl"
        path.write_text("".join(json.dumps(v) + "\n" for v in out))
        return path

    one_row = build_report(variants(("knn",)))  # only q varies: one row of cells says nothing more
    assert plot_grid(one_row.sections[0], one_row.rows, {"hungarian"}, set(), tmp_path / "q.png", {}) is None
    assert {"pmi · kl · q.name=cluster", "pmi · tv · q.name=student_t"} <= set(one_row.sections[0].table["label"])
    report = build_report(variants(("knn", "gaussian")))
    caption = plot_grid(report.sections[0], report.rows, {"hungarian"}, set(), tmp_path / "pq.png", {})
    assert caption.startswith("digits: p kernel × q kernel grid") and (tmp_path / "pq.png").stat().st_size > 0
    plain = build_report(FIXTURE)
    caption = plot_grid(plain.sections[0], plain.rows, {"hungarian"}, set(), tmp_path / "dm.png", {})
    # Digits under protocol 1 ran 4 divergences (kl, tv, default, js) x 4 methods; tsne ran on blobs only.
    assert "divergence × method grid — 5 of 16 cells run" in caption


def test_protocol_settings_of_different_metrics_merge_into_one(tmp_path: Path) -> None:
    rows = [r for r in report_fixture.load_rows() if r["protocol"]["version"] == "1"]
    for r in rows:  # as evaluation.py records them: settings per metric that the row ran
        r["protocol"]["settings"] = {m: {"split": "test"} for m in r["spec"]["evaluate"]}
    rows[-1]["protocol"]["settings"] = {"knn2d": {"split": "test"}}  # a subset agrees
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    merged = build_report(path).protocols["1"]
    assert len(merged) == 1 and set(merged[0]) == {"hungarian", "nmi", "ari", "knn2d", "trustworthiness"}
    rows[0]["protocol"]["settings"] = {"hungarian": {"split": "train"}}  # a real conflict is shown, not hidden
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(build_report(path).protocols["1"]) > 1


def test_a_dataset_with_two_tasks_gets_one_table_per_task(tmp_path: Path) -> None:
    rows = report_fixture.load_rows()
    for r in rows:  # move the 2-D map trials onto digits, beside the clustering ones
        if r["dataset"] == "blobs":
            r["dataset"], r["spec"]["dataset"] = "digits", {"name": "digits"}
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = build_report(path)
    v1 = [(s.dataset, s.task, s.metrics, len(s.table)) for s in report.sections if s.protocol_version == "1"]
    assert v1 == [
        ("digits", "clustering", ["hungarian", "nmi", "ari"], 5),
        ("digits", "dimensionality reduction", ["knn2d", "trustworthiness"], 2),
    ]


def test_rows_with_mixed_type_fields_still_go_to_parquet(tmp_path: Path) -> None:
    rows = report_fixture.load_rows()
    for r in rows:  # e.g. a resolved hyperparameter that is a number in one row, a placeholder in another
        r["info"] = {"out_dim": 10 if r["seed"] else "$num_classes", "empty": {}}
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = write_report(path, tmp_path / "report", plots=False)
    df = pd.read_parquet(out / "results.parquet")
    assert set(df["info.out_dim"]) == {"10", "$num_classes"}
    assert not (out / "results.json").exists()


def test_cli_report_defaults_to_the_results_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = report_fixture.make_results(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(results / "results.jsonl"), "--no-plots"]) == 0
    assert (results / "report" / "leaderboard.md").exists() and not (tmp_path / "reports").exists()
    assert main(["report", str(results), "--no-plots", "-o", "reports/fixture"]) == 0
    assert main(["leaderboard"]) == 0  # default folder: reports/
    assert "[fixture](fixture/leaderboard.md)" in (tmp_path / "reports" / "README.md").read_text()
    assert main(["leaderboard", str(tmp_path / "missing")]) == 2


def _declared_rows(declare: bool = True) -> list[dict]:
    """The blobs trials re-scored: "distortion" kl 0.20-0.22 vs tv 0.60-0.62, "time_score" kl 0.30-0.32 vs tv 0.70-0.72.

    With `declare`, their protocol says distortion is lower-is-better and not a fraction (though its
    values lie in [0, 1]) and time_score higher-is-better, a fraction (though its name says time).
    """
    rows = [r for r in report_fixture.load_rows() if r["dataset"] == "blobs"]
    for r in rows:
        base = 0.2 if r["divergence"] == "kl" else 0.6
        r["metrics"] = {"distortion": base + 0.01 * r["seed"], "time_score": base + 0.1 + 0.01 * r["seed"]}
        if declare:
            r["protocol"]["metrics"] = {
                "distortion": {"higher_is_better": False, "fraction": False},
                "time_score": {"higher_is_better": True, "fraction": True},
            }
    return rows


def _ranks(agg: pd.DataFrame, metric: str) -> dict[str, int]:
    return dict(zip(agg["divergence"], agg[f"{metric}_rank"]))


def test_declared_metric_kinds_decide_ranking_over_the_name_and_value_guess(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _declared_rows()))
    report = build_report(path)
    assert report.meta["lower_is_better"] == ["distortion"]
    assert report.meta["fraction_metrics"] == ["time_score"]
    assert _ranks(report.aggregated, "distortion") == {"kl": 1, "tv": 2}  # smaller distortion wins
    assert _ranks(report.aggregated, "time_score") == {"tv": 1, "kl": 2}  # larger score wins despite "time"
    (section,) = report.sections
    assert section.metrics == ["distortion", "time_score"] and list(section.table["divergence"]) == ["kl", "tv"]
    # Rows read flattened (parquet dumps, json_normalize) carry the same declarations.
    for flat in (pd.json_normalize(_declared_rows()), pd.json_normalize(_declared_rows(), max_level=1)):
        agg = aggregate(flat)
        assert _ranks(agg, "distortion") == {"kl": 1, "tv": 2} and _ranks(agg, "time_score") == {"tv": 1, "kl": 2}


def test_rows_without_declarations_fall_back_to_the_guess(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _declared_rows(declare=False)))
    report = build_report(path)
    assert report.meta["lower_is_better"] == ["time_score"]  # by its name
    assert report.meta["fraction_metrics"] == ["distortion"]  # by its values
    assert _ranks(report.aggregated, "distortion") == {"tv": 1, "kl": 2}
    assert _ranks(report.aggregated, "time_score") == {"kl": 1, "tv": 2}
    assert list(report.sections[0].table["divergence"]) == ["tv", "kl"]
    # The fixture's built-in metrics, never declared there, keep their kinds.
    plain = build_report(FIXTURE)
    assert plain.meta["fraction_metrics"] == ["hungarian", "nmi", "ari", "knn2d", "trustworthiness"]
    assert plain.meta["lower_is_better"] == []


def test_disagreeing_declarations_take_the_latest_row(tmp_path: Path) -> None:
    rows = _declared_rows()
    rows[0]["protocol"]["metrics"]["distortion"] = {"higher_is_better": True, "fraction": True}  # older: outvoted
    rows[2]["protocol"].pop("metrics")  # an old row in between declares nothing
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = build_report(path)
    assert report.meta["lower_is_better"] == ["distortion"] and report.meta["fraction_metrics"] == ["time_score"]
    rows[-1]["protocol"]["metrics"]["distortion"] = {"higher_is_better": True, "fraction": True}  # latest: wins
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = build_report(path)
    assert report.meta["lower_is_better"] == [] and report.meta["fraction_metrics"] == ["distortion", "time_score"]
    assert _ranks(report.aggregated, "distortion") == {"tv": 1, "kl": 2}


def test_the_header_names_the_processor_the_rows_ran_on(tmp_path: Path) -> None:
    """Reproducible means on one CPU model: the report says which (escaped in the HTML)."""
    rows = report_fixture.load_rows()
    for row in rows:
        row.setdefault("versions", {})["cpu"] = "Test CPU <x>"
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = report_fixture.make_results(tmp_path / "results", path)
    out = tmp_path / "out"
    assert main(["report", str(results), "-o", str(out), "--no-plots"]) == 0
    assert "(Test CPU &lt;x&gt;)" in (out / "index.html").read_text()
    assert "Test CPU" in (out / "leaderboard.md").read_text()


def test_a_row_records_the_processor() -> None:
    from icon_bench.run.execution.environment import versions

    info = versions()
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert "gpu" in info

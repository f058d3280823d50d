"""The report's Discovered section: verdicts (paired by seed, Holm over candidates), formulas, history, f(t), pages."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from icon_bench.report import discovered as disc
from icon_bench.report.build import build_report
from icon_bench.report.commands import write_report
from icon_bench.report.discovery_search import best_so_far, importances, search_trials
from icon_bench.report.rows import load_rows, normalise_rows

STUDY = "clustering-digits-0123"
SEEDS = [100, 101, 102, 103, 104]
LOSS_A = {"p": {"name": "knn", "k": 12}, "q": {"name": "cluster", "debias": 0.2},
          "divergence": {"name": "alpha", "a": 0.4}, "lr": 0.001}
LOSS_B = {"p": {"name": "gaussian", "sigma": 0.5}, "q": {"name": "cluster"}, "divergence": {"name": "js"}, "lr": 0.01}


def _row(tid: str, seed: int, hungarian: float | None, discover: dict, *, status: str = "ok", split: str = "test",
         method: str = "pmi") -> dict:
    return {
        "trial_id": tid, "config_id": "c-" + tid.split("-")[0], "method": method, "dataset": "digits",
        "dataset_label": "digits", "seed": seed, "status": status, "split": split, "suite": "disco",
        "spec": {"method": method, "dataset": {"name": "digits"}, "seed": seed, "split": split,
                 "settings": {"epochs": 3}, "evaluate": ["hungarian"]},
        "metrics": {} if hungarian is None else {"hungarian": hungarian},
        "protocol": {"version": "1", "metrics": {"hungarian": {"higher_is_better": True, "fraction": True}}},
        "error": None if status != "failed" else "TrialError: diverged", "discover": discover,
    }


def _value(i: int) -> float:
    """Trial i's val value: p = knn adds 0.1, lr a little, divergence.a nothing (what fANOVA should find)."""
    return 0.5 + (0.1 if i % 2 == 0 else 0.0) + 0.01 * (i % 3)


def _search_rows(n: int = 10) -> list[dict]:
    """n search trials on val: knn trials carry the conditional p.k; trial 3 pruned by ASHA, trial 6 failed."""
    rows = []
    for i in range(n):
        knn = i % 2 == 0
        values = {"p": "knn" if knn else "gaussian", "q": "cluster", "divergence": "alpha", "divergence.a": 0.1 * (i % 9 + 1),
                  "lr": 10.0 ** -(2 + i % 3), **({"p.k": 5 + i} if knn else {})}
        value = _value(i)
        pruned = "asha" if i == 3 else "diverged" if i == 6 else None
        rows.append(_row(f"s{i}-search", 0, None, {
            "role": "search", "study": STUDY, "task": "clustering", "index": i, "values": values,
            "loss": LOSS_A, "metric": "hungarian", "value": None if i == 6 else value,
            "epochs": 1 if pruned else 3, "max_epochs": 3, "pruned": pruned, "higher_is_better": True,
        }, status="failed" if i == 6 else "search", split="val"))
    return rows


def _confirmation(base: dict[int, float], cands: dict[str, tuple[dict, dict[int, float]]]) -> list[dict]:
    """Baseline pmi rows at `base` (seed -> value) and candidate rows (name -> (loss, seed -> value))."""
    rows = [_row(f"b{s}-pmi", s, v, {"role": "baseline", "study": STUDY, "task": "clustering", "method": "pmi"})
            for s, v in base.items()]
    for rank, (name, (loss, values)) in enumerate(cands.items(), 1):
        rows += [_row(f"r{rank}s{s}-cand", s, v, {"role": "candidate", "study": STUDY, "task": "clustering",
                                                 "rank": rank, "values": {}, "loss": loss, "name": name,
                                                 "val_value": 0.7 - 0.01 * rank}) for s, v in values.items()]
    return rows


def _discovery(rows: list[dict]) -> pd.DataFrame:
    return disc.discovery_rows(normalise_rows(pd.DataFrame(rows)))


def _write(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


BASE = {s: 0.60 + 0.01 * k for k, s in enumerate(SEEDS)}
NOISE = [0.003, -0.002, 0.001, -0.001, 0.0]


def _only(verdicts: list[disc.Verdict]) -> disc.Verdict:
    assert len(verdicts) == 1, verdicts
    return verdicts[0]


def test_clearly_better_candidate_is_found_with_its_interval() -> None:
    better = {s: BASE[s] + 0.05 + e for s, e in zip(SEEDS, NOISE)}
    same = {s: BASE[s] + e for s, e in zip(SEEDS, NOISE[::-1])}
    v = _only(disc.verdict(_discovery(_confirmation(BASE, {"icon-aaaa0001": (LOSS_A, better),
                                                           "icon-bbbb0002": (LOSS_B, same)})), fractions=["hungarian"]))
    assert v.outcome == disc.BETTER and v.best.name == "icon-aaaa0001" and v.n == 5
    diffs = [better[s] - BASE[s] for s in SEEDS]
    ref = stats.ttest_rel([better[s] for s in SEEDS], [BASE[s] for s in SEEDS])
    assert v.best.mean_diff == pytest.approx(np.mean(diffs))
    assert v.best.p_value == pytest.approx(ref.pvalue)
    assert v.best.p_holm == pytest.approx(min(1.0, 2 * ref.pvalue))  # the smaller of two p-values, times 2
    half = stats.t.ppf(0.975, 4) * np.std(diffs, ddof=1) / math.sqrt(5)
    assert (v.best.lo, v.best.hi) == pytest.approx((np.mean(diffs) - half, np.mean(diffs) + half))
    assert v.text.startswith("found a loss better than pmi: icon-aaaa0001, hungarian (×100) +5.0 (95 % interval ")
    assert "over 5 seeds, Holm-adjusted p = " in v.text


def test_equal_candidates_find_nothing_at_five_seeds() -> None:
    cands = {"icon-aaaa0001": (LOSS_A, {s: BASE[s] + e for s, e in zip(SEEDS, NOISE)}),
             "icon-bbbb0002": (LOSS_B, {s: BASE[s] - e for s, e in zip(SEEDS, NOISE)})}
    v = _only(disc.verdict(_confirmation(BASE, cands)))  # rows as stored: dicts
    assert v.outcome == disc.NOTHING and v.text == "nothing found beats pmi at 5 seeds"
    assert {t.outcome for t in v.tests} == {"not separated"}


def test_significantly_worse_candidate_is_named() -> None:
    cands = {"icon-aaaa0001": (LOSS_A, {s: BASE[s] - 0.08 + e for s, e in zip(SEEDS, NOISE)})}
    v = _only(disc.verdict(_discovery(_confirmation(BASE, cands))))
    assert v.outcome == disc.NOTHING
    assert v.text == "nothing found beats pmi at 5 seeds; significantly worse than pmi: icon-aaaa0001"
    assert v.worse == ["icon-aaaa0001"]


def test_holm_over_candidates_turns_a_borderline_p_into_not_significant() -> None:
    borderline = [0.02, 0.04, 0.05, 0.0, 0.03]  # one-sample t p = 0.031: below 0.05 alone
    null = [0.03, -0.02, 0.01, 0.02, -0.01]  # p = 0.55
    assert 0.025 < stats.ttest_1samp(borderline, 0).pvalue < 0.05
    a = (LOSS_A, {s: BASE[s] + d for s, d in zip(SEEDS, borderline)})
    b = (LOSS_B, {s: BASE[s] + d for s, d in zip(SEEDS, null)})
    alone = _only(disc.verdict(_discovery(_confirmation(BASE, {"icon-aaaa0001": a}))))
    assert alone.outcome == disc.BETTER and alone.best.p_holm == pytest.approx(stats.ttest_1samp(borderline, 0).pvalue)
    both = _only(disc.verdict(_discovery(_confirmation(BASE, {"icon-aaaa0001": a, "icon-bbbb0002": b}))))
    assert both.outcome == disc.NOTHING and both.text == "nothing found beats pmi at 5 seeds"
    first = next(t for t in both.tests if t.name == "icon-aaaa0001")
    assert first.p_value < 0.05 <= first.p_holm == pytest.approx(2 * first.p_value)


def test_pairs_only_by_shared_seeds() -> None:
    base = {99: 0.10, **BASE}  # seed 99: baseline only
    values = {s: BASE[s] + 0.01 * (k + 1) for k, s in enumerate(SEEDS)}
    values[105] = 0.99  # candidate only: would swamp the mean if it were paired with anything
    v = _only(disc.verdict(_discovery(_confirmation(base, {"icon-aaaa0001": (LOSS_A, values)}))))
    t = v.tests[0]
    assert t.n == 5 and t.mean_diff == pytest.approx(0.03)  # 0.01 .. 0.05 on seeds 100..104


def test_too_few_pairs_give_no_verdict() -> None:
    base = {100: 0.6, 101: 0.61, 102: 0.7}
    v = _only(disc.verdict(_discovery(_confirmation(base, {"icon-aaaa0001": (LOSS_A, {100: 0.9, 101: 0.91, 107: 0.5})}))))
    assert v.outcome == disc.NO_VERDICT and v.n == 2
    assert v.text == "no verdict is possible at 2 seeds (fewer than 3 pairs with pmi)"


def test_formula_and_snippet() -> None:
    assert disc.formula(LOSS_A) == "p = knn(k=12), q = debias(cluster, 0.20), D = alpha(a=0.40); lr 1.0e-3"
    assert disc.formula(LOSS_B) == "p = gaussian(sigma=0.50), q = cluster, D = js; lr 1.0e-2"
    assert yaml.safe_load(disc.snippet("pmi", LOSS_A)) == {
        "method": "pmi", "p": {"name": "knn", "k": 12}, "q": {"name": "cluster", "debias": 0.2},
        "divergence": {"name": "alpha", "a": 0.4}, "settings": {"lr": 0.001}}
    assert disc.snippet("pmi", LOSS_A).splitlines()[1] == "p: {name: knn, k: 12}"
    odd = {**LOSS_B, "q": {"name": "<img src=x onerror=alert(1)>|`: {", "scale": 1.5}}
    assert yaml.safe_load(disc.snippet("pmi", odd))["q"] == odd["q"]  # quoted where YAML needs it


def test_search_history_best_so_far_skips_pruned_trials() -> None:
    trials = search_trials(_discovery(_search_rows()), STUDY)
    assert list(trials["index"]) == list(range(10))
    assert list(trials["pruned"].fillna("")) == ["", "", "", "asha", "", "", "diverged", "", "", ""]
    values = [_value(i) for i in range(10)]
    expected, best = [], -math.inf
    for i, v in enumerate(values):
        if i not in (3, 6):
            best = max(best, v)
        expected.append(best)
    assert best_so_far(trials) == pytest.approx(expected)
    lowest = min(v for i, v in enumerate(values) if i not in (3, 6))
    assert best_so_far(trials, higher_is_better=False)[-1] == pytest.approx(lowest)


def test_importances_from_fanova_and_without_optuna(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("optuna")
    trials = search_trials(_discovery(_search_rows(16)), STUDY)
    found = importances(trials)
    assert isinstance(found, dict) and sum(found.values()) == pytest.approx(1.0)
    # p.k is conditional (knn trials only): not in every complete trial, so not assessed; q never varied.
    assert set(found) == {"p", "divergence.a", "lr"}
    assert max(found, key=found.get) == "p" and found["p"] > 0.5  # p = knn adds 0.1: by far the largest effect
    assert importances(trials.head(5)).startswith("too few trials for importances (4 complete")
    import icon_bench.report.discovery_search as ds
    from icon_bench.extras import MissingExtra

    def missing(module: str, what: str):
        raise MissingExtra("no optuna")
    monkeypatch.setattr(ds, "require", missing)
    assert importances(trials) == "parameter importances need the tune extra: pip install 'icon-bench[tune]'"


def test_kl_generator_is_t_log_t() -> None:
    from icon_bench.report.discovery_plots import generator_values

    t = np.array([0.05, 0.5, 1.0, 2.0, 4.0])
    assert generator_values("kl", t) == pytest.approx(t * np.log(t))
    assert generator_values("tv", t) == pytest.approx(np.abs(t - 1) / 2)
    a = 0.4
    assert generator_values({"name": "alpha", "a": a}, t) == pytest.approx((a * t + 1 - a - t ** a) / (a * (1 - a)))


HOSTILE = "<script>alert('x')</script>"


def _report_rows() -> list[dict]:
    better = {s: BASE[s] + 0.05 + e for s, e in zip(SEEDS, NOISE)}
    hostile = {**LOSS_B, "q": {"name": "<img src=x onerror=alert(1)>|`", "scale": 1.5}}
    same = {s: BASE[s] + e for s, e in zip(SEEDS, NOISE[::-1])}
    return _search_rows(12) + _confirmation(BASE, {"icon-aaaa0001": (LOSS_A, better),
                                                   HOSTILE: (hostile, same)})


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("discovered")
    return write_report(_write(tmp / "results", _report_rows()), tmp / "report")


def test_search_rows_stay_out_of_the_leaderboards(report_dir: Path) -> None:
    report = build_report(report_dir.parent / "results")
    assert set(report.rows["split"]) == {"test"} and (report.rows["tune_role"] != "search").all()
    assert report.failed.empty  # the failed search trial is a search trial, not a failed trial of a table
    assert report.meta["n_search"] == 12
    assert {s.split for s in report.sections} == {"test"}
    # Found losses are tabled apart from the named methods at their defaults (one table per way of obtaining).
    assert sorted(s.kind for s in report.sections) == ["defaults", "discovered (budget 12 on val)"]
    assert len(report.discovery) == 12 + 5 + 10


def test_report_writes_the_section_csv_and_figures(report_dir: Path) -> None:
    md = (report_dir / "leaderboard.md").read_text(encoding="utf-8")
    assert "## Discovered losses" in md and "found a loss better than pmi: icon-aaaa0001" in md
    assert "p = knn(k=12), q = debias(cluster, 0.20), D = alpha(a=0.40); lr 1.0e-3" in md
    assert "each of the 12 search trials and the best so far over complete trials (2 pruned, marked" in md
    assert "| val hungarian (×100)" in md and "| 69.0 " in md  # the val value as the tables show fractions
    with (report_dir / "discovered.csv").open(encoding="utf-8", newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert {r["candidate"] for r in lines} == {"icon-aaaa0001", HOSTILE}
    first = next(r for r in lines if r["candidate"] == "icon-aaaa0001")
    assert first["outcome"] == "better" and first["pairs"] == "5" and first["baseline"] == "pmi"
    assert float(first["mean_diff"]) == pytest.approx(0.05 + np.mean(NOISE))
    pngs = sorted(report_dir.glob("discovered-*.png"))
    assert len(pngs) == 2 and any(p.name == "discovered-generators.png" for p in pngs)
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        from PIL import Image  # matplotlib depends on Pillow

        with Image.open(p) as im:
            assert im.size[0] > 300 and len(set(im.convert("L").getdata())) > 10  # drawn, not blank


def test_html_escapes_hostile_names(report_dir: Path) -> None:
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    assert 'id="discovered"' in page and 'href="#discovered"' in page
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    md = (report_dir / "leaderboard.md").read_text(encoding="utf-8")
    section = md.split("## Discovered losses", 1)[1].split("\n## ", 1)[0]
    assert "&lt;script&gt;alert" in section  # named, escaped
    import re

    # The suite snippets are fenced code (inert, pasted as typed); outside them no raw tag survives.
    prose = re.sub(r"```yaml\n.*?\n```", "", section, flags=re.S)
    assert "<script>" not in prose and "<img src=x" not in prose and "onerror" in prose


def test_regenerated_report_keeps_the_section(report_dir: Path, tmp_path: Path) -> None:
    again = write_report(report_dir, tmp_path / "again")
    assert (again / "discovered.csv").read_text() == (report_dir / "discovered.csv").read_text()
    assert len(list(again.glob("discovered-*.png"))) == 2


def test_rows_without_discovery_leave_the_report_as_it_was(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "discover"} for r in _confirmation(BASE, {})]
    out = write_report(_write(tmp_path / "results", rows), tmp_path / "report")
    assert not (out / "discovered.csv").exists() and not list(out.glob("discovered-*.png"))
    assert "Discovered" not in (out / "leaderboard.md").read_text() and 'id="discovered"' not in (out / "index.html").read_text()
    assert build_report(out).discovery.empty
    assert load_rows(out / "results.parquet").shape[0] == 5


def test_one_family_per_baseline() -> None:
    better_than_kmeans = {s: BASE[s] + e for s, e in zip(SEEDS, NOISE)}
    rows = _confirmation(BASE, {"icon-aaaa0001": (LOSS_A, better_than_kmeans)})
    rows += [_row(f"k{s}-kmeans", s, BASE[s] - 0.1 + e, {"role": "baseline", "study": STUDY, "task": "clustering",
                                                          "method": "kmeans"}, method="kmeans")
             for s, e in zip(SEEDS, NOISE[::-1])]
    got = {v.baseline: v for v in disc.verdict(_discovery(rows))}
    assert got["pmi"].text == "nothing found beats pmi at 5 seeds"
    assert got["kmeans"].outcome == disc.BETTER and got["kmeans"].best.mean_diff == pytest.approx(0.1, abs=0.01)


def test_mixture_generator_is_the_normalised_weighted_sum() -> None:
    from icon_bench.report.discovery_plots import generator_values

    t = np.linspace(0.1, 4.0, 9)
    mixed = generator_values({"name": "mixture", "kl": 1.0, "tv": 3.0}, t)
    assert mixed == pytest.approx(0.25 * t * np.log(t) + 0.75 * np.abs(t - 1) / 2)


def test_search_only_rows_give_a_section_without_verdicts(tmp_path: Path) -> None:
    out = write_report(_write(tmp_path / "results", _search_rows(8)), tmp_path / "report")
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "## Discovered losses" in md and "- no confirmation rows yet" in md
    assert [p.name.split("-")[1] for p in out.glob("discovered-*.png")] == ["history"]
    assert (out / "discovered.csv").read_text(encoding="utf-8").count("\n") == 1  # the header alone


@pytest.mark.slow
def test_section_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    """The section renders in a real browser: no console errors, no script run from a hostile name, figures drawn."""
    import importlib.util

    chromium, driver_path = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    if importlib.util.find_spec("selenium") is None or not (chromium.exists() and driver_path.exists()):
        pytest.skip("needs selenium, /usr/bin/chromium and /usr/bin/chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,1800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    try:
        driver.get((report_dir / "index.html").as_uri())
        section = driver.find_element("css selector", "#discovered")
        assert section.find_element("css selector", "li.verdict.better").text.startswith(
            "hungarian: found a loss better than pmi: icon-aaaa0001")
        assert HOSTILE in section.text  # shown as text
        images = section.find_elements("css selector", "img")
        assert len(images) == 2 and all(driver.execute_script("return arguments[0].naturalWidth", i) > 300 for i in images)
        summary = section.find_elements("css selector", "details.snippet summary")[0]
        summary.click()
        assert "p: {name: knn, k: 12}" in section.find_elements("css selector", "details.snippet pre")[0].text
        assert driver.get_log("browser") == []
        assert driver.execute_script("return typeof window.alert === 'function' && !document.querySelector('img[src=x]')")
    finally:
        driver.quit()


def test_confirmation_rows_alone_name_their_metric() -> None:
    rows = [{**r, "discover": {**r["discover"], "metric": "hungarian"}} for r in _confirmation(BASE, {
        "icon-aaaa0001": (LOSS_A, {s: BASE[s] + e for s, e in zip(SEEDS, NOISE)})})]
    assert disc.study_metric(_discovery(rows), STUDY) == ("hungarian", None)
    assert disc.study_metric(_discovery(_search_rows(3) + rows), STUDY) == ("hungarian", True)

"""Contents of leaderboard.md, leaderboard.csv, the static HTML page, and the cross-suite reports/README.md."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from icon_bench.cli import main
from icon_bench.report.commands import write_report
from icon_bench.report.formatting import format_rank, format_value
from icon_bench.report.index import build_index

_spec = importlib.util.spec_from_file_location(
    "report_fixture", Path(__file__).parent / "fixtures" / "report_fixture.py"
)
report_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_fixture)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("lb")
    results = report_fixture.make_results(tmp / "results")
    return write_report(results, tmp / "reports" / "fixture", plots=False)


def test_value_and_rank_formats() -> None:
    assert format_value(0.648, 0.002, 3, fraction=True) == "64.8 ± 0.2 (3)"
    assert format_value(0.648, float("nan"), 1, fraction=True) == "64.8 (1)"
    assert format_value(12.3456, 0.5, 2, fraction=False) == "12.35 ± 0.5 (2)"
    assert format_value(float("nan"), float("nan"), 0, fraction=True) == "–"
    assert format_rank(1, 1, 2) == "1–2" and format_rank(2, 2, 2) == "2" and format_rank(None, None, None) == "–"


def _table_after(md: str, heading: str) -> list[list[str]]:
    block = md.split(heading, 1)[1].split("\n\n|", 1)[1].split("\n\n", 1)[0]
    lines = ("|" + block).splitlines()
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_markdown_tables(report_dir: Path) -> None:
    md = (report_dir / "leaderboard.md").read_text()
    assert "## Protocol 1" in md and "## Protocol 2" in md
    assert "Fractions (hungarian, nmi, ari, knn2d, trustworthiness) are shown ×100 with one decimal." in md
    assert "- **plugins**: icon-bench 0.1.0, icon-bench-extra 0.2.0" in md
    assert "- **git commits**: 4cf8cc9" in md
    rows = _table_after(md, "### digits — clustering, defaults (protocol 1)")
    assert [r[1].split("](")[0].lstrip("[") for r in rows] == [
        "debiased_infonce_clustering · js †", "pmi · tv", "pmi · kl", "&lt;script&gt;alert(1)&lt;/script&gt; · kl",
        "kmeans †",
    ]
    assert rows[0][0] == "1–5"  # the best mean ran 2 seeds: nothing is tested against it
    assert rows[0][2] == "2/3 † failed 1"
    assert rows[0][3] == "82.0 ± 2.8 (2) †"  # averaged over 2 of the 3 seeds run
    assert rows[2][3] == "63.0 ± 3.6 (3)"
    assert rows[4][2] == "2/3 † missing 2"
    assert [r[0] for r in rows] == ["1–5", "1–3", "2–4", "3–5", "1–5"]  # bands from the three testable pairs
    v2 = _table_after(md, "### digits — clustering, defaults (protocol 2)")
    assert len(v2) == 1 and v2[0][3] == "92.0 ± 2.0 (3)"
    # Each row links to its configuration's anchor, which exists with the spec as JSON.
    anchors = re.findall(r"\(#(config-[0-9a-f]+)\)", md)
    assert anchors and all(f'<a id="{a}"></a>' in md for a in anchors)
    # Outside code fences (where GitHub shows text literally) no raw markup from a name survives.
    assert "<script>" not in re.sub(r"```json\n.*?```", "", md, flags=re.S)
    assert '"method": "<script>alert(1)</script>"' in md  # the spec itself, verbatim inside its fence


def test_markdown_lists_failed_trials_with_the_first_line_only(report_dir: Path) -> None:
    md = (report_dir / "leaderboard.md").read_text()
    failed = md.split("## Failed trials", 1)[1].split("## Configurations", 1)[0]
    assert "TrialError: loss became NaN at epoch 2 (lr too high?)" in failed
    assert "second line of detail" not in md


def test_csv_contents(report_dir: Path) -> None:
    seeds = {c: str for c in ("seeds", "expected_seeds", "missing_seeds", "failed_seeds")}
    df = pd.read_csv(report_dir / "leaderboard.csv", dtype={"config_id": str, "protocol_version": str, **seeds})
    assert len(df) == 8
    assert list(df.columns[:7]) == ["protocol_version", "split", "dataset", "primary_metric", "rank", "label", "config_id"]
    kmeans = df[df["method"] == "kmeans"].iloc[0]
    assert kmeans["n"] == 2 and kmeans["n_expected"] == 3 and not kmeans["complete"]
    assert kmeans["missing_seeds"] == "2" and kmeans["hungarian_mean"] == pytest.approx(0.52)  # unscaled
    dic = df[df["method"] == "debiased_infonce_clustering"].iloc[0]
    assert dic["failed_seeds"] == "1" and dic["seeds"] == "0 2"
    pmi_kl = df[(df["method"] == "pmi") & (df["divergence"] == "kl")]
    assert sorted(pmi_kl["protocol_version"]) == ["1", "2"]
    assert sorted(pmi_kl["hungarian_mean"].round(4)) == [0.63, 0.92]
    assert df[df["dataset"] == "blobs"]["primary_metric"].unique().tolist() == ["knn2d"]


def test_html_is_escaped_and_self_contained(report_dir: Path) -> None:
    page = (report_dir / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page
    assert page.count("<script>") == 1
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "Content-Security-Policy" in page
    assert 'id="config-' in page and 'href="#config-' in page


def test_cross_suite_index(report_dir: Path, tmp_path: Path) -> None:
    reports = report_dir.parent
    (reports / "not-a-suite").mkdir(exist_ok=True)  # no leaderboard.md: ignored
    assert main(["leaderboard", str(reports)]) == 0
    readme = (reports / "README.md").read_text()
    assert "[fixture](fixture/leaderboard.md)" in readme and "[page](fixture/index.html)" in readme
    assert "not-a-suite" not in readme
    best = {tuple(r[:3]): r for r in _table_after(readme, "## Best configuration per dataset and task")}
    # The incomplete debiased_infonce_clustering (82.0) does not beat the complete pmi · tv.
    clustering = best[("1", "digits", "clustering")]
    assert clustering[3] == "hungarian" and clustering[4].startswith("[pmi · tv](fixture/index.html#config-")
    assert clustering[5] == "71.0 ± 1.0 (3)"
    assert best[("1", "blobs", "dimensionality reduction")][5] == "91.0 ± 1.0 (3)"
    assert best[("2", "digits", "clustering")][5] == "92.0 ± 2.0 (3)"  # protocol 2 on its own line
    assert ("1", "digits", "representation") not in best
    empty = build_index(tmp_path)
    assert "No suite reports yet" in empty.read_text()


def test_a_value_over_fewer_seeds_is_marked_even_in_a_complete_row(tmp_path: Path) -> None:
    rows = report_fixture.load_rows()
    for r in rows:
        if r["method"] == "pmi" and r["divergence"] == "tv" and r["seed"] == 2:
            del r["metrics"]["nmi"]  # the trial ran, but this metric is missing
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = write_report(path, tmp_path / "report", plots=False)
    pmi_tv = next(r for r in _table_after((out / "leaderboard.md").read_text(), "### digits — clustering, defaults (protocol 1)")
                  if r[1].startswith("[pmi · tv]"))
    assert pmi_tv[2] == "3/3"  # all trials ok ...
    assert pmi_tv[3] == "71.0 ± 1.0 (3)" and pmi_tv[4] == "60.5 ± 0.7 (2) †"  # ... but nmi has two values


def _rescored_blobs(declare: bool) -> list[dict]:
    """Blobs trials scored by "distortion" in [0, 1] (kl 0.20-0.22, tv 0.60-0.62), declared lower-is-better, not x100."""
    rows = [r for r in report_fixture.load_rows() if r["dataset"] == "blobs"]
    for r in rows:
        r["metrics"] = {"distortion": (0.2 if r["divergence"] == "kl" else 0.6) + 0.01 * r["seed"]}
        if declare:
            r["protocol"]["metrics"] = {"distortion": {"higher_is_better": False, "fraction": False}}
    return rows


@pytest.mark.parametrize("declare", [True, False])
def test_declared_metric_kinds_rank_and_format_the_leaderboard(tmp_path: Path, declare: bool) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rescored_blobs(declare)))
    out = write_report(path, tmp_path / "report", plots=declare)
    md = (out / "leaderboard.md").read_text()
    table = _table_after(md, "### blobs — distortion, defaults (protocol 1)")
    order = [r[1].split("](")[0].lstrip("[") for r in table]
    df = pd.read_csv(out / "leaderboard.csv", dtype={"config_id": str, "protocol_version": str})
    if declare:  # ascending, shown as measured
        assert order == ["tsne · kl", "tsne · tv"] and [r[0] for r in table] == ["1", "2"]  # identical over seeds
        assert table[0][3] == "0.21 ± 0.01 (3)" and "(×100)" not in md
        assert "Lower is better for distortion; higher for the rest." in md and "Fractions (" not in md
        names = {p.name.split("-")[0] for p in out.glob("*.png")}
        assert "metrics" in names and "grid" not in names  # one method: a one-column grid would say nothing
    else:  # old rows: guessed from values in [0, 1] as a higher-is-better fraction, as before
        assert order == ["tsne · tv", "tsne · kl"]
        assert table[1][3] == "21.0 ± 1.0 (3)" and "distortion (×100)" in md and "Lower is better" not in md
    # The CSV follows the same order and keeps values unscaled either way.
    assert list(df["divergence"]) == [o.split(" · ")[1] for o in order] and list(df["rank"]) == [1, 2]
    assert df["distortion_mean"].round(4).tolist() == ([0.21, 0.61] if declare else [0.61, 0.21])

"""The README's "Measured results" block is generated from the committed reports and agrees with them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from icon_bench.errors import DataError
from icon_bench.report.measured import END, START, measured_block, update_readme

REPO = Path(__file__).resolve().parent.parent


def test_the_readme_block_is_the_one_the_committed_reports_generate(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert START in readme and END in readme, "README.md lost its measured-results markers"
    block = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == measured_block(REPO / "reports").strip(), (
        "README's Measured results differ from reports/: run `icon-bench leaderboard reports --readme README.md`"
    )


def test_the_block_copies_each_leaderboards_leaders_with_links(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    shutil.copytree(REPO / "reports" / "tuned_quickstart", reports / "tuned_quickstart")
    text = measured_block(reports)
    lines = [line for line in text.splitlines() if line.startswith("| [tuned_quickstart]")]
    assert len(lines) == 2  # the tuned table and the defaults table, never merged
    import pandas as pd

    csv = pd.read_csv(reports / "tuned_quickstart" / "leaderboard.csv", dtype={"config_id": str})
    top = csv[(csv["kind"].str.startswith("tuned")) & (csv["rank"] == 1)].iloc[0]
    want = f"{top['label']}](reports/tuned_quickstart/leaderboard.md#config-{top['config_id']}) {100 * top['hungarian_mean']:.1f}"
    assert want in lines[0]


def test_update_readme_rewrites_only_the_block_and_needs_the_markers(tmp_path: Path) -> None:
    reports = tmp_path / "docs" / "reports"
    shutil.copytree(REPO / "reports" / "quickstart", reports / "quickstart")
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{START}\nstale figures\n{END}\nafter\n", encoding="utf-8")
    update_readme(readme, reports)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{END}\nafter\n") and "stale" not in text
    assert "(docs/reports/quickstart/leaderboard.md" in text  # links relative to the README
    update_readme(readme, reports)
    assert readme.read_text(encoding="utf-8") == text  # idempotent
    readme.write_text("# no block\n", encoding="utf-8")
    with pytest.raises(DataError, match="no measured-results block"):
        update_readme(readme, reports)


def _bands(md: str, heading: str) -> dict[str, tuple[int, int]]:
    """Configuration label -> its rank band, read from one table of a committed leaderboard.md."""
    block = md.split(heading, 1)[1].split("\n\n|", 1)[1].split("\n\n", 1)[0]
    out = {}
    for line in ("|" + block).splitlines()[2:]:
        rank, label = (c.strip() for c in line.strip("|").split(" | ")[:2])
        lo, _, hi = rank.partition("–")
        out[label.split("](")[0].lstrip("[").rstrip(" †⚠")] = (int(lo), int(hi or lo))
    return out


def test_the_committed_quickstart_page_separates_nothing_its_paired_tests_deny() -> None:
    """Two configurations with disjoint rank bands must differ in a paired test of the rows on that page."""
    import pandas as pd
    from scipy import stats

    from icon_bench.report.rows import normalise_rows

    page = REPO / "reports" / "quickstart"
    bands = _bands((page / "leaderboard.md").read_text(encoding="utf-8"), "### digits — clustering, defaults")
    assert bands, "the quickstart page lost its clustering table"
    rows = normalise_rows(pd.read_parquet(page / "results.parquet"))
    board = pd.read_csv(page / "leaderboard.csv", dtype={"config_id": str})
    ids = dict(zip(board["label"], board["config_id"]))
    values = {label: dict(zip(g["seed"], g["metrics.hungarian"])) for label, cid in ids.items()
              for _, g in [(None, rows[rows["config_id"] == cid])] if label in bands}
    for a, (lo_a, hi_a) in bands.items():
        for b, (lo_b, _) in bands.items():
            if hi_a < lo_b:  # the page says a ranks above b
                seeds = sorted(set(values[a]) & set(values[b]))
                assert len(seeds) >= 3, f"{a} above {b} on {len(seeds)} paired seeds"
                p = stats.ttest_rel([values[a][s] for s in seeds], [values[b][s] for s in seeds]).pvalue
                assert p < 0.05, f"{a} above {b} but the paired t test gives p = {p:.3f}"

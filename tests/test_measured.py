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

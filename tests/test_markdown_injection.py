"""User text in every Markdown output is shown as typed, never as a link, an image or HTML (issue 22 item 3)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from icon_bench.report.commands import write_report
from icon_bench.report.formatting import _code, _md
from icon_bench.report.index import build_index
from icon_bench.report.measured import END, START, update_readme

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py (the test extra) renders the Markdown")

_spec = importlib.util.spec_from_file_location("report_fixture", Path(__file__).parent / "fixtures" / "report_fixture.py")
report_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_fixture)

#: Each would load or link something external if it reached the Markdown as it is.
PAYLOADS = [
    "![x](http://host/t.png)",
    "[click](http://host/a)",
    "<img src=http://host/i.png>",
    "<http://host/auto>",
    "see http://host/bare and www.host.example",
    "a | b ` c\n[ref]: http://host/def\n[ref]",
    "![y][r]\n\n[r]: http://host/r.png",
]


def _html(markdown: str) -> str:
    return markdown_it.MarkdownIt("commonmark").enable("table").render(markdown)


def _external(html: str) -> list[str]:
    """Every external resource or link in rendered HTML."""
    return re.findall(r"<img[^>]*>|href=\"[a-z]+:[^\"]*\"|src=\"[a-z]+:[^\"]*\"", html, flags=re.I)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_md_and_code_keep_a_payload_inert(payload: str) -> None:
    for text in (_md(payload), _code(payload)):
        for cell in (text, f"| a | b |\n|---|---|\n| {text} | x |"):
            html = _html(cell)
            assert not _external(html), (cell, html)
            assert "host" in html  # shown, not dropped
    # No bare URL a GitHub autolink would take up, no raw line break that ends a table row.
    assert "://" not in _md(payload) and "www." not in _md(payload) and "\n" not in _md(payload)


def _poisoned_results(folder: Path) -> Path:
    rows = report_fixture.load_rows()
    for i, row in enumerate(rows):
        payload = PAYLOADS[i % len(PAYLOADS)]
        row["dataset_label"] = PAYLOADS[0] if row["dataset"] == "digits" else PAYLOADS[1]
        if row["status"] != "ok":
            row["error"] = payload
        row["warnings"] = [f"diverged: {PAYLOADS[2]}"] if i == 1 else row.get("warnings", [])
        row["spec"]["settings"]["note"] = payload  # a grid value: part of the configuration labels
    results = folder / "results"
    report_fixture.make_results(results)
    (results / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return results


def test_no_markdown_output_loads_or_links_anything_external(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    write_report(_poisoned_results(tmp_path), reports / "fixture", plots=False)
    index = build_index(reports)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{START}\n{END}\n")
    update_readme(readme, reports)
    outputs = {"leaderboard.md": reports / "fixture" / "leaderboard.md", "reports/README.md": index, "README block": readme}
    for name, path in outputs.items():
        text = path.read_text(encoding="utf-8")
        assert "host" in text, f"{name}: the payloads reach it"
        # Outside code (where nothing is a link, on GitHub either), no bare URL an autolink could take up.
        prose = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))
        assert "http://host" not in prose and "www.host" not in prose, name
        html = _html(text)
        assert not _external(html), (name, _external(html))

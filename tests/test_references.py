"""Published reference numbers: the shipped figures, the register_references hook, rendering beside measured rows."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from icon_bench import testing
from icon_bench.cli import main
from icon_bench.errors import IconBenchError
from icon_bench.hooks import registry
from icon_bench.report.build import build_report
from icon_bench.report.commands import write_report
from icon_bench.report.references import Reference, load_references, matching

_spec = importlib.util.spec_from_file_location("report_fixture", Path(__file__).parent / "fixtures" / "report_fixture.py")
report_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_fixture)

HOSTILE = "<script>alert('ref')</script>"
PLUGIN = f'''
from icon_bench import hookimpl


@hookimpl
def register_references(register):
    register("hostile", lambda: [
        {{"key": "digits", "paper": "{HOSTILE} et al.", "arxiv": "2601.00001", "table": "Table <b>2</b>",
          "dataset": "digits", "setting": {{"backbone": "<img src=x onerror=alert(1)>"}}, "method": "pmi",
          "divergence": "kl", "metric": "hungarian", "value": 97.5, "pm": 0.3, "source": "{HOSTILE} | row"}},
        {{"key": "digits", "paper": "{HOSTILE} et al.", "arxiv": "2601.00001", "table": "Table <b>2</b>",
          "dataset": "digits", "setting": {{"backbone": "<img src=x onerror=alert(1)>"}}, "method": "pmi",
          "divergence": "kl", "metric": "nmi", "value": 93.0, "source": "{HOSTILE} | row"}},
        {{"key": "cifar10-resnet50", "paper": "Elsewhere", "dataset": "CIFAR-10", "method": "supcon",
          "metric": "knn", "value": 1.0}},
    ])
'''


def _shipped() -> dict[tuple[str, str, str | None, str], float]:
    refs = load_references(registry.load_registry(entry_points=False), strict=True)
    return {(r.key, r.method, r.divergence, r.metric): r.value for r in refs}


def test_shipped_figures_are_the_papers_and_name_their_sources() -> None:
    got = _shipped()
    keys = ["imagenet1k-dinov2-vits14", "imagenet1k-dinov2-vitb14", "imagenet1k-dinov2-vitl14"]
    expected = {
        ("kmeans", None): [51.84, 52.26, 53.36],
        ("debiased_infonce_clustering", "kl"): [57.8, 64.75, 67.52],
        ("pmi", "tv"): [55.90, 65.13, 68.40],
        ("pmi", "js"): [53.50, 63.80, 66.60],
        ("pmi", "hellinger"): [54.90, 63.80, 67.85],
    }
    for (method, divergence), values in expected.items():
        assert [got[(k, method, divergence, "hungarian")] for k in keys] == values
    cifar = {"kl": (90.03, 89.61), "tv": (83.23, 82.95), "hellinger": (90.47, 90.40), "js": (90.84, 90.62)}
    for divergence, (probe, knn) in cifar.items():
        assert got[("cifar10-resnet50", "supcon", divergence, "linear_probe")] == probe
        assert got[("cifar10-resnet50", "supcon", divergence, "knn")] == knn
    assert got[("imagenet1k-msn-vitl", "temi", None, "hungarian")] == 61.6  # TEMI's abstract
    refs = load_references(registry.load_registry(entry_points=False))
    assert {r.arxiv for r in refs} == {"2504.16929", "2509.04734", "2303.17896"}
    assert all(r.source and r.paper and r.dataset and r.setting.get("backbone") for r in refs)
    assert all(r.origin.endswith("(icon-bench)") for r in refs)


def test_register_references_plugin_entries_render_escaped_beside_measured_rows(
    site: Callable[..., str], tmp_path: Path
) -> None:
    site("icon-bench-hostile-refs", PLUGIN, entry="hostile_refs")
    registry.set_registry(None)
    assert testing.check_plugin("icon-bench-hostile-refs") == ["reference:hostile"]
    results = report_fixture.make_results(tmp_path / "results")
    plain = build_report(results, references=[])
    report = build_report(results)
    digits = [s for s in report.sections if s.dataset == "digits" and s.task == "clustering"]
    assert digits and all(len(s.references) == 2 for s in digits)  # hungarian and nmi, not the CIFAR one
    # Never ranked with the measured rows: their ranks are what they are without any reference.
    for with_refs, without in zip(report.sections, plain.sections):
        assert with_refs.table["hungarian_rank"].tolist() == without.table["hungarian_rank"].tolist()

    out = write_report(results, tmp_path / "report", plots=False)
    md = (out / "leaderboard.md").read_text()
    published = md.split("### digits — clustering, defaults (protocol 1)", 1)[1].split("###", 1)[0].split("Published figures", 1)[1]
    row = next(line for line in published.splitlines() if line.startswith("| published"))
    assert "97.5 ± 0.3" in row and "93.0" in row and "&lt;script&gt;" in row
    assert HOSTILE not in md and "<img" not in md and "<b>" not in md

    page = (out / "index.html").read_text()
    assert "alert('ref')" not in page.replace("&lt;script&gt;alert(&#x27;ref&#x27;)&lt;/script&gt;", "")
    assert "<img src=x" not in page and "<b>2</b>" not in page
    assert "&lt;script&gt;alert(&#x27;ref&#x27;)&lt;/script&gt; et al." in page
    # Below the measured rows, in a tbody of its own (the sort script reorders only the first one).
    table = page.split("digits — clustering", 1)[1].split("</table>", 1)[0]
    assert table.index("<tbody>") < table.index('<tbody class="published">')
    assert re.search(r'<tr class="published"[^>]*><td class="num">published</td>', table)

    assert HOSTILE not in (out / "leaderboard.csv").read_text()  # leaderboards hold measured rows only
    refs_csv = pd.read_csv(out / "references.csv")
    assert set(refs_csv["metric"]) == {"hungarian", "nmi"} and set(refs_csv["protocol_version"].astype(str)) == {"1", "2"}


def test_a_broken_reference_set_is_skipped_with_its_name(site: Callable[..., str]) -> None:
    site("icon-bench-bad-refs", '''
from icon_bench import hookimpl

@hookimpl
def register_references(register):
    register("bad", lambda: [{"key": "digits", "paper": "P", "dataset": "d", "method": "m", "metric": "knn",
                              "value": "high"}])
''', entry="bad_refs")
    reg = registry.load_registry()
    with pytest.warns(UserWarning, match=r"skipping reference set 'bad' \(icon-bench-bad-refs\): entry 0: value"):
        refs = load_references(reg)
    assert refs and all(r.origin != "bad (icon-bench-bad-refs)" for r in refs)
    with pytest.raises(IconBenchError, match="reference set 'bad'"):
        load_references(reg, strict=True)
    with pytest.raises(testing.ConformanceError, match="valid entries"):
        testing.check_reference("bad", registry=reg)


def test_matching_needs_the_key_and_a_reported_metric() -> None:
    ref = Reference(key="cifar10-resnet50", paper="P", dataset="CIFAR-10", method="supcon", metric="knn", value=90.0)
    assert matching([ref], "cifar10-resnet50", ["linear_probe", "knn"]) == [ref]
    assert matching([ref], "cifar10", ["knn"]) == [] and matching([ref], "cifar10-resnet50", ["hungarian"]) == []
    with pytest.raises(ValueError, match="arxiv"):
        Reference(key="k", paper="P", dataset="d", method="m", metric="knn", value=1.0, arxiv="arXiv:1234")


def test_references_command_lists_and_filters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["references", "--key", "cifar10-resnet50"]) == 0
    out = capsys.readouterr().out
    assert "90.84" in out and "arXiv 2509.04734" in out and "imagenet1k" not in out
    assert main(["references", "--json", "--key", "imagenet1k-dinov2-vitb14"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert {e["value"] for e in entries if e["method"] == "debiased_infonce_clustering"} == {64.75}
    assert main(["references", "--key", "cifar10-resnet5"]) == 2
    assert "did you mean 'cifar10-resnet50'" in capsys.readouterr().err

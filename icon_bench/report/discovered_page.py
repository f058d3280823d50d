"""The report's Discovered section: per study its verdicts, candidates, search history and importances, in Markdown and HTML."""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from icon_bench.report import discovered as disc
from icon_bench.report.compare import format_diff
from icon_bench.report.discovery_search import importances, search_trials

if TYPE_CHECKING:
    from icon_bench.report.model import Report

NOTE = (
    "A TPE search over the I-Con space (p kernel, q kernel, divergence and their parameters, lr) on the val split "
    "proposed each study's candidates; the top ones by val were then run on test with fresh seeds the search never "
    "used, beside the task's named methods at their defaults. Each candidate is paired with each baseline by seed "
    "(only seeds both have) and the paired t test's p-values are Holm-corrected over the study's candidates, one "
    "family per baseline and metric. Differences are candidate minus baseline; fractions are shown ×100."
)
TEST_HEADERS = ["candidate", "baseline", "metric", "pairs", "mean difference", "95 % interval", "p", "p (Holm)", "outcome"]
CANDIDATE_HEADERS = ["rank", "name", "loss", "val", "test seeds"]


@dataclass
class Study:
    """One study (task x dataset) as the section shows it."""

    study: str
    task: str
    dataset: str
    metric: str
    higher_is_better: bool
    trials: pd.DataFrame
    candidates: list[dict[str, Any]]
    verdicts: list[disc.Verdict]
    importances: dict[str, float] | str
    plots: list[tuple[str, Path]] = field(default_factory=list)


@dataclass
class Discovery:
    """The Discovered section: its studies, every verdict, and the generator figure (caption, path)."""

    studies: list[Study]
    verdicts: list[disc.Verdict]
    generators: tuple[str, Path] | None = None


def summarise(report: Report) -> Discovery | None:
    """The section's content from `report.discovery` (None when the rows hold no discovery)."""
    rows = report.discovery
    if rows is None or rows.empty:
        return None
    lower, fractions = report.meta.get("lower_is_better", []), report.meta.get("fraction_metrics", [])
    verdicts = disc.verdict(rows, lower=lower, fractions=fractions)
    studies = []
    for study in dict.fromkeys(rows["study"]):
        sub = rows[rows["study"] == study]
        metric, hib = disc.study_metric(rows, study)
        higher = hib if hib is not None else metric not in lower
        trials = search_trials(rows, study)
        studies.append(Study(
            study, next((t for t in sub["task"] if t), ""), ", ".join(dict.fromkeys(map(str, sub["dataset"]))),
            metric or "?", higher, trials, disc.candidates(rows, study),
            [v for v in verdicts if v.study == study], importances(trials, higher)))
    return Discovery(studies, verdicts)


#: Said above the verdicts on metrics the search did not select on.
OTHER_METRICS = ("Other metrics, for information: the search selected on {metric}, and these lines are not "
                 "corrected for looking at several metrics, so a \"better\" here is weaker evidence.")


def split_verdicts(study: Study) -> tuple[list[disc.Verdict], list[disc.Verdict]]:
    """(the verdicts on the metric the search selected on, those on the other metrics)."""
    return ([v for v in study.verdicts if v.metric == study.metric],
            [v for v in study.verdicts if v.metric != study.metric])


def make_figures(discovery: Discovery, out: Path, fractions: set[str] = frozenset()) -> list[Path]:
    """Each study's history figure and the generators figure (`discovered-*.png`); a failing figure is warned."""
    from icon_bench.report.discovery_plots import plot_generators, plot_history, stem

    paths = []
    jobs: list[tuple[Path, Callable[[Path], str | None], list]] = []
    for s in discovery.studies:
        s.plots = []
        title = f"{s.task} · {s.dataset}"
        jobs.append((out / f"discovered-history-{stem(s.study)}.png",
                     lambda p, s=s, title=title: plot_history(s.trials, p, metric=s.metric,
                                                             higher_is_better=s.higher_is_better, title=title,
                                                             scale=100.0 if s.metric in fractions else 1.0), s.plots))
    found = {disc.component_text(c["loss"]["divergence"]): c["loss"]["divergence"]
             for s in discovery.studies for c in s.candidates if c["loss"].get("divergence") is not None}
    holder: list[tuple[str, Path]] = []
    if found:
        jobs.append((out / "discovered-generators.png", lambda p: plot_generators(found, p), holder))
    for path, draw, into in jobs:
        try:
            caption = draw(path)
        except Exception as exc:  # noqa: BLE001 - one bad figure must not lose the report
            warnings.warn(f"discovery figure {path.name} failed: {exc}", stacklevel=2)
            continue
        if caption:
            into.append((caption, path))
            paths.append(path)
    discovery.generators = holder[0] if holder else None
    return paths


def write_files(report: Report, out: Path) -> None:
    """discovered.csv (the verdicts, one line per candidate test) and discovery.json (the rows, for regenerating)."""
    if report.discovered is None:
        return
    formulas = {c["name"]: c["formula"] for s in report.discovered.studies for c in s.candidates}
    disc.write_csv(report.discovered.verdicts, out / disc.CSV_FILE, formulas)
    disc.write_rows(report.discovery, out / disc.DISCOVERY_FILE)


def _val(value: Any, frac: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value) * 100:.1f}" if frac else f"{float(value):.4g}"


def pair_rows(study: Study, fractions: set[str]) -> list[list[str]]:
    """Cells of the paired tests table (`TEST_HEADERS`)."""
    out = []
    for v in study.verdicts:
        frac = v.metric in fractions
        for t in v.tests:
            interval = "–" if math.isnan(t.lo) or t.lo == t.hi else f"[{format_diff(t.lo, frac)}, {format_diff(t.hi, frac)}]"
            out.append([t.name, v.baseline, v.metric + (" (×100)" if frac else ""), str(t.n), format_diff(t.mean_diff, frac),
                        interval, "–" if math.isnan(t.p_value) else f"{t.p_value:.3g}",
                        "–" if math.isnan(t.p_holm) else f"{t.p_holm:.3g}", t.outcome])
    return out


def candidate_headers(study: Study, fractions: set[str]) -> list[str]:
    """`CANDIDATE_HEADERS` with the val column naming its metric."""
    val = f"val {study.metric}" + (" (×100)" if study.metric in fractions else "")
    return [val if h == "val" else h for h in CANDIDATE_HEADERS]


def candidate_rows(study: Study, fractions: set[str]) -> list[list[str]]:
    """Cells of the candidates table (`CANDIDATE_HEADERS`)."""
    frac = study.metric in fractions
    return [["–" if c["rank"] is None else str(c["rank"]), c["name"], c["formula"], _val(c["val_value"], frac),
             ", ".join(map(str, sorted({s for s in c["seeds"] if s is not None}, key=str))) or "none"]
            for c in study.candidates]


def importance_text(study: Study) -> list[tuple[str, str]] | str:
    """(parameter, importance) lines, or the sentence saying why there are none."""
    if isinstance(study.importances, str):
        return study.importances
    return [(k, f"{v:.3f}") for k, v in study.importances.items()]


def heading(study: Study) -> str:
    """A study's title: task, dataset, study id, search size and metric."""
    n = len(study.trials)
    return f"{study.task or 'task?'} · {study.dataset} (study {study.study}: {n} search trials on val, {study.metric})"


# ----------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------


def markdown_lines(report: Report, md: Callable[[Any], str], table: Callable[..., str]) -> list[str]:
    """The section for leaderboard.md; `md` escapes user text, `table(body, headers)` draws a table."""
    found = report.discovered
    if found is None:
        return []
    fractions = set(report.meta.get("fraction_metrics", []))
    lines = ["## Discovered losses", "", md(NOTE), ""]
    for s in found.studies:
        lines += [f"### {md(heading(s))}", ""]
        primary, other = split_verdicts(s)
        lines += [f"- **{md(v.metric)}**: {md(v.text)}" for v in primary] or ["- no confirmation rows yet"]
        if other:
            lines += ["", md(OTHER_METRICS.format(metric=s.metric)), ""]
            lines += [f"- {md(v.metric)}: {md(v.text)}" for v in other]
        lines += [""]
        if s.candidates:
            lines += [table([[md(c) for c in r] for r in candidate_rows(s, fractions)],
                            [md(h) for h in candidate_headers(s, fractions)]), ""]
            for c in s.candidates:
                lines += [f"`{md(c['name'])}` as a suite method:", "", "```yaml",
                          c["snippet"].replace("```", "` ` `"), "```", ""]
        if pair_rows(s, fractions):
            lines += [table([[md(c) for c in r] for r in pair_rows(s, fractions)], TEST_HEADERS), ""]
        imp = importance_text(s)
        lines += [f"Parameter importances (fANOVA over complete search trials): {md(imp)}", ""] if isinstance(imp, str) \
            else ["Parameter importances (fANOVA over complete search trials):", "",
                  table([[md(k), v] for k, v in imp], ["parameter", "importance"]), ""]
        lines += [f"![{md(c)}]({p.name})" for c, p in s.plots] + [""]
    if found.generators:
        lines += [f"![{md(found.generators[0])}]({found.generators[1].name})", ""]
    return lines


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: list[str], body: list[list[str]], cls: str) -> str:
    heads = "".join(f'<th scope="col" data-type="text" tabindex="0">{_e(h)}</th>' for h in headers)
    trs = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in body)
    return (f'<div class="table-wrap"><table class="sortable {cls}"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{trs}</tbody></table></div>")


def html_section(report: Report, img: Callable[[Path, str], str]) -> str:
    """The section for index.html, every string escaped; `img(path, alt)` inlines a figure."""
    found = report.discovered
    if found is None:
        return ""
    fractions = set(report.meta.get("fraction_metrics", []))
    parts = [f'<section id="discovered"><h2>Discovered losses</h2><p>{_e(NOTE)}</p>']
    for s in found.studies:
        parts.append(f'<article class="discovery"><h3>{_e(heading(s))}</h3><ul class="verdicts">')
        primary, other = split_verdicts(s)
        parts += [f'<li class="verdict {_e(v.outcome.replace(" ", "-"))}"><b>{_e(v.metric)}</b>: {_e(v.text)}</li>'
                  for v in primary] or ["<li>no confirmation rows yet</li>"]
        parts.append("</ul>")
        if other:
            parts.append(f'<p class="other-metrics">{_e(OTHER_METRICS.format(metric=s.metric))}</p><ul class="verdicts other">')
            parts += [f"<li>{_e(v.metric)}: {_e(v.text)}</li>" for v in other]
            parts.append("</ul>")
        if s.candidates:
            parts.append(_table(candidate_headers(s, fractions), candidate_rows(s, fractions), "candidates"))
            parts += [f'<details class="snippet"><summary>{_e(c["name"])} as a suite method</summary>'
                      f'<pre>{_e(c["snippet"])}</pre></details>' for c in s.candidates]
        if pair_rows(s, fractions):
            parts.append(_table(TEST_HEADERS, pair_rows(s, fractions), "discovery-tests"))
        imp = importance_text(s)
        parts.append(f'<p class="importances">Parameter importances (fANOVA over complete search trials): {_e(imp)}</p>'
                     if isinstance(imp, str) else
                     '<h4>Parameter importances (fANOVA over complete search trials)</h4>'
                     + _table(["parameter", "importance"], [list(r) for r in imp], "importances"))
        figs = "".join(f"<figure>{img(p, c)}<figcaption>{_e(c)}</figcaption></figure>" for c, p in s.plots if p.is_file())
        parts.append(f'<div class="plots">{figs}</div></article>' if figs else "</article>")
    if found.generators and found.generators[1].is_file():
        caption, path = found.generators
        parts.append(f'<div class="plots"><figure>{img(path, caption)}<figcaption>{_e(caption)}</figcaption></figure></div>')
    return "".join(parts) + "</section>"

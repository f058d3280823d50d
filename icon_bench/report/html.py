"""The report as one self-contained HTML page (inline CSS, JS and figures)."""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icon_bench.report import discovered_page
from icon_bench.report.formatting import PUBLISHED, _anchor, _fractions, _lower, _missing
from icon_bench.report.obtained import COMPARE_NOTE, comparison_groups, how_obtained
from icon_bench.report.tables import (
    COMPARE_HEADERS,
    _intro_lines,
    _labels,
    _legend,
    section_rows,
    section_title,
    trial_details,
)

if TYPE_CHECKING:
    import pandas as pd

    from icon_bench.report.model import Report, Section


def _asset(name: str) -> str:
    return resources.files("icon_bench.report").joinpath("templates", name).read_text(encoding="utf-8")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _sort_attr(value: Any) -> str:
    return "" if _missing(value) else _e(repr(float(value)))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}" loading="eager">'


def _html_table(section: Section, fractions: set[str], lower_better: set[str]) -> str:
    headers, rows = section_rows(section, fractions)
    lower = [m in lower_better for m in section.metrics]
    ths = []
    for i, h in enumerate(headers):
        kind = "text" if i == 1 or h == "selected on val" else "num"
        ths.append(f'<th data-type="{kind}" scope="col" tabindex="0">{_e(h)}</th>')
    body = []
    for r in rows:
        classes = " ".join(c for c, on in (("incomplete", not r["complete"]), ("warned", r["warnings"])) if on)
        cls = f' class="{classes}"' if classes else ""
        tds = [
            f'<td class="num" data-sort="{_sort_attr(r["rank_sort"])}">{_e(r["rank"])}</td>',
            f'<td class="cfg"><a href="#{_anchor(r["config_id"])}">{_e(r["label"])}</a></td>',
            f'<td class="seeds" data-sort="{_e(r["n"])}">{_e(r["seeds"])}</td>',
        ]
        if section.tuned:
            tds.append(f'<td class="selected">{_e(r["selected"])}</td>')
        for (text, mean, rank, tied), low in zip(r["metrics"], lower):
            best = ' best' if tied else ""  # the best and every configuration the paired tests cannot separate from it
            tip = f"rank {rank}" + (", not separated from the best" if tied else "") + (" (lower is better)" if low else "")
            tds.append(f'<td class="num{best}" data-sort="{_sort_attr(mean)}" title="{_e(tip)}">{_e(text)}</td>')
        body.append(f"<tr{cls}>" + "".join(tds) + "</tr>")
    return (
        '<div class="table-wrap"><table class="sortable filterable">'
        f"<thead><tr>{''.join(ths)}</tr></thead><tbody>{''.join(body)}</tbody>{_published_tbody(section)}</table></div>"
    )


def _published_tbody(section: Section) -> str:
    """Published figures as a second tbody: below the measured rows, outside what the sort reorders."""
    from icon_bench.report.references import reference_rows

    if not section.references:
        return ""
    trs = []
    for r in reference_rows(section.references, section.metrics):
        cells = "".join(f'<td class="num">{_e(c)}</td>' for c in r["cells"])
        trs.append(
            f'<tr class="published" title="{_e(r["source"])}"><td class="num">{_e(PUBLISHED)}</td>'
            f'<td class="cfg">{_e(r["label"])}<br><small>{_e(r["citation"])}</small></td><td>–</td>{cells}</tr>'
        )
    return f'<tbody class="published">{"".join(trs)}</tbody>'


def _trial_section(frame: pd.DataFrame, sid: str, title: str, detail: str) -> str:
    """A section listing trials (failed or warned): trial, protocol, configuration, dataset, seed and `detail`."""
    trs = "".join(
        f'<tr><td><code>{_e(r.trial_id)}</code></td><td>{_e(r.protocol_version)}</td>'
        f'<td><a href="#{_anchor(r.config_id)}">{_e(r.label)}</a></td><td>{_e(r.dataset)}</td>'
        f'<td class="num" data-sort="{_e(r.seed)}">{_e(r.seed)}</td><td class="{detail}">{_e(text)}</td></tr>'
        for r, text in zip(frame.itertuples(), trial_details(frame))
    )
    heads = "".join(
        f'<th data-type="{t}" scope="col" tabindex="0">{h}</th>'
        for h, t in (("trial", "text"), ("protocol", "text"), ("configuration", "text"),
                     ("dataset", "text"), ("seed", "num"), (detail, "text"))
    )
    return (
        f'<section id="{sid}"><h2>{_e(title)}</h2><div class="table-wrap">'
        f'<table class="sortable filterable {sid}"><thead><tr>{heads}</tr></thead><tbody>{trs}</tbody></table>'
        "</div></section>"
    )


def _comparison_section(report: Report, groups: list[tuple[str, list[list[str]]]]) -> str:
    """The paired comparisons: one sortable table per dataset, split and kind."""
    heads = "".join(
        f'<th data-type="{"num" if h == "pairs" else "text"}" scope="col" tabindex="0">{_e(h)}</th>'
        for h in COMPARE_HEADERS
    )
    tables = "".join(
        f"<h3>{_e(title)}</h3><div class=\"table-wrap\"><table class=\"sortable filterable compare\">"
        f"<thead><tr>{heads}</tr></thead><tbody>"
        + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in body)
        + "</tbody></table></div>"
        for title, body in groups
    )
    return (
        f'<section id="compare"><h2>Paired comparisons against {_e(report.baseline)}</h2>'
        f"<p>{_e(COMPARE_NOTE)}</p>{tables}</section>"
    )


def write_html(report: Report, path: str | Path) -> Path:
    """index.html: one self-contained page (inline CSS/JS, base64 plots, no network requests)."""
    path = Path(path)
    fractions = _fractions(report)
    title = f"icon-bench report: {report.meta['title']}"
    parts: list[str] = []
    meta_rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in _intro_lines(report))
    parts.append(f'<header><h1>{_e(title)}</h1><dl class="meta">{meta_rows}</dl>')
    parts.append('<ul class="legend">' + "".join(f"<li>{_e(x)}</li>" for x in _legend(report)) + "</ul></header>")
    parts.append(
        '<div class="toolbar"><label for="filter">Filter rows</label>'
        '<input id="filter" type="search" placeholder="method, divergence, dataset…" autocomplete="off">'
        '<span id="filter-count" aria-live="polite"></span></div>'
    )
    nav = ['<nav><ul>']
    current = None
    body: list[str] = []
    for k, section in enumerate(report.sections):
        sid = f"s{k}"
        if section.protocol_version != current:
            if current is not None:
                body.append("</section>")
            current = section.protocol_version
            settings = "\n".join(json.dumps(s, sort_keys=True, indent=1) for s in report.protocols.get(current, []))
            body.append(
                f'<section class="protocol"><h2>Protocol {_e(current)}</h2>'
                f'<details class="settings"><summary>Protocol {_e(current)} settings</summary>'
                f"<pre>{_e(settings or 'not recorded')}</pre></details>"
            )
        nav.append(f'<li><a href="#{sid}">{_e(section_title(section))} <small>(protocol {_e(current)})</small></a></li>')
        seeds = ", ".join(map(str, section.seeds)) or "none"
        body.append(
            f'<article class="dataset" id="{sid}"><h3>{_e(section_title(section))} '
            f'<small>protocol {_e(current)} · seeds {_e(seeds)}</small></h3>'
            f'<p class="obtained">{_e(how_obtained(section))}</p>'
        )
        body.append(_html_table(section, fractions, _lower(report)))
        if section.plots:
            figs = "".join(
                f"<figure>{_img(p, caption)}<figcaption>{_e(caption)}</figcaption></figure>"
                for caption, p in section.plots
                if p.is_file()
            )
            body.append(f'<div class="plots">{figs}</div>')
        body.append("</article>")
    if current is not None:
        body.append("</section>")
    groups = comparison_groups(report)
    if groups:
        nav.append('<li><a href="#compare">paired comparisons</a></li>')
        body.append(_comparison_section(report, groups))
    if report.discovered is not None:
        nav.append('<li><a href="#discovered">discovered losses</a></li>')
        body.append(discovered_page.html_section(report, _img))
    # Not `title`: the page's <title> below is the suite's, whatever sections the page holds.
    for frame, sid, heading, detail in ((report.failed, "failed", "Failed trials", "error"),
                                        (report.warned, "warned", "Warnings", "warning")):
        if not frame.empty:
            nav.append(f'<li><a href="#{sid}">{heading.lower()}</a></li>')
            body.append(_trial_section(frame, sid, heading, detail))
    nav.append('<li><a href="#configs">configurations</a></li></ul></nav>')
    labels = _labels(report)
    cfgs = "".join(
        f'<div class="config" id="{_anchor(cid)}"><h4><code>{_e(cid)}</code> {_e(labels.get(cid, ""))}</h4>'
        f"<pre>{_e(json.dumps(spec, sort_keys=True, default=str))}</pre></div>"
        for cid, spec in report.configs.items()
    )
    body.append(f'<section id="configs"><h2>Configurations</h2>{cfgs}</section>')
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        # The policy makes the no-network promise enforceable: only inline code and data: images.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_asset('report.css')}</style></head><body><main>"
        + "".join(parts) + "".join(nav) + "".join(body)
        + f"</main><script>{_asset('report.js')}</script></body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path

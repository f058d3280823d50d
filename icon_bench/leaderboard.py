"""Leaderboard writers (Markdown, CSV, parquet rows, one self-contained HTML page) and the cross-suite index."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd
from tabulate import tabulate

from icon_bench.errors import DataError
from icon_bench.report import TASKS

if TYPE_CHECKING:
    from icon_bench.report import Report, Section

DAGGER = "†"
INCOMPLETE_NOTE = (
    f"{DAGGER} incomplete: fewer seeds than were run for this dataset, or a failed trial; "
    "the mean is over the seeds that finished (listed in the seeds column; † on a value: its n is short)."
)


# ----------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def format_value(mean: float, std: float, n: int, *, fraction: bool) -> str:
    """`64.8 ± 0.2 (3)`: mean ± sample std (n); fractions x100 with one decimal, others 4 significant digits."""
    if _missing(mean) or not n:
        return "–"
    scale = 100.0 if fraction else 1.0

    def num(x: float) -> str:
        return f"{x * scale:.1f}" if fraction else f"{x:.4g}"

    if _missing(std):
        return f"{num(mean)} ({int(n)})"
    return f"{num(mean)} ± {num(std)} ({int(n)})"


def format_rank(rank: Any, lo: Any, hi: Any) -> str:
    """`1 (1–2)`: rank of the mean and its bootstrap interval."""
    if _missing(rank):
        return "–"
    if _missing(lo) or _missing(hi):
        return str(int(rank))
    return f"{int(rank)} ({int(lo)}–{int(hi)})"


def format_seeds(rec: Mapping[str, Any]) -> str:
    """`3/3`, or `2/3 † missing 2` / `2/3 † failed 1` for an incomplete configuration."""
    text = f"{rec['n']}/{rec['n_expected']}"
    if rec["complete"]:
        return text
    notes = []
    if rec["missing_seeds"]:
        notes.append("missing " + ", ".join(map(str, rec["missing_seeds"])))
    if rec["failed_seeds"]:
        notes.append("failed " + ", ".join(map(str, rec["failed_seeds"])))
    return f"{text} {DAGGER} " + "; ".join(notes)


def _seed_list(seeds: Iterable[Any]) -> str:
    return " ".join(map(str, seeds))


def _md(text: Any) -> str:
    """Text safe in a Markdown table cell: HTML-escaped, pipes and newlines neutralised."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _fractions(report: Report) -> set[str]:
    return set(report.meta.get("fraction_metrics", []))


def _lower(report: Report) -> set[str]:
    return set(report.meta.get("lower_is_better", []))


def _metric_header(metric: str, fractions: set[str]) -> str:
    return f"{metric} (×100)" if metric in fractions else metric


def _anchor(config_id: str) -> str:
    return "config-" + "".join(ch for ch in str(config_id) if ch.isalnum() or ch in "-_")


def _rank_cols(section: Section) -> tuple[str, str, str] | None:
    if not section.metrics:
        return None
    m = section.metrics[0]
    return f"{m}_rank", f"{m}_rank_lo", f"{m}_rank_hi"


def _intro_lines(report: Report) -> list[tuple[str, str]]:
    """(label, value) pairs of provenance for the header of every format."""
    meta = report.meta
    plugins = ", ".join(f"{d} {'/'.join(v)}" for d, v in meta["plugins"].items()) or "none recorded"
    run = " to ".join(x for x in (meta.get("run_from"), meta.get("run_to")) if x) or "unknown"
    return [
        ("suite", ", ".join(meta["suites"]) or "(unnamed)"),
        ("protocol versions", ", ".join(report.protocols) + " (settings in each section)"),
        ("icon-bench", f"{', '.join(meta['icon_bench']) or 'unknown'} (runs); {meta['report_icon_bench']} (report)"),
        ("torch / python", f"{', '.join(meta['torch']) or '?'} / {', '.join(meta['python']) or '?'}"),
        ("plugins", plugins),
        ("git commits", ", ".join(c[:12] for c in meta["git_commits"]) or "unknown"),
        ("devices", ", ".join(meta["devices"]) or "unknown"),
        ("runs", run),
        ("generated", meta["generated_at"]),
        ("trials", f"{meta['n_rows']} ({meta['n_ok']} ok, {meta['n_failed']} failed)"),
    ]


def _legend(report: Report) -> list[str]:
    fractions = [m for m in report.meta.get("fraction_metrics", [])]
    lines = ["Values are mean ± sample standard deviation over seeds, with the number of seeds in parentheses."]
    if fractions:
        lines.append(f"Fractions ({', '.join(fractions)}) are shown ×100 with one decimal.")
    if report.meta.get("lower_is_better"):
        lines.append(f"Lower is better for {', '.join(report.meta['lower_is_better'])}; higher for the rest.")
    lines.append(
        f"Rank: rank of the mean on the table's first metric, with its 95 % interval from {report.resamples} "
        "bootstrap resamples over seeds; configurations whose intervals overlap are not separable."
    )
    lines.append(INCOMPLETE_NOTE)
    lines.append("Tables of different protocol versions are never merged.")
    return lines


# ----------------------------------------------------------------------------------------------
# CSV and rows
# ----------------------------------------------------------------------------------------------


def leaderboard_frame(report: Report) -> pd.DataFrame:
    """The leaderboard as one flat table (raw, unscaled values), in section order."""
    frames = []
    for section in report.sections:
        t = section.table.copy()
        cols = _rank_cols(section)
        t.insert(0, "rank", t[cols[0]] if cols else pd.NA)
        t.insert(0, "primary_metric", section.metrics[0] if section.metrics else "")
        frames.append(t)
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    for col in ("seeds", "expected_seeds", "missing_seeds", "failed_seeds"):
        df[col] = df[col].map(_seed_list)
    df["spec"] = df["spec"].map(lambda s: json.dumps(s, sort_keys=True, default=str))
    first = ["protocol_version", "dataset", "primary_metric", "rank", "label", "config_id", "suite", "method",
             "divergence", "n", "n_expected", "complete", "seeds", "expected_seeds", "missing_seeds", "failed_seeds"]
    metric_cols = [c for c in df.columns if c not in first and c != "spec"]
    return df[first + metric_cols + ["spec"]]


def write_csv(report: Report, path: str | Path) -> Path:
    """leaderboard.csv: one line per (protocol version, dataset, configuration); values unscaled."""
    path = Path(path)
    leaderboard_frame(report).to_csv(path, index=False)
    return path


def write_rows(report: Report, out_dir: str | Path) -> Path:
    """results.parquet with the flattened rows, or results.json when parquet cannot hold them."""
    out_dir = Path(out_dir)
    flat = pd.json_normalize(json.loads(report.rows.to_json(orient="records", default_handler=str)))
    for col in flat.columns:
        # Parquet columns hold one type: nested containers other than numeric lists (the loss
        # history) and columns mixing types (an int here, a "$placeholder" there) become JSON text.
        values = [v for v in flat[col] if not _missing_scalar(v)]
        kinds = {"num" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v).__name__ for v in values}
        nested = any(isinstance(v, (dict, list)) and not _numeric_list(v) for v in values)
        if nested or len(kinds) > 1:
            flat[col] = flat[col].map(_as_text)
    try:
        path = out_dir / "results.parquet"
        flat.to_parquet(path, index=False)
    except Exception:  # noqa: BLE001 - any pyarrow type problem falls back to JSON, which always works
        path.unlink(missing_ok=True)
        path = out_dir / "results.json"
        flat.to_json(path, orient="records", indent=1)
    return path


def _as_text(value: Any) -> Any:
    return value if isinstance(value, str) or _missing_scalar(value) else json.dumps(value, default=str)


def _missing_scalar(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _numeric_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def section_rows(section: Section, fractions: set[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Headers and display cells of one leaderboard table (shared by Markdown and HTML)."""
    headers = ["rank", "configuration", "seeds"] + [_metric_header(m, fractions) for m in section.metrics]
    cols = _rank_cols(section)
    out = []
    for rec in section.table.to_dict("records"):
        cells = {
            "rank": format_rank(*(rec[c] for c in cols)) if cols else "–",
            "rank_sort": rec[cols[0]] if cols else None,
            "label": rec["label"] + ("" if rec["complete"] else f" {DAGGER}"),
            "config_id": rec["config_id"],
            "seeds": format_seeds(rec),
            "n": rec["n"],
            "complete": rec["complete"],
            "metrics": [
                (
                    format_value(rec[f"{m}_mean"], rec[f"{m}_std"], rec[f"{m}_n"], fraction=m in fractions)
                    # A value over fewer seeds than were run says so itself, not only via its row.
                    + (f" {DAGGER}" if 0 < rec[f"{m}_n"] < rec["n_expected"] else ""),
                    rec[f"{m}_mean"],
                    format_rank(rec.get(f"{m}_rank"), rec.get(f"{m}_rank_lo"), rec.get(f"{m}_rank_hi")),
                )
                for m in section.metrics
            ],
        }
        out.append(cells)
    return headers, out


def write_markdown(report: Report, path: str | Path) -> Path:
    """leaderboard.md: GitHub-readable tables (tabulate), one section per protocol version."""
    path = Path(path)
    fractions = _fractions(report)
    lines = [f"# icon-bench report: {_md(report.meta['title'])}", ""]
    lines += [f"- **{k}**: {_md(v)}" for k, v in _intro_lines(report)]
    lines += ["", *_legend(report), ""]
    current = None
    for section in report.sections:
        if section.protocol_version != current:
            current = section.protocol_version
            settings = report.protocols.get(current, [])
            lines += [f"## Protocol {_md(current)}", ""]
            lines += [f"Settings: `{json.dumps(s, sort_keys=True)}`" for s in settings] + [""]
        lines += [f"### {_md(section.dataset)} — {_md(section.task)} (protocol {_md(current)})", ""]
        lines += [f"Seeds run: {_md(', '.join(map(str, section.seeds)) or 'none')}.", ""]
        headers, rows = section_rows(section, fractions)
        body = [
            [r["rank"], f"[{_md(r['label'])}](#{_anchor(r['config_id'])})", _md(r["seeds"])]
            + [m[0] for m in r["metrics"]]
            for r in rows
        ]
        lines += [tabulate(body, headers=[_md(h) for h in headers], tablefmt="github", disable_numparse=True), ""]
        for caption, plot in section.plots:
            lines += [f"![{_md(caption)}]({plot.name})", ""]
    if not report.failed.empty:
        lines += ["## Failed trials", ""]
        body = [
            [f"`{_md(r.trial_id)}`", _md(r.protocol_version), f"[{_md(r.label)}](#{_anchor(r.config_id)})",
             _md(r.dataset), _md(r.seed), _md(r.error)]
            for r in report.failed.itertuples()
        ]
        lines += [tabulate(body, headers=["trial", "protocol", "configuration", "dataset", "seed", "error"],
                           tablefmt="github", disable_numparse=True), ""]
    lines += ["## Configurations", ""]
    labels = _labels(report)
    for cid, spec in report.configs.items():
        lines += [
            f'<a id="{_anchor(cid)}"></a>**`{_md(cid)}`** {_md(labels.get(cid, ""))}',
            "",
            "```json",
            json.dumps(spec, sort_keys=True, default=str).replace("```", "` ` `"),
            "```",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _labels(report: Report) -> dict[str, str]:
    labels: dict[str, str] = {}
    if not report.aggregated.empty:
        for cid, label in zip(report.aggregated["config_id"], report.aggregated["label"]):
            labels.setdefault(cid, label)
    return labels


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------


def _asset(name: str) -> str:
    return resources.files("icon_bench").joinpath("templates", name).read_text(encoding="utf-8")


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
        kind = "text" if i == 1 else "num"
        ths.append(f'<th data-type="{kind}" scope="col" tabindex="0">{_e(h)}</th>')
    body = []
    for r in rows:
        cls = "" if r["complete"] else ' class="incomplete"'
        tds = [
            f'<td class="num" data-sort="{_sort_attr(r["rank_sort"])}">{_e(r["rank"])}</td>',
            f'<td class="cfg"><a href="#{_anchor(r["config_id"])}">{_e(r["label"])}</a></td>',
            f'<td class="seeds" data-sort="{_e(r["n"])}">{_e(r["seeds"])}</td>',
        ]
        for (text, mean, rank), low in zip(r["metrics"], lower):
            best = ' best' if rank.startswith("1 ") or rank == "1" else ""
            tds.append(
                f'<td class="num{best}" data-sort="{_sort_attr(mean)}" '
                f'title="rank {_e(rank)}{" (lower is better)" if low else ""}">{_e(text)}</td>'
            )
        body.append(f"<tr{cls}>" + "".join(tds) + "</tr>")
    return (
        '<div class="table-wrap"><table class="sortable filterable">'
        f"<thead><tr>{''.join(ths)}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
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
        nav.append(
            f'<li><a href="#{sid}">{_e(section.dataset)} · {_e(section.task)} '
            f'<small>(protocol {_e(current)})</small></a></li>'
        )
        seeds = ", ".join(map(str, section.seeds)) or "none"
        body.append(
            f'<article class="dataset" id="{sid}"><h3>{_e(section.dataset)} — {_e(section.task)} '
            f'<small>protocol {_e(current)} · seeds {_e(seeds)}</small></h3>'
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
    if not report.failed.empty:
        nav.append('<li><a href="#failed">failed trials</a></li>')
        trs = "".join(
            f'<tr><td><code>{_e(r.trial_id)}</code></td><td>{_e(r.protocol_version)}</td>'
            f'<td><a href="#{_anchor(r.config_id)}">{_e(r.label)}</a></td><td>{_e(r.dataset)}</td>'
            f'<td class="num" data-sort="{_e(r.seed)}">{_e(r.seed)}</td><td class="error">{_e(r.error)}</td></tr>'
            for r in report.failed.itertuples()
        )
        heads = "".join(
            f'<th data-type="{t}" scope="col" tabindex="0">{h}</th>'
            for h, t in (("trial", "text"), ("protocol", "text"), ("configuration", "text"),
                         ("dataset", "text"), ("seed", "num"), ("error", "text"))
        )
        body.append(
            '<section id="failed"><h2>Failed trials</h2><div class="table-wrap">'
            f'<table class="sortable filterable failed"><thead><tr>{heads}</tr></thead><tbody>{trs}</tbody></table>'
            "</div></section>"
        )
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


# ----------------------------------------------------------------------------------------------
# Cross-suite index
# ----------------------------------------------------------------------------------------------


def build_index(reports_dir: str | Path) -> Path:
    """reports/README.md: a link to every suite's report and the best configuration per dataset and task."""
    root = Path(reports_dir)
    if not root.is_dir():
        raise DataError(f"no reports folder at {root}")
    suites = sorted(p for p in root.iterdir() if p.is_dir() and (p / "leaderboard.md").is_file())
    lines = ["# icon-bench leaderboards", "", "Generated by `icon-bench leaderboard`; do not edit by hand.", ""]
    if not suites:
        lines.append("No suite reports yet: run `icon-bench report RESULTS -o reports/NAME`.")
        out = root / "README.md"
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return out
    summary, frames = [], []
    for suite_dir in suites:
        name = suite_dir.name
        url = quote(name)  # a folder name with spaces or brackets must not break the Markdown link
        page = f"[page]({url}/index.html)" if (suite_dir / "index.html").is_file() else ""
        csv = suite_dir / "leaderboard.csv"
        df = pd.read_csv(csv, dtype={"config_id": str, "protocol_version": str}) if csv.is_file() else pd.DataFrame()
        if not df.empty:
            df["_suite_dir"] = name
            frames.append(df)
        datasets = ", ".join(map(str, dict.fromkeys(df["dataset"]))) if not df.empty else ""
        versions = ", ".join(map(str, dict.fromkeys(df["protocol_version"]))) if not df.empty else ""
        summary.append([f"[{_md(name)}]({url}/leaderboard.md)", page, _md(datasets), len(df), _md(versions)])
    lines += ["## Suites", ""]
    lines += [tabulate(summary, headers=["suite", "web page", "datasets", "configurations", "protocol"],
                       tablefmt="github", disable_numparse=True), ""]
    lines += ["## Best configuration per dataset and task", ""]
    lines += [
        "Best mean on the task's first metric present (clustering: hungarian, nmi, ari; representation: "
        "linear_probe, knn; dimensionality reduction: knn2d, trustworthiness), among configurations "
        f"with every seed ({DAGGER}: only incomplete ones exist). Fractions ×100; mean ± std (n). "
        "Protocol versions are listed separately and never compared.",
        "",
    ]
    best = _best_rows(pd.concat(frames, ignore_index=True)) if frames else []
    if best:
        lines += [tabulate(best, headers=["protocol", "dataset", "task", "metric", "best configuration", "value",
                                          "suite"], tablefmt="github", disable_numparse=True), ""]
    else:
        lines += ["No metric of a known task in these reports.", ""]
    out = root / "README.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


def _best_rows(df: pd.DataFrame) -> list[list[str]]:
    rows = []
    df["complete"] = df["complete"].astype(str).str.lower().isin(["true", "1"])
    for (version, dataset), group in df.groupby(["protocol_version", "dataset"], sort=False):
        for task, metrics in TASKS.items():
            metric = next((m for m in metrics if f"{m}_mean" in group and group[f"{m}_mean"].notna().any()), None)
            if metric is None:
                continue
            cand = group[group[f"{metric}_mean"].notna()]
            pool = cand[cand["complete"]] if cand["complete"].any() else cand
            # TASKS names only built-in metrics, which evaluation declares higher-is-better fractions
            # (tests/test_evaluation.py holds them to that); the CSVs carry no declarations.
            pool = pool.sort_values(f"{metric}_mean", ascending=False, kind="stable")
            top = pool.iloc[0]
            value = format_value(top[f"{metric}_mean"], top[f"{metric}_std"], top[f"{metric}_n"], fraction=True)
            mark = "" if top["complete"] else f" {DAGGER}"
            suite = top["_suite_dir"]
            link = f"[{_md(top['label'])}]({quote(suite)}/index.html#{_anchor(top['config_id'])}){mark}"
            suite_link = f"[{_md(suite)}]({quote(suite)}/leaderboard.md)"
            rows.append([_md(version), _md(dataset), task, metric, link, value, suite_link])
    return rows

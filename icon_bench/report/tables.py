"""The table writers (Markdown leaderboard, CSV, parquet/JSON rows), with the header and legend the page shares.

The cell formatting they share with the page, the index and the README lives in report/formatting.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd
from tabulate import tabulate

from icon_bench.report import discovered_page
from icon_bench.report.compare import HEADERS as COMPARE_HEADERS
from icon_bench.report.formatting import (
    AT_CHANCE,
    CHANCE_NOTE,
    DAGGER,
    INCOMPLETE_NOTE,
    PUBLISHED,
    RANK_NOTE,
    SEED_FREE_NOTE,
    WARNING_MARK,
    WARNING_NOTE,
    _anchor,
    _code,
    _flag,
    _fractions,
    _md,
    _metric_header,
    _rank_cols,
    _seed_list,
    format_rank,
    format_seeds,
    format_value,
)
from icon_bench.report.obtained import (
    COMPARE_NOTE,
    _tuning_lines,
    comparison_groups,
    format_selected,
    how_obtained,
)

if TYPE_CHECKING:
    from icon_bench.report.model import Report, Section


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
        ("devices", ", ".join(meta["devices"]) + (f" ({'; '.join(meta['processors'])})" if meta.get("processors") else "")
         or "unknown"),
        ("runs", run),
        ("trials", f"{meta['n_rows']} ({meta['n_ok']} ok, {meta['n_failed']} failed)"
         + (f" and {meta['n_search']} search trials on val" if meta.get("n_search") else "")),
        *_tuning_lines(report),
    ]


def _legend(report: Report) -> list[str]:
    fractions = [m for m in report.meta.get("fraction_metrics", [])]
    lines = ["Values are mean ± sample standard deviation over seeds, with the number of seeds in parentheses."]
    if fractions:
        lines.append(f"Fractions ({_md(', '.join(fractions))}) are shown ×100 with one decimal.")
    if report.meta.get("lower_is_better"):
        lines.append(f"Lower is better for {_md(', '.join(report.meta['lower_is_better']))}; higher for the rest.")
    lines.append(RANK_NOTE)
    agg = report.aggregated
    if any(_flag(v) for c in agg.columns if c.endswith("_at_chance") for v in agg[c]):
        lines.append(CHANCE_NOTE)
    lines.append(INCOMPLETE_NOTE)
    if not report.warned.empty:
        lines.append(WARNING_NOTE)
    agg = report.aggregated
    if "seed_independent" in agg.columns and any(_flag(v) for v in agg["seed_independent"]):
        lines.append(SEED_FREE_NOTE)
    lines.append(
        "Tables titled \"tuned (budget B on val)\" hold configurations whose hyperparameters were searched with "
        "the same budget B each on the validation split and scored once on test; \"defaults\" tables hold "
        "configurations at their defaults. The two are ranked apart."
        + (" Tables titled \"discovered (budget B on val)\" hold the losses loss discovery found with a search of B "
           "trials on val, rerun on test at fresh seeds (the Discovered losses section judges them against the "
           "named methods)." if report.discovered is not None else "")
    )
    lines.append(
        "Tables of different protocol versions, and of the test and val splits, are never merged; "
        "protocol 2 trains on train without its val rows and scores the test split once per configuration."
    )
    if any(s.references for s in report.sections):
        lines.append(
            f"{PUBLISHED}: figures from papers (icon-bench references), shown under the table whose dataset "
            "label is their key, values as published (percent), never ranked; their setting differs from these runs."
        )
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
    for col in ("seeds", "expected_seeds", "missing_seeds", "failed_seeds", "warned_seeds", "warnings"):
        df[col] = df[col].map(_seed_list)
    df["spec"] = df["spec"].map(lambda s: json.dumps(s, sort_keys=True, default=str))
    first = ["protocol_version", "split", "dataset", "primary_metric", "rank", "label", "config_id", "suite", "method",
             "divergence", "n", "n_expected", "complete", "seed_independent", "seeds", "expected_seeds",
             "missing_seeds", "failed_seeds", "warnings", "warned_seeds"]
    metric_cols = [c for c in df.columns if c not in first and c != "spec"]
    return df[first + metric_cols + ["spec"]]


def write_csv(report: Report, path: str | Path) -> Path:
    """leaderboard.csv: one line per (protocol version, dataset, configuration); values unscaled."""
    path = Path(path)
    leaderboard_frame(report).to_csv(path, index=False)
    return path


def write_references_csv(report: Report, path: str | Path) -> Path | None:
    """references.csv: the published figures shown beside each table (None, and no file, when there are none)."""
    path = Path(path)
    rows = [
        {"protocol_version": s.protocol_version, "split": s.split, "dataset": s.dataset, "task": s.task,
         **r.model_dump(exclude={"setting"}), "setting": json.dumps(r.setting, sort_keys=True)}
        for s in report.sections
        for r in s.references
    ]
    path.unlink(missing_ok=True)
    if not rows:
        return None
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_rows(report: Report, out_dir: str | Path) -> Path:
    """results.parquet with the flattened rows, or results.json when parquet cannot hold them."""
    out_dir = Path(out_dir)
    records = json.loads(report.rows.to_json(orient="records", default_handler=str))
    flat = pd.json_normalize(records)
    whole = _integer_columns(records)
    for col in flat.columns:
        # Parquet columns hold one type: nested containers other than numeric lists (the loss
        # history) and columns mixing types (an int here, a "$placeholder" there) become JSON text.
        values = [v for v in flat[col] if not _missing_scalar(v)]
        kinds = {"num" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v).__name__ for v in values}
        nested = any(isinstance(v, (dict, list)) and not _numeric_list(v) for v in values)
        if nested or len(kinds) > 1:
            flat[col] = flat[col].map(_as_text)
        elif whole.get(col) and flat[col].isna().any():
            # Integers with gaps (p.k set by some configurations only): a float column would read back 15.0.
            flat[col] = flat[col].astype("Int64")
    try:
        path = out_dir / "results.parquet"
        flat.to_parquet(path, index=False)
    except Exception:  # noqa: BLE001 - any pyarrow type problem falls back to JSON, which always works
        path.unlink(missing_ok=True)
        path = out_dir / "results.json"
        flat.to_json(path, orient="records", indent=1)
    return path


def _integer_columns(records: list[dict[str, Any]]) -> dict[str, bool]:
    """Flattened column -> whether every value the rows hold there is an integer (json_normalize's dotted names)."""
    out: dict[str, bool] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, name + ".")
            elif value is not None:
                out[name] = out.get(name, True) and isinstance(value, int) and not isinstance(value, bool)

    for record in records:
        walk(record, "")
    return out


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
    """Headers and display cells of one leaderboard table (shared by Markdown and HTML).

    A tuned table has a fourth column, the values each seed selected on val (cell "selected"). Each
    metric cell is (text, mean, rank band, tied with the best).
    """
    headers = ["rank", "configuration", "seeds"] + (["selected on val"] if section.tuned else [])
    headers += [_metric_header(m, fractions) for m in section.metrics]
    cols = _rank_cols(section)
    out = []
    for rec in section.table.to_dict("records"):
        chance = bool(cols) and _flag(rec.get(f"{section.metrics[0]}_at_chance"))
        cells = {
            "rank": AT_CHANCE if chance else format_rank(*(rec[c] for c in cols)) if cols else "–",
            "rank_sort": rec[cols[0]] if cols else None,
            "label": rec["label"] + ("" if rec["complete"] else f" {DAGGER}")
            + (f" {WARNING_MARK}" if rec["warnings"] else ""),
            "warnings": rec["warnings"],
            "config_id": rec["config_id"],
            "seeds": format_seeds(rec),
            "selected": format_selected(rec.get("selected")),
            "n": rec["n"],
            "complete": rec["complete"],
            "metrics": [
                (
                    format_value(rec[f"{m}_mean"], rec[f"{m}_std"], rec[f"{m}_n"], fraction=m in fractions)
                    # A value over fewer seeds than were run says so itself, not only via its row.
                    + (f" {DAGGER}" if 0 < rec[f"{m}_n"] < rec["n_expected"] else ""),
                    rec[f"{m}_mean"],
                    format_rank(rec.get(f"{m}_rank"), rec.get(f"{m}_rank_lo"), rec.get(f"{m}_rank_hi")),
                    _flag(rec.get(f"{m}_tied")),  # not separated from the best on this metric
                )
                for m in section.metrics
            ],
        }
        out.append(cells)
    return headers, out


def section_title(section: Section) -> str:
    """`digits — clustering, defaults`, `digits — clustering, tuned (budget 8 on val)`, `..., val split`."""
    title = f"{section.dataset} — {section.task}, {section.kind}"
    return title if section.split == "test" else f"{title}, {section.split} split"


def _published_markdown(section: Section, headers: list[str]) -> list[str]:
    """The published figures matching a table, as a table of their own right under it (not ranked)."""
    from icon_bench.report.references import reference_rows

    if not section.references:
        return []
    body = [
        [PUBLISHED, _md(r["label"]), _md(r["citation"])] + [_md(c) for c in r["cells"]]
        for r in reference_rows(section.references, section.metrics)
    ]
    head = ["", "published result", "paper"] + [_md(h) for h in headers[3:]]
    note = f"Published figures for {_md(section.dataset)} (as published, not ranked; `icon-bench references --sources`):"
    return [note, "", tabulate(body, headers=head, tablefmt="github", disable_numparse=True), ""]


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
            lines += [f"Settings: {_code(json.dumps(s, sort_keys=True))}" for s in settings] + [""]
        lines += [f"### {_md(section_title(section))} (protocol {_md(current)})", ""]
        lines += [f"Seeds run: {_md(', '.join(map(str, section.seeds)) or 'none')}. {_md(how_obtained(section))}", ""]
        headers, rows = section_rows(section, fractions)
        body = [
            [r["rank"], f"[{_md(r['label'])}](#{_anchor(r['config_id'])})", _md(r["seeds"])]
            + ([_md(r["selected"])] if section.tuned else [])
            + [m[0] for m in r["metrics"]]
            for r in rows
        ]
        lines += [tabulate(body, headers=[_md(h) for h in headers], tablefmt="github", disable_numparse=True), ""]
        lines += _published_markdown(section, headers)
        for caption, plot in section.plots:
            lines += [f"![{_md(caption)}]({quote(plot.name)})", ""]
    groups = comparison_groups(report)
    if groups:
        lines += [f"## Paired comparisons against {_md(report.baseline)}", "", _md(COMPARE_NOTE), ""]
        for title, body in groups:
            lines += [f"### {_md(title)}", ""]
            lines += [tabulate([[_md(c) for c in r] for r in body], headers=COMPARE_HEADERS, tablefmt="github",
                               disable_numparse=True), ""]
    lines += discovered_page.markdown_lines(report, _md, lambda body, heads: tabulate(
        body, headers=heads, tablefmt="github", disable_numparse=True))
    lines += _trial_section("Failed trials", report.failed, "error")
    lines += _trial_section("Warnings", report.warned, "warning")
    lines += ["## Configurations", ""]
    labels = _labels(report)
    for cid, spec in report.configs.items():
        lines += [
            f'<a id="{_anchor(cid)}"></a>**{_code(cid)}** {_md(labels.get(cid, ""))}',
            "",
            "```json",
            json.dumps(spec, sort_keys=True, default=str).replace("```", "` ` `"),
            "```",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def trial_details(frame: pd.DataFrame) -> list[str]:
    """The last column of a trial table (`Report.failed` error, `Report.warned` warnings) as one line each."""
    if frame.empty:
        return []
    return ["; ".join(v) if isinstance(v, list) else str(v) for v in frame[frame.columns[-1]]]


def _trial_section(title: str, frame: pd.DataFrame, detail: str) -> list[str]:
    """A Markdown section listing trials (failed or warned) with a link to their configuration."""
    if frame.empty:
        return []
    body = [
        [_code(r.trial_id), _md(r.protocol_version), f"[{_md(r.label)}](#{_anchor(r.config_id)})",
         _md(r.dataset), _md(r.seed), _md(text)]
        for r, text in zip(frame.itertuples(), trial_details(frame))
    ]
    headers = ["trial", "protocol", "configuration", "dataset", "seed", detail]
    return [f"## {title}", "", tabulate(body, headers=headers, tablefmt="github", disable_numparse=True), ""]


def _labels(report: Report) -> dict[str, str]:
    labels: dict[str, str] = {}
    if not report.aggregated.empty:
        for cid, label in zip(report.aggregated["config_id"], report.aggregated["label"]):
            labels.setdefault(cid, label)
    return labels

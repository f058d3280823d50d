"""`icon_bench.load_results(PATH)`: the rows the reports are built from, as one pandas DataFrame for a notebook."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from icon_bench.report.build import aggregate
from icon_bench.report.roles import without_search
from icon_bench.report.rows import flatten_spec, load_rows, normalise_rows

__all__ = ["load_results"]


def load_results(path: str | Path, *, search: bool = False) -> pd.DataFrame:
    """The rows of a results folder (or its results.jsonl, or a report folder's results.parquet) as a DataFrame.

    One row per trial (its latest row; duplicates dropped as the reports drop them), with the columns
    the reports use: ``status``, ``method``, ``divergence``, ``dataset`` (its label), ``seed``,
    ``split``, ``protocol_version``, ``kind`` (defaults or tuned), ``label`` (the configuration's name in
    the tables), one float column ``metrics.<name>`` per metric, and the spec flattened into
    ``spec.<key>`` columns (``spec.p.debias``, ``spec.settings.epochs``). Tuning's search trials
    (scored on val) are left out, as in the reports, unless `search` is true.
    """
    df = normalise_rows(load_rows(path))
    if not search:
        df = without_search(df)
    # The configuration's label, as the tables name it (the label tells configurations of a method apart).
    agg = aggregate(df)
    labels = {} if agg.empty else {
        (r.protocol_version, r.dataset, r.config_id): r.label for r in agg.itertuples()
    }
    df["label"] = [labels.get((v, d, c), m) for v, d, c, m in
                   zip(df["protocol_version"], df["dataset"], df["config_id"], df["method"])]
    flat = pd.DataFrame([{f"spec.{k}": v for k, v in flatten_spec(s or {}).items()} for s in df["spec"]],
                        index=df.index)
    df = pd.concat([df.drop(columns=[c for c in flat.columns if c in df.columns]), flat], axis=1)
    return df.reset_index(drop=True)

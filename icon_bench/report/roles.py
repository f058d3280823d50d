"""How each row's number was obtained: search rows (tuning, loss discovery), tuned finals, discovered candidates, defaults.

Also the small readers of nested row records the rest of report/ shares (`_get`, `_is_missing`, `_unflatten`).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from icon_bench.report.model import DEFAULTS

__all__ = ["discovered_kind", "tuned_kind", "without_search"]


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _unflatten(flat: Mapping[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _budget(record: Any) -> Any:
    """A record's budget as written: a whole float (read back from parquet, where NaN made it one) as an int."""
    budget = _get(record, "budget")
    return int(budget) if isinstance(budget, float) and budget.is_integer() else budget


def tuned_kind(tune: Mapping[str, Any]) -> str:
    """How a tuned row's number was obtained, as table titles say it: "tuned (budget 8 on val)"."""
    return f"tuned (budget {_budget(tune)} on val)"


def _discover_records(df: pd.DataFrame) -> list[Any]:
    """Each row's `discover` record: nested, or (a report's results.parquet) its flattened top-level keys.

    Its values and loss hold dotted keys ("p.k") that flattening cannot tell from nesting, so only the
    scalar keys the tables need (role, study, budget, name, ...) are read back from the flat columns.
    """
    if "discover" in df.columns:
        return list(df["discover"])
    cols = [c for c in df.columns if c.startswith("discover.") and c.count(".") == 1]
    if not cols:
        return [None] * len(df)
    return [{c[9:]: r[c] for c in cols if not _is_missing(r[c])} or None for _, r in df[cols].iterrows()]


def discovered_kind(record: Mapping[str, Any]) -> str:
    """How a loss discovery candidate's number was obtained: "discovered (budget 20 on val)"."""
    budget = _budget(record)
    return f"discovered (budget {budget} on val)" if budget is not None else "discovered (on val)"


def _tune_columns(df: pd.DataFrame) -> None:
    """`tune_role` (search / final / None), `kind` and `tune` columns; a final row joins its configuration.

    A tuned configuration's final rows may each select other values, so they carry the configuration
    as configured (``tune.config_spec``) and its tuned id as spec and config_id: its seeds aggregate
    into one leaderboard row, apart from the same cell at defaults. The values each seed selected stay
    in ``tune.selected`` (and the full spec that ran in ``run_spec``).
    """
    nested = list(df["tune"]) if "tune" in df.columns else [None] * len(df)
    # Flattened rows (a report's results.parquet) hold tune.role, tune.budget, ...; a row without
    # a tune block also left an empty "tune" column there, so read both.
    cols = [c for c in df.columns if c.startswith("tune.")]
    flat = [_unflatten({c[5:]: r[c] for c in cols if not _is_missing(r[c])}) for _, r in df[cols].iterrows()] \
        if cols else [{}] * len(df)
    tunes = [t if isinstance(t, Mapping) else (f or None) for t, f in zip(nested, flat)]
    df["tune"] = tunes
    found = _discover_records(df)  # loss discovery's search: a search too
    df["tune_role"] = [_get(t, "role") or ("search" if _get(d, "role") == "search" else None) for t, d in zip(tunes, found)]
    # A candidate's budget: its record's, else its study's search trials among these rows.
    searched = collections.Counter(_get(d, "study") for d in found if _get(d, "role") == "search")
    found = [{"budget": searched.get(_get(d, "study")) or None, **d} if _get(d, "role") == "candidate" else d
             for d in found]
    if "discover" in df.columns:  # kept in the rows, so normalising them again (without search rows) keeps it
        df["discover"] = found
    elif "discover.role" in df.columns:
        df["discover.budget"] = [_get(d, "budget") for d in found]
    df["kind"] = [tuned_kind(t) if _get(t, "role") == "final" else discovered_kind(d)
                  if _get(d, "role") == "candidate" else DEFAULTS for t, d in zip(tunes, found)]
    if "run_spec" not in df.columns:  # normalising twice must not lose what ran
        df["run_spec"] = df["spec"]
    for i, tune in enumerate(tunes):
        if _get(tune, "role") == "final" and isinstance(tune.get("config_spec"), Mapping):
            df.at[i, "spec"] = {**tune["config_spec"], "seed": df.at[i, "seed"]}
            df.at[i, "config_id"] = str(tune.get("configuration") or df.at[i, "config_id"])


def without_search(df: pd.DataFrame) -> pd.DataFrame:
    """Normalised rows less the search trials of tuned suites and loss discovery (val scores: they rank nothing)."""
    return df[df["tune_role"] != "search"].reset_index(drop=True) if "tune_role" in df.columns else df

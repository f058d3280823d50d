"""A loss discovery's search on val as the report shows it: trial history, best so far, fANOVA parameter importances."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from icon_bench.extras import MissingExtra, require
from icon_bench.report.roles import _is_missing

#: Fewer complete (finished, not pruned) trials than this: no importances (fANOVA's forest needs some spread).
MIN_TRIALS = 5


def search_trials(discovery: pd.DataFrame, study: str) -> pd.DataFrame:
    """A study's search trials in the order TPE proposed them: index, value, pruned, complete, values."""
    rows = discovery[(discovery["study"] == study) & (discovery["role"] == "search")]
    recs = []
    for status, d in zip(rows["status"], rows["discover"]):
        value = d.get("value")
        value = math.nan if _is_missing(value) else float(value)
        pruned = d.get("pruned") or ("failed" if status == "failed" else None)
        recs.append({"index": int(d.get("index") or 0), "value": value, "pruned": pruned,
                     "complete": pruned is None and math.isfinite(value),
                     "values": dict(d.get("values") or {}), "epochs": d.get("epochs"),
                     "max_epochs": d.get("max_epochs")})
    cols = ["index", "value", "pruned", "complete", "values", "epochs", "max_epochs"]
    return pd.DataFrame(recs, columns=cols).sort_values("index", kind="stable").reset_index(drop=True)


def best_so_far(trials: pd.DataFrame, higher_is_better: bool = True) -> np.ndarray:
    """The best complete value among trials 0..i, per trial (NaN before the first complete one).

    A pruned trial's value was read at fewer epochs than the full budget: it never counts as the best.
    """
    out, best = [], math.nan
    for value, complete in zip(trials["value"], trials["complete"]):
        if complete and (math.isnan(best) or (value > best if higher_is_better else value < best)):
            best = value
        out.append(best)
    return np.asarray(out, dtype=float)


def _distribution(values: list[Any], optuna: Any) -> Any | None:
    """The distribution a searched parameter's values imply (None for a parameter with a single value)."""
    distributions = optuna.distributions
    if len({repr(v) for v in values}) < 2:
        return None
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
        lo, hi = float(min(values)), float(max(values))
        if all(float(v).is_integer() and isinstance(v, (int, np.integer)) for v in values):
            return distributions.IntDistribution(int(lo), int(hi))
        return distributions.FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 100)
    choices = tuple(sorted({_choice(v) for v in values}, key=repr))
    return distributions.CategoricalDistribution(choices)


def _choice(value: Any) -> Any:
    """A categorical value Optuna accepts (None, bool, int, float or str)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def importances(trials: pd.DataFrame, higher_is_better: bool = True) -> dict[str, float] | str:
    """fANOVA importances of the searched parameters over the complete trials, or why there are none.

    The study is rebuilt from the rows (`optuna.trial.create_trial`), each trial with the parameters it
    had: a conditional parameter (p.k only when p is knn) is present only where it was searched, and
    Optuna assesses the parameters present in every complete trial.
    """
    done = trials[trials["complete"]]
    if len(done) < MIN_TRIALS:
        return f"too few trials for importances ({len(done)} complete, fewer than {MIN_TRIALS})"
    try:
        optuna = require("optuna", "parameter importances")
    except MissingExtra:
        return "parameter importances need the tune extra: pip install 'icon-bench[tune]'"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    keys: dict[str, list[Any]] = {}
    for values in done["values"]:
        for k, v in values.items():
            if not _is_missing(v):
                keys.setdefault(str(k), []).append(v)
    dists = {k: d for k, vs in keys.items() if (d := _distribution(vs, optuna)) is not None}
    if not dists:
        return "no searched parameter took more than one value in the complete trials"
    study = optuna.create_study(direction="maximize" if higher_is_better else "minimize")
    for values, value in zip(done["values"], done["value"]):
        params = {str(k): _param(v, dists[str(k)], optuna) for k, v in values.items() if str(k) in dists}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params}, value=float(value)))
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError) as exc:  # e.g. no parameter shared by every complete trial
        return f"no importances: {exc}"
    if not found:
        return "no searched parameter is present in every complete trial"
    return {str(k): float(v) for k, v in found.items()}


def _param(value: Any, dist: Any, optuna: Any) -> Any:
    if isinstance(dist, optuna.distributions.IntDistribution):
        return int(value)
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return float(value)
    return _choice(value)


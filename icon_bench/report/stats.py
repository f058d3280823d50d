"""Paired statistics over seeds: the paired t test, Holm's correction, power, and ranks built from paired tests.

Every comparison in icon-bench is paired: two configurations run on the same dataset, split and
seeds, and the unit of evidence is one seed's difference. What is stated here is what the pages
print (and docs/statistics.md explains with its simulation figures, benchmarks/bench_statistics.py):

- **Interval and test.** The mean of the paired differences with a two-sided 95 % paired t
  interval (scipy.stats.t, n - 1 degrees of freedom) and the paired t test's p-value. Below
  `MIN_PAIRS` pairs nothing is separated and no interval is shown: two seeds leave one degree of
  freedom, whose interval is too wide to say anything and too unstable to trust.
- **Identical over seeds.** When every pair differs by the same amount (two deterministic
  methods), there is no spread to test: the line says so instead of printing a zero-width interval.
- **Many lines.** Holm's step-down correction (`holm`) over a family of tests: the lines of one
  comparison table, the lines of one claim, or every pair of configurations of one leaderboard table.
- **Power.** `detectable_difference`: the smallest true difference the paired t test at this number
  of pairs detects with 80 % power, from the paired standard deviation (noncentral t,
  scipy.stats.nct); `seeds_needed`: the fewest pairs at which the observed difference would be
  detected with 80 % power (None above `MAX_SEEDS`).
- **Ranks.** `rank_bands`: every pair of configurations tested (Holm over all pairs of the table,
  which keeps the chance of any false separation at 5 % even though "the best" is chosen from the
  same data); a configuration's band runs from 1 + the number separated above it to the number not
  separated below it. `tied` lists the configurations not separated from the best.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ALPHA", "MAX_SEEDS", "MIN_PAIRS", "POWER", "detectable_difference", "holm", "not_above_chance", "paired_test",
           "power", "rank_bands", "seeds_needed"]

ALPHA = 0.05
POWER = 0.8
#: Fewer pairs than this: no interval, no p-value, nothing separated.
MIN_PAIRS = 3
#: `seeds_needed` looks this far; beyond it the answer is "more than MAX_SEEDS".
MAX_SEEDS = 50


def paired_test(diffs: Iterable[float], *, alpha: float = ALPHA) -> dict[str, Any]:
    """Mean of paired differences, sample sd, 95 % paired t interval and p-value (NaN below `MIN_PAIRS` pairs).

    ``identical`` is True when every difference is the same (to 1e-12 relative): then ``p_value`` is
    0 if that difference is not 0 (every seed agrees on the direction; there is no spread to test) and
    1 if it is, and the interval collapses to the point.
    """
    from scipy import stats

    d = np.asarray([float(x) for x in diffs], dtype=float)
    n = len(d)
    out: dict[str, Any] = {"n": n, "mean_diff": float(d.mean()) if n else math.nan, "sd": math.nan,
                           "lo": math.nan, "hi": math.nan, "p_value": math.nan, "identical": False,
                           "interval": "none (one pair)" if n == 1 else "none"}
    if n < 2:
        return out
    mean = out["mean_diff"]
    sd = float(d.std(ddof=1))
    out["sd"] = sd
    identical = sd <= 1e-12 * max(1.0, abs(mean))
    if n < MIN_PAIRS:
        out["interval"] = f"none (fewer than {MIN_PAIRS} pairs)"
        return out
    if identical:
        out.update(lo=mean, hi=mean, identical=True, sd=0.0, interval="none (identical over seeds)",
                   p_value=0.0 if abs(mean) > 1e-12 else 1.0)
        return out
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))  # equals scipy.stats.ttest_rel on the pairs
    out.update(lo=mean - half, hi=mean + half, p_value=p, interval=f"paired t ({n - 1} df)")
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family)."""
    idx = [i for i, p in enumerate(p_values) if not _nan(p)]
    out = [math.nan] * len(p_values)
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        out[i] = running
    return out


def power(n: int | np.ndarray, diff: float, sd: float, *, alpha: float = ALPHA) -> float | np.ndarray:
    """Power of the two-sided paired t test at level `alpha` with `n` pairs (an int or an array) for a true difference `diff`."""
    from scipy import stats

    if sd <= 0 or np.any(np.asarray(n) < 2):
        return math.nan
    df = np.asarray(n, dtype=float) - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(diff) * np.sqrt(df + 1) / sd
    value = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    # scipy's nct gives up far in the tail, where the power is 1 to many places: the normal approximation there.
    value = np.where(np.isnan(value), stats.norm.sf(crit - nc), value)
    return float(value) if np.ndim(value) == 0 else value


def detectable_difference(n: int, sd: float, *, alpha: float = ALPHA, target: float = POWER) -> float:
    """The smallest |true difference| the paired t test with `n` pairs detects with power `target` (NaN if n < 3)."""
    from scipy.optimize import brentq

    if n < MIN_PAIRS or _nan(sd) or sd <= 0:
        return math.nan
    hi = sd
    while power(n, hi, sd, alpha=alpha) < target:
        hi *= 2
    return float(brentq(lambda x: power(n, x, sd, alpha=alpha) - target, 0.0, hi, xtol=1e-9 * sd))


def seeds_needed(diff: float, sd: float, *, alpha: float = ALPHA, target: float = POWER,
                 limit: int = MAX_SEEDS) -> int | None:
    """Fewest pairs (at least `MIN_PAIRS`) at which a true difference `diff` is detected with power `target`.

    None when more than `limit` would be needed (or the difference is 0, or the spread unknown).
    """
    if _nan(diff) or _nan(sd) or sd <= 0 or diff == 0:
        return None
    ns = np.arange(MIN_PAIRS, limit + 1)
    enough = np.nonzero(power(ns, diff, sd, alpha=alpha) >= target)[0]  # power grows with n
    return int(ns[enough[0]]) if len(enough) else None


def rank_bands(values: Sequence[Mapping[Any, float]], lower_better: bool = False, *,
               alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Rank bands of configurations from their per-seed values (seed -> value), tested pair by pair.

    Returns, per configuration (input order): ``rank`` (of the mean, 1 = best, ties share the best),
    ``lo`` and ``hi`` (the band), ``tied`` (not separated from the best; the best itself True) and
    ``n_min`` (fewest pairs it shares with another configuration). Every pair sharing at least
    `MIN_PAIRS` seeds is tested with the paired t test, Holm-corrected over all tested pairs;
    a configuration without values gets None everywhere.
    """
    present = [i for i, v in enumerate(values) if len(v)]
    out: list[dict[str, Any]] = [{"rank": None, "lo": None, "hi": None, "tied": None, "n_min": None}
                                 for _ in values]
    if not present:
        return out
    sign = 1.0 if lower_better else -1.0
    means = {i: sign * float(np.mean(list(values[i].values()))) for i in present}
    pairs, pvals, better = [], [], []
    for a_pos, a in enumerate(present):
        for b in present[a_pos + 1:]:
            shared = [s for s in values[a] if s in values[b]]
            test = paired_test([values[a][s] - values[b][s] for s in shared])
            pairs.append((a, b))
            pvals.append(test["p_value"])
            # a is better than b when its (signed) mean is smaller
            better.append(a if sign * test["mean_diff"] < 0 else b)
    adjusted = holm(pvals)
    above = {i: 0 for i in present}  # separated and better than i
    below = {i: 0 for i in present}  # separated and worse than i
    separated: set[tuple[int, int]] = set()
    for (a, b), p, win in zip(pairs, adjusted, better):
        if not _nan(p) and p < alpha:
            lose = b if win == a else a
            above[lose] += 1
            below[win] += 1
            separated.add((min(a, b), max(a, b)))
    best = min(present, key=lambda i: means[i])
    for i in present:
        rank = 1 + sum(means[j] < means[i] - 1e-12 for j in present)
        shared_n = [sum(1 for s in values[i] if s in values[j]) for j in present if j != i]
        out[i] = {"rank": rank, "lo": min(rank, 1 + above[i]), "hi": max(rank, len(present) - below[i]),
                  "tied": (min(i, best), max(i, best)) not in separated, "n_min": min(shared_n) if shared_n else 0}
    return out


def not_above_chance(mean: float, level: float, lower_better: bool = False) -> bool:
    """Whether a mean is not beyond its label-permutation baseline (False when either is missing)."""
    if _nan(mean) or _nan(level):
        return False
    return bool(mean >= level if lower_better else mean <= level)


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))

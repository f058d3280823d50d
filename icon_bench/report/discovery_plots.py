"""The Discovered section's figures: each study's search history on val, and the found divergences' generators f(t)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from icon_bench.report.discovery_search import best_so_far
from icon_bench.report.figure import RC, colours, plt, save

#: The references every generator figure draws beside the found divergences.
REFERENCES: tuple[str, ...] = ("kl", "tv", "js")
#: t in (0, T_MAX]: ratios p/q around 1, where the divergences differ most.
T_MAX = 4.0
_MARKERS = {"asha": "v", "diverged": "x", "collapsed": "s", "failed": "X"}


def generator_values(spec: Any, t: np.ndarray) -> np.ndarray:
    """f(t) of the divergence `spec` ("kl", {"name": "alpha", "a": 0.4}, ...), built from the registry.

    Every built-in divergence has ``generator(t)`` (numpy in, numpy out, for t > 0): the f of
    D = sum_j q_j f(p_j / q_j). A divergence without one raises TypeError naming it.
    """
    from icon_bench.hooks.registry import create

    built = create("divergence", spec)
    generator = getattr(built, "generator", None)
    if not callable(generator):
        raise TypeError(f"divergence {_label(spec)!r} has no generator(t) to draw")
    return np.asarray(generator(np.asarray(t, dtype=float)), dtype=float)


def _label(spec: Any) -> str:
    if isinstance(spec, Mapping):
        params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
        return f"{spec.get('name', '?')}({params})" if params else str(spec.get("name", "?"))
    return str(spec)


def plot_generators(found: Mapping[str, Any], path: Path) -> str | None:
    """f(t) of each found divergence (label -> spec) beside KL's, TV's and JS's on t in (0, 4]; the caption.

    Found divergences that cannot be drawn (no generator) are named in the caption; None when none can.
    """
    t = np.linspace(T_MAX / 400, T_MAX, 400)
    drawn: dict[str, np.ndarray] = {}
    skipped = []
    for label, spec in found.items():
        try:
            drawn[label] = generator_values(spec, t)
        except Exception:  # noqa: BLE001 - a plugin's divergence without a generator is named, not fatal
            skipped.append(label)
    if not drawn:
        return None
    refs = {name.upper(): generator_values(name, t) for name in REFERENCES}
    palette = colours(list(drawn))
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(6.0, 3.8))
        for (name, f), style in zip(refs.items(), (":", "--", "-.")):
            ax.plot(t, f, style, color="0.45", lw=1.2, label=f"{name} (reference)")
        for label, f in drawn.items():
            ax.plot(t, f, color=palette[label], lw=2.0, label=label)
        finite = np.concatenate([f[np.isfinite(f)] for f in [*refs.values(), *drawn.values()]])
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (-1.0, 1.0)
        pad = 0.08 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)  # -log t and chi2 run off to infinity: keep the curves around 1 readable
        ax.axvline(1.0, color="0.8", lw=0.8)
        ax.set_xlim(0, T_MAX)
        ax.set_xlabel("t = p / q")
        ax.set_ylabel("f(t)")
        ax.set_title("Generators f of the found divergences, D = Σ q f(p/q)")
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        save(fig, path)
    caption = ("Generator f(t) of each divergence the candidates use, beside KL (t log t), TV (|t - 1| / 2) and "
               "JS; every f(1) = 0, and the steeper f is away from t = 1, the harder D punishes p/q far from 1.")
    return caption + (f" Not drawn (no generator): {', '.join(skipped)}." if skipped else "")


def plot_history(trials: pd.DataFrame, path: Path, *, metric: str, higher_is_better: bool, title: str,
                 scale: float = 1.0) -> str | None:
    """The val value of each search trial and the best so far (complete trials only), pruned ones marked.

    Values are drawn x`scale` (100 for fraction metrics, as the tables show them).
    """
    if trials.empty:
        return None
    trials = trials.assign(value=trials["value"] * scale)
    best = best_so_far(trials, higher_is_better)
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(6.0, 3.4))
        done = trials[trials["complete"]]
        ax.plot(done["index"], done["value"], "o", ms=4, color="tab:blue", alpha=0.7, label="complete trial")
        ax.step(trials["index"], best, where="post", color="tab:red", lw=1.8, label="best so far")
        finite = trials["value"][np.isfinite(trials["value"])]
        floor = float(finite.min()) if len(finite) else 0.0
        for kind in dict.fromkeys(k for k in trials["pruned"] if isinstance(k, str)):
            hit = trials[trials["pruned"] == kind]
            # A trial stopped without a value (diverged, failed) is drawn at the lowest value seen.
            y = [v if np.isfinite(v) else floor for v in hit["value"]]
            ax.plot(hit["index"], y, _MARKERS.get(kind, "d"), ms=5, color="0.45", mfc="none",
                    label=f"pruned: {kind} ({len(hit)})")
        ax.set_xlabel("trial (the order TPE proposed them)")
        ax.set_ylabel(f"{metric}{' (×100)' if scale == 100 else ''} on val" + ("" if higher_is_better else " (lower is better)"))
        ax.set_title(title)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        save(fig, path)
    n_pruned = sum(isinstance(k, str) for k in trials["pruned"])
    return (f"{title}: {metric} on val of each of the {len(trials)} search trials and the best so far over complete "
            f"trials ({n_pruned} pruned, marked; a pruned trial's value was read before its full epochs, and one "
            "stopped without a value is drawn at the lowest value seen).")


def stem(*parts: str) -> str:
    """A file name stem for figures of `parts` (slug plus a digest, so two names that slug alike stay apart)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", "-".join(parts)).strip("-")[:50]
    return f"{slug}-{hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:6]}"

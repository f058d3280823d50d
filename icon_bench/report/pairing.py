"""Which rows pair: the configurations of one table and the baseline configuration each one pairs with.

A configuration is every setting that differs: the store's ``config_id`` (a hash of the spec less
its seed), so ``alpha(a=0.5)`` and ``alpha(a=2.0)`` are two configurations, never pooled. A table
is one (protocol version, kind, dataset, split): tuned and default numbers, protocols and splits
never pair. A contender pairs with one baseline configuration on the seeds both ran, each seed once:
the baseline that agrees with it on every setting both set, the compared key aside, so that
``--baseline method=kmeans`` pairs PMI under TV with k-means (k-means sets no divergence) and
``divergence=kl`` pairs PMI under TV at p.debias 0.6 with PMI under KL at p.debias 0.6.
`icon-bench compare` and the claims page both pair through this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from icon_bench.report.model import METRIC_PREFIX
from icon_bench.report.rows import (
    CHANCE_PREFIX,
    _is_missing,
    _seed_key,
    config_label,
    flatten_spec,
)
from icon_bench.report.stats import not_above_chance
from icon_bench.run.execution.labels import component_label

__all__ = ["TABLE_KEYS", "Config", "configuration", "configurations", "divergence_text", "key_value", "label_all",
           "pick_baseline"]

#: What a table is: rows pair only inside one of these.
TABLE_KEYS = ("protocol_version", "kind", "dataset", "split")
#: Spec keys that are never part of a configuration (datasets pair by label, seeds and splits by rule).
_NOT_CONFIG = ("seed", "evaluate", "split", "dataset")
#: Keys with a meaning of their own (the resolved method and divergence, as tables name them).
AXIS_KEYS = ("method", "divergence")


@dataclass
class Config:
    """One configuration of one table: its settings, its rows' spec, and its value per seed on one metric."""

    config_id: str
    cfg: dict[str, Any]  # flattened settings, method and divergence resolved (see `configuration`)
    spec: Mapping[str, Any]
    divergence: str | None  # as tables show it: "kl", "alpha(a=0.5)"; None: the method has none
    seeds: dict[Any, float] = field(default_factory=dict)
    label: str = ""
    chance: dict[Any, float] = field(default_factory=dict)  # seed -> the metric's label-permutation baseline

    def at_chance(self, lower_better: bool = False) -> bool:
        """Whether the mean is not beyond the mean chance level (False when the rows recorded none)."""
        if not self.chance or not self.seeds:
            return False
        mean, level = sum(self.seeds.values()) / len(self.seeds), sum(self.chance.values()) / len(self.chance)
        return not_above_chance(mean, level, lower_better)


def divergence_text(rec: Mapping[str, Any]) -> str | None:
    """A row's divergence with its parameters ("alpha(a=0.5)"), the method's default if the spec sets none."""
    spec = rec.get("spec") if isinstance(rec.get("spec"), Mapping) else {}
    value = spec.get("divergence")
    if isinstance(value, Mapping):
        return component_label(value)
    resolved = rec.get("divergence")
    if _is_missing(resolved) or resolved in ("default", None):
        return None if value is None or _is_missing(value) else str(value)
    return str(resolved)


def configuration(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A row's configuration as flat settings: spec keys but seed, split, evaluate, dataset; method and divergence resolved."""
    flat = flatten_spec(rec["spec"] if isinstance(rec.get("spec"), Mapping) else {})
    cfg = {k: v for k, v in flat.items()
           if k.split(".")[0] not in _NOT_CONFIG and k.split(".")[0] != "divergence" and not _is_missing(v)}
    cfg["method"] = rec["method"]
    div = divergence_text(rec)
    if div is not None:
        cfg["divergence"] = div
    return cfg


def key_value(cfg: Mapping[str, Any], key: str) -> Any:
    """The value a configuration gives `key` ("divergence", "p.debias", a trainer setting "epochs"); None if unset."""
    if key in cfg:
        return cfg[key]
    if "." not in key and f"settings.{key}" in cfg:  # a grid's plain key is a trainer setting ("epochs")
        return cfg[f"settings.{key}"]
    nested = {k[len(key) + 1:]: v for k, v in cfg.items() if k.startswith(key + ".")}
    return json.dumps(nested, sort_keys=True, default=str) if nested else None


def configurations(rows: pd.DataFrame, metric: str) -> dict[tuple, dict[str, Config]]:
    """Table (`TABLE_KEYS` values) -> config_id -> `Config` with each seed's value of `metric`.

    `rows` are normalised rows that may pair (ok, not search trials). A later row of the same
    configuration and seed replaces an earlier one (a retry), so a seed is never counted twice.
    """
    column = METRIC_PREFIX + metric
    out: dict[tuple, dict[str, Config]] = {}
    if column not in rows.columns:
        return out
    for rec in rows.to_dict("records"):
        if _is_missing(rec.get(column)):
            continue
        table = tuple(str(rec.get(k)) for k in TABLE_KEYS)
        configs = out.setdefault(table, {})
        cid = str(rec["config_id"])
        if cid not in configs:
            configs[cid] = Config(cid, configuration(rec), rec["spec"] if isinstance(rec["spec"], Mapping) else {},
                                  divergence_text(rec))
        configs[cid].seeds[_seed_key(rec["seed"])] = float(rec[column])
        if not _is_missing(rec.get(CHANCE_PREFIX + metric)):
            configs[cid].chance[_seed_key(rec["seed"])] = float(rec[CHANCE_PREFIX + metric])
    return out


def _canon(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)  # 0 and 0.0 (parquet widens ints beside NaN) are one value
    return str(value)


def _free(key: str, free_keys: Iterable[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in free_keys)


def pick_baseline(cont: Config, baselines: Iterable[Config], free_keys: Iterable[str]) -> Config | None:
    """The baseline configuration agreeing with `cont` on every setting both set, `free_keys` aside.

    Several agree: the one setting the fewest keys the other leaves unset (so PMI under TV at the
    default debias pairs with KL at the default, not at 0.6), then the most shared seeds, then the
    first label, so the choice never depends on row order.
    """
    free_keys = list(free_keys)
    ranked = []
    for base in baselines:
        if base.config_id == cont.config_id:
            continue
        keys_c = {k for k in cont.cfg if not _free(k, free_keys)}
        keys_b = {k for k in base.cfg if not _free(k, free_keys)}
        if all(_canon(cont.cfg[k]) == _canon(base.cfg[k]) for k in keys_c & keys_b):
            ranked.append((len(keys_c ^ keys_b), -len(set(base.seeds) & set(cont.seeds)), base.label,
                           base.config_id, base))
    return min(ranked, key=lambda r: r[:4])[-1] if ranked else None


def label_all(configs: Iterable[Config], always: Iterable[str] = ()) -> None:
    """Label configurations by what tells them apart: method · divergence · the settings that differ within a method.

    A setting the same in every configuration (the dataset's path, the epochs of a suite) is left out,
    so a line reads "pmi · alpha(a=0.5)" and not every shared key; `always` keys are shown whenever set.
    """
    configs = list(configs)
    every = sorted({k for c in configs for k in c.cfg if k not in AXIS_KEYS})
    by_method: dict[str, list[Config]] = {}
    for c in configs:
        by_method.setdefault(str(c.cfg.get("method")), []).append(c)
    # A setting that differs only between methods (k-means sets no epochs) is told by the method's name.
    varying = [k for k in every if k in set(always) or any(
        len({json.dumps(_canon(c.cfg.get(k)), default=str) for c in same}) > 1 for same in by_method.values())]
    for c in configs:
        c.label = config_label(c.spec, varying, c.divergence or "default")

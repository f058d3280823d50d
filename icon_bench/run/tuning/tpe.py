"""TPE search (Optuna, optional) for tuned suites: in process with ask/tell, on Ray through Tune's OptunaSearch.

Each candidate depends on the values told before it, so a configuration's search runs one trial at
a time under both executors, with the same seeded sampler (seeded by tune.seed and the cell's
seed) asked in the same order: the same seed gives the same candidates and the same selection.
A resumed search first replays the stored trials into a fresh study (asking again, which gives
the stored candidates, and telling their stored values), so it continues where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from icon_bench import extras
from icon_bench.run.execution.base import (
    LoadFn,
    RunSummary,
    TrialFn,
    _dataset_key,
    _record,
    failed_row,
)
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.tune_block import Param, Tune
from icon_bench.run.tuning.candidates import row_value
from icon_bench.run.tuning.plan import SEARCH, Configuration, _run_rungs, item_for, load_or_error, search_run

__all__ = ["available", "distributions", "replay", "run_tpe_local"]


def available() -> bool:
    """Whether Optuna is installed (the `tune` extra)."""
    return extras.available("optuna")


def distributions(params: Sequence[Param]) -> dict[str, Any]:
    """Optuna distributions named x0, x1, ... (Ray Tune splits config keys at dots and slashes)."""
    od = extras.require("optuna.distributions", "tpe")

    out: dict[str, Any] = {}
    for i, p in enumerate(params):
        if p.kind == "choice":
            out[f"x{i}"] = od.CategoricalDistribution(list(p.values))
        elif p.kind == "randint":
            out[f"x{i}"] = od.IntDistribution(int(p.values[0]), int(p.values[1]))
        else:
            out[f"x{i}"] = od.FloatDistribution(float(p.values[0]), float(p.values[1]), log=p.kind == "loguniform")
    return out


def sampler(tune: Tune, cell_seed: int) -> Any:
    """TPE seeded by (tune.seed, cell seed); random start for a third of the budget (at least 2 trials)."""
    optuna = extras.require("optuna", "tpe")

    seed = int(np.random.SeedSequence([int(tune.seed), int(cell_seed)]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, tune.budget // 3))


def objective(row: Mapping[str, Any], metric: str, higher: bool) -> float | None:
    """What the study maximises: the val value, negated for lower-is-better metrics; None for a failed trial."""
    value = row_value(row, metric) if row.get("status") == SEARCH else None
    return None if value is None else (value if higher else -value)


def replay(tune: Tune, conf: Configuration, rows: Sequence[Mapping[str, Any]], higher: bool) -> tuple[Any, Any, str]:
    """(study, its storage, study name) holding the configuration's stored search trials, in index order.

    Asking again gives each stored candidate (same sampler seed, same values told before it); a
    stored trial that does not match (another Optuna version drew it) is added as it was instead.
    """
    optuna = extras.require("optuna", "tpe")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = distributions(tune.params())
    keys = [p.key for p in tune.params()]
    storage = optuna.storages.InMemoryStorage()
    name = f"{conf.tuned_id}-{conf.cell['seed']}"
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler(tune, conf.cell["seed"]),
                                direction="maximize")
    metric = conf.search[0].info["metric"] if conf.search else tune.metric or "hungarian"
    for row in sorted(rows, key=lambda r: r["tune"]["index"]):
        stored = {f"x{i}": row["tune"]["values"][k] for i, k in enumerate(keys)}
        value = objective(row, metric, higher)
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.PRUNED
        trial = study.ask(dists)
        if trial.params == stored:
            study.tell(trial, value, state=state)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            study.add_trial(optuna.trial.create_trial(params=stored, distributions=dists, value=value, state=state))
    return study, storage, name


def values_of(params: Mapping[str, Any], tune: Tune) -> dict[str, Any]:
    """Suite keys for the study's x0, x1, ... parameters."""
    return {p.key: params[f"x{i}"] for i, p in enumerate(tune.params())}


def run_tpe_local(
    pending: Sequence[tuple[Configuration, list[dict[str, Any]], int]],
    store: ResultsStore,
    *,
    tune: Tune,
    higher: Mapping[str, bool],
    trial_fn: TrialFn | None = None,
    load_fn: LoadFn | None = None,
    threads: int | None = None,
    progress: bool = True,
    base: str | os.PathLike[str] | None = None,
    out: Any = None,
) -> RunSummary:
    """Each (configuration, its stored search rows, rungs' max epochs): ask, run, tell until the budget is spent."""
    optuna = extras.require("optuna", "tpe")

    total = sum(tune.budget - len(rows) for _, rows, _ in pending)
    base = os.fspath(base) if base is not None else os.getcwd()
    with search_run(total, progress, "search (local, tpe)", out) as (summary, bar):
        for conf, rows, epochs in pending:
            up = higher[conf.tuned_id]
            study, _, _ = replay(tune, conf, rows, up)
            dists = distributions(tune.params())
            data, load_error = load_or_error(load_fn, _dataset_key(conf.cell, base)[1])
            asha: dict[str, Any] = {}
            for index in range(len(rows), tune.budget):
                trial = study.ask(dists)
                item = item_for(conf, index, values_of(trial.params, tune), tune, epochs)
                bar.start(item.spec, values=item.info.get("values"))
                if load_error is not None:
                    row = item.annotate(failed_row(item.spec, load_error), item.rungs[0])
                else:
                    row = _run_rungs(item, data, trial_fn, threads, tune, asha)
                _record(store, row, summary, bar)
                value = objective(row, item.info["metric"], up)
                study.tell(trial, value, state=optuna.trial.TrialState.COMPLETE if value is not None
                           else optuna.trial.TrialState.PRUNED)
    return summary

"""Running a tuned suite: the plan (search trials per configuration), search in process, selection, final trials.

Search trials are ordinary trials on the validation split (spec ``"split": "val"``) whose rows
are stored with status ``search`` (``failed`` when they fail) and a ``tune`` record; a resumed
run skips the ones stored and a failed one counts as spent (``--retry-failed`` runs it again),
so every configuration spends the same budget. Once a configuration's search is complete, the
best on val is run once on test through the ordinary executor; that row's ``tune`` record holds
the budget, what was spent, the space, the selected values and the metric.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from icon_bench.run.execution.base import (
    LoadFn,
    RunSummary,
    TrialFn,
    _dataset_key,
    _default_load_fn,
    _record,
    failed_row,
    run_one,
)
from icon_bench.run.suite.ids import config_id, trial_id
from icon_bench.run.execution.progress import Progress
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.model import Suite
from icon_bench.run.suite.tune_block import Tune
from icon_bench.run.tuning.candidates import Asha, candidates, final_spec, resolution, rungs, search_spec, select, tuned_config_id

__all__ = ["Configuration", "FinalTrial", "SearchItem", "TunePlan", "plan_tuning", "run_search_local"]

SEARCH, FAILED = "search", "failed"


@dataclasses.dataclass
class SearchItem:
    """One search trial: its spec (full epochs, split val), id, the epochs it is scored at, its tune record."""

    spec: dict[str, Any]
    trial_id: str
    rungs: list[int]
    info: dict[str, Any]  # role, configuration, index, values, metric

    def rung_spec(self, epochs: int) -> dict[str, Any]:
        """The spec trained for `epochs` (the search spec itself at the last rung)."""
        if epochs == self.rungs[-1]:
            return self.spec
        return {**self.spec, "settings": {**self.spec["settings"], "epochs": int(epochs)}}

    def annotate(self, row: Mapping[str, Any], epochs: int) -> dict[str, Any]:
        """A trial's row as this search trial's stored row: its id, status search (if ok), the tune record."""
        row = dict(row)
        row["trial_id"] = self.trial_id
        row["config_id"] = config_id(self.spec)
        row["status"] = SEARCH if row.get("status") == "ok" else FAILED
        row["artifacts"] = None  # a search trial's embeddings are not kept; its val metrics are
        row["tune"] = {**self.info, "epochs": int(epochs), "stopped": epochs < self.rungs[-1]}
        return row


@dataclasses.dataclass
class Configuration:
    """One grid cell to tune: its search items and, once they are stored, the selection."""

    cell: dict[str, Any]
    tuned_id: str
    search: list[SearchItem]
    untuned: str | None = None  # why nothing is searched: the method takes none of the space's keys


@dataclasses.dataclass
class TunePlan:
    """A tuned suite against the store: configurations, search trials to run, defaults cells to run."""

    tune: Tune
    configurations: list[Configuration]
    latest: dict[str, dict[str, Any]]  # trial_id -> latest stored row
    to_search: list[SearchItem]
    defaults: list[dict[str, Any]]  # cells at their defaults still to run (tune.defaults)
    metric_of: dict[str, str]  # tuned_id -> selection metric
    # TPE: (configuration, its stored search rows, max epochs) whose search is not complete
    tpe_pending: list[tuple[Configuration, list[dict[str, Any]], int]] = dataclasses.field(default_factory=list)

    def describe(self, n_run: int) -> str:
        """`2 configurations x 3 seeds x budget 4 = 24 search trials on val, 0 done, 24 to run; then ...`."""
        tuned = [c for c in self.configurations if not c.untuned]
        configs, cells = len({c.tuned_id for c in tuned}), len(self.configurations)
        seeds = len({c.cell["seed"] for c in tuned})
        fixed = len({c.tuned_id for c in self.configurations if c.untuned})
        untuned = f" ({fixed} configuration{'s' if fixed != 1 else ''} with nothing to tune run as they are)" if fixed else ""
        return (
            f"{configs} configurations x {seeds} seeds x budget {self.tune.budget} = {self.n_search_total} search "
            f"trials on val, {self.n_search_total - self.n_to_search} done, {n_run} to run; then each selection once "
            f"on test ({cells} trials{untuned})" + (f" and each cell at its defaults ({cells})" if self.tune.defaults else "")
        )

    @property
    def n_to_search(self) -> int:
        return len(self.to_search) + sum(self.tune.budget - len(rows) for _, rows, _ in self.tpe_pending)

    @property
    def n_search_total(self) -> int:
        return self.tune.budget * sum(1 for c in self.configurations if not c.untuned)


def _metric(tune: Tune, spec: Mapping[str, Any]) -> str:
    """The selection metric: tune.metric, else the task default among the metrics the cell reports."""
    from icon_bench.run.tuning.candidates import default_metric

    if tune.metric:
        return tune.metric
    metrics = spec.get("evaluate")
    if metrics is None:
        from icon_bench.hooks.registry import get_registry

        try:
            metrics = list(get_registry().get("method", spec["method"]).create().metrics)
        except Exception:  # an unknown method: its trials fail and say so
            metrics = []
    return default_metric([m if isinstance(m, str) else str(m.get("name")) for m in metrics]) or "hungarian"


def _untunable(cell: Mapping[str, Any], tune: Tune) -> str | None:
    """Why `cell` has nothing to search (its method takes none of the space's keys), else None.

    A non-learned baseline (k-means) sets a suite's trainer settings aside: searching its lr would
    spend the budget on copies of one trial and report a "selected lr" that never ran.
    """
    from icon_bench.hooks.registry import get_registry

    try:
        method = get_registry().get("method", cell["method"]).create()
    except Exception:  # noqa: BLE001 - an unknown method: its trials fail and say so
        return None
    params = getattr(method, "params", None)
    if not hasattr(method, "ignored") or not isinstance(params, Mapping):
        return None  # a learned method: every space key is a trainer setting or a p / q / model key
    keys = [p.key for p in tune.params()]
    if any(key in params for key in keys):
        return None
    return f"{cell['method']} takes none of {', '.join(keys)}"


def _max_epochs(spec: Mapping[str, Any]) -> int:
    """The epochs a cell trains for: its settings, else its method's recipe (for ASHA's rungs)."""
    from icon_bench.run.execution.trial import recipe_of

    epochs = (spec.get("settings") or {}).get("epochs")
    if epochs is None:
        epochs = ((recipe_of(spec) or {}).get("settings") or {}).get("epochs", 1)
    return max(1, int(epochs))


def plan_tuning(suite: Suite, store: ResultsStore, *, force: bool = False, retry_failed: bool = False) -> TunePlan:
    """Every configuration's search trials and which of them still run (stored ones are skipped)."""
    tune = suite.tune
    assert tune is not None, "plan_tuning needs a suite with a tune block"
    latest = {r["trial_id"]: r for r in store.rows()}
    configurations: list[Configuration] = []
    to_search: list[SearchItem] = []
    metric_of: dict[str, str] = {}
    cells = suite.trials()
    tpe_pending = []
    for cell in cells:
        tid = tuned_config_id(cell, tune)
        metric_of.setdefault(tid, _metric(tune, cell))
        conf = Configuration(cell, tid, [], untuned=_untunable(cell, tune))
        configurations.append(conf)
        if conf.untuned:
            continue  # no search: its final runs at once (finals), with a record that says why
        epochs = _max_epochs(cell) if tune.scheduler is not None else 0
        if tune.algorithm == "tpe":
            # Candidates come from the sampler one at a time: the stored ones are what is known.
            stored = [] if force else _stored_search(latest.values(), tid, cell["seed"])
            conf.search = [item_for(conf, r["tune"]["index"], r["tune"]["values"], tune, epochs, metric_of[tid])
                           for r in stored]
            if len(stored) < tune.budget:
                tpe_pending.append((conf, stored, epochs))
            continue
        conf.search = [item_for(conf, i, values, tune, epochs, metric_of[tid])
                       for i, values in enumerate(candidates(tune, cell["seed"]))]
        for item in conf.search:
            status = (latest.get(item.trial_id) or {}).get("status")
            if force or status is None or (retry_failed and status != SEARCH):
                to_search.append(item)
    defaults = []
    for cell in cells if tune.defaults else []:
        status = (latest.get(trial_id(cell)) or {}).get("status")
        rerun = status not in (None, "ok") if retry_failed else status != "ok"
        if force or rerun:
            defaults.append(cell)
    return TunePlan(tune, configurations, latest, to_search, defaults, metric_of, tpe_pending)


def item_for(conf: Configuration, index: int, values: Mapping[str, Any], tune: Tune, epochs: int,
             metric: str | None = None) -> SearchItem:
    """The search item of candidate `index` (with `values`) of a configuration."""
    spec = search_spec(conf.cell, values)
    metric = metric or (conf.search[0].info["metric"] if conf.search else _metric(tune, conf.cell))
    info = {"role": SEARCH, "configuration": conf.tuned_id, "index": int(index), "values": dict(values),
            "metric": metric}
    return SearchItem(spec, trial_id(spec), rungs(epochs, tune.scheduler) if epochs else [0], info)


def _stored_search(rows: Any, tuned_id: str, seed: int) -> list[dict[str, Any]]:
    """A configuration's stored search rows at one seed, by candidate index (the latest of each index)."""
    by_index: dict[int, dict[str, Any]] = {}
    for row in rows:
        tune = row.get("tune") or {}
        if tune.get("role") == SEARCH and tune.get("configuration") == tuned_id and row.get("seed") == seed:
            by_index[int(tune["index"])] = row
    return [by_index[i] for i in sorted(by_index)]


def metric_higher(metric: str) -> bool:
    """Whether a larger value of the registered metric is better (True when it does not say)."""
    from icon_bench.hooks.registry import get_registry

    try:
        return bool(getattr(get_registry().get("metric", metric).create(), "higher_is_better", True))
    except Exception:  # a metric this process cannot build: the built-ins and most plugins maximise
        return True


class FinalTrial:
    """Trial function of a selected configuration's test run: adds its record to the row under `key`.

    `key` is "tune" for a tuned suite's finals, "discover" for loss discovery's confirmation runs.
    """

    def __init__(self, trial_fn: TrialFn | None, records: Mapping[str, Mapping[str, Any]], threads: int | None = None,
                 key: str = "tune"):
        self.trial_fn, self.records, self.threads, self.key = trial_fn, dict(records), threads, key

    def __call__(self, spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
        row = run_one(spec, data, self.trial_fn, self.threads)
        record = self.records.get(trial_id(spec))
        if record is not None:
            row[self.key] = dict(record)
        return row


def finals(plan: TunePlan, rows: Mapping[str, Mapping[str, Any]], *, force: bool = False) -> tuple[list[dict], dict, list[dict]]:
    """(final specs to run, trial_id -> tune record, failed rows of configurations whose search found nothing).

    Only configurations whose every search trial is stored take part; a final already ok is skipped.
    """
    tune = plan.tune
    specs, records, empty = [], {}, []
    for conf in plan.configurations:
        searched = [rows.get(item.trial_id) for item in conf.search]
        if not conf.untuned and (len(searched) < tune.budget or any(r is None for r in searched)):
            continue  # the search of this configuration was interrupted: no selection yet
        metric = plan.metric_of[conf.tuned_id]
        best = select([r for r in searched if r.get("status") == SEARCH], metric)
        record = {
            "role": "final",
            "configuration": conf.tuned_id,
            "config_spec": {k: v for k, v in conf.cell.items() if k != "seed"},
            # An untuned configuration keeps the suite's budget (it was not cut short: there was
            # nothing to search), so it ranks in the same tuned table as the others; spent says 0.
            "budget": tune.budget,
            "spent": len(searched),
            "failed": sum(1 for r in searched if r.get("status") != SEARCH),
            "epochs_spent": sum(int((r.get("tune") or {}).get("epochs") or 0) for r in searched),
            "space": {p.key: p.describe() for p in tune.params()},
            "algorithm": tune.algorithm,
            "scheduler": tune.scheduler.model_dump() if tune.scheduler else None,
            "seed": tune.seed,
            "metric": metric,
            "selected": None,
            "val_value": None,
        }
        if conf.untuned:
            record.update(selected={}, untuned=conf.untuned)
        elif best is None:
            spec = final_spec(conf.cell, {})
            row = failed_row(spec, f"no search trial of this configuration reported {metric!r} on val")
            empty.append({**row, "tune": record})
            continue
        else:
            record["selected"] = dict(best["tune"]["values"])
            record["selected_index"] = best["tune"]["index"]
            record["val_value"] = best["metrics"][metric]
            # The val split too small to tell candidates apart: said in the report's tuning lines.
            record["unresolved"] = resolution([r for r in searched if r.get("status") == SEARCH], metric, best)
        spec = final_spec(conf.cell, record["selected"])
        tid = trial_id(spec)
        records[tid] = record
        if force or (rows.get(tid) or {}).get("status") != "ok":
            specs.append(spec)
    return specs, records, empty


# ---------------------------------------------------------------------------------------------
# Search in process
# ---------------------------------------------------------------------------------------------
def run_search_local(
    items: Sequence[SearchItem],
    store: ResultsStore,
    *,
    tune: Tune,
    trial_fn: TrialFn | None = None,
    load_fn: LoadFn | None = None,
    threads: int | None = None,
    progress: bool = True,
    base: str | os.PathLike[str] | None = None,
    out: Any = None,
) -> RunSummary:
    """Run search trials one after another in this process (ASHA's rule in trial order when scheduled).

    `base` is what relative dataset paths are relative to (the suite's root; None: the current
    directory), `out` where a line per finished trial goes when stderr is not a terminal.
    """
    base = os.fspath(base) if base is not None else os.getcwd()
    cache: dict[str, tuple[Any, str | None]] = {}
    asha: dict[str, Asha] = {}
    with search_run(len(items), progress, "search (local)", out) as (summary, bar):
        for item in items:
            bar.start(item.spec, values=item.info.get("values"))
            key, ds_spec = _dataset_key(item.spec, base)
            if key not in cache:
                cache = {key: load_or_error(load_fn, ds_spec)}  # one dataset held at a time
            data, load_error = cache[key]
            if load_error is not None:
                row = item.annotate(failed_row(item.spec, load_error), item.rungs[0])
            else:
                row = _run_rungs(item, data, trial_fn, threads, tune, asha)
            _record(store, row, summary, bar)
    return summary


@contextlib.contextmanager
def search_run(total: int, progress: bool, desc: str, out: Any = None) -> Iterator[tuple[RunSummary, Progress]]:
    """A search's summary and progress bar; Ctrl-C ends it as interrupted (stored rows stay), its time recorded."""
    t0 = time.perf_counter()
    summary = RunSummary(total=total)
    bar = Progress(total, enabled=progress, out=out, desc=desc)
    try:
        yield summary, bar
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        summary.elapsed_s = time.perf_counter() - t0


def load_or_error(load_fn: LoadFn | None, ds_spec: dict[str, Any]) -> tuple[Any, str | None]:
    """(data, None), or (None, what failed): a dataset that does not load fails its trials, not the run."""
    try:
        return (load_fn or _default_load_fn())(ds_spec), None
    except Exception as exc:  # noqa: BLE001 - recorded as each trial's failure
        return None, f"dataset {ds_spec.get('name')!r} failed to load: {exc}"


def _run_rungs(
    item: SearchItem, data: Any, trial_fn: TrialFn | None, threads: int | None, tune: Tune, asha: dict[str, Asha]
) -> dict[str, Any]:
    """Train and score the item at each rung until ASHA stops it (one rung without a scheduler)."""
    from icon_bench.run.tuning.candidates import higher_is_better, row_value

    row: dict[str, Any] = {}
    for epochs in item.rungs:
        row = item.annotate(run_one(item.rung_spec(epochs), data, trial_fn, threads), epochs)
        if tune.scheduler is None or epochs == item.rungs[-1]:
            break
        metric = item.info["metric"]
        rule = asha.setdefault(
            item.info["configuration"] + f"/{item.spec['seed']}",
            Asha(item.rungs[-1], tune.scheduler, higher_is_better([row], metric)),
        )
        if row["status"] != SEARCH or not rule.keep(epochs, row_value(row, metric)):
            break
    return row

"""Result rows -> MLflow: one parent run per suite and results folder, one nested run per trial, keyed by trial id.

A trial's run holds its spec (flattened) and tune block as parameters, its metrics, timings and
selection value as metrics, its training history (loss and learning rate per epoch, gradient norm
per step) as metric steps, its status and error as tags, and a failed trial's traceback file as an
artifact. Logging is idempotent: each trial run carries the trial id and a fingerprint of the row
it was made from, so a row already logged is skipped and a newer row of the same trial (a retried
failure) replaces the older run, as the newest row wins in the store.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from icon_bench.extras import require
from icon_bench.report.rows import flatten_spec

__all__ = ["MlflowLog", "row_metrics", "row_params", "row_tags"]

TAG_KIND = "icon_bench.kind"  # "suite" (the parent) or "trial"
TAG_SUITE = "icon_bench.suite"
TAG_RESULTS = "icon_bench.results"
TAG_TRIAL = "icon_bench.trial_id"
#: What a run is keyed by: the trial id and its protocol version (the store keeps a row per both).
TAG_KEY = "icon_bench.row_key"
#: Set last, once everything else of the run is logged: a run cut short has none and is redone.
TAG_ROW = "icon_bench.row"
PARENT_RUN_ID = "mlflow.parentRunId"

# MLflow's limits (mlflow/utils/validation.py): values are cut to fit, batches split.
_MAX_PARAM_VALUE, _MAX_TAG_VALUE = 6000, 8000
_BATCH_METRICS, _BATCH_PARAMS, _BATCH_TAGS = 1000, 100, 100
_BAD_KEY = re.compile(r"[^\w\-. /:]")
_TAGGED = ("status", "method", "divergence", "dataset_label", "split", "seed", "config_id", "suite", "run_id",
           "hostname", "git_commit", "device")


def _key(name: str) -> str:
    """A name MLflow accepts as a param or metric key (letters, digits, _ - . space / : only)."""
    return _BAD_KEY.sub("_", name)[:250]


def _ms(stamp: Any) -> int | None:
    """An ISO time stamp of the row (started_at, finished_at) in milliseconds since the epoch."""
    try:
        return int(_dt.datetime.fromisoformat(str(stamp)).timestamp() * 1000)
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def row_key(row: Mapping[str, Any]) -> str:
    """``<trial id>/<protocol version>``: a trial measured under two protocol versions is two runs, as two rows."""
    protocol = row.get("protocol")
    return f"{row['trial_id']}/{protocol.get('version', '') if isinstance(protocol, Mapping) else ''}"


def fingerprint(row: Mapping[str, Any]) -> str:
    """What tells one stored row of a trial from another: the run that stored it and when (the store sets both)."""
    keys = ("trial_id", "run_id", "stored_at", "status", "finished_at")
    if not row.get("stored_at"):  # a row from before the store stamped them: all of it
        keys = tuple(sorted(row))
    picked = {k: row.get(k) for k in keys}
    return hashlib.sha256(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:16]


def row_params(row: Mapping[str, Any]) -> dict[str, str]:
    """The spec, flattened (``p.debias``, ``settings.epochs``), and the tune block as ``tune.*`` (selected values, budget)."""
    flat = flatten_spec(row.get("spec") or {})
    tune = {k: v for k, v in (row.get("tune") or {}).items() if k != "config_spec"}  # config_spec repeats the spec
    flat.update({f"tune.{k}": v for k, v in flatten_spec(tune).items()})
    flat["protocol.version"] = (row.get("protocol") or {}).get("version")
    return {_key(k): (v if isinstance(v, str) else json.dumps(v))[:_MAX_PARAM_VALUE]
            for k, v in flat.items() if v is not None}


def row_metrics(row: Mapping[str, Any]) -> Iterator[tuple[str, float, int]]:
    """(key, value, step): the metrics, timings and peak memory at step 0, each history list step by step."""
    for prefix, block in (("", row.get("metrics")), ("timings.", row.get("timings")),
                          ("peak_memory_mb.", row.get("peak_memory_mb"))):
        for name, value in (block or {}).items():
            if (number := _number(value)) is not None:
                yield _key(prefix + str(name)), number, 0
    val = _number((row.get("tune") or {}).get("val_value"))
    if val is not None:
        yield "tune.val_value", val, 0
    for name, values in (row.get("history") or {}).items():
        for step, value in enumerate(values if isinstance(values, list) else []):
            if (number := _number(value)) is not None:
                yield _key(f"history.{name}"), number, step


def row_tags(row: Mapping[str, Any]) -> dict[str, str]:
    """Status, names, ids, the error's text and the warnings, as searchable tags."""
    tags = {f"icon_bench.{k}": str(row[k]) for k in _TAGGED if row.get(k) is not None}
    tags["icon_bench.tune_role"] = str((row.get("tune") or {}).get("role") or "none")
    if row.get("error"):
        tags["icon_bench.error"] = str(row["error"])[:_MAX_TAG_VALUE]
    if row.get("warnings"):
        tags["icon_bench.warnings"] = "; ".join(map(str, row["warnings"]))[:_MAX_TAG_VALUE]
    return tags


def _run_name(row: Mapping[str, Any]) -> str:
    tune = row.get("tune") or {}
    parts = [row.get("method"), row.get("divergence"), row.get("dataset_label") or row.get("dataset"),
             f"seed {row.get('seed')}"]
    if tune.get("role") == "search":
        parts.append(f"search {tune.get('index')}")
    elif tune.get("role") == "final":
        parts.append("tuned")
    parts.append(str(row.get("trial_id", ""))[:8])  # cells that differ only in an override stay apart
    return " · ".join(str(p) for p in parts if p is not None)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MlflowLog:
    """Logs the rows of one results folder to one MLflow experiment, under the suite's parent run."""

    def __init__(self, tracking_uri: str | None, experiment: str, *, suite: str, results_dir: str | Path) -> None:
        tracking = require("mlflow.tracking", "MLflow logging")
        self.client = tracking.MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = str(self.client.tracking_uri)
        self.suite, self.results_dir = suite, Path(results_dir).resolve()
        found = self.client.get_experiment_by_name(experiment)
        if found is not None and found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        self.experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        self.parent_id = self._parent()
        #: row key -> (run id, fingerprint of the row it holds; None for a run cut short)
        self.logged: dict[str, tuple[str, str | None]] = {}
        for run in self._runs(f"tags.`{PARENT_RUN_ID}` = '{self.parent_id}'"):
            key = run.data.tags.get(TAG_KEY)
            if key:
                self.logged[key] = (run.info.run_id, run.data.tags.get(TAG_ROW))

    def _runs(self, query: str) -> Iterator[Any]:
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _parent(self) -> str:
        """The suite's parent run for this results folder: found by its tags, else made."""
        for run in self._runs(f"tags.`{TAG_KIND}` = 'suite'"):  # compared here: names need no quoting
            tags = run.data.tags
            if tags.get(TAG_SUITE) == self.suite and tags.get(TAG_RESULTS) == str(self.results_dir):
                return str(run.info.run_id)
        tags = {TAG_KIND: "suite", TAG_SUITE: self.suite, TAG_RESULTS: str(self.results_dir)}
        return str(self.client.create_run(self.experiment_id, tags=tags, run_name=self.suite).info.run_id)

    def log_row(self, row: Mapping[str, Any], store_dir: str | Path | None = None) -> bool:
        """Log one stored row as a nested run; False when this very row is already logged."""
        tid, key, mark = str(row["trial_id"]), row_key(row), fingerprint(row)
        previous = self.logged.get(key)
        if previous is not None and previous[1] == mark:
            return False
        if previous is not None:  # a newer row of the trial (or a run cut short): it replaces the old run
            self.client.delete_run(previous[0])
        from mlflow.entities import Metric, Param

        tags = {PARENT_RUN_ID: self.parent_id, TAG_KIND: "trial", TAG_TRIAL: tid, TAG_KEY: key, **row_tags(row)}
        run_id = self.client.create_run(self.experiment_id, start_time=_ms(row.get("started_at")), tags=tags,
                                        run_name=_run_name(row)).info.run_id
        self.logged[key] = (run_id, None)
        stamp = _ms(row.get("finished_at")) or 0
        metrics = [Metric(k, v, stamp, s) for k, v, s in row_metrics(row)]
        params = [Param(k, v) for k, v in row_params(row).items()]
        for batch in _chunks(metrics, _BATCH_METRICS):
            self.client.log_batch(run_id, metrics=batch)
        for batch in _chunks(params, _BATCH_PARAMS):
            self.client.log_batch(run_id, params=batch)
        self._log_traceback(run_id, row, store_dir)
        self.client.set_tag(run_id, TAG_ROW, mark)
        ok = row.get("status") in ("ok", "search")
        self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED", end_time=_ms(row.get("finished_at")))
        self.logged[key] = (run_id, mark)
        return True

    def _log_traceback(self, run_id: str, row: Mapping[str, Any], store_dir: str | Path | None) -> None:
        """A failed trial's traceback file (tracebacks/<trial id>.txt) as the artifact tracebacks/<trial id>.txt."""
        rel = row.get("traceback_file")
        path = Path(store_dir or self.results_dir) / str(rel) if rel else None
        if path is not None and path.is_file():
            self.client.log_artifact(run_id, str(path), "tracebacks")
        elif isinstance(row.get("traceback"), str) and row["traceback"]:
            self.client.log_text(run_id, row["traceback"], f"tracebacks/{row['trial_id']}.txt")

    def finish(self, status: str = "FINISHED") -> None:
        """End the suite's parent run (a rerun or resume reopens the same one)."""
        self.client.set_terminated(self.parent_id, status)

    def describe(self) -> str:
        return f"experiment {self.experiment_id} at {self.tracking_uri}, parent run {self.parent_id}"

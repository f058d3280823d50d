"""One trial: spec -> data -> method -> evaluation -> a result row; and the ``icon-bench trial`` command."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import socket
import time
import traceback as _tb
from collections.abc import Mapping, Sequence
from typing import Any

from icon_bench.errors import IconBenchError, TrialError
from icon_bench.run.execution.environment import git_commit, peak_memory_mb, versions
from icon_bench.run.suite.ids import config_id, normalize_spec, trial_id

__all__ = ["add_commands", "config_id", "fail_on_warnings", "normalize_spec", "parse_set", "run_trial", "trial_id"]


def run_trial(
    spec: Mapping[str, Any],
    data: Any = None,
    *,
    progress: bool = False,
    device: str = "auto",
) -> dict[str, Any]:
    """Run one trial and return its result row (docs/architecture.md); a failure becomes a "failed" row.

    ``data`` is an already loaded DataSplits for ``spec["dataset"]`` (the executors share one copy);
    None loads it here. A KeyboardInterrupt propagates; any other exception is recorded in the row.
    """
    import torch

    from icon_bench.data.options import (
        dataset_label,  # imported here: the data package pulls in torch
    )
    from icon_bench.train.trainer import resolve_device

    t0 = time.perf_counter()
    started = _now()
    spec = normalize_spec(spec)
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    row: dict[str, Any] = {
        "trial_id": trial_id(spec),
        "config_id": config_id(spec),
        "spec": spec,
        "method": spec["method"],
        "dataset": (spec["dataset"] or {}).get("name"),
        "divergence": _name_of(spec["divergence"]),
        "seed": spec["seed"],
        "split": spec["split"],
        "dataset_label": dataset_label(spec["dataset"]),  # with the content hash once the data is loaded
        "data": {},
        "status": "failed",
        "metrics": {},
        "protocol": {},
        "components": {},
        "timings": {"load_s": 0.0, "train_s": 0.0, "eval_s": 0.0, "total_s": 0.0},
        "peak_memory_mb": {},
        "device": str(dev),
        "history": {},
        "info": {},
        "versions": {},
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
        "started_at": started,
        "finished_at": None,
        "error": None,
        "traceback": None,
        "warnings": [],  # evaluation/health.py: diverged / collapsed, on a row that is still "ok"
        "artifacts": {},
        "recipe": None,
        "seed_independent": False,
    }
    try:
        row["versions"] = versions()
        _run(spec, data, row, dev, progress)
        row["status"] = "ok"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a trial failure is data, not a crash of the suite
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["traceback"] = _tb.format_exc()
    row["timings"]["total_s"] = time.perf_counter() - t0
    row["peak_memory_mb"] = peak_memory_mb(dev)
    row["finished_at"] = _now()
    return row


def _run(spec: dict[str, Any], data: Any, row: dict[str, Any], dev: Any, progress: bool) -> None:
    from icon_bench.data.load import load_dataset
    from icon_bench.evaluation import evaluator as evaluation
    from icon_bench.evaluation.health import chance_levels, trial_warnings
    from icon_bench.hooks.registry import get_registry
    from icon_bench.run.execution.trial_data import (
        check_transductive,
        data_summary,
        map_artifacts,
    )

    registry = get_registry()
    if not spec["method"]:
        raise TrialError("the trial spec names no method")
    if not spec["dataset"]:
        raise TrialError("the trial spec names no dataset")
    method_comp = registry.get("method", spec["method"])
    method = method_comp.create()
    recipe = method.with_overrides(spec)
    row["recipe"] = _recipe_data(recipe)
    row["seed_independent"] = bool(getattr(recipe, "seed_independent", False))  # baselines say nothing: False
    metrics = spec["evaluate"] if spec["evaluate"] is not None else list(recipe.metrics)
    # The split settings are the dataset entry's options (val_fraction, val_seed, transductive).
    row["protocol"] = evaluation.protocol(metrics, splits=spec["dataset"], split=spec["split"])
    if row["divergence"] is None and getattr(recipe, "divergence", None) is not None:
        row["divergence"] = _name_of(recipe.divergence)
    row["components"] = _components(registry, method_comp, recipe, spec)

    t = time.perf_counter()
    if data is None:
        data = load_dataset(spec["dataset"])
    row["timings"]["load_s"] = time.perf_counter() - t
    row["data"] = data_summary(data, spec)
    row["dataset_label"] = row["data"]["label"]
    if data.meta.get("transductive"):
        check_transductive(recipe, metrics, spec)
    # A val trial's method gets the val rows where the test rows would be, and no test row at all.
    scored = data.val_as_test() if spec["split"] == "val" else data

    t = time.perf_counter()
    output = method.run(scored, seed=spec["seed"], device=dev, overrides=spec, progress=progress)
    row["timings"]["train_s"] = time.perf_counter() - t
    row["history"] = {k: [float(v) for v in vals] for k, vals in (output.history or {}).items()}
    row["info"] = _jsonable(output.info)

    t = time.perf_counter()
    row["metrics"] = {k: float(v) if _is_number(v) else v for k, v in evaluation.evaluate(output, scored, metrics).items()}
    row["timings"]["eval_s"] = time.perf_counter() - t
    row["warnings"] = trial_warnings(output, scored)
    row["chance"] = chance_levels(output, scored, metrics)  # label-permutation baselines, for reports
    row["artifacts"] = map_artifacts(output, scored)


def fail_on_warnings(trial_fn: Any, spec: dict[str, Any], data: Any) -> dict[str, Any]:
    """Run ``trial_fn`` (None: `run_trial`) and make an ok row that carries warnings a failed one.

    The suite option ``fail_on_warnings: true`` wraps the trial function with this (a module-level
    function, so a Ray worker can unpickle the ``functools.partial``). Metrics and warnings stay in
    the row; only status and error change, so a rerun (or ``--retry-failed``) runs the cell again.
    """
    row = (trial_fn or run_trial)(spec, data)
    if isinstance(row, dict) and row.get("status", "ok") == "ok" and row.get("warnings"):
        row = {**row, "status": "failed", "error": "fail_on_warnings: " + "; ".join(map(str, row["warnings"]))}
    return row


def recipe_of(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recipe a (normalised) spec runs now: its method's defaults with the spec's overrides, as
    plain data; None when the method cannot be built here or does not describe itself.

    Each row records this at run time, so a resumed suite can tell the cells done under other
    defaults (an upgraded icon-bench or plugin) from the cells still valid.
    """
    from icon_bench.hooks.registry import get_registry

    try:
        return _recipe_data(get_registry().get("method", spec["method"]).create().with_overrides(spec))
    except Exception:  # an unknown or broken method: the trial itself reports it when run
        return None


def protocol_of(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The protocol record a spec's row carries (`evaluation.protocol`); None when its method cannot be built here.

    A row the trial never wrote itself (its worker died, its dataset failed to load) still belongs
    to its protocol's tables, where it marks its configuration incomplete.
    """
    from icon_bench.evaluation import evaluator
    from icon_bench.hooks.registry import get_registry

    try:
        recipe = get_registry().get("method", spec["method"]).create().with_overrides(spec)
        metrics = spec["evaluate"] if spec.get("evaluate") is not None else list(recipe.metrics)
        return evaluator.protocol(metrics, splits=spec.get("dataset"), split=spec.get("split") or "test")
    except Exception:  # an unknown or broken method: the row stays unversioned
        return None


def _recipe_data(recipe: Any) -> dict[str, Any] | None:
    resolved = getattr(recipe, "resolved", None)
    return _jsonable(resolved()) if callable(resolved) else None


def _components(registry: Any, method_comp: Any, recipe: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Each component of the trial with the distribution and version that provides it."""

    def entry(kind: str, name: str | None) -> dict[str, Any] | None:
        if name is None:
            return None
        try:
            comp = registry.get(kind, name)
            return {"name": comp.name, "distribution": comp.distribution, "version": comp.version}
        except IconBenchError:  # e.g. "sklearn.kmeans": not a registered component
            return {"name": name, "distribution": None, "version": None}

    names = recipe.components() if hasattr(recipe, "components") else {}
    out: dict[str, Any] = {
        "method": entry("method", method_comp.name),
        "dataset": entry("dataset", (spec["dataset"] or {}).get("name")),
        "divergence": entry("divergence", names.get("divergence")),
        "p": entry("kernel", names.get("p")),
        "q": entry("kernel", names.get("q")),
    }
    model = names.get("model")
    out["model"] = entry("model", model) if model and model != "auto" else (
        {"name": model, "distribution": None, "version": None} if model else None
    )
    return out


# -- CLI ----------------------------------------------------------------------------------------
def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["p.debias=0.6", "epochs=5"]`` -> spec fragments; values YAML-parsed; bare keys are settings."""
    import yaml

    spec: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise TrialError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise TrialError(f"--set {key}: cannot parse value {raw!r}: {exc}") from exc
        parts = key.split(".")
        if not all(parts):
            raise TrialError(f"--set: malformed key {key!r}")
        head = parts[0]
        if len(parts) == 1:
            if head in ("divergence", "seed", "evaluate", "method"):
                spec[head] = value
                continue
            parts = ["settings", head]
        elif head not in ("p", "q", "model", "settings", "dataset"):
            from icon_bench.errors import UnknownNameError

            raise UnknownNameError("--set prefix", head, ["p", "q", "model", "settings", "dataset"])
        node = spec
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TrialError(f"--set {key}: {part!r} is already set to a value")
        node[parts[-1]] = value
    return spec


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The trial spec of ``icon-bench trial`` arguments."""
    sets = parse_set(args.set or [])
    dataset = {"name": args.dataset, **(sets.pop("dataset", None) or {})}
    spec: dict[str, Any] = {"method": args.method, "dataset": dataset, "seed": args.seed, "split": args.split}
    if args.divergence is not None:
        spec["divergence"] = args.divergence
    for key, value in sets.items():
        spec[key] = value
    return spec


def cmd_trial(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = build_spec(args)
    row = run_trial(spec, progress=args.progress, device=args.device)
    if args.json:
        print(json.dumps(_jsonable({k: v for k, v in row.items() if k != "artifacts"}), indent=2))
    else:
        from tabulate import tabulate

        from icon_bench.run.execution.labels import NONE

        print(
            f"{row['method']} on {row['dataset_label']} (divergence {row['divergence'] or NONE}, seed {row['seed']}, "
            f"{row['split']} split, protocol {row['protocol'].get('version', '?')}): {row['status']}"
        )
        if row["metrics"]:
            rows = [[k, f"{v:.4f}" if _is_number(v) else v] for k, v in row["metrics"].items()]
            print(tabulate(rows, headers=["metric", "value"], tablefmt="simple"))
        for warning in row.get("warnings") or []:
            print(f"warning: {warning}")
        t = row["timings"]
        print(f"time: load {t['load_s']:.1f}s, train {t['train_s']:.1f}s, eval {t['eval_s']:.1f}s, total {t['total_s']:.1f}s")
    if row["status"] != "ok":
        raise TrialError(str(row["error"]))
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``icon-bench trial``."""
    p = subparsers.add_parser(
        "trial",
        help="run one trial (method x dataset) and print its metrics",
        description="Run one trial. --set takes dotted keys: p.debias=0.6, q.temperature=0.2, "
        "model.hidden=256, dataset.pca=50, epochs=5 (bare keys are trainer settings); values are YAML.",
    )
    p.add_argument("method", metavar="METHOD")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--divergence", default=None, help="divergence name (default: the method's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--split", choices=["test", "val"], default="test",
        help="the split to score: test (default), or val (train without val, score val; for tuning)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (repeatable)")
    p.add_argument("--json", action="store_true", help="print the result row as JSON (arrays omitted)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.set_defaults(func=cmd_trial)


# -- helpers ------------------------------------------------------------------------------------
def _name_of(spec: Any) -> str | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        return spec.get("name")
    if isinstance(spec, (tuple, list)) and spec:
        return str(spec[0])
    return str(spec)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) or hasattr(v, "item")


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=_default))
    except (TypeError, ValueError):
        return repr(value)


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return repr(obj)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

"""Fake trial functions and dataset loaders for the runner tests: deterministic, cheap, and observable."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from icon_bench.hooks.registry import Registry, load_registry, set_registry
from icon_bench.hooks.specs import hookimpl
from icon_bench.run.suite.ids import config_id, trial_id


def _row(spec: dict[str, Any], metrics: dict[str, float], **extra: Any) -> dict[str, Any]:
    ds = spec["dataset"]
    div = spec.get("divergence")
    return {
        "trial_id": trial_id(spec),
        "config_id": config_id(spec),
        "spec": spec,
        "method": spec["method"],
        "dataset": ds["name"] if isinstance(ds, dict) else ds,
        "divergence": div.get("name") if isinstance(div, dict) else div,
        "seed": spec["seed"],
        "status": "ok",
        "metrics": metrics,
        "timings": {"total_s": 0.0},
        "error": None,
        "traceback": None,
        **extra,
    }


def fake_load(ds_spec: dict[str, Any]) -> dict[str, Any]:
    """A tiny 'dataset'; appends this process's pid to ds_spec['log'] when given (to count loads)."""
    if ds_spec.get("log"):
        with open(ds_spec["log"], "a") as fh:
            fh.write(f"{os.getpid()}\n")
    # Seeded from the name (not hash(), which differs between processes) so every worker agrees.
    rng = np.random.default_rng(int(hashlib.sha256(ds_spec["name"].encode()).hexdigest()[:8], 16))
    return {"name": ds_spec["name"], "x": rng.normal(size=(50, 4)), "loader_pid": os.getpid()}


def fake_trial(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """Deterministic metrics from the spec and the data; sleeps settings.sleep; fails on settings.fail."""
    settings = spec.get("settings") or {}
    if settings.get("sleep"):
        time.sleep(float(settings["sleep"]))
    if settings.get("fail"):
        raise ValueError(f"boom in {spec['method']}")
    if settings.get("interrupt"):
        raise KeyboardInterrupt  # what Ctrl-C looks like from inside a trial
    digest = hashlib.sha256(trial_id(spec).encode()).digest()
    score = int.from_bytes(digest[:4], "little") / 2**32
    data_term = float(np.asarray(data["x"]).sum()) if data is not None else 0.0
    return _row(
        spec,
        {"hungarian": round(score, 6), "nmi": round(score / 2, 6), "data_sum": data_term},
        artifacts={"embedding_2d": np.arange(6, dtype=np.float32).reshape(3, 2), "labels": np.array([0, 1, 0])},
        pid=os.getpid(),
    )


def gpu_trial(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """Records the GPUs Ray assigned and whether another trial ran on the same GPU at the same time.

    Concurrency is proven by a rendezvous, not by comparing clocks: each trial leaves a marker
    named after its GPU and waits (bounded) for a second marker on that GPU. Two trials that Ray
    ran one after the other can never both see each other, however slowly workers start.
    """
    import ray

    settings = spec.get("settings") or {}
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    folder = settings.get("rendezvous")
    peer_seen = False
    if folder and gpu_ids:
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, f"{gpu_ids[0]}-{spec['seed']}"), "w").close()
        deadline = time.time() + float(settings.get("wait", 30.0))
        while time.time() < deadline and not peer_seen:
            peer_seen = len([f for f in os.listdir(folder) if f.startswith(f"{gpu_ids[0]}-")]) >= 2
            time.sleep(0.05)
        time.sleep(float(settings.get("sleep", 0.5)))  # stay on the GPU so the peer sees us too
    return _row(
        spec,
        {"hungarian": 1.0},
        gpu_ids=gpu_ids,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        peer_seen=peer_seen,
        pid=os.getpid(),
    )


def dying_trial(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """Kills its worker process on the first attempt (no marker file yet), succeeds on the retry."""
    marker = (spec.get("settings") or {})["marker"]
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        os._exit(1)
    return fake_trial(spec, data)


def threads_trial(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """Records how many torch CPU threads the trial ran with."""
    import torch

    return _row(spec, {"hungarian": 1.0}, threads=torch.get_num_threads())


def mapping_trial(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """Records where the dataset's train features live: the /proc/self/maps line holding their memory."""
    ptr = data.x_train.data_ptr()
    where = ""
    with open("/proc/self/maps") as fh:
        for line in fh:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= ptr < hi:
                where = line.strip()
                break
    return _row(spec, {"x_sum": float(data.x_train.sum())}, mapping=where, pid=os.getpid())


class OpenRecipe:
    """The recipe of method "fake": it declares no settings, so fake_trial's knobs (sleep, fail,
    interrupt) pass the suite's checks, as any setting of a plugin method that declares none does."""

    metrics = ["hungarian"]

    def with_overrides(self, overrides: Any) -> OpenRecipe:
        return self

    def resolved(self) -> None:
        return None


@hookimpl
def register_methods(register: Any) -> None:
    register("fake", OpenRecipe, description="a method whose settings are not declared (fake_trial runs it)")


def use_fake_method() -> Registry:
    """Make the process-wide registry the built-ins plus method "fake" (this module as a plugin)."""
    registry = load_registry(extra_plugins={"fake_methods": sys.modules[__name__]})
    set_registry(registry)
    return registry


def worker_trial(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """Records its worker process (pid) after sleeping settings.sleep."""
    time.sleep(float((spec.get("settings") or {}).get("sleep", 0)))
    return _row(spec, {"hungarian": 1.0}, pid=os.getpid())


def niced_trial(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """A row as a worker niced below the driver (Ray's default: +15) reports it."""
    return _row(spec, {"hungarian": 1.0}, nice=os.nice(0) + 15)


def tune_load(ds_spec: dict[str, Any]) -> dict[str, Any]:
    """A 'dataset' with val and test labels; ``poison_test`` replaces every test label by 9."""
    rng = np.random.default_rng(int(hashlib.sha256(ds_spec["name"].encode()).hexdigest()[:8], 16))
    y_val = rng.integers(0, 10, size=200)
    y_test = np.full(200, 9) if ds_spec.get("poison_test") else rng.integers(0, 10, size=200)
    return {"name": ds_spec["name"], "x": rng.normal(size=(50, 4)), "y_val": y_val, "y_test": y_test}


def split_target(labels: np.ndarray) -> float:
    """The log10 learning rate that scores best on a split: set by that split's labels."""
    return -4.0 + 2.0 * float(np.mean(labels)) / 9.0


def tune_trial(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """A score that peaks at an lr set by the labels of the split the spec scores on (val or test).

    Poisoning the test labels moves the best test lr, so a search that peeked at test would select
    another lr; a divergence offset and epochs (more is better) make configurations and rungs differ.
    """
    settings = spec.get("settings") or {}
    if settings.get("sleep"):
        time.sleep(float(settings["sleep"]))
    split = spec.get("split", "test")
    labels = data["y_val"] if split == "val" else data["y_test"]
    lr = float(settings.get("lr", 1e-3))
    offset = {"kl": 0.0, "tv": 0.05}.get(spec.get("divergence") or "kl", 0.0)
    epochs = float(settings.get("epochs", 9))
    score = 1.0 - abs(np.log10(lr) - split_target(labels)) / 4.0 + offset - 0.1 / epochs + 0.01 * spec["seed"]
    return _row(spec, {"hungarian": round(float(score), 6), "nmi": 0.5}, split=split, pid=os.getpid())


def shuffled_test_load(ds_spec: dict[str, Any]) -> Any:
    """The real dataset with its test labels shuffled (seeded): only a trial that reads test sees it."""
    import torch

    from icon_bench.data.load import load_dataset

    data = load_dataset(ds_spec)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(data.y_test)))
    data.y_test = data.y_test[perm]
    return data


def kill_after_rows(driver: Path, jsonl: Path, rows: int, poll_s: float = 0.05) -> int:
    """Run `driver` with Python, SIGKILL it once `jsonl` holds `rows` lines (no chance to clean up); its exit code."""
    proc = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (jsonl.exists() and len(jsonl.read_bytes().splitlines()) >= rows):
            time.sleep(poll_s)
        os.kill(proc.pid, signal.SIGKILL)  # mid-sweep, maybe mid-write
    finally:
        proc.wait(timeout=30)
    return proc.returncode


def discover_trial(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """A planted landscape over losses: alpha wins by up to 0.15 at a = 0.7 (a broad peak, width 0.25); every
    other loss scores the same.

    The score reads the labels of the split it is on only through the seed's noise, so the search's
    val values and the confirmation's test values are independent draws around the same truth.
    """
    settings = spec.get("settings") or {}
    if settings.get("sleep"):
        time.sleep(float(settings["sleep"]))
    div = spec.get("divergence") or "kl"
    name, a = (div.get("name"), div.get("a")) if isinstance(div, dict) else (div, None)
    truth = 0.6
    if spec["method"] == "kmeans":
        truth = 0.58
    elif name == "alpha" and a is not None:
        truth = 0.6 + 0.15 * float(np.exp(-(((float(a) - 0.7) / 0.25) ** 2)))
    split = spec.get("split", "test")
    rng = np.random.default_rng([int(spec["seed"]), 0 if split == "val" else 1,
                                 int(hashlib.sha256(json.dumps(div, sort_keys=True, default=str).encode()).hexdigest()[:6], 16)])
    epochs = float(settings.get("epochs", 4))
    score = truth - 0.02 / epochs + float(rng.normal(0, 0.01))
    warned = {"diverged": "diverged: loss is nan at epoch 2", "collapsed": "collapsed: all 50 test points in one cluster"}
    warnings = [warned[kind] for kind, names in (settings.get("warn") or {}).items() if name in names]
    return _row(spec, {"hungarian": round(score + (0.5 if warnings else 0.0), 6), "nmi": 0.5, "ari": 0.4}, split=split,
                warnings=warnings)

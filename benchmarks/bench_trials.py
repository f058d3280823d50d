"""Whole trials, timed by phase: CPU seconds per epoch, the loss's share, and the kNN graph, side by side.

Runs pmi and debiased_infonce_clustering on digits and pmi on an MNIST subset (the `arrays` dataset
on ../shared/data/mnist.npz with pca 50; skipped with a note when the file is absent), each through
`run_trial` as `icon-bench trial` runs it, in this process, 1 thread. Per trial it prints:
- trial CPU s: user + system CPU of `run_trial` (data loaded beforehand, imports excluded);
- CPU s per epoch: the training loop's CPU (`fit`) over its epochs;
- loss CPU s and share: the loss's forward plus its backward (timed from the gradient reaching the
  loss's output to it reaching the model's output, by autograd hooks) during training, and its
  share of the training loop and of the trial;
- graph: the global kNN graph's CPU seconds and where it came from (computed, or from the
  in-process cache when an earlier trial of the same data built it), in a fresh cache directory.
`--process` also times whole `icon-bench trial` processes (imports and all: what /usr/bin/time
reports, the issue's measure), `--quickstart` the quick-start suite as `icon-bench run` runs it.

    python benchmarks/bench_trials.py                                     # ~3 min of CPU
    python benchmarks/bench_trials.py --mnist-rows 60000 --mnist-epochs 16 --process   # the issue's goals
    python benchmarks/bench_trials.py --only none --quickstart            # the quick-start suite alone
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
#: The issue's goals (user CPU of whole processes, 1 thread) and what was measured before.
GOALS = {
    "pmi digits": (38.7 / 4, "a quarter of 38.7 s measured"),
    "quickstart": (90.0, "258 s measured"),
    "pmi MNIST PCA-50, 16 epochs": (150.0, "about 740 s measured"),
}


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Meter:
    """CPU seconds of the training loop, the loss (forward + backward) and the kNN graph, by patching
    the functions a trial calls (`fit`, the loss `learn._loss` builds, `knn_graph`)."""

    def __init__(self) -> None:
        self.fit_s = self.loss_fwd_s = self.loss_bwd_s = self.graph_s = 0.0

    def install(self) -> Callable[[], None]:
        from icon_bench.data import graph as graph_mod
        from icon_bench.train import learn, trainer

        real_fit, real_loss, real_knn = trainer.fit, learn._loss, graph_mod.knn_graph

        def timed(real: Callable[..., Any], field: str) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                t0 = cpu_s()
                try:
                    return real(*args, **kwargs)
                finally:
                    setattr(self, field, getattr(self, field) + cpu_s() - t0)

            return call

        fit, knn_graph = timed(real_fit, "fit_s"), timed(real_knn, "graph_s")

        def loss(*args: Any, **kwargs: Any) -> Any:
            module = real_loss(*args, **kwargs)
            module.forward = self._timed(module.forward)  # an instance attribute: isinstance still holds
            return module

        trainer.fit, learn._loss, graph_mod.knn_graph = fit, loss, knn_graph

        def uninstall() -> None:
            trainer.fit, learn._loss, graph_mod.knn_graph = real_fit, real_loss, real_knn

        return uninstall

    def _timed(self, forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def run(batch: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            t0 = cpu_s()
            out = forward(batch, *args, **kwargs)
            self.loss_fwd_s += cpu_s() - t0
            z = batch.get("embeddings") if hasattr(batch, "get") else None
            if out.requires_grad and isinstance(z, torch.Tensor) and z.requires_grad:
                # Autograd runs the loss's backward between these two hooks (CPU: on this thread).
                mark: dict[str, float] = {}
                out.register_hook(lambda g: mark.__setitem__("start", cpu_s()))
                z.register_hook(lambda g: self._add_backward(mark))
            return out

        return run

    def _add_backward(self, mark: dict[str, float]) -> None:
        if "start" in mark:
            self.loss_bwd_s += cpu_s() - mark.pop("start")


def one_trial(name: str, spec: dict[str, Any], data: Any) -> list[Any]:
    """Run one trial with a Meter installed; its row of the table."""
    from icon_bench.run.execution.trial import run_trial

    meter = Meter()
    uninstall = meter.install()
    try:
        t0, w0 = cpu_s(), time.perf_counter()
        row = run_trial(spec, data)
        trial_cpu, wall = cpu_s() - t0, time.perf_counter() - w0
    finally:
        uninstall()
    if row["status"] != "ok":
        raise SystemExit(f"{name}: the trial failed: {row['error']}")
    epochs = int(row["info"]["epochs"])
    loss = meter.loss_fwd_s + meter.loss_bwd_s
    graph = row["info"].get("graph", {})
    metric = row["metrics"].get("hungarian")
    return [
        name, len(data.x_train), epochs, trial_cpu, wall, meter.fit_s / max(epochs, 1), loss,
        f"{loss / max(meter.fit_s, 1e-9):.0%} / {loss / max(trial_cpu, 1e-9):.0%}",
        f"{meter.graph_s:.2f} ({graph.get('source', '-')})", metric,
    ]


def process_cpu(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(user CPU s, wall s, exit status) of a child process (and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    code = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime, time.perf_counter() - t0, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=["pmi-digits", "dic-digits", "pmi-mnist"],
                    help="which trials: pmi-digits dic-digits pmi-mnist (or none)")
    ap.add_argument("--mnist-rows", type=int, default=10000, help="MNIST training rows (60000: all)")
    ap.add_argument("--mnist-epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--process", action="store_true", help="also time whole `icon-bench trial` processes")
    ap.add_argument("--quickstart", action="store_true", help="also time `icon-bench run suites/quickstart.yaml`")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = tempfile.mkdtemp(prefix="icon-bench-graphs-")
    os.environ["ICON_BENCH_CACHE"] = cache  # a fresh graph cache: the first trial of a dataset computes it
    from icon_bench.data.load import load_dataset

    digits = {"name": "digits"}
    mnist: dict[str, Any] = {"name": "arrays", "path": str(MNIST), "pca": 50}
    if args.mnist_rows < 60000:
        mnist["subset"] = args.mnist_rows
    mnist_settings = {"epochs": args.mnist_epochs, "lr_step": 6 if args.mnist_epochs >= 12 else 0}
    cases = {
        "pmi-digits": ("pmi digits", {"method": "pmi", "dataset": digits, "seed": 0}),
        "dic-digits": ("debiased_infonce_clustering digits",
                       {"method": "debiased_infonce_clustering", "dataset": digits, "seed": 0}),
        "pmi-mnist": (f"pmi MNIST PCA-50, {args.mnist_epochs} epochs",
                      {"method": "pmi", "dataset": mnist, "seed": 0, "settings": mnist_settings}),
    }
    print(f"torch {torch.__version__}, {args.threads} thread(s), graph cache {cache}")
    table, loaded = [], {}
    for key in [k for k in args.only if k != "none"]:
        name, spec = cases[key]
        if spec["dataset"]["name"] == "arrays" and not MNIST.is_file():
            print(f"note: {MNIST} not found; {name} skipped")
            continue
        ds_key = repr(sorted(spec["dataset"].items()))
        if ds_key not in loaded:
            t0 = cpu_s()
            loaded[ds_key] = load_dataset(spec["dataset"])
            print(f"loaded {spec['dataset']}: {len(loaded[ds_key].x_train)} train rows, {cpu_s() - t0:.1f} CPU s")
        table.append(one_trial(name, spec, loaded[ds_key]))
    if table:
        print(tabulate(table, headers=["trial", "train rows", "epochs", "trial CPU s", "wall s", "CPU s / epoch",
                                       "loss CPU s", "loss share: loop / trial", "graph CPU s", "hungarian"],
                       floatfmt=("", "", "", ".2f", ".1f", ".2f", ".2f", "", "", ".4f"), tablefmt="simple"))
    whole = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cli = [sys.executable, "-m", "icon_bench.cli"]
    if args.process:
        whole.append(("pmi digits", [*cli, "trial", "pmi", "digits", "--threads", "1"]))
        if MNIST.is_file() and args.mnist_rows >= 60000 and args.mnist_epochs == 16:
            sets = ["--set", f"dataset.path={MNIST}", "--set", "dataset.pca=50", "--set", "epochs=16",
                    "--set", "lr_step=6"]
            whole.append(("pmi MNIST PCA-50, 16 epochs", [*cli, "trial", "pmi", "arrays", *sets, "--threads", "1"]))
    if args.quickstart:
        out = tempfile.mkdtemp(prefix="icon-bench-quickstart-")
        whole.append(("quickstart", [*cli, "run", str(REPO / "suites" / "quickstart.yaml"), "--results",
                                     f"{out}/results", "--report-dir", f"{out}/report"]))
    rows = []
    for name, argv in whole:
        fresh = {**env, "ICON_BENCH_CACHE": tempfile.mkdtemp(prefix="icon-bench-graphs-")}  # graphs included
        user, wall, code = process_cpu(argv, fresh)
        goal, before = GOALS[name]
        rows.append([name, user, wall, "ok" if code == 0 else f"exit {code}", goal, before,
                     "met" if code == 0 and user <= goal else "NOT met"])
    if rows:
        print(tabulate(rows, headers=["whole process", "user CPU s", "wall s", "status", "goal CPU s", "before",
                                      "goal"], floatfmt=".1f", tablefmt="simple"))


if __name__ == "__main__":
    main()

"""ImageNet-sized frozen features on one machine: load, kNN graph, pmi / debiased clustering steps,
evaluation and peak RSS, each in its own process, at 100 k, 400 k and 1.28 M rows.

    python benchmarks/bench_scale.py                          # 100 k and 400 k train rows
    python benchmarks/bench_scale.py --sizes 1281167 --steps 3
    python benchmarks/bench_scale.py --sizes 100000 --paths load,graph_exact,graph_approx

Features are synthetic, 768-d float32 in 1,000 classes (a class centre, one of 8 modes per class,
a 16-d latent and isotropic noise: every row's 10 nearest neighbours are of its class, and the
neighbourhoods have a low intrinsic dimension, as real embeddings do), written
once per size as .npy under --workdir (train rows, and --test rows of test) and loaded through the
`arrays` dataset (memory-mapped). Each path runs in a fresh process, so its peak RSS is its own:

- load: `load_dataset` (val_fraction 0.1: the train rows are copied once, the val rows carved out);
- graph / graph_exact / graph_approx: the global kNN graph (k 10, euclidean, as pmi builds it);
  auto is approximate above 200 k rows with faiss; graph_approx at a size where graph_exact also
  ran gives the recall over every row, not only the sample;
- pmi, pmi_debiased (p.debias 0.2), pmi_propagated (p.propagate 2: walks on the whole graph, a sparse
  matrix power made before the steps, its CPU time in graph_setup_cpu_s), debiased_clustering, and
  debiased_clustering_propagated_js (propagate 2, debias 0.6, JS: suites/clustering.yaml's costliest cell): --steps
  training steps (batch --batch anchors + 2 graph neighbours each, 10 heads, 1,000 clusters, the MLP
  head) after loading and reading the graph from the cache; the epoch's time is the median step
  times the steps of an epoch (a step's cost does not depend on the rows: the check is the step
  time across sizes). "step RSS" is how much the peak RSS grew over the steps (0 when the steps stay
  under the load's peak: then their working set is at most the peak less rss_now_before_steps_gb,
  the resident set when they began); --graph synthetic
  gives them k random rows of each row's class instead of the kNN graph (no graph to wait for);
- evaluate: the head chosen on 30 batches, then that head embeds every train and test row, and
  hungarian / nmi / ari on the test clusters;
- epoch: --epochs whole epochs of pmi through the trainer's own `fit` (not extrapolated), the
  resident set sampled every 2 s (does memory grow over the steps or the epochs?);
- configs: every learned configuration of --suite (suites/clustering.yaml's 60), built at this
  size, one warm-up step, one timed step and one under torch.profiler: the step's CPU time and the
  most one op allocated in it (self CPU memory per call), the propagated graphs made once per setting;
- kmeans: the `kmeans` baseline's scikit-learn KMeans (n_clusters = classes): its k-means++ seeding
  on --kmeans-init-rows rows (linear in the rows: scaled to all of them) and --kmeans-iters Lloyd
  iterations over every row (the recipe runs to convergence, up to 300).

CPU seconds are process CPU time (all threads); wall time on a shared machine is not comparable.
(About 420 lines: one short child function per path, sharing the data, setup and step helpers
above them, kept in one script so each path runs as `--child PATH` of the same file.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

PATHS = ("load", "graph", "pmi", "pmi_debiased", "pmi_propagated", "debiased_clustering", "debiased_clustering_propagated_js",
         "evaluate", "epoch", "configs", "kmeans")
METHODS = {
    "pmi": ("pmi", {}),
    "pmi_debiased": ("pmi", {"p": {"debias": 0.2}}),
    "pmi_propagated": ("pmi", {"p": {"propagate": 2}}),
    "debiased_clustering": ("debiased_infonce_clustering", {}),
    # The costliest cell of suites/clustering.yaml: views + graph, propagated 2 steps, debiased 0.6, JS.
    "debiased_clustering_propagated_js": (
        "debiased_infonce_clustering", {"p": {"propagate": 2, "debias": 0.6}, "divergence": "js"}
    ),
}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _rss_now_gb() -> float:
    """The resident set now (VmRSS), not its peak: what a step's working set is measured from."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 2**20


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def make_data(folder: Path, n: int, n_test: int, dim: int, classes: int, seed: int = 0) -> None:
    """x_train.npy / y_train.npy / x_test.npy / y_test.npy, written in chunks (never all in memory)."""
    if (folder / "done").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    modes = 0.6 * rng.standard_normal((classes, 8, dim), dtype=np.float32)  # 8 modes per class
    latent = rng.standard_normal((16, dim), dtype=np.float32) / 4
    for split, rows in (("train", n), ("test", n_test)):
        x = np.lib.format.open_memmap(folder / f"x_{split}.npy", mode="w+", dtype=np.float32, shape=(rows, dim))
        y = rng.integers(0, classes, rows)
        mode = rng.integers(0, 8, rows)
        for a in range(0, rows, 50_000):
            b = min(rows, a + 50_000)
            z = rng.standard_normal((b - a, 16), dtype=np.float32)
            noise = rng.standard_normal((b - a, dim), dtype=np.float32)
            x[a:b] = centres[y[a:b]] + modes[y[a:b], mode[a:b]] + 0.5 * (z @ latent) + 0.25 * noise
        x.flush()
        del x
        np.save(folder / f"y_{split}.npy", y)
    (folder / "done").write_text("ok")


def _load(folder: Path, args: argparse.Namespace):
    from icon_bench.data.load import load_dataset

    spec = {"name": "arrays", "path": str(folder / "x_train.npy"), "labels": "y_train.npy",
            "test_features": "x_test.npy", "test_labels": "y_test.npy", "val_fraction": args.val_fraction}
    return load_dataset(spec)


def child_load(folder: Path, args: argparse.Namespace) -> dict:
    c0, w0 = _cpu(), time.perf_counter()
    data = _load(folder, args)
    return {"cpu_s": _cpu() - c0, "wall_s": time.perf_counter() - w0, "n_train": len(data.x_train),
            "n_val": len(data.x_val), "n_test": len(data.x_test)}


def child_graph(folder: Path, args: argparse.Namespace, approximate: bool | None) -> dict:
    from icon_bench.data.graph import ANN_KEY, global_knn, graph_record

    data = _load(folder, args)
    c0, w0 = _cpu(), time.perf_counter()
    graph, source, key = global_knn([data.x_train], 10, "euclidean", approximate=approximate)
    out = {"cpu_s": _cpu() - c0, "wall_s": time.perf_counter() - w0, "source": source, **graph_record(key)}
    exact_path = Path(os.environ["ICON_BENCH_CACHE"]) / "knn" / f"{key.removesuffix(ANN_KEY)}.npy"
    if key.endswith("-ann") and exact_path.is_file():  # the exact graph ran at this size: recall over every row
        from icon_bench.data.ann import recall_at_k

        out["recall_all_rows"] = round(recall_at_k(graph, torch.from_numpy(np.load(exact_path))), 4)
    return out


def synthetic_graph(labels: torch.Tensor, k: int = 10, seed: int = 0) -> torch.Tensor:
    """(n, k) int64: k random rows of each row's class (the step paths' stand-in for the kNN graph
    with --graph synthetic: a step reads k columns per row whatever found them)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    y = labels.long()
    pick = (torch.rand(len(y), k, generator=g) * counts[y, None]).long() + starts[y, None]
    return order[pick]


def _setup(folder: Path, args: argparse.Namespace, which: str):
    from icon_bench.train.build import _make_augment
    from icon_bench.train.learn import _loss, _train_data
    from icon_bench.train.recipes import get_recipe
    from icon_bench.train.trainer import TrainSettings

    data = _load(folder, args)
    if args.graph == "synthetic":
        data.knn_train = synthetic_graph(data.y_train)
    name, spec = METHODS[which]
    recipe = get_recipe(name).with_overrides({**spec, "settings": {"batch_size": args.batch}})
    settings = TrainSettings.from_dict(recipe.settings)
    dev = torch.device("cpu")
    c0 = _cpu()
    train_data, x_all, graph_info = _train_data(data, recipe, settings, False, dev)
    graph_info = {**(graph_info or {}), "cpu_s": round(_cpu() - c0, 2)}
    heads = int(recipe.options.get("heads", 1))
    model = recipe.build_model(data, n_rows=x_all.shape[0], init_rows=x_all, heads=heads)
    loss_fn = _loss(recipe, data, heads, dev)
    augment = _make_augment(recipe.options.get("augment"), data, settings.views)
    return data, recipe, settings, train_data, model, loss_fn, augment, heads, graph_info


def train_step(train_data, settings, g, augment, model, loss_fn, opt) -> tuple[float, int]:
    """One training step as `fit` takes it (a batch of random anchors and their neighbours): (loss, batch rows)."""
    from icon_bench.train.trainer import make_batch

    anchors = torch.randint(0, train_data.x.shape[0], (settings.batch_size,), generator=g)
    batch = make_batch(train_data, anchors, settings, g, augment)
    batch["embeddings"] = model(batch["inputs"]).float()
    loss = loss_fn(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss), int(batch["inputs"].shape[0])


def child_steps(folder: Path, args: argparse.Namespace, which: str) -> dict:
    _, _, settings, train_data, model, loss_fn, augment, _, graph_info = _setup(folder, args, which)
    opt = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    n = train_data.x.shape[0]
    before, now = _rss_gb(), _rss_now_gb()
    times = []
    for _ in range(args.steps):
        c0 = _cpu()
        loss, batch_rows = train_step(train_data, settings, g, augment, model, loss_fn, opt)
        times.append(_cpu() - c0)
    step = statistics.median(times)
    steps_per_epoch = -(-n // settings.batch_size)
    propagation = graph_info.get("propagation")
    return {"step_cpu_s": step, "steps_cpu_s": [round(t, 2) for t in times], "epoch_cpu_s": step * steps_per_epoch,
            "steps_per_epoch": steps_per_epoch, "batch_rows": batch_rows,
            "step_rss_gb": _rss_gb() - before, "rss_before_steps_gb": round(before, 2),
            "rss_now_before_steps_gb": round(now, 2), "loss": float(loss),
            "graph_setup_cpu_s": graph_info["cpu_s"], **({"propagation": propagation} if propagation else {})}


def child_evaluate(folder: Path, args: argparse.Namespace) -> dict:
    from icon_bench.evaluation.evaluator import evaluate
    from icon_bench.evaluation.metrics import MethodOutput
    from icon_bench.train.learn import _embed

    data, recipe, settings, train_data, model, loss_fn, augment, heads, _ = _setup(folder, args, "pmi")
    c0, w0 = _cpu(), time.perf_counter()
    z = _embed(model, loss_fn, data, train_data, data.x_train, settings, 0, augment, False, torch.device("cpu"), heads)
    info = z.pop("info")
    embed_cpu = _cpu() - c0
    out = MethodOutput(train_embeddings=z["train"], test_embeddings=z["test"], val_embeddings=z["val"],
                       train_clusters=z["train"].argmax(1), test_clusters=z["test"].argmax(1),
                       val_clusters=z["val"].argmax(1))
    scores = evaluate(out, data, recipe.metrics)
    return {"cpu_s": _cpu() - c0, "embed_cpu_s": embed_cpu, "wall_s": time.perf_counter() - w0,
            "selected_head": info.get("selected_head"), "scores": {k: round(float(v), 4) for k, v in scores.items()
                                                                    if isinstance(v, (int, float))}}


def _rss_sampler(samples: list[tuple[float, float]], stop: threading.Event) -> None:
    t0 = time.perf_counter()
    while not stop.wait(2.0):
        samples.append((round(time.perf_counter() - t0, 1), round(_rss_now_gb(), 3)))


def child_epoch(folder: Path, args: argparse.Namespace) -> dict:
    """Whole epochs of pmi through `fit`, with the resident set sampled as they run."""
    from icon_bench.train.trainer import fit

    _, _, settings, train_data, model, loss_fn, augment, _, _ = _setup(folder, args, "pmi")
    settings.epochs = args.epochs
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_rss_sampler, args=(samples, stop), daemon=True)
    now = _rss_now_gb()
    c0, w0 = _cpu(), time.perf_counter()
    sampler.start()
    result = fit(model, loss_fn, train_data, settings, seed=0, augment=augment)
    stop.set()
    sampler.join()
    cpu = _cpu() - c0
    tenth = max(1, len(samples) // 10)
    return {"epochs": args.epochs, "steps": result.steps, "cpu_s": round(cpu, 1),
            "cpu_s_per_epoch": round(cpu / args.epochs, 1), "cpu_s_per_step": round(cpu / max(result.steps, 1), 3),
            "wall_s": round(time.perf_counter() - w0, 1), "loss_per_epoch": [round(v, 4) for v in result.history["loss"]],
            "rss_now_before_gb": round(now, 3), "rss_now_samples_gb": [r for _, r in samples[::tenth]],
            "rss_now_max_gb": max((r for _, r in samples), default=now), "rss_now_last_gb": samples[-1][1] if samples else now}


def _largest_allocation(prof) -> int:
    """The most memory one op call allocated for itself (the profiler's self CPU memory per call: a
    leaf op's outputs and workspace), the step's largest allocation by op."""
    return max((e.self_cpu_memory_usage for e in prof.events()), default=0)


def child_configs(folder: Path, args: argparse.Namespace) -> dict:
    """Each learned configuration of the suite: a warm-up step, then one profiled step (CPU s, largest allocation)."""
    from torch.profiler import ProfilerActivity, profile

    from icon_bench.run.suite.reader import load_suite
    from icon_bench.train import learn
    from icon_bench.train.build import _make_augment
    from icon_bench.train.recipes import get_recipe
    from icon_bench.train.trainer import TrainSettings

    data = _load(folder, args)
    if args.graph == "synthetic":
        data.knn_train = synthetic_graph(data.y_train)
    made: dict[tuple, tuple] = {}
    original = learn.propagated

    def propagated_once(recipe, data_, knn):  # one sparse power per setting, not one per configuration
        key = (recipe.p_propagate, recipe.options.get("propagate_keep"))
        if key not in made:
            c0 = _cpu()
            made[key] = original(recipe, data_, knn)
            made[key][2]["cpu_s"] = round(_cpu() - c0, 1)
        return made[key]

    learn.propagated = propagated_once
    rows = []
    seen: set[str] = set()
    for spec in load_suite(args.suite).trials():
        if spec["method"] in ("kmeans", "spectral"):
            continue
        label = " ".join(f"{k}={v}" for k, v in (("method", spec["method"]), ("divergence", spec.get("divergence")),
                                                 ("debias", spec["p"].get("debias")), ("propagate", spec["p"].get("propagate"))))
        if label in seen:
            continue
        seen.add(label)
        recipe = get_recipe(spec["method"]).with_overrides({**spec, "dataset": None, "settings": {"batch_size": args.batch}})
        settings = TrainSettings.from_dict(recipe.settings)
        train_data, x_all, _ = learn._train_data(data, recipe, settings, False, torch.device("cpu"))
        heads = int(recipe.options.get("heads", 1))
        model = recipe.build_model(data, n_rows=x_all.shape[0], init_rows=x_all, heads=heads)
        loss_fn = learn._loss(recipe, data, heads, torch.device("cpu"))
        augment = _make_augment(recipe.options.get("augment"), data, settings.views)
        opt = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-3)
        step = (train_data, settings, torch.Generator().manual_seed(0), augment, model, loss_fn, opt)
        train_step(*step)
        c0 = _cpu()
        loss, batch_rows = train_step(*step)
        cpu = _cpu() - c0
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            train_step(*step)
        rows.append({"config": label, "step_cpu_s": round(cpu, 2), "batch_rows": batch_rows,
                     "largest_allocation_mb": round(_largest_allocation(prof) / 1e6, 1), "loss": round(loss, 4),
                     "finite": bool(np.isfinite(loss)), "rss_now_gb": round(_rss_now_gb(), 2)})
        print("CONFIG " + json.dumps(rows[-1]), flush=True)
    learn.propagated = original
    return {"configurations": len(rows), "largest_allocation_mb": max(r["largest_allocation_mb"] for r in rows),
            "all_finite": all(r["finite"] for r in rows), "step_cpu_s_max": max(r["step_cpu_s"] for r in rows),
            "propagation": {str(k): v[2] for k, v in made.items()}, "rows": rows}


def child_kmeans(folder: Path, args: argparse.Namespace) -> dict:
    """The `kmeans` baseline's two costs apart: scikit-learn's k-means++ seeding (linear in the rows
    for a fixed k, so timed on the first --kmeans-init-rows) and its Lloyd iterations over every row
    (--kmeans-iters of them, from random rows: the iterations cost the same whatever the start)."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    data = _load(folder, args)
    x = data.x_train.numpy()
    k, sub = int(data.num_classes), min(args.kmeans_init_rows, len(x))
    c0 = _cpu()
    kmeans_plusplus(x[:sub], n_clusters=k, random_state=0)
    seed_cpu = _cpu() - c0
    c0, w0 = _cpu(), time.perf_counter()
    km = KMeans(n_clusters=k, init="random", n_init=1, max_iter=args.kmeans_iters, random_state=0).fit(x)
    cpu = _cpu() - c0
    return {"kmeanspp_rows": sub, "kmeanspp_cpu_s": round(seed_cpu, 1),
            "kmeanspp_cpu_s_all_rows_extrapolated": round(seed_cpu * len(x) / sub, 1),
            "lloyd_iterations": int(km.n_iter_), "lloyd_cpu_s": round(cpu, 1),
            "lloyd_cpu_s_per_iteration": round(cpu / km.n_iter_, 1), "lloyd_wall_s": round(time.perf_counter() - w0, 1),
            "threads": "scikit-learn's (OpenMP, every core)"}


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    folder = Path(args.workdir) / f"n{args.child_size}"
    path = args.child
    if path == "load":
        out = child_load(folder, args)
    elif path.startswith("graph"):
        out = child_graph(folder, args, {"graph": None, "graph_exact": False, "graph_approx": True}[path])
    elif path == "evaluate":
        out = child_evaluate(folder, args)
    elif path in ("epoch", "configs", "kmeans"):
        out = {"epoch": child_epoch, "configs": child_configs, "kmeans": child_kmeans}[path](folder, args)
    else:
        out = child_steps(folder, args, path)
    feature_gb = (folder / "x_train.npy").stat().st_size / 2**30 + (folder / "x_test.npy").stat().st_size / 2**30
    out.update(peak_rss_gb=round(_rss_gb(), 2), feature_gb=round(feature_gb, 2), rss_over_features=round(_rss_gb() / feature_gb, 2))
    print("RESULT " + json.dumps(out))


def run_one(args: argparse.Namespace, size: int, path: str) -> dict:
    cmd = [sys.executable, __file__, "--child", path, "--child-size", str(size), "--workdir", args.workdir,
           "--steps", str(args.steps), "--batch", str(args.batch), "--threads", str(args.threads), "--graph", args.graph,
           "--epochs", str(args.epochs), "--suite", args.suite, "--kmeans-iters", str(args.kmeans_iters),
           "--kmeans-init-rows", str(args.kmeans_init_rows), "--val-fraction", str(args.val_fraction)]
    env = {**os.environ, "ICON_BENCH_CACHE": str(Path(args.workdir) / "cache")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for ln in proc.stdout:  # a configs run's rows as they finish
        lines.append(ln)
        if ln.startswith("CONFIG "):
            print("  " + ln[len("CONFIG "):].rstrip(), flush=True)
    stderr = proc.stderr.read()
    proc.wait()
    line = next((ln for ln in lines if ln.startswith("RESULT ")), None)
    if line is None:
        return {"error": (stderr or "".join(lines)).strip().splitlines()[-1:]}
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,400000", help="train rows, comma-separated (1281167 = ImageNet)")
    ap.add_argument("--test", type=int, default=50_000, help="test rows")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {PATHS} plus graph_exact, graph_approx")
    ap.add_argument("--steps", type=int, default=3, help="training steps per method path (median taken)")
    ap.add_argument("--batch", type=int, default=1024, help="anchors per batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--graph", choices=("knn", "synthetic"), default="knn",
                    help="step and evaluate paths: the kNN graph (computed or cached), or k random rows of each "
                         "row's class (the step's cost and memory without waiting for the graph)")
    ap.add_argument("--epochs", type=int, default=1, help="epoch path: whole epochs of pmi")
    ap.add_argument("--suite", default=str(Path(__file__).resolve().parents[1] / "suites" / "clustering.yaml"),
                    help="configs path: the suite whose learned configurations are stepped")
    ap.add_argument("--kmeans-iters", type=int, default=5, help="kmeans path: Lloyd iterations")
    ap.add_argument("--kmeans-init-rows", type=int, default=50_000, help="kmeans path: rows k-means++ seeds on")
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="the val split carved from train (0: the train rows stay mapped, not copied)")
    ap.add_argument("--workdir", default="/tmp/icon-bench-scale")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    for size in (int(s) for s in args.sizes.split(",")):
        folder = Path(args.workdir) / f"n{size}"
        print(f"== {size:,} train rows, {args.test:,} test rows, 768-d, 1,000 classes ({folder})", flush=True)
        make_data(folder, size, args.test, 768, 1000)
        for path in args.paths.split(","):
            t = time.perf_counter()
            res = run_one(args, size, path)
            print(f"{path:22s} {json.dumps(res)}  [{time.perf_counter() - t:.0f} s wall]", flush=True)


if __name__ == "__main__":
    main()

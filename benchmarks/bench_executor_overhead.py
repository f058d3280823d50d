"""Ray executor costs against local: cluster start-up, first-trial warm-up, per-trial overhead; optionally a suite.

    python benchmarks/bench_executor_overhead.py [--trials 200] [--cpus 2] [--suite suites/quickstart.yaml]

No-op trials into a results store without fsync (an fsync costs a few ms on this kind of disk, the
same for both, and would drown the difference), so the time per trial is the executor's own cost:
scheduling, argument and dataset passing, result transfer and the store write. Printed separately:
the local cluster's start (`ray_session`, as `icon-bench run --executor ray` starts it), and the
first trials on fresh workers, which import the trial stack (torch, scikit-learn, the methods).
`--suite` also runs a real suite under both executors from a fresh cluster, as a user would, and
prints the wall times, their ratio and the machine's load (the machine may be shared).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from icon_bench.run.execution.executors import LocalExecutor
from icon_bench.run.execution.ray_cluster import ray_session
from icon_bench.run.execution.ray_executor import RayExecutor
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.reader import parse_suite


def noop_load(ds_spec: dict[str, Any]) -> dict[str, Any]:
    """A small in-memory 'dataset' (1 MB) so that passing it by reference is part of the cost."""
    import numpy as np

    return {"name": ds_spec["name"], "x": np.zeros((1024, 256), dtype=np.float32)}


def noop_trial(spec: dict[str, Any], data: Any) -> dict[str, Any]:
    """A trial that only builds its row, with its process and that process's CPU time so far."""
    return {
        "method": spec["method"],
        "seed": spec["seed"],
        "status": "ok",
        "metrics": {"score": float(spec["seed"])},
        "pid": os.getpid(),
        "process_cpu_s": time.process_time(),
    }


class TimedStore(ResultsStore):
    """A store that notes when each row arrived (perf_counter)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[float] = []

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        self.arrivals.append(time.perf_counter())
        return super().append(row)


def _load() -> str:
    return "load average " + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def overhead(trials: int, cpus: int) -> None:
    """Print start-up, warm-up and per-trial overhead of Ray against the local executor."""
    suite = parse_suite(
        f"name: overhead\ndatasets: [digits, iris]\ngrid:\n  method: [kmeans]\n  seed: {list(range(trials // 2))}\n",
        "<bench>",
    )
    specs = suite.trials()
    n = len(specs)
    print(_load())
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        local_store = ResultsStore(f"{tmp}/local", fsync=False)
        local = LocalExecutor(progress=False).run(specs, local_store, trial_fn=noop_trial, load_fn=noop_load)
        local_s = time.perf_counter() - t0
        assert local.ok == n, local

        t0 = time.perf_counter()
        with ray_session(num_cpus=cpus, num_gpus=0):
            start_s = time.perf_counter() - t0
            executor = RayExecutor(cpus=1, progress=False, poll_s=0.5)
            # Fresh workers: each imports the trial stack before its first trial.
            warm_store = TimedStore(f"{tmp}/warm", fsync=False)
            t0 = time.perf_counter()
            warm = executor.run(specs[: cpus * 2], warm_store, trial_fn=noop_trial, load_fn=noop_load)
            first_s, warm_s = warm_store.arrivals[0] - t0, time.perf_counter() - t0
            worker_cpu: dict[int, float] = {}  # each worker's CPU time at its first trial: its imports
            for row in warm.rows:
                worker_cpu[row["pid"]] = min(row["process_cpu_s"], worker_cpu.get(row["pid"], float("inf")))
            t0 = time.perf_counter()
            ray_store = ResultsStore(f"{tmp}/ray", fsync=False)
            remote = executor.run(specs, ray_store, trial_fn=noop_trial, load_fn=noop_load)
            ray_s = time.perf_counter() - t0
        assert remote.ok == n, remote
        nice = {r.get("nice") for r in remote.rows}

    local_ms, ray_ms = 1e3 * local_s / n, 1e3 * ray_s / n
    cpu_text = ", ".join(f"{c:.1f}" for c in worker_cpu.values())
    print(f"ray start-up (local cluster, {cpus} CPUs, loopback, no dashboard): {start_s:.1f} s")
    print(
        f"first-trial warm-up: first row after {first_s:.1f} s, {len(warm.rows)} trials on fresh workers "
        f"in {warm_s:.1f} s; "
        f"CPU s per worker for its imports: {cpu_text} ({len(worker_cpu)} workers)"
    )
    print(f"{n} no-op trials, 2 datasets, warm workers at nice {sorted(nice)} (this process: {os.nice(0)})")
    print(f"local executor: {local_ms:8.2f} ms per trial ({local_s:.2f} s)")
    print(f"ray executor:   {ray_ms:8.2f} ms per trial ({ray_s:.2f} s)")
    print(f"ratio ray / local: {ray_ms / local_ms:.1f}x")


def whole_suite(path: str) -> None:
    """Run a suite under the local and the Ray executor (fresh results, fresh cluster) and compare wall times."""
    from icon_bench.runner import run_suite

    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("local", "ray"):
            before = _load()
            t0 = time.perf_counter()
            code = run_suite(
                path, executor=kind, results=Path(tmp) / kind, report=False, progress=False, out=io.StringIO()
            )
            walls[kind] = time.perf_counter() - t0
            rows = ResultsStore(Path(tmp) / kind).rows()
            trial_s = sum((r.get("timings") or {}).get("total_s") or 0.0 for r in rows)
            ok = sum(r.get("status") == "ok" for r in rows)
            print(
                f"{kind:5s}: {walls[kind]:7.1f} s wall, {ok}/{len(rows)} ok, trials' own time {trial_s:.1f} s "
                f"(exit {code}); before: {before}, after: {_load()}"
            )
    print(f"ratio ray / local wall: {walls['ray'] / walls['local']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--suite", help="also run this suite under both executors and compare wall times")
    args = parser.parse_args()
    overhead(args.trials, args.cpus)
    if args.suite:
        whole_suite(args.suite)


if __name__ == "__main__":
    main()

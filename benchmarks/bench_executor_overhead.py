"""Per-trial overhead of the Ray executor against the local one, on a suite of no-op trials.

    python benchmarks/bench_executor_overhead.py [--trials 200] [--cpus 2]

Both executors run the same specs into a results store without fsync (an fsync costs a few ms on
this kind of disk, the same for both, and would drown the difference); the trials do nothing, so
the time per trial is the executor's own cost: scheduling, argument and dataset passing, result
transfer and the store write. Ray's cluster start is timed separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from icon_bench.run.executors import LocalExecutor
from icon_bench.run.ray_executor import RayExecutor
from icon_bench.run.store import ResultsStore
from icon_bench.run.suite_file import parse_suite


def noop_load(ds_spec: dict[str, Any]) -> dict[str, Any]:
    """A small in-memory 'dataset' (1 MB) so that passing it by reference is part of the cost."""
    import numpy as np

    return {"name": ds_spec["name"], "x": np.zeros((1024, 256), dtype=np.float32)}


def noop_trial(spec: dict[str, Any], data: Any) -> dict[str, Any]:
    """A trial that only builds its row."""
    return {"method": spec["method"], "seed": spec["seed"], "status": "ok", "metrics": {"score": float(spec["seed"])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = parser.parse_args()

    suite = parse_suite(
        f"name: overhead\ndatasets: [digits, iris]\ngrid:\n  method: [kmeans]\n  seed: {list(range(args.trials // 2))}\n",
        "<bench>",
    )
    specs = suite.trials()
    n = len(specs)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        local = LocalExecutor(progress=False).run(specs, ResultsStore(f"{tmp}/local", fsync=False), trial_fn=noop_trial, load_fn=noop_load)
        local_s = time.perf_counter() - t0
        assert local.ok == n, local

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, num_gpus=0, include_dashboard=False, log_to_driver=False)
        start_s = time.perf_counter() - t0
        try:
            executor = RayExecutor(cpus=1, progress=False, poll_s=0.5)
            # One warm-up run so worker processes exist, as they do after the first trials of a sweep.
            executor.run(specs[: args.cpus * 2], ResultsStore(f"{tmp}/warm", fsync=False), trial_fn=noop_trial, load_fn=noop_load)
            t0 = time.perf_counter()
            remote = executor.run(specs, ResultsStore(f"{tmp}/ray", fsync=False), trial_fn=noop_trial, load_fn=noop_load)
            ray_s = time.perf_counter() - t0
        finally:
            ray.shutdown()
        assert remote.ok == n, remote

    local_ms, ray_ms = 1e3 * local_s / n, 1e3 * ray_s / n
    print(f"{n} no-op trials, 2 datasets; Ray cluster with {args.cpus} CPUs (start {start_s:.1f} s, not counted)")
    print(f"local executor: {local_ms:8.2f} ms per trial ({local_s:.2f} s)")
    print(f"ray executor:   {ray_ms:8.2f} ms per trial ({ray_s:.2f} s)")
    print(f"ratio ray / local: {ray_ms / local_ms:.1f}x")


if __name__ == "__main__":
    main()

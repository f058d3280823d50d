"""Executors: failures become rows, datasets load once, and Ray (real, local) shares GPUs and retries dead workers."""

from __future__ import annotations

import _thread
import os
import re
import signal
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray_trials
import torch
from ray_trials import dying_trial, fake_load, fake_trial, gpu_trial

from icon_bench.errors import IconBenchError
from icon_bench.run.execution.executors import LocalExecutor
from icon_bench.run.suite.ids import trial_id
from icon_bench.run.execution.ray_executor import RayExecutor
from icon_bench.run.execution.store import ResultsStore


def _specs(n: int, dataset: Any = "toy", **settings: Any) -> list[dict[str, Any]]:
    return [
        {"method": "m", "dataset": dataset, "divergence": "kl", "seed": i, "settings": dict(settings)} for i in range(n)
    ]


def _loads(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


# ---------------------------------------------------------------------------------------------
# Local
# ---------------------------------------------------------------------------------------------
def test_local_raising_trial_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    specs = _specs(3)
    specs[1]["settings"] = {"fail": True}
    store = ResultsStore(tmp_path)
    summary = LocalExecutor(progress=False).run(specs, store, trial_fn=fake_trial, load_fn=fake_load)
    assert (summary.ok, summary.failed, summary.interrupted) == (2, 1, False)
    rows = {r["trial_id"]: r for r in store.rows()}
    bad = rows[trial_id(specs[1])]
    assert bad["status"] == "failed" and bad["error"] == "ValueError: boom in m"
    assert "Traceback" in bad["traceback"] and "fake_trial" in bad["traceback"]
    assert bad["spec"]["seed"] == 1 and bad["config_id"] and bad["method"] == "m"
    assert [rows[trial_id(s)]["status"] for s in (specs[0], specs[2])] == ["ok", "ok"]


def test_local_loads_each_dataset_once_and_records_load_failures(tmp_path: Path) -> None:
    log = tmp_path / "loads.log"
    a = _specs(3, {"name": "a", "log": str(log)})
    b = _specs(2, {"name": "b", "log": str(log)})

    def load(ds: dict[str, Any]) -> Any:
        if ds["name"] == "broken":
            raise FileNotFoundError("no such file: x.npz")
        return fake_load(ds)

    broken = _specs(2, {"name": "broken"})
    store = ResultsStore(tmp_path / "res")
    summary = LocalExecutor(progress=False).run(a + broken + b, store, trial_fn=fake_trial, load_fn=load)
    assert (summary.ok, summary.failed) == (5, 2)
    assert len(_loads(log)) == 2
    errors = {r["error"] for r in store.rows() if r["status"] == "failed"}
    assert errors == {"dataset 'broken' failed to load: no such file: x.npz"}


def test_local_keyboard_interrupt_keeps_finished_rows(tmp_path: Path) -> None:
    specs = _specs(4)
    specs[2]["settings"] = {"interrupt": True}
    store = ResultsStore(tmp_path)
    summary = LocalExecutor(progress=False).run(specs, store, trial_fn=fake_trial, load_fn=fake_load)
    assert summary.interrupted and (summary.ok, summary.failed, summary.not_run) == (2, 0, 2)
    assert store.done_ids() == {trial_id(s) for s in specs[:2]}


# ---------------------------------------------------------------------------------------------
# Ray: one real local cluster for the module, with 4 declared (fake) GPUs
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    from icon_bench.run.execution.ray_cluster import ray_session

    # Workers cannot import tests/ray_trials.py by name: ship the module's functions by value.
    cloudpickle.register_pickle_by_value(ray_trials)
    try:
        # The tool's own local start: loopback only, workers at this process's priority.
        with ray_session(num_cpus=4, num_gpus=4) as started:
            assert started and ray.is_initialized()
            yield
    finally:
        cloudpickle.unregister_pickle_by_value(ray_trials)


def test_ray_half_gpu_trials_share_a_gpu(ray_cluster: None, tmp_path: Path) -> None:
    specs = _specs(4, sleep=0.5, rendezvous=str(tmp_path / "rendezvous"))
    summary = RayExecutor(cpus=1, gpus=0.5, progress=False).run(
        specs, ResultsStore(tmp_path), trial_fn=gpu_trial, load_fn=fake_load
    )
    assert (summary.ok, summary.failed) == (4, 0), [r.get("error") for r in summary.rows]
    for row in summary.rows:
        assert len(row["gpu_ids"]) == 1  # a fraction of one GPU, never a slice of two
        assert row["cuda_visible_devices"] == row["gpu_ids"][0]  # Ray pins the trial to its GPU
    per_gpu = Counter(row["gpu_ids"][0] for row in summary.rows)
    assert max(per_gpu.values()) == 2, per_gpu  # packed two to a GPU, as 0.5 + 0.5
    shared = [g for g, n in per_gpu.items() if n == 2]
    assert shared
    for row in summary.rows:
        if row["gpu_ids"][0] in shared:
            assert row["peer_seen"], "two trials on one GPU should run at the same time"


def test_ray_loads_each_dataset_once_in_a_worker(ray_cluster: None, tmp_path: Path) -> None:
    log = tmp_path / "loads.log"
    specs = _specs(4, {"name": "a", "log": str(log)}) + _specs(3, {"name": "b", "log": str(log)})
    store = ResultsStore(tmp_path / "res")
    summary = RayExecutor(cpus=0.5, progress=False).run(specs, store, trial_fn=fake_trial, load_fn=fake_load)
    assert (summary.ok, summary.failed) == (7, 0)
    loads = _loads(log)
    assert len(loads) == 2  # once per dataset, not once per trial
    assert os.getpid() not in loads  # never on the driver
    # Every trial saw the loaded data (the sum of the dataset's array) and not a reload of its own.
    sums = {r["dataset"] if isinstance(r["dataset"], str) else r["dataset"]: r["metrics"]["data_sum"] for r in store.rows()}
    assert len(set(sums.values())) == 2


def test_ray_dead_worker_is_retried_then_succeeds(ray_cluster: None, tmp_path: Path) -> None:
    marker = tmp_path / "first-attempt"
    specs = _specs(1, marker=str(marker))
    summary = RayExecutor(cpus=1, max_retries=2, progress=False).run(
        specs, ResultsStore(tmp_path / "res"), trial_fn=dying_trial, load_fn=fake_load
    )
    assert (summary.ok, summary.failed) == (1, 0), summary.rows[0].get("error")
    first_pid = int(marker.read_text())
    assert summary.rows[0]["pid"] != first_pid  # the row came from a second, fresh worker


def test_ray_dead_worker_without_retries_is_a_failed_row(ray_cluster: None, tmp_path: Path) -> None:
    specs = _specs(1, marker=str(tmp_path / "m")) + _specs(1, {"name": "other"})
    summary = RayExecutor(cpus=1, max_retries=0, progress=False).run(
        specs, ResultsStore(tmp_path / "res"), trial_fn=lambda s, d: dying_trial(s, d) if "marker" in s["settings"] else fake_trial(s, d),
        load_fn=fake_load,
    )
    assert (summary.ok, summary.failed) == (1, 1)
    (bad,) = [r for r in summary.rows if r["status"] == "failed"]
    assert bad["error"].startswith("the trial's worker died (0 retries used up)")


def test_ray_raising_trial_is_failed_not_retried(ray_cluster: None, tmp_path: Path) -> None:
    specs = _specs(3)
    specs[0]["settings"] = {"fail": True}
    store = ResultsStore(tmp_path)
    summary = RayExecutor(cpus=1, max_retries=3, progress=False).run(specs, store, trial_fn=fake_trial, load_fn=fake_load)
    assert (summary.ok, summary.failed) == (2, 1)
    (bad,) = [r for r in store.rows() if r["status"] == "failed"]
    assert bad["error"] == "ValueError: boom in m" and "Traceback" in bad["traceback"]
    assert len(store.read()) == 3  # one row each: no retry of a trial that raised


def test_ray_and_local_give_identical_metrics(ray_cluster: None, tmp_path: Path) -> None:
    specs = _specs(3, "digits") + _specs(2, {"name": "iris", "pca": 2})
    local = LocalExecutor(progress=False).run(specs, ResultsStore(tmp_path / "l"), trial_fn=fake_trial, load_fn=fake_load)
    remote = RayExecutor(cpus=0.5, progress=False).run(specs, ResultsStore(tmp_path / "r"), trial_fn=fake_trial, load_fn=fake_load)
    by_id = lambda s: {r["trial_id"]: r["metrics"] for r in s.rows}  # noqa: E731
    assert by_id(local) == by_id(remote) and len(by_id(local)) == 5


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_ray_trials_read_the_dataset_from_shared_memory_without_a_copy(ray_cluster: None, tmp_path: Path) -> None:
    from icon_bench.data.load import load_dataset

    blobs = {"name": "blobs", "n_samples": 2000, "n_features": 16, "centers": 3, "seed": 0}
    summary = RayExecutor(cpus=1, progress=False).run(_specs(3, dataset=blobs), ResultsStore(tmp_path), trial_fn=ray_trials.mapping_trial)
    assert summary.ok == 3
    expected = float(load_dataset(blobs).x_train.sum())
    for row in summary.rows:
        # The tensor's memory is the object store's shared mapping (plasma in /dev/shm), not a copy.
        assert "plasma" in row["mapping"] and " rw-s " in f" {row['mapping']} ", row["mapping"]
        assert row["metrics"]["x_sum"] == pytest.approx(expected)


def test_datasplits_pickle_their_arrays_out_of_band_and_share_them_on_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    import numpy as np

    from icon_bench.data.load import load_dataset

    monkeypatch.setenv("ICON_BENCH_CACHE", str(tmp_path))  # the kNN graph's cache
    data = load_dataset({"name": "digits", "knn": 3})
    buffers: list[pickle.PickleBuffer] = []
    blob = pickle.dumps(data, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 7 and len(blob) < 2000  # x, y of the three splits and the graph travel out of band
    frozen = []
    for b in buffers:  # as Ray hands them over: read-only
        arr = np.frombuffer(b.raw(), dtype=np.uint8)
        arr.flags.writeable = False
        frozen.append(arr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning reaches the trial
        back = pickle.loads(blob, buffers=frozen)
    assert back.x_train.data_ptr() == frozen[0].ctypes.data  # shares the buffer, no copy
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "knn_train"):
        assert torch.equal(getattr(back, name), getattr(data, name)), name
    assert (back.name, back.num_classes, back.meta) == (data.name, data.num_classes, data.meta)


def test_ray_refuses_resources_the_cluster_lacks(ray_cluster: None, tmp_path: Path) -> None:
    with pytest.raises(IconBenchError, match="asks for 5 GPU"):
        RayExecutor(gpus=5, progress=False).run(_specs(1), ResultsStore(tmp_path), trial_fn=fake_trial, load_fn=fake_load)


def test_ray_ctrl_c_cancels_unfinished_and_keeps_finished_rows(ray_cluster: None, tmp_path: Path) -> None:
    # Two quick trials and two slow ones: the cluster's 4 CPUs start all four at once, so the quick
    # rows arrive whatever order Ray schedules in (6 trials once let 4 slow ones take every slot).
    # The slow ones sleep long enough that, however slowly a loaded machine starts Ray's workers, they are still
    # running when the quick rows are in and Ctrl-C comes; what is timed is the stop after it.
    specs = _specs(2, sleep=0) + [{**s, "seed": 10 + i} for i, s in enumerate(_specs(2, sleep=240))]
    store = ResultsStore(tmp_path)
    pressed: list[float] = []

    def press_ctrl_c_after_two_rows() -> None:
        deadline = time.time() + 180
        while time.time() < deadline:
            if store.path.exists() and len(store.path.read_bytes().splitlines()) >= 2:
                break
            time.sleep(0.1)
        pressed.append(time.time())
        _thread.interrupt_main()  # KeyboardInterrupt in the driver, as Ctrl-C would raise

    # interrupt_main does nothing where SIGINT is ignored or replaced (an xdist worker, a handler an earlier test
    # left): Python's own handler, as in a terminal, for the length of the run.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=press_ctrl_c_after_two_rows, daemon=True)
    watcher.start()
    try:
        summary = RayExecutor(cpus=1, progress=False, poll_s=0.2).run(specs, store, trial_fn=fake_trial, load_fn=fake_load)
    finally:
        signal.signal(signal.SIGINT, previous)
    watcher.join()
    assert summary.interrupted and time.time() - pressed[0] < 30
    assert (summary.ok, summary.failed, summary.not_run) == (2, 0, 2)
    assert store.done_ids() == {trial_id(s) for s in specs[:2]}


def test_local_trials_run_with_the_suites_cpus_as_torch_threads(tmp_path: Path) -> None:
    import torch

    from icon_bench.run.execution.executors import make_executor

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        summary = make_executor("local", cpus=1, progress=False).run(
            _specs(2), ResultsStore(tmp_path), trial_fn=ray_trials.threads_trial, load_fn=fake_load
        )
        assert [row["threads"] for row in summary.rows] == [1, 1]
        assert torch.get_num_threads() == 2  # restored after each trial
    finally:
        torch.set_num_threads(before)


def test_ray_and_local_give_identical_metrics_for_real_trials(ray_cluster: None, tmp_path: Path) -> None:
    # The real trial function and dataset loader (not fakes): a baseline and a learned method.
    tiny = {"name": "blobs", "n_samples": 120, "n_features": 4, "centers": 3}
    specs = [
        {"method": "kmeans", "dataset": tiny, "seed": 0},
        {"method": "pmi", "dataset": tiny, "seed": 1, "settings": {"epochs": 2, "batch_size": 32, "heads": 2}},
    ]
    local = LocalExecutor(progress=False, threads=1).run(specs, ResultsStore(tmp_path / "local"))
    remote = RayExecutor(cpus=1, progress=False).run(specs, ResultsStore(tmp_path / "ray"))
    assert (local.ok, remote.ok) == (2, 2), [r.get("error") for r in local.rows + remote.rows]
    by_id = {r["trial_id"]: r["metrics"] for r in local.rows}
    for row in remote.rows:
        assert row["metrics"] == by_id[row["trial_id"]]
        assert set(row["metrics"]) >= {"hungarian", "nmi", "ari"}


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")
def test_ray_local_cluster_listens_on_loopback_only(ray_cluster: None, tmp_path: Path) -> None:
    import ray
    from ray_procs import descendants, listening

    # A trial first, so that workers (which listen too) exist while we look.
    summary = RayExecutor(cpus=1, progress=False).run(_specs(2), ResultsStore(tmp_path), trial_fn=fake_trial, load_fn=fake_load)
    assert summary.ok == 2
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    ports = listening(descendants(os.getpid()))
    names = {name for _, _, name in ports}
    assert {"gcs_server", "raylet"} <= names, ports
    assert {addr for addr, _, _ in ports} == {"127.0.0.1"}, ports


def test_ray_trials_run_at_the_drivers_priority_in_reused_workers(ray_cluster: None, tmp_path: Path) -> None:
    # 8 trials on 4 CPUs, then 4 more at half a GPU each: Ray's default would run the GPU tasks
    # in a fresh worker each (paying the imports again) and every worker at nice 15.
    cpu = RayExecutor(cpus=1, progress=False).run(
        _specs(8, sleep=0.2), ResultsStore(tmp_path / "cpu"), trial_fn=ray_trials.worker_trial, load_fn=fake_load
    )
    gpu = RayExecutor(cpus=1, gpus=0.5, progress=False).run(
        [{**s, "seed": 100 + i} for i, s in enumerate(_specs(6, sleep=0.2))],
        ResultsStore(tmp_path / "gpu"),
        trial_fn=ray_trials.worker_trial,
        load_fn=fake_load,
    )
    rows = cpu.rows + gpu.rows
    assert len(rows) == 14 and all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    assert {r["nice"] for r in rows} == {os.nice(0)}
    for summary in (cpu, gpu):
        pids = Counter(r["pid"] for r in summary.rows)
        # Never more workers than trials that fit at once: each worker imports the trial stack once.
        assert len(pids) <= 4, pids


def test_ray_says_once_when_trials_run_at_a_lower_priority(
    ray_cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a row from an --address cluster started without RAY_worker_niceness=0 carries.
    summary = RayExecutor(cpus=1, progress=False).run(
        _specs(3), ResultsStore(tmp_path), trial_fn=ray_trials.niced_trial, load_fn=fake_load
    )
    assert summary.ok == 3
    err = capsys.readouterr().err
    assert err.count(f"icon-bench: note: Ray workers run at nice {os.nice(0) + 15}") == 1, err
    assert "RAY_worker_niceness=0" in err


def test_ray_prints_one_line_per_finished_trial_without_a_terminal(ray_cluster: None, tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    specs = _specs(3) + _specs(1, fail=True)
    specs[-1]["seed"] = 9
    summary = RayExecutor(cpus=1, progress=True, out=out).run(specs, ResultsStore(tmp_path), trial_fn=fake_trial, load_fn=fake_load)
    lines = out.getvalue().splitlines()
    assert (summary.ok, summary.failed) == (3, 1) and len(lines) == 4
    assert sorted(line[:6] for line in lines) == ["[1/4] ", "[2/4] ", "[3/4] ", "[4/4] "]
    assert sum(" ok      m on toy (divergence kl, seed " in line for line in lines) == 3
    assert any(re.search(r"failed  m on toy \(divergence kl, seed 9\)  [\d.]+ s: ValueError: boom in m$", x) for x in lines), lines


def test_ray_store_failure_keeps_the_ready_rows_and_cancels_the_rest(
    ray_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ResultsStore(tmp_path / "store", suite="s")
    original = ResultsStore._append_line

    def refuse(self: ResultsStore, data: bytes) -> None:
        if self.directory == store.directory:
            raise OSError(28, "No space left on device", str(self.path))
        original(self, data)

    monkeypatch.setattr(ResultsStore, "_append_line", refuse)
    specs = _specs(2, sleep=0) + [{**s, "seed": 10 + i} for i, s in enumerate(_specs(2, sleep=60))]
    t0 = time.time()
    summary = RayExecutor(cpus=1, progress=False, poll_s=0.2).run(specs, store, trial_fn=fake_trial, load_fn=fake_load)
    assert time.time() - t0 < 45  # the slow trials were cancelled, not waited for
    assert summary.store_error and "No space left on device" in summary.store_error
    rescued = ResultsStore(summary.fallback).rows()
    assert summary.rescued == len(rescued) >= 1 and {r["seed"] for r in rescued} <= {0, 1}
    assert summary.not_run == 4 - len(rescued) and not store.path.exists()

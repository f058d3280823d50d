"""Bounds on what a suite controls (memory, work, time) and the search without repeats (issue 22)."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bad_arrays import DATA, deflate_bomb, forged_header, write_all
from icon_bench import cli
from icon_bench.errors import SuiteError
from icon_bench.run.execution.deadline import TrialTimeout, deadline
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.reader import load_suite
from icon_bench.run.suite.tune_block import Tune
from icon_bench.run.tuning.candidates import candidates
from icon_bench.runner import run_suite

TESTS = Path(__file__).resolve().parent


def _write(folder: Path, text: str, name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_the_corpus_array_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    from icon_bench.data.headers import read_headers

    write_all(tmp_path)
    assert read_headers(tmp_path / "forged_header.npz") == read_headers(DATA / "forged_header.npz")
    for path in tmp_path.iterdir():
        if path.name == "forged_header.npz":
            continue  # its header claims 40 TB: compared above, never loaded
        with np.load(path) as fresh, np.load(DATA / path.name) as kept:
            assert fresh.files == kept.files
            for key in fresh.files:
                np.testing.assert_array_equal(fresh[key], kept[key])
    assert all(p.stat().st_size < 4096 for p in DATA.iterdir())


# ---------------------------------------------------------------------------------------------
# Memory: small files that asked for gigabytes are refused, and refusing them stays small
# ---------------------------------------------------------------------------------------------
_PEAK_SCRIPT = """
import contextlib, io, json, resource, sys
from icon_bench import cli
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    results.append([code, err.getvalue()])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"results": results, "peak": peak}))
"""


@pytest.fixture(scope="module")
def bomb_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bombs")
    deflate_bomb(folder / "bomb.npz", gigabytes=2.5)  # 2.48 GB of zeros in 11 MB: below this machine's memory
    forged_header(folder / "forged.npz")
    return folder


def test_bomb_suites_are_refused_before_two_gigabytes(bomb_folder: Path, tmp_path: Path) -> None:
    # Before: tune.budget 1e9 reached 6.4 GB in a dry run, heads 1e6 5.8 GB, model.hidden 5e8 asked for
    # 8 GB, a 1.7 MB deflate bomb reached 6.1 GB and then scored "ok, 1.000".
    bombs = {
        "budget": ("datasets: [digits]\ngrid: {method: [pmi]}\n"
                   "tune: {budget: 1e9, space: {lr: {loguniform: [0.0001, 0.01]}}}\n", "search trials, over the limit"),
        "heads": ("datasets: [digits]\ngrid: {method: [pmi]}\nsettings: {heads: 1000000}\n", "settings.heads: a trial"),
        "hidden": ("datasets: [digits]\ngrid: {method: [pmi], model.hidden: 500000000}\n", "grid.model.hidden: a trial"),
        "deflate": (f"datasets: [{{name: arrays, path: {bomb_folder / 'bomb.npz'}}}]\ngrid: {{method: [kmeans]}}\n",
                    "a decompression bomb"),
        "forged": (f"datasets: [{{name: arrays, path: {bomb_folder / 'forged.npz'}}}]\ngrid: {{method: [kmeans]}}\n",
                   "40 TB"),
    }
    argvs, expected = [], []
    for name, (body, message) in bombs.items():
        suite = tmp_path / f"{name}.yaml"
        suite.write_text(f"name: {name}\n{body}")
        assert suite.stat().st_size < 10_000
        for extra in (["--dry-run"], []):
            argvs.append(["run", str(suite), "--results", str(tmp_path / "r" / name), "--no-report", *extra])
            expected.append((str(suite), message))
    # The real bomb with a memory bound given: the ratio check steps aside, the size bound refuses it.
    argvs.append(["run", str(tmp_path / "deflate.yaml"), "--results", str(tmp_path / "r" / "d"), "--max-memory", "2G"])
    expected.append((str(tmp_path / "deflate.yaml"), "more than the 2.15 GB allowed"))
    proc = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, json.dumps(argvs)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    for (code, err), (where, message) in zip(report["results"], expected):
        assert code == 2 and err.startswith(f"icon-bench: error: {where}:") and message in err, err
        assert "Traceback" not in err
    assert report["peak"] < 2 << 30, f"peak RSS {report['peak'] / 2**30:.2f} GiB"
    assert not (tmp_path / "r").exists()  # nothing was written for a refused suite


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "suite.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_suite(fifo)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO suite blocked")
    assert isinstance(outcome[0], SuiteError) and "not a regular file" in str(outcome[0])
    with pytest.raises(SuiteError, match="not a regular file"):
        load_suite(tmp_path)


def test_the_memory_bound_is_an_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = _write(tmp_path, "name: wide\ndatasets: [digits]\ngrid: {method: [pmi], model.hidden: 20000, model.layers: 2}\n")
    # 20000 hidden units: some 6.4 GB of parameters and Adam's state; fine on a big machine, not under 1G.
    argv = ["run", str(suite), "--dry-run", "--results", str(tmp_path / "r")]
    assert cli.main([*argv, "--max-memory", "1G"]) == 2
    err = capsys.readouterr().err
    assert "grid.model.hidden: a trial of method 'pmi' needs about" in err and "--max-memory" in err
    assert cli.main([*argv, "--max-memory", "1T"]) == 0
    with pytest.raises(SystemExit) as info:  # a usage error, from argparse
        cli.main([*argv, "--max-memory", "lots"])
    assert info.value.code == 2
    assert "argument --max-memory: a memory size such as 64G" in capsys.readouterr().err
    assert "ICON_BENCH_MAX_MEMORY" not in os.environ  # one run's bound does not leak into the next


# ---------------------------------------------------------------------------------------------
# Data files: keys from the header at plan time; a file's own test arrays kept under custom names
# ---------------------------------------------------------------------------------------------
def test_custom_key_names_keep_the_files_test_split(tmp_path: Path) -> None:
    from icon_bench.data.files import arrays

    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, train_x=rng.normal(size=(90, 3)), train_y=np.arange(90) % 3,
             test_x=rng.normal(size=(30, 3)), test_y=np.arange(30) % 3)
    data = arrays(str(path), features="train_x", labels="train_y").load()
    # Before: the test arrays were dropped and a test split drawn from train (72/18 rows instead of 90/30).
    assert (len(data.x_train), len(data.x_test)) == (90, 30)
    assert data.meta["keys"] == {"features": "train_x", "labels": "train_y", "test_features": "test_x",
                                 "test_labels": "test_y"}


def test_dry_run_checks_the_results_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    suite = _write(tmp_path, "name: s\ndatasets: [digits]\ngrid: {method: [kmeans]}\n")
    assert cli.main(["run", str(suite), "--dry-run", "--results", str(blocker / "results")]) == 2
    assert f"results: {blocker / 'results'}: {blocker} is not a folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Search without repeats
# ---------------------------------------------------------------------------------------------
def test_random_search_over_lists_never_repeats_a_candidate() -> None:
    space = {"lr": [0.1, 0.01, 0.001, 0.0001, 1e-5], "p.debias": [0.0, 0.3, 0.6, 0.9], "epochs": [5, 10, 20]}
    tune = Tune(budget=40, space=space)
    # Before: 13 of 40 draws repeated one already drawn, and the same trial ran twice.
    drawn = [tuple(c[k] for k in space) for c in candidates(tune, 0)]
    assert len(drawn) == 40 and len(set(drawn)) == 40
    assert set(drawn) <= set(itertools.product(*space.values()))
    assert candidates(tune, 0) == candidates(tune, 0) and candidates(tune, 0) != candidates(tune, 1)
    # A budget equal to the grid's size runs the whole grid, in a seeded order.
    whole = [tuple(c[k] for k in space) for c in candidates(tune.model_copy(update={"budget": 60}), 3)]
    assert sorted(whole) == sorted(itertools.product(*space.values()))
    # Beside a range, each point of the lists' grid comes up once per pass over it.
    mixed = Tune(budget=8, space={"lr": {"loguniform": [1e-4, 1e-2]}, "p.debias": [0.0, 0.5], "epochs": [5, 10]})
    points = [(c["p.debias"], c["epochs"]) for c in candidates(mixed, 0)]
    assert all(points.count(p) == 2 for p in itertools.product([0.0, 0.5], [5, 10]))
    assert len({c["lr"] for c in candidates(mixed, 0)}) == 8


def test_a_grid_of_more_points_than_int64_is_sampled_without_overflow() -> None:
    space = {f"model.w{i}": list(range(100)) for i in range(12)}  # 1e24 points
    drawn = candidates(Tune(budget=50, space=space), 0)
    assert len({tuple(c.values()) for c in drawn}) == 50


# ---------------------------------------------------------------------------------------------
# Time limits
# ---------------------------------------------------------------------------------------------
def test_the_deadline_stops_a_loop_and_a_sleep_on_any_thread() -> None:
    start = time.perf_counter()
    with pytest.raises(TrialTimeout, match="timed out after 0.2 s"), deadline(0.2):
        time.sleep(30)
    with pytest.raises(TrialTimeout), deadline(0.2):
        while True:
            pass
    caught: list[BaseException] = []

    def spin() -> None:
        try:
            with deadline(0.2):
                while True:
                    sum(range(100))
        except TrialTimeout as exc:
            caught.append(exc)

    thread = threading.Thread(target=spin)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and caught
    assert time.perf_counter() - start < 5
    with deadline(5):  # a block that ends in time is left alone, and the timer is cleared
        pass
    time.sleep(0.01)


def test_a_hung_trial_times_out_and_the_sweep_goes_on(tmp_path: Path, fake_method: None) -> None:
    from ray_trials import fake_load, fake_trial

    suite = _write(tmp_path, """
        name: hung
        datasets: [digits]
        timeout: 300
        include:
          - {method: fake, seed: 0, sleep: 1000}
          - {method: fake, seed: 1}
          - {method: fake, seed: 2}
        """)
    out = io.StringIO()
    results = tmp_path / "res"
    start = time.perf_counter()
    code = run_suite(suite, results=results, trial_fn=fake_trial, load_fn=fake_load, progress=False, out=out,
                     report=False, timeout=1)
    assert time.perf_counter() - start < 60
    assert code == 1  # a timed-out trial is a failed trial
    rows = ResultsStore(results).rows()
    status = sorted(r["status"] for r in rows)
    assert status == ["ok", "ok", "timeout"]  # the sweep went on past the hung trial
    hung = next(r for r in rows if r["status"] == "timeout")
    assert hung["seed"] == 0 and "timed out after 1 s" in hung["error"]
    assert "timed out after 1 s" in out.getvalue()  # listed under the summary with the failures
    # --retry-failed runs it again; a plain rerun does too (it is not done); the others are done.
    assert cli.main(["run", str(suite), "--dry-run", "--results", str(results), "--retry-failed"]) == 0


def test_the_timeout_key_and_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from icon_bench.run.execution.base import trial_timeout
    from icon_bench.run.suite.limits import DEFAULT_TIMEOUT

    assert trial_timeout() == DEFAULT_TIMEOUT  # nothing set: a day
    suite = _write(tmp_path, "name: s\ndatasets: [digits]\ngrid: {method: [kmeans]}\ntimeout: 2.5\n")
    assert load_suite(suite).timeout == 2.5
    assert cli.main(["run", str(suite), "--dry-run", "--timeout", "-1", "--results", str(tmp_path / "r")]) == 2
    assert "--timeout: seconds above 0" in capsys.readouterr().err


def test_timeout_rows_show_in_the_report_as_failed(tmp_path: Path) -> None:
    from icon_bench.report.commands import write_report

    rows = [json.loads(line) for line in (TESTS / "fixtures" / "rows.jsonl").read_text().splitlines() if line.strip()]
    rows[0] = {**rows[0], "status": "timeout", "metrics": {}, "error": "timed out after 5 s"}
    results = tmp_path / "res"
    results.mkdir()
    (results / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(results, tmp_path / "report")
    page = "".join(p.read_text() for p in (tmp_path / "report").glob("*.md"))
    assert "timed out after 5 s" in page


# ---------------------------------------------------------------------------------------------
# Flow of a tuned run whose search found nothing
# ---------------------------------------------------------------------------------------------
def test_a_tuned_run_with_nothing_selected_does_not_say_it_is_done(tmp_path: Path) -> None:
    from ray_trials import tune_load

    def failing(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
        raise ValueError("no val rows")

    suite = _write(tmp_path, """
        name: t
        datasets: [digits]
        grid: {method: [pmi]}
        tune: {budget: 2, space: {lr: [0.001, 0.01]}}
        """)
    out = io.StringIO()
    run_suite(suite, results=tmp_path / "r", trial_fn=failing, load_fn=tune_load, progress=False, out=out, report=False)
    text = out.getvalue()
    assert "every selected configuration is done" not in text
    assert "no selection" in text or "nothing selected" in text


def test_a_file_with_x_y_and_x_test_y_test_uses_its_own_test_split(tmp_path: Path) -> None:
    from icon_bench.data.files import arrays

    rng = np.random.default_rng(1)
    path = tmp_path / "plain.npz"
    np.savez(path, x=rng.normal(size=(60, 3)), y=np.arange(60) % 3, x_test=rng.normal(size=(21, 3)),
             y_test=np.arange(21) % 3)
    data = arrays(str(path)).load()
    assert (len(data.x_train) + len(data.x_val), len(data.x_test)) == (60, 21)
    assert data.meta["keys"]["test_features"] == "x_test"


def test_spectral_clustering_at_imagenet_scale_is_refused_before_it_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from icon_bench.run.suite.memory import estimate_trial

    rows, k = 1_153_050, 1000
    big = estimate_trial({"method": "spectral"}, rows=rows, in_shape=(768,), num_classes=k)
    # scipy's eigsh keeps ncv = max(2k + 1, 20) float64 Lanczos vectors of every row.
    assert big.parts["eigensolver"] == (2 * k + 1) * rows * 8 and big.total > 24 * 2**30
    assert "eigensolver" not in estimate_trial({"method": "kmeans"}, rows=rows, in_shape=(768,), num_classes=k).parts
    # The same method on digits-sized data stays small: a suite of it is not refused.
    assert estimate_trial({"method": "spectral"}, rows=1437, in_shape=(64,), num_classes=10).total < 10 * 2**20
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(rows, 768))  # sparse file
    del x
    y = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", dtype=np.int64, shape=(rows,))
    y[:] = np.arange(rows) % k
    del y
    suite = _write(tmp_path, f"""
        name: big
        datasets: [{{name: arrays, path: {tmp_path / 'x.npy'}, labels: y.npy}}]
        grid: {{method: [kmeans, spectral]}}
        """)
    code = cli.main(["run", str(suite), "--dry-run", "--results", str(tmp_path / "r"), "--max-memory", "24G"])
    err = capsys.readouterr().err
    assert code == 2
    assert "a trial of method 'spectral' needs about" in err and "eigensolver" in err, err
    assert "method 'kmeans'" not in err

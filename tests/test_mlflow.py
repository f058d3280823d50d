"""MLflow: `icon-bench export mlflow` and a suite's `track: {mlflow: ...}`, read back with MlflowClient from a real
file store and a real `mlflow server` on 127.0.0.1; idempotence; a tracker failure never stops the sweep."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray_trials import fake_load, fake_trial, tune_load, tune_trial

from icon_bench import cli
from icon_bench.run.execution.store import ResultsStore
from icon_bench.runner import run_suite

mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed (pip install -e '.[test]' brings it)")
from mlflow import MlflowClient  # noqa: E402

SUITE = """
name: tracked
datasets: [digits]
grid:
  method: [pmi]
  divergence: [kl, tv]
include:
  - {method: fake, divergence: js, fail: true}
"""


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no reports to the internet from the tests
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    # MLflow 3 refuses a file store unless asked; the file store is still what many users have.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def history_trial(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """fake_trial's row with a loss and learning rate per epoch and a gradient norm per step, as the trainer records."""
    row = fake_trial(spec, data)
    row["history"] = {"loss": [3.0, 2.0, 1.5], "lr": [0.1, 0.1, 0.05], "grad_norm": [9.0, 7.0, 5.0, 4.0, 3.0, 2.5]}
    row["started_at"], row["finished_at"] = "2026-01-02T03:04:05+00:00", "2026-01-02T03:04:09+00:00"
    return row


def _suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def _run(path: Path, results: Path, trial_fn: Any = history_trial, load_fn: Any = fake_load) -> tuple[int, str]:
    out = io.StringIO()
    code = run_suite(path, results=results, trial_fn=trial_fn, load_fn=load_fn, report=False, progress=False, out=out)
    return code, out.getvalue()


def _runs(client: MlflowClient, experiment: str) -> tuple[Any, dict[str, Any]]:
    """(the parent run, trial id -> its nested run) of `experiment`; asserts there is one parent."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("icon_bench.kind") == "suite"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("icon_bench.kind") == "trial"]
    keys = [r.data.tags["icon_bench.row_key"] for r in children]
    assert len(set(keys)) == len(keys), "a row was logged twice"
    by_trial = {r.data.tags["icon_bench.trial_id"]: r for r in children}
    return parents[0], by_trial


def _check_trials(client: MlflowClient, parent: Any, by_trial: dict[str, Any], results: Path, tmp_path: Path) -> None:
    """What the client reads back matches the stored rows: nesting, params, metrics, histories, status, tracebacks."""
    rows = {r["trial_id"]: r for r in ResultsStore(results).rows()}
    assert set(by_trial) == set(rows)
    for tid, row in rows.items():
        run = by_trial[tid]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["method"] == row["method"]
        assert run.data.params["divergence"] == row["spec"]["divergence"]
        assert run.data.params["dataset.name"] == "digits"
        assert run.data.tags["icon_bench.status"] == row["status"]
        if row["status"] == "ok":
            assert run.info.status == "FINISHED"
            assert run.data.params["seed"] == "0"
            assert run.data.metrics["hungarian"] == pytest.approx(row["metrics"]["hungarian"])
            losses = client.get_metric_history(run.info.run_id, "history.loss")
            assert [(m.step, m.value) for m in sorted(losses, key=lambda m: m.step)] == [(0, 3.0), (1, 2.0), (2, 1.5)]
            norms = client.get_metric_history(run.info.run_id, "history.grad_norm")
            assert [m.value for m in sorted(norms, key=lambda m: m.step)] == row["history"]["grad_norm"]
            assert run.info.start_time == 1767323045000  # the row's started_at
        else:
            assert run.info.status == "FAILED"
            assert run.data.params["settings.fail"] == "true"
            assert "ValueError: boom in fake" in run.data.tags["icon_bench.error"]
            names = [f.path for f in client.list_artifacts(run.info.run_id, "tracebacks")]
            assert names == [f"tracebacks/{tid}.txt"]
            local = client.download_artifacts(run.info.run_id, names[0], str(tmp_path))
            assert Path(local).read_text() == (results / row["traceback_file"]).read_text()
            assert "ValueError: boom in fake" in Path(local).read_text()


def test_export_to_a_file_store_is_idempotent(tmp_path: Path, fake_method: None, capsys: pytest.CaptureFixture[str]) -> None:
    results, store_uri = tmp_path / "res", (tmp_path / "mlruns").as_uri()
    assert _run(_suite(tmp_path, SUITE), results)[0] == 1  # the fake trial fails, the others are ok
    argv = ["export", "mlflow", str(results), "--tracking-uri", store_uri, "--experiment", "exp"]
    assert cli.main(argv) == 0
    assert "3 trial(s) logged, 0 already there" in capsys.readouterr().out
    client = MlflowClient(store_uri)
    parent, by_trial = _runs(client, "exp")
    assert parent.info.run_name == "tracked" and parent.info.status == "FINISHED"
    _check_trials(client, parent, by_trial, results, tmp_path)

    # A second export (here of the results.jsonl itself) logs nothing: every trial is keyed by its id.
    assert cli.main([*argv[:2], str(results / "results.jsonl"), *argv[3:]]) == 0
    assert "0 trial(s) logged, 3 already there" in capsys.readouterr().out
    parent2, again = _runs(client, "exp")
    assert parent2.info.run_id == parent.info.run_id
    assert {t: r.info.run_id for t, r in again.items()} == {t: r.info.run_id for t, r in by_trial.items()}

    # A newer row of a trial (a retried failure that now passed) replaces its run; the others stay.
    failed = next(r for r in ResultsStore(results).rows() if r["status"] == "failed")
    passed = history_trial({**failed["spec"], "settings": {}})
    retried = {**passed, "trial_id": failed["trial_id"], "spec": failed["spec"], "protocol": failed["protocol"]}
    ResultsStore(results, suite="tracked").append(retried)
    assert cli.main(argv) == 0
    assert "1 trial(s) logged, 2 already there" in capsys.readouterr().out
    _, third = _runs(client, "exp")
    assert third[failed["trial_id"]].info.status == "FINISHED"
    assert third[failed["trial_id"]].info.run_id != by_trial[failed["trial_id"]].info.run_id
    assert client.get_run(by_trial[failed["trial_id"]].info.run_id).info.lifecycle_stage == "deleted"

    # The same trial measured under another protocol version is a row of its own, so a run of its own;
    # exporting again still logs nothing twice.
    ResultsStore(results, suite="tracked").append({**retried, "protocol": {"version": "1"}})
    assert cli.main(argv) == 0
    assert "1 trial(s) logged, 3 already there" in capsys.readouterr().out
    assert cli.main(argv) == 0
    assert "0 trial(s) logged, 4 already there" in capsys.readouterr().out
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id], "tags.`icon_bench.kind` = 'trial'")
    assert sorted(r.data.tags["icon_bench.row_key"] for r in runs if r.data.tags["icon_bench.trial_id"] == failed["trial_id"]) \
        == [f"{failed['trial_id']}/1", f"{failed['trial_id']}/{failed['protocol']['version']}"]


TUNED = """
name: tunedtrack
datasets: [digits]
grid:
  method: [pmi]
  divergence: [kl]
settings: {epochs: 3}
tune:
  budget: 3
  space:
    lr: {loguniform: [1.0e-4, 1.0e-1]}
track:
  mlflow: {tracking_uri: URI}
"""


def test_a_tuned_suite_logs_its_selection_and_budget(tmp_path: Path) -> None:
    store_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow's recommended store, beside the file store above
    code, out = _run(_suite(tmp_path, TUNED.replace("URI", store_uri)), tmp_path / "res", tune_trial, tune_load)
    assert code == 0 and "mlflow: logging trials to experiment" in out
    client = MlflowClient(store_uri)
    _, by_trial = _runs(client, "tunedtrack")  # the experiment defaults to the suite's name
    rows = ResultsStore(tmp_path / "res").rows()
    assert len(by_trial) == len(rows) == 3 + 1
    final = next(r for r in rows if (r.get("tune") or {}).get("role") == "final")
    params = by_trial[final["trial_id"]].data.params
    assert params["tune.budget"] == "3" and params["tune.algorithm"] == "random"
    assert float(params["tune.selected.lr"]) == pytest.approx(final["tune"]["selected"]["lr"])
    assert float(params["settings.lr"]) == pytest.approx(final["tune"]["selected"]["lr"])
    assert by_trial[final["trial_id"]].data.metrics["tune.val_value"] == pytest.approx(final["tune"]["val_value"])
    roles = sorted(r.data.tags["icon_bench.tune_role"] for r in by_trial.values())
    assert roles == ["final", "search", "search", "search"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` (file-store backend: it starts in a third of SQLite's time; proxied artifacts) on a
    free port of 127.0.0.1."""
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", str(tmp_path / "server-runs"),
           "--artifacts-destination", str(tmp_path / "server-artifacts")]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "MLFLOW_ALLOW_FILE_STORE": "true"}
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("mlflow server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        # The server runs its workers as children: end the whole process group it leads.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_track_logs_while_the_suite_runs_to_a_server(tmp_path: Path, mlflow_server: str, fake_method: None,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "res"
    text = SUITE + f"track:\n  mlflow: {{tracking_uri: '{mlflow_server}', experiment: live}}\n"
    path = _suite(tmp_path, text)
    code, out = _run(path, results)
    assert code == 1 and re.search(rf"mlflow: logging trials to experiment \d+ at {mlflow_server}, parent run", out)
    client = MlflowClient(mlflow_server)
    parent, by_trial = _runs(client, "live")
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"  # ended when the run let go of its store
    _check_trials(client, parent, by_trial, results, tmp_path)

    # A resume (--retry-failed reruns the failure; it fails again: a newer row) and an export afterwards
    # leave one run per trial under the same parent.
    assert run_suite(path, results=results, trial_fn=history_trial, load_fn=fake_load, report=False, progress=False,
                     out=io.StringIO(), retry_failed=True) == 1
    assert cli.main(["export", "mlflow", str(results), "--tracking-uri", mlflow_server, "--experiment", "live"]) == 0
    assert "0 trial(s) logged, 3 already there" in capsys.readouterr().out
    parent2, again = _runs(client, "live")
    assert parent2.info.run_id == parent.info.run_id and set(again) == set(by_trial)
    _check_trials(client, parent2, again, results, tmp_path)


def test_a_tracker_that_fails_never_stops_the_sweep(tmp_path: Path, fake_method: None, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from icon_bench.track import mlflow_log

    calls = []

    def broken(self: Any, row: Any, store_dir: Any = None) -> bool:
        calls.append(row["trial_id"])
        raise ConnectionError("the tracking server went away")

    monkeypatch.setattr(mlflow_log.MlflowLog, "log_row", broken)
    store_uri = (tmp_path / "mlruns").as_uri()
    path = _suite(tmp_path, SUITE + f"track:\n  mlflow: {{tracking_uri: '{store_uri}'}}\n")
    code, _ = _run(path, tmp_path / "res")
    assert code == 1  # the fake trial's failure, nothing else
    assert len(ResultsStore(tmp_path / "res").rows()) == 3
    err = capsys.readouterr().err
    assert err.count("warning: mlflow logging failed") == 1
    assert "ConnectionError: the tracking server went away" in err
    assert f"icon-bench export mlflow {tmp_path / 'res'} --tracking-uri {store_uri} --experiment tracked" in err
    assert len(calls) == 1  # given up after the first failure: a dead server is not waited on for every trial

    # A tracker that cannot even start (nothing listens there): warned once, the sweep runs.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    path = _suite(tmp_path, SUITE + f"track:\n  mlflow: {{tracking_uri: 'http://127.0.0.1:{_free_port()}'}}\n")
    code, _ = _run(path, tmp_path / "res2")
    assert code == 1 and len(ResultsStore(tmp_path / "res2").rows()) == 3
    assert capsys.readouterr().err.count("warning: mlflow logging failed") == 1


def test_without_mlflow_a_track_block_and_export_name_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from icon_bench.errors import SuiteError
    from icon_bench.run.suite.reader import load_suite

    for name in ("mlflow", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    path = _suite(tmp_path, "name: t\ndatasets: [digits]\ngrid: {method: [pmi]}\ntrack:\n  mlflow: {experiment: x}\n")
    with pytest.raises(SuiteError, match=r"suite.yaml:5: track.mlflow: MLflow logging needs mlflow: "
                                         r"pip install 'icon-bench\[mlflow\]'$"):
        load_suite(path)
    ResultsStore(tmp_path / "res").append(history_trial({"method": "pmi", "dataset": {"name": "digits"}, "seed": 0}))
    assert cli.main(["export", "mlflow", str(tmp_path / "res")]) == 2
    assert capsys.readouterr().err.strip() == (
        "icon-bench: error: MLflow logging needs mlflow: pip install 'icon-bench[mlflow]'")


def test_relative_tracking_files_are_relative_to_the_suite_root() -> None:
    from icon_bench.track.hook import suite_uri

    root = Path("/project")
    assert suite_uri("sqlite:///mlflow.db", root) == "sqlite:////project/mlflow.db"
    assert suite_uri("sqlite:////abs/m.db", root) == "sqlite:////abs/m.db"
    assert suite_uri("./mlruns", root) == "/project/mlruns"
    assert suite_uri("/abs/mlruns", root) == "/abs/mlruns"
    assert suite_uri("http://127.0.0.1:5000", root) == "http://127.0.0.1:5000"
    assert suite_uri("databricks", root) == "databricks"  # a URI without a scheme's slashes stays as written
    assert suite_uri(None, root) is None

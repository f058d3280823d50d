"""Ray under the limits of issue 22: its own local cluster, a hung trial's timeout, a node that dies through its agents."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from ray_procs import descendants

from icon_bench.run.suite.ids import trial_id
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.reader import load_suite

pytest.importorskip("ray")
pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent

DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import ray_trials
from ray import cloudpickle
from ray_trials import fake_load, fake_trial, use_fake_method
from icon_bench.runner import run_suite
cloudpickle.register_pickle_by_value(ray_trials)  # workers cannot import tests/ by name
use_fake_method()
sys.exit(run_suite({suite!r}, results={results!r}, executor="ray", trial_fn=fake_trial, load_fn=fake_load,
                   report={report!r}, progress=False, num_cpus=2, timeout={timeout!r}))
"""


def _driver(tmp_path: Path, suite_text: str, *, report: bool = False, timeout: float | None = None) -> tuple[Path, Path]:
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(suite_text).lstrip("\n"))
    results = tmp_path / "res"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS), suite=str(suite), results=str(results), report=report,
                                    timeout=timeout))
    return driver, results


@pytest.fixture
def short_tmp() -> Path:
    # Ray's socket paths live under its temporary folder and must stay under 108 characters.
    folder = Path(tempfile.mkdtemp(prefix="ib-ray-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_stale_current_cluster_file_is_not_joined(short_tmp: Path, tmp_path: Path) -> None:
    # What a crashed `ray start` (or another tool) leaves behind: the address of a cluster long gone.
    (short_tmp / "ray").mkdir()
    (short_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
    driver, results = _driver(tmp_path, """
        name: own
        datasets: [digits]
        include:
          - {method: fake, seed: 0}
        """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, timeout=300,
                          env={**env, "RAY_TMPDIR": str(short_tmp)})
    # Before: ray.init() read the file and tried to join 127.0.0.1:9, failing after its retries.
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [r["status"] for r in ResultsStore(results).rows()] == ["ok"]


def test_a_hung_trial_on_ray_times_out_and_the_run_finishes(short_tmp: Path, tmp_path: Path) -> None:
    driver, results = _driver(tmp_path, """
        name: hung
        datasets: [digits]
        include:
          - {method: fake, seed: 0, sleep: 1000}
          - {method: fake, seed: 1}
          - {method: fake, seed: 2}
        """, timeout=3)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_TMPDIR": str(short_tmp)})
    assert time.perf_counter() - start < 200
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = ResultsStore(results).rows()
    assert sorted(r["status"] for r in rows) == ["ok", "ok", "timeout"]
    assert "timed out after 3 s" in next(r["error"] for r in rows if r["status"] == "timeout")


def _agents(root: int) -> list[int]:
    """The Ray agents (dashboard agent, runtime-env agent) below `root`."""
    found = []
    for pid in descendants(root):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "agent" in cmd and ("dashboard" in cmd or "runtime_env" in cmd):
            found.append(pid)
    return found


def _kill_agents_after_one_row(tmp_path: Path, short_tmp: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the 8-trial suite on Ray in a driver process, SIGKILL its node's agents once a row is stored."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    driver, results = _driver(tmp_path, """
        name: dying
        datasets: [digits]
        seeds: [0, 1, 2, 3, 4, 5, 6, 7]
        include:
          - {method: fake, sleep: 2}
        """)
    proc = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_TMPDIR": str(short_tmp)})
    jsonl = results / "results.jsonl"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not (jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 1):
            time.sleep(0.1)
        agents = _agents(proc.pid)
        assert agents, "no Ray agent found below the driver"
        for pid in agents:
            os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, output), results


#: The run's summary line ("3 ok, 5 failed in 21.0 s; rows in ..."); Ray's own state dumps also say "total".
SUMMARY = re.compile(r"\d+ ok, \d+ failed in ")


def _ray_ended_the_driver(done: subprocess.CompletedProcess) -> bool:
    """Ray's core worker ended the driver process itself (exit 1, no summary, no Python traceback): a race inside
    Ray between its own exit on losing the raylet and the error Python would otherwise see; nothing in Python runs."""
    return done.returncode == 1 and not SUMMARY.search(done.stdout) and "Traceback" not in done.stdout


def test_a_node_dying_through_its_agents_leaves_every_trial_recorded_and_a_summary(
    short_tmp: Path, tmp_path: Path, fake_method: None
) -> None:
    # Ray sometimes ends the driver process from C++ before Python sees the lost cluster (measured: about 1 run
    # in 6 alone, more under load). What this test holds is what icon-bench does when Python does see it, so a
    # run Ray ended is tried again (at most 3 runs), and three in a row are reported as an expected failure.
    for attempt in range(3):
        done, results = _kill_agents_after_one_row(tmp_path / f"try{attempt}", short_tmp)
        if not _ray_ended_the_driver(done):
            break
    else:
        pytest.xfail("Ray's core worker ended the driver in all 3 runs before Python saw the lost cluster")
    output = done.stdout
    # Before: exit 1 with a traceback, no summary, 7 of 8 cells neither ok nor failed.
    store = ResultsStore(results)
    counts = Counter(r["trial_id"] for r in store.read())
    expected = {trial_id(s) for s in load_suite(results.parent / "suite.yaml").trials()}
    assert set(counts) == expected and set(counts.values()) == {1}, output[-3000:]
    assert done.returncode in (0, 1), output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert SUMMARY.search(output), output[-3000:]  # the summary was printed
    failed = [r for r in store.rows() if r["status"] != "ok"]
    assert all(r["error"] for r in failed)
    print(output[-2500:], json.dumps(Counter(r["status"] for r in store.rows())))

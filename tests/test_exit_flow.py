"""Exit statuses, SIGTERM, report titles and failures, run -> leaderboard, --address, --help, "did you mean" (issue 22 items 11, 12)."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from ray_trials import fake_load, fake_trial, tune_load
from test_run_store import SUITE, _suite

from icon_bench import cli
from icon_bench.errors import IconBenchError
from icon_bench.report import html as html_writer
from icon_bench.report.commands import EXIT_REPORT, write_report
from icon_bench.run.execution.store import ResultsStore
from icon_bench.runner import EXIT_CODES, EXIT_FAILED, run_suite

TESTS = Path(__file__).resolve().parent

_spec = importlib.util.spec_from_file_location("report_fixture", TESTS / "fixtures" / "report_fixture.py")
report_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_fixture)

pytestmark = pytest.mark.usefixtures("fake_method")  # every test here runs method "fake"


# -- exit statuses ----------------------------------------------------------------------------------
def test_a_tuned_suite_with_limit_and_failed_trials_exits_1(tmp_path: Path) -> None:
    path = _suite(tmp_path, """
        name: tuned
        datasets: [digits]
        seeds: [0]
        grid:
          method: [fake]
        tune:
          budget: 4
          space:
            lr: {loguniform: [1.0e-5, 1.0e-1]}
    """)

    def failing(spec: dict[str, Any], data: Any = None) -> dict[str, Any]:
        raise ValueError("boom")

    out = io.StringIO()
    code = run_suite(path, results=tmp_path / "res", limit=2, trial_fn=failing, load_fn=tune_load, progress=False,
                     report=False, out=out)
    assert "--limit: 2 search trials left for the next run" in out.getvalue()
    assert code == EXIT_FAILED == 1


def test_the_readme_lists_every_exit_status_of_run() -> None:
    readme = (TESTS.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("`icon-bench run` exits with:")[1].split("\n\n")[1]
    listed = {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    assert listed == set(EXIT_CODES) | {2}


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from ray_trials import fake_load, fake_trial, use_fake_method
from icon_bench.runner import run_suite
use_fake_method()
sys.exit(run_suite({suite!r}, trial_fn=fake_trial, load_fn=fake_load, report=False, progress=False))
"""


def _terminated(tmp_path: Path, driver: str, suite: str, wait_s: float) -> tuple[str, list[dict[str, Any]]]:
    """Start a run in a process, SIGTERM it once a row is stored; (its output, the stored rows), checked."""
    path = _suite(tmp_path, suite)
    (tmp_path / "driver.py").write_text(driver.format(tests=str(TESTS), suite=str(path)))
    jsonl = tmp_path / "results" / "four" / "results.jsonl"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + wait_s
    while time.time() < deadline and not (jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err[-2000:])
    assert "interrupted by SIGTERM: finished rows are kept" in out and "Traceback" not in err
    assert "rows in " in out  # the summary table was printed
    rows = [json.loads(line) for line in jsonl.read_bytes().splitlines()]  # every line whole
    assert len({r["trial_id"] for r in rows}) == len(rows) >= 1
    return out, rows


def test_sigterm_ends_a_run_as_ctrl_c_does(tmp_path: Path) -> None:
    _, rows = _terminated(tmp_path, DRIVER, SUITE + "  sleep: 0.5\n", 60)
    assert len(rows) < 4
    path, jsonl = tmp_path / "suite.yaml", tmp_path / "results" / "four" / "results.jsonl"
    # The same command resumes with what is left.
    rerun = io.StringIO()
    assert run_suite(path, trial_fn=fake_trial, load_fn=fake_load, progress=False, report=False, out=rerun) == 0
    assert f"running {4 - len(rows)} of 4 cells" in rerun.getvalue()
    assert len(ResultsStore(jsonl.parent).done_ids()) == 4


RAY_DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import ray_trials
from ray import cloudpickle
from ray_trials import fake_load, fake_trial, use_fake_method
from icon_bench.runner import run_suite
cloudpickle.register_pickle_by_value(ray_trials)  # workers cannot import tests/ray_trials.py by name
use_fake_method()
sys.exit(run_suite({suite!r}, executor="ray", trial_fn=fake_trial, load_fn=fake_load, report=False, progress=False))
"""


@pytest.mark.slow
def test_sigterm_ends_a_ray_run_as_ctrl_c_does(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    # ray.init installs a SIGTERM handler that exits at once; the run takes SIGTERM back.
    suite = SUITE.replace("seed: [0, 1, 2, 3]", "seed: [0, 1, 2, 3, 4, 5, 6, 7]") + "  sleep: 1.0\n"
    _, rows = _terminated(tmp_path, RAY_DRIVER, suite, 180)
    assert len(rows) < 8


# -- the report: its title, its own exit status, no partial files ---------------------------------
def test_every_report_page_is_titled_by_its_suite(tmp_path: Path) -> None:
    results = report_fixture.make_results(tmp_path / "results")
    out = write_report(results, tmp_path / "report", plots=False)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Failed trials" in page  # a section of the loop whose variable overwrote the title
    assert re.search(r"<title>icon-bench report: fixture</title>", page), re.search(r"<title>.*?</title>", page)


def test_a_failed_report_exits_with_its_own_status_and_leaves_no_partial_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = report_fixture.make_results(tmp_path / "results")
    out = tmp_path / "reports" / "fixture"
    argv = ["report", str(results), "-o", str(out), "--no-plots"]
    assert cli.main(argv) == 0
    (out / "notes.txt").write_text("a user's own file")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk trouble")

    monkeypatch.setattr(html_writer, "write_html", broken)
    assert cli.main(argv) == EXIT_REPORT == 5
    err = capsys.readouterr().err
    assert "report failed: RuntimeError: disk trouble; nothing was written to" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous report, whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["fixture"]  # no temporary folder left
    assert cli.main(["report", str(results), "-o", str(tmp_path / "new"), "--no-plots"]) == EXIT_REPORT
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    assert cli.main(argv) == 0 and (out / "notes.txt").is_file()  # a rewrite keeps a user's own file


def test_a_failed_report_after_a_run_exits_5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html_writer, "write_html", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    path = _suite(tmp_path)
    code = run_suite(path, trial_fn=fake_trial, load_fn=fake_load, progress=False, out=io.StringIO())
    assert code == EXIT_REPORT and not (tmp_path / "results" / "four" / "report").exists()


# -- run, then leaderboard -------------------------------------------------------------------------
def test_leaderboard_on_a_results_folder_says_which_commands_to_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = _suite(tmp_path)
    assert run_suite(path, trial_fn=fake_trial, load_fn=fake_load, progress=False, out=io.StringIO()) == 0
    capsys.readouterr()
    assert cli.main(["leaderboard", "results"]) == 2
    err = capsys.readouterr().err
    report = Path("results") / "four"
    assert f"icon-bench report {report} -o reports/four" in err and "icon-bench leaderboard reports" in err
    assert not Path("results/README.md").exists() and not Path("results/claims.csv").exists()
    assert cli.main(["leaderboard"]) == 2  # the default reports/ is not there yet: the same commands
    assert "there is no reports folder at reports; results holds the reports of runs" in capsys.readouterr().err
    for line in err.splitlines():  # typing what it says works
        if line.strip().startswith("icon-bench "):
            assert cli.main(line.split()[1:]) == 0, line
    said = capsys.readouterr().out
    assert "index written to reports/README.md (claims of the papers: reports/claims.csv)" in said
    assert Path("reports/claims.csv").is_file()


def test_leaderboard_never_names_a_claims_file_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["leaderboard", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "claims" not in out and not (tmp_path / "claims.csv").exists()


# -- options ---------------------------------------------------------------------------------------
def test_address_implies_ray_and_contradicts_executor_local(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _suite(tmp_path)
    out = io.StringIO()
    assert run_suite(path, dry_run=True, address="127.0.0.1:6399", out=out) == 0
    assert "--address 127.0.0.1:6399: running on the Ray executor (an address implies Ray)" in out.getvalue()
    with pytest.raises(IconBenchError, match="--address 127.0.0.1:6399 names a Ray cluster, but --executor local"):
        run_suite(path, dry_run=True, address="127.0.0.1:6399", executor="local", out=io.StringIO())
    assert cli.main(["run", str(path), "--dry-run", "--address", "127.0.0.1:6399", "--executor", "local"]) == 2


def _commands(parser: argparse.ArgumentParser, prefix: str = "icon-bench") -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{prefix} {name}", sub))
                found += _commands(sub, f"{prefix} {name}")
    return found


def test_every_command_has_a_description() -> None:
    commands = _commands(cli.build_parser())
    assert {"icon-bench leaderboard", "icon-bench report", "icon-bench suite-schema", "icon-bench store merge"} <= {
        name for name, _ in commands
    }
    bare = [name for name, sub in commands if len((sub.description or "").split()) < 8]
    assert not bare, f"--help without a description: {bare}"


@pytest.mark.parametrize(("typo", "meant"), [("--dryrun", "--dry-run"), ("--retry_failed", "--retry-failed"),
                                            ("--no_report", "--no-report")])
def test_a_mistyped_option_gets_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str], typo: str, meant: str) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["run", str(tmp_path / "suite.yaml"), typo])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"icon-bench run: error: unrecognized arguments: {typo} ({typo}: did you mean {meant}?)" in err


def test_the_bar_label_fits_80_columns_with_the_fields_that_tell_trials_apart() -> None:
    from icon_bench.run.execution.labels import bar_label

    spec = {"method": "debiased_infonce_clustering", "seed": 3, "divergence": {"name": "alpha", "a": 0.5},
            "dataset": {"name": "arrays", "path": "/data/some/very/long/folder/mnist_embeddings_dino.npz", "pca": 50}}
    values = {"settings.lr": 0.0031622776, "p.debias": 0.25}
    assert bar_label(spec, values).startswith("debiased_infonce_clustering mnist_embeddings_dino")
    for width in (60, 40, 30, 20):
        label = bar_label(spec, values, width=width)
        assert len(label) <= width, (width, label)
        if width >= 60:  # the dataset and the tuned keys' names give way first; the numbers stay
            assert label.startswith("debiased") and "alpha(a=0.5) s3 lr=0.00316" in label and label.endswith("=0.25")
    assert "path" not in bar_label(spec, values, width=50)  # the dataset's label, not its parameters
    assert bar_label({"method": "pmi", "seed": 0, "dataset": "digits", "divergence": "kl"}, width=30) == "pmi digits kl seed 0"


def test_the_live_bar_fits_an_80_column_terminal(tmp_path: Path) -> None:
    from test_progress import _frames, run_in_terminal

    path = _suite(tmp_path, """
        name: wide
        datasets:
          - {name: digits, label: digits-standardised-and-projected-to-fifty-components}
        grid:
          method: [fake]
          divergence: [kl, tv]
          seed: [0, 1]
          sleep: 0.6
    """)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS), suite=str(path)).replace("progress=False", "progress=True"))
    code, text, _ = run_in_terminal([sys.executable, str(driver)], tmp_path, columns=80)
    assert code == 0, text
    frames = [f for f in _frames(text) if re.search(r"failed(, \d+ running)? \| ", f)]
    assert frames, text
    assert all(len(f) <= 80 for f in _frames(text)), max(_frames(text), key=len)
    for frame in frames:  # the running trial's divergence and seed stay visible, whatever is elided
        assert re.search(r"\| fake digits\S* (kl|tv) (s|seed )\d$", frame), frame

"""`icon-bench run`: the dry-run plan, resume after a SIGKILL, --force / --retry-failed, summary, report hook."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import textwrap
import types
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray_trials import fake_load, fake_trial, kill_after_rows

from icon_bench import cli
from icon_bench.errors import SuiteError
from icon_bench.hooks.registry import set_registry
from icon_bench.run.suite.ids import trial_id
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.reader import load_suite
from icon_bench.runner import run_suite

TESTS = Path(__file__).resolve().parent

PLAN_SUITE = """
name: plan
datasets: [digits, iris]
grid:
  method: [kmeans, pmi]
  divergence: [kl, tv]
  seed: [0, 1]
exclude:
  - {method: kmeans, divergence: tv}
include:
  - {method: tsne, dataset: digits, seed: 0}
"""


def _suite(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def _plan_rows(output: str) -> dict[tuple[str, str], list[int]]:
    rows = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[0] in ("kmeans", "pmi", "tsne"):
            rows[(parts[0], parts[1])] = [int(p) for p in parts[2:]]
        if parts and parts[0] == "total":
            rows[("total", "")] = [int(p) for p in parts[1:]]
    return rows


def test_dry_run_counts_with_include_exclude_and_done_cells(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _suite(tmp_path, PLAN_SUITE)
    results = tmp_path / "res"
    # 2 datasets x (kmeans: kl only, pmi: kl, tv) x 2 seeds = 12, plus one tsne cell.
    assert cli.main(["run", str(path), "--dry-run", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "13 cells, 0 done, 0 failed, 13 to run" in out
    plan = _plan_rows(out)
    assert plan[("kmeans", "digits")] == [2, 0, 0, 2]
    assert plan[("pmi", "iris")] == [4, 0, 0, 4]
    assert plan[("tsne", "digits")] == [1, 0, 0, 1]
    assert ("tsne", "iris") not in plan
    # Mark some cells done and one failed: the plan skips the done ones and reruns the failure.
    specs = load_suite(path).trials()
    store = ResultsStore(results)
    for spec in specs[:3]:
        store.append(fake_trial(spec))
    store.append({**fake_trial(specs[3]), "status": "failed", "error": "x"})
    assert cli.main(["run", str(path), "--dry-run", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "13 cells, 3 done, 1 failed, 10 to run" in out
    assert _plan_rows(out)[("total", "")] == [13, 3, 1, 10]
    assert cli.main(["run", str(path), "--dry-run", "--results", str(results), "--retry-failed"]) == 0
    assert "1 failed, 1 to run" in capsys.readouterr().out
    assert cli.main(["run", str(path), "--dry-run", "--results", str(results), "--force", "--limit", "5"]) == 0
    assert "3 done, 1 failed, 5 to run" in capsys.readouterr().out


def test_run_summary_exit_status_and_reruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_method: None) -> None:
    path = _suite(
        tmp_path,
        """
        name: small
        datasets: [digits]
        grid:
          method: [pmi]
          divergence: [kl, tv]
          seed: [0, 1]
        include:
          - {method: fake, divergence: js, seed: 0, fail: true}
        evaluate: [hungarian, nmi]
        """,
    )
    results = tmp_path / "res"
    calls: list[tuple[Path, Path]] = []
    fake_report = types.ModuleType("icon_bench.report.commands")
    fake_report.write_report = lambda res, out: calls.append((Path(res), Path(out)))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "icon_bench.report.commands", fake_report)
    monkeypatch.chdir(tmp_path)

    out = io.StringIO()
    code = run_suite(path, results=results, trial_fn=fake_trial, load_fn=fake_load, progress=False, out=out)
    text = out.getvalue()
    assert code == 1  # one trial failed
    assert "4 ok, 1 failed" in text and str(results / "results.jsonl") in text
    assert "hungarian" in text and "ValueError: boom in fake" in text  # metrics columns, error column
    assert calls == [(results, results / "report")]  # beside the rows, never the committed reports/
    rows = ResultsStore(results).rows()
    assert len(rows) == 5 and {r["suite"] for r in rows} == {"small"} and len({r["run_id"] for r in rows}) == 1

    # A plain rerun retries only what is not ok (the failure, failing again); --force reruns all.
    out = io.StringIO()
    assert run_suite(path, results=results, trial_fn=fake_trial, load_fn=fake_load, progress=False, out=out, report=False) == 1
    assert "running 1 of 5 cells" in out.getvalue()
    out = io.StringIO()
    assert run_suite(path, results=results, trial_fn=fake_trial, load_fn=fake_load, progress=False, out=out, report=False, force=True) == 1
    assert "running 5 of 5 cells" in out.getvalue()
    assert len(ResultsStore(results).read()) == 5 + 1 + 5


def test_missing_report_module_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _suite(tmp_path, "name: one\ndatasets: [digits]\ngrid: {method: [pmi]}\n")
    monkeypatch.setitem(sys.modules, "icon_bench.report.commands", None)  # import fails as if the module were absent
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    code = run_suite(path, trial_fn=fake_trial, load_fn=fake_load, progress=False, out=out)
    assert code == 0 and "no report written" in out.getvalue()
    assert (tmp_path / "results" / "one" / "results.jsonl").exists()


def test_malformed_suite_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _suite(tmp_path, "name: x\ndatasets: [digits]\ngrid:\n  method: [pmi]\n  divergnce: [kl]\n")
    assert cli.main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"icon-bench: error: {path}:5: grid.divergnce: unknown key; did you mean 'divergence'?" in err


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from ray_trials import fake_load, fake_trial, use_fake_method
from icon_bench.runner import run_suite
use_fake_method()
sys.exit(run_suite({suite!r}, results={results!r}, trial_fn=fake_trial, load_fn=fake_load, report=False, progress=False))
"""


def test_resume_after_sigkill_runs_every_cell_exactly_once(tmp_path: Path, fake_method: None) -> None:
    path = _suite(
        tmp_path,
        """
        name: resume
        datasets: [digits]
        grid:
          method: [fake]
          seed: [0, 1, 2, 3, 4, 5, 6, 7]
          sleep: 0.4
        """,
    )
    results = tmp_path / "res"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS), suite=str(path), results=str(results)))
    jsonl = results / "results.jsonl"
    assert kill_after_rows(driver, jsonl, 2) == -signal.SIGKILL
    partial = ResultsStore(results).done_ids()
    assert 2 <= len(partial) < 8

    second = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"running {8 - len(partial)} of 8 cells" in second.stdout
    store = ResultsStore(results)
    counts = Counter(r["trial_id"] for r in store.read())
    expected = {trial_id(s) for s in load_suite(path).trials()}
    assert set(counts) == expected and set(counts.values()) == {1}
    assert all(r["status"] == "ok" for r in store.rows())


def test_interrupted_run_exits_130_and_keeps_rows(tmp_path: Path, fake_method: None) -> None:
    path = _suite(
        tmp_path,
        """
        name: stop
        datasets: [digits]
        grid:
          method: [pmi]
          seed: [0, 1, 2]
        include:
          - {method: fake, seed: 9, interrupt: true}
        """,
    )
    results = tmp_path / "res"
    out = io.StringIO()
    code = run_suite(path, results=results, trial_fn=fake_trial, load_fn=fake_load, progress=False, out=out, report=False)
    assert code == 130
    assert "3 ok, 0 failed, 1 not run (interrupted)" in out.getvalue() and "run the same command again" in out.getvalue()
    assert len(ResultsStore(results).done_ids()) == 3


def test_cells_done_under_other_recipe_defaults_run_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from icon_bench.run.execution.trial import recipe_of

    path = _suite(tmp_path, PLAN_SUITE)
    results = tmp_path / "res"
    specs = load_suite(path).trials()
    pmi = [s for s in specs if s["method"] == "pmi"][:3]
    kmeans = next(s for s in specs if s["method"] == "kmeans")
    current = recipe_of(pmi[0])
    assert current is not None and current["q_debias"] == 0.0 and recipe_of(kmeans) == {"params": {"n_clusters": None, "n_init": 10}}
    store = ResultsStore(results)
    store.append({**fake_trial(pmi[0]), "recipe": recipe_of(pmi[0])})  # made under today's defaults
    store.append({**fake_trial(pmi[1]), "recipe": {**recipe_of(pmi[1]), "q_debias": 0.5}})  # under older ones
    store.append({**fake_trial(pmi[2]), "info": {"recipe": {**recipe_of(pmi[2]), "p_debias": 0.5}}})  # pre-"recipe" row
    store.append(fake_trial(kmeans))  # a row that recorded no recipe is trusted
    assert cli.main(["run", str(path), "--dry-run", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "2 done cell(s) ran under other recipe defaults" in out and "pmi: q_debias 0.5 -> 0.0" in out
    assert "13 cells, 2 done, 0 failed, 11 to run" in out
    assert cli.main(["run", str(path), "--dry-run", "--results", str(results), "--force"]) == 0
    assert "other recipe defaults" not in capsys.readouterr().out


# -- issue 14 item 12: a suite of include entries only --------------------------------------------
INCLUDE_ONLY = """
name: inc
datasets: [digits]
include:
  - {method: pmi, epochs: 2}
  - {method: kmeans, seed: [0, 1]}
"""


def test_a_suite_of_include_entries_only_has_no_cell_without_a_method(tmp_path: Path) -> None:
    path = _suite(tmp_path, INCLUDE_ONLY)
    assert [(s["method"], s["seed"]) for s in load_suite(path).trials()] == [("pmi", 0), ("kmeans", 0), ("kmeans", 1)]
    out = io.StringIO()
    assert run_suite(path, dry_run=True, out=out) == 0
    assert "None" not in out.getvalue() and "3 cells, 0 done, 0 failed, 3 to run" in out.getvalue()
    # In the run table a method without a divergence (kmeans) shows "-", not None or "(default)".
    out = io.StringIO()
    assert run_suite(path, trial_fn=fake_trial, load_fn=fake_load, progress=False, out=out, report=False) == 0
    kmeans_lines = [line.split() for line in out.getvalue().splitlines() if line.startswith("kmeans")]
    assert len(kmeans_lines) == 2 and all(parts[2] == "-" for parts in kmeans_lines)


def test_grid_axes_without_a_method_are_an_error_naming_the_key(tmp_path: Path) -> None:
    path = _suite(tmp_path, INCLUDE_ONLY.replace("include:", "grid:\n  epochs: [1, 2]\ninclude:"))
    with pytest.raises(SuiteError, match=r"suite.yaml:4: grid.epochs: the grid has no method axis"):
        load_suite(path)


def test_trial_header_shows_a_dash_for_a_method_without_divergence(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["trial", "kmeans", "iris"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "kmeans on iris (divergence -, seed 0, test split, protocol 2): ok"


# -- issue 14 item 11: results and data paths do not depend on the current directory ---------------
def test_results_and_data_paths_resolve_against_the_suite_root_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "suites").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    path = _suite(
        project / "suites",
        "name: rooted\ndatasets:\n  - {name: arrays, path: data/x.npz}\ngrid: {method: [pmi], seed: [0, 1]}\n",
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SuiteError, match=re.escape(f"no such file: {project / 'data' / 'x.npz'}")):
        run_suite(path, dry_run=True, out=io.StringIO())  # the plan-time check looks under the root too
    (project / "data").mkdir()
    # A real (tiny) file: the plan reads its header (keys, sizes, classes) before any trial.
    np.savez(project / "data" / "x.npz", x=np.zeros((6, 2), np.float32), y=np.arange(6) % 2)
    seen: list[str] = []

    def load(ds: dict) -> dict:
        seen.append(ds["path"])
        return fake_load({"name": "digits"})

    for cwd in (tmp_path, project / "suites"):  # two other folders than the root
        (cwd / "elsewhere").mkdir()
        monkeypatch.chdir(cwd / "elsewhere")
        out = io.StringIO()
        assert run_suite(path, trial_fn=fake_trial, load_fn=load, progress=False, out=out, report=False) == 0
        assert out.getvalue().splitlines()[0] == f"results: {project / 'results' / 'rooted'}"
    assert seen == [str(project / "data" / "x.npz")]  # loaded once, by the first run; the second had nothing to do
    assert "nothing to run: 2 of 2 cells done" in out.getvalue()
    assert not (tmp_path / "results").exists() and not list(tmp_path.glob("*/elsewhere/results"))


def test_a_suite_outside_any_project_keeps_its_results_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lone").mkdir()
    path = _suite(tmp_path / "lone", "name: lone\ndatasets: [digits]\ngrid: {method: [pmi]}\n")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    assert run_suite(path, dry_run=True, out=out) == 0
    assert f"results: {tmp_path / 'lone' / 'results' / 'lone'}" in out.getvalue()


def test_the_quickstart_suite_finds_its_results_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", str(TESTS.parent / "suites" / "quickstart.yaml"), "--dry-run"]) == 0
    assert f"results: {TESTS.parent / 'results' / 'quickstart'}" in capsys.readouterr().out


# -- issue 14 item 9: plugins that failed to load are named by `run` -------------------------------
def test_run_names_the_plugins_that_failed_to_load(tmp_path: Path, site: Any) -> None:

    site("icon-bench-broken", "import a_module_that_does_not_exist_anywhere\n", entry="broken")
    set_registry(None)  # reload with the broken plugin installed
    path = _suite(tmp_path, "name: one\ndatasets: [digits]\ngrid: {method: [pmi]}\n")
    out = io.StringIO()
    assert run_suite(path, dry_run=True, out=out) == 0
    assert "warning: 1 plugin(s) failed to load: broken (`icon-bench plugins` shows why)" in out.getvalue()


# -- issue 14 item 5: a failure's whole first line, and where its traceback is ---------------------
LONG_ERROR = "/a/long/path/to/some/deeply/nested/folder/of/features/that/does_not_exist.npz: file not found"


def _long_failure(spec: dict, data: Any = None) -> dict:
    if spec["seed"] == 1:
        from icon_bench.errors import DataError

        raise DataError(LONG_ERROR + "\nsecond line")
    return fake_trial(spec, data)


def test_failures_are_listed_in_full_under_the_table_with_their_traceback(tmp_path: Path) -> None:
    path = _suite(tmp_path, "name: fails\ndatasets: [digits]\ngrid: {method: [kmeans], seed: [0, 1]}\n")
    out = io.StringIO()
    code = run_suite(path, trial_fn=_long_failure, load_fn=fake_load, progress=False, out=out, report=False)
    text = out.getvalue()
    assert code == 1
    table, _, below = text.partition("\nfailed (1):\n")
    assert LONG_ERROR not in table  # the table's error column stays narrow ...
    row = next(r for r in ResultsStore(tmp_path / "results" / "fails").rows() if r["status"] == "failed")
    tb_file = tmp_path / "results" / "fails" / row["traceback_file"]
    assert below.splitlines()[:2] == [  # ... and the whole first line follows it, with the traceback's place
        f"  kmeans on digits (divergence -, seed 1): DataError: {LONG_ERROR}",
        f"    traceback: {tb_file}",
    ]
    assert tb_file.read_text().startswith("Traceback (most recent call last):") and "second line" in tb_file.read_text()
    assert "second line" not in text


def test_search_rows_of_a_tuned_suite_are_not_listed_as_failures(tmp_path: Path) -> None:
    from icon_bench.runner import print_failures

    store = ResultsStore(tmp_path)
    spec = {"method": "pmi", "dataset": {"name": "digits"}, "divergence": "kl", "seed": 0, "split": "val"}
    search = {"spec": spec, "status": "search", "metrics": {"hungarian": 0.8}}
    out = io.StringIO()
    print_failures([search, {**search, "status": "ok"}], store, out)
    assert out.getvalue() == ""
    print_failures([search, {**search, "status": "failed", "error": "boom"}], store, out)
    assert "failed (1):" in out.getvalue() and "boom" in out.getvalue()


def test_a_failure_without_a_traceback_says_so(tmp_path: Path) -> None:
    from icon_bench.run.execution.base import failed_row
    from icon_bench.runner import print_failures

    store = ResultsStore(tmp_path)
    spec = {"method": "pmi", "dataset": {"name": "digits"}, "divergence": "kl", "seed": 3}
    row = store.append(failed_row(spec, "the trial's worker died (2 retries used up)"))
    assert "traceback_file" not in row and not (tmp_path / "tracebacks").exists()
    out = io.StringIO()
    print_failures([row], store, out)
    assert out.getvalue().splitlines()[2:] == [
        "  pmi on digits (divergence kl, seed 3): the trial's worker died (2 retries used up)",
        "    traceback: (none recorded: the trial did not raise)",
    ]

"""Tuned suites: the `tune:` schema, seeded candidates, equal budgets, selection on val only, resume, local vs Ray."""

from __future__ import annotations

import collections
import io
import json
import signal
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from ray_trials import kill_after_rows, split_target, tune_load, tune_trial

from icon_bench.errors import SuiteError
from icon_bench.run.execution.store import ResultsStore
from icon_bench.run.suite.reader import load_suite, parse_suite
from icon_bench.run.suite.tune_block import Scheduler
from icon_bench.run.tuning.candidates import Asha, candidates, milestones, rungs
from icon_bench.runner import run_suite

TESTS = Path(__file__).resolve().parent

TUNED = """
name: tuned
datasets: [digits]
seeds: [0, 1]
grid:
  method: [pmi]
  divergence: [kl, tv]
settings: {epochs: 9}
tune:
  budget: 6
  space:
    lr: {loguniform: [1.0e-5, 1.0e-1]}
    p.debias: [0.0, 0.3]
"""


def _write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def _run(path: Path, results: Path, **kwargs) -> tuple[int, str]:
    out = io.StringIO()
    kwargs.setdefault("trial_fn", tune_trial)
    kwargs.setdefault("load_fn", tune_load)
    code = run_suite(path, results=results, report=False, progress=False, out=out, **kwargs)
    return code, out.getvalue()


def _by_role(results: Path) -> tuple[list[dict], list[dict]]:
    rows = ResultsStore(results).rows()
    search = [r for r in rows if (r.get("tune") or {}).get("role") == "search"]
    final = [r for r in rows if (r.get("tune") or {}).get("role") == "final"]
    return search, final


# ---------------------------------------------------------------------------------------------
# Schema: errors at load time, with file:line and the key
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("block", "line", "message"),
    [
        ("  budget: 4\n  space: {lr: {logunifrom: [1, 2]}}\n", 2, "did you mean 'loguniform'"),
        ("  budget: 4\n  space:\n    lr: {loguniform: [0, 1]}\n", 3, "loguniform needs low > 0"),
        ("  budget: 4\n  space:\n    method: [pmi, kmeans]\n", 3, "names a configuration, not a hyperparameter"),
        ("  budget: 4\n  space:\n    divergence: [kl, tv]\n", 3, "names a configuration"),
        ("  budget: 4\n  space:\n    seed: [1]\n", 3, "names a configuration"),
        ("  budget: 4\n  space:\n    divergence.a: [0.5]\n", 3, "unknown prefix 'divergence'"),
        ("  budget: 4\n  space:\n    dataset.pca: [10, 20]\n", 3, "names a configuration"),
        ("  budget: 4\n  space:\n    p.debias: {uniform: [0.5, 0.1]}\n", 3, "needs low < high"),
        ("  budget: 4\n  space:\n    model.hidden: {randint: [8, 64.5]}\n", 3, "randint takes two integers"),
        ("  budget: 4\n  space:\n    lrr: [1, 2]\n", 3, "did you mean 'lr'"),
        ("  budget: 0\n  space: {lr: [1]}\n", 1, "greater than or equal to 1"),
        ("  budget: 3\n  space: {lr: [1, 2]}\n  algorithm: grid\n", 1, "has 2 points; set budget: 2"),
        ("  budget: 3\n  space: {lr: {uniform: [1, 2]}}\n  algorithm: grid\n", 3, "lists of values only"),
        ("  budget: 2\n  space: {lr: [1, 2]}\n  algoritm: random\n", 3, "did you mean 'algorithm'"),
        ("  budget: 2\n  space: {lr: [1, 2]}\n  scheduler: {name: asha, grace_epoch: 2}\n", 3, "did you mean 'grace_epochs'"),
        ("  budget: 2\n  space: {lr: [1, 2]}\n  metric: hungarain\n", 3, "did you mean 'hungarian'"),
        ("  budget: 3\n  space: {}\n", 2, "empty search space"),
    ],
)
def test_tune_block_errors_name_file_line_and_key(block: str, line: int, message: str) -> None:
    text = "name: t\ndatasets: [digits]\ngrid: {method: [pmi]}\ntune:\n" + block
    with pytest.raises(SuiteError) as err:
        parse_suite(text, source="s.yaml")
    assert str(err.value).startswith(f"s.yaml:{4 + line}: tune"), str(err.value)
    assert message in str(err.value), str(err.value)


def test_a_space_key_that_is_also_a_grid_axis_is_refused() -> None:
    text = "name: t\ndatasets: [digits]\ngrid: {method: [pmi], lr: [0.1]}\ntune: {budget: 2, space: {lr: [1, 2]}}\n"
    with pytest.raises(SuiteError, match=r"s.yaml:4: tune.space.lr: is also a grid axis"):
        parse_suite(text, source="s.yaml")


def test_the_selection_metric_must_be_evaluated() -> None:
    text = "name: t\ndatasets: [digits]\ngrid: {method: [pmi]}\nevaluate: [nmi]\ntune: {budget: 2, space: {lr: [1, 2]}, metric: hungarian}\n"
    with pytest.raises(SuiteError, match=r"'hungarian' is not among the suite's evaluate metrics"):
        parse_suite(text, source="s.yaml")


# ---------------------------------------------------------------------------------------------
# Candidates and ASHA's rule
# ---------------------------------------------------------------------------------------------
def test_candidates_are_seeded_shared_by_configurations_and_within_their_domains(tmp_path: Path) -> None:
    suite = load_suite(_write(tmp_path, TUNED))
    tune = suite.tune
    first, again, other = candidates(tune, 0), candidates(tune, 0), candidates(tune, 1)
    assert first == again and first != other and len(first) == tune.budget == 6
    assert all(1e-5 <= c["lr"] <= 1e-1 and c["p.debias"] in (0.0, 0.3) for c in first + other)
    log_lrs = np.log10([c["lr"] for c in candidates(tune.model_copy(update={"budget": 400}), 0)])
    assert log_lrs.min() < -4.5 and log_lrs.max() > -1.5  # log-uniform: the decades are covered evenly
    assert abs(np.median(log_lrs) + 3) < 0.4
    grid = tune.model_copy(update={"algorithm": "grid", "budget": 4, "space": {"lr": [1, 2], "p.debias": [0, 1]}})
    assert candidates(grid, 5) == [{"lr": 1, "p.debias": 0}, {"lr": 1, "p.debias": 1}, {"lr": 2, "p.debias": 0},
                                   {"lr": 2, "p.debias": 1}]


def test_asha_rungs_match_ray_tunes_milestones_and_its_rule() -> None:
    from ray.tune.schedulers.async_hyperband import _Bracket

    sched = Scheduler(grace_epochs=1, reduction_factor=3)
    assert rungs(10, sched) == [1, 3, 9, 10] and rungs(9, sched) == [1, 3, 9] and rungs(9, None) == [9]
    bracket = _Bracket(min_t=1, max_t=9, reduction_factor=3, s=0)
    assert sorted(m for m, _ in bracket._rungs) == milestones(9, sched)
    ours = Asha(9, sched)
    rng = np.random.default_rng(0)
    trial = collections.namedtuple("T", "trial_id")
    for k in range(30):
        epochs, value = int(rng.choice([1, 3])), float(rng.normal())
        theirs = bracket.on_result(trial(str(k)), epochs, value)
        assert ours.keep(epochs, value) == (theirs == "CONTINUE"), k


# ---------------------------------------------------------------------------------------------
# A tuned run in process
# ---------------------------------------------------------------------------------------------
def test_tuned_run_spends_the_same_budget_per_configuration_and_selects_the_best_on_val(tmp_path: Path) -> None:
    results = tmp_path / "res"
    code, out = _run(_write(tmp_path, TUNED), results)
    assert code == 0, out
    assert "2 configurations x 2 seeds x budget 6 = 24 search trials on val" in out
    search, final = _by_role(results)
    per_config = collections.Counter((r["tune"]["configuration"], r["seed"]) for r in search)
    assert sorted(per_config.values()) == [6, 6, 6, 6]  # equal budget: every configuration, every seed
    assert all(r["status"] == "search" and r["spec"]["split"] == "val" for r in search)
    assert len(final) == 4 and all(r["status"] == "ok" and r["spec"].get("split", "test") == "test" for r in final)
    data = tune_load({"name": "digits"})
    for row in final:
        rec = row["tune"]
        mine = [r for r in search if r["tune"]["configuration"] == rec["configuration"] and r["seed"] == row["seed"]]
        best = max(mine, key=lambda r: (r["metrics"]["hungarian"], -r["tune"]["index"]))
        assert rec["selected"] == best["tune"]["values"] and rec["val_value"] == best["metrics"]["hungarian"]
        assert rec["budget"] == rec["spent"] == 6 and rec["failed"] == 0 and rec["metric"] == "hungarian"
        assert rec["space"] == {"lr": {"loguniform": [1e-5, 1e-1]}, "p.debias": [0.0, 0.3]}
        assert row["spec"]["settings"]["lr"] == rec["selected"]["lr"]  # the test run uses the selection
        # The selected lr is the candidate nearest the val optimum, as the fake trial defines it.
        target = split_target(data["y_val"])
        nearest = min((r["tune"]["values"]["lr"] for r in mine), key=lambda lr: abs(np.log10(lr) - target))
        assert rec["selected"]["lr"] == nearest
    # Both divergences of one seed searched the same candidates (a paired search).
    by_div = {(r["divergence"], r["seed"], r["tune"]["index"]): r["tune"]["values"] for r in search}
    assert all(by_div[("kl", s, i)] == by_div[("tv", s, i)] for s in (0, 1) for i in range(6))
    # A second run has nothing to do.
    code, out = _run(_write(tmp_path, TUNED), results)
    assert code == 0 and "24 done, 0 to run" in out and "nothing left to run" in out


def test_selection_reads_only_val_poisoned_test_labels_change_no_selection(tmp_path: Path) -> None:
    clean, poisoned = tmp_path / "clean", tmp_path / "poisoned"
    assert _run(_write(tmp_path, TUNED), clean)[0] == 0
    poison_load = lambda ds: tune_load({**ds, "poison_test": True})  # noqa: E731 - the same suite, other labels
    assert _run(_write(tmp_path, TUNED), poisoned, load_fn=poison_load)[0] == 0
    pick = {}
    for name, results in (("clean", clean), ("poisoned", poisoned)):
        _, final = _by_role(results)
        pick[name] = {(r["divergence"], r["seed"]): r["tune"]["selected"] for r in final}
        test_scores = {(r["divergence"], r["seed"]): r["metrics"]["hungarian"] for r in final}
        pick[name + "_test"] = test_scores
    assert pick["clean"] == pick["poisoned"]  # the selection never saw the test labels
    assert pick["clean_test"] != pick["poisoned_test"]  # ... which did change the test scores
    # The poisoning matters: a search that scored on test would have picked another lr.
    search, _ = _by_role(clean)
    lrs = [r["tune"]["values"]["lr"] for r in search if r["seed"] == 0 and r["divergence"] == "kl"]
    by_test = {name: min(lrs, key=lambda lr: abs(np.log10(lr) - split_target(tune_load(ds)["y_test"])))
               for name, ds in (("clean", {"name": "digits"}), ("poisoned", {"name": "digits", "poison_test": True}))}
    assert by_test["clean"] != by_test["poisoned"]


#: A method whose settings are not declared, so the fake trial's `sleep` passes the suite checks.
SLOW = TUNED.replace("method: [pmi]", "method: [fake]").replace("settings: {epochs: 9}", "settings: {epochs: 9, sleep: 0.15}")

DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from ray_trials import tune_load, tune_trial, use_fake_method
from icon_bench.runner import run_suite
use_fake_method()
sys.exit(run_suite({suite!r}, results={results!r}, trial_fn=tune_trial, load_fn=tune_load, report=False, progress=False))
"""


def test_a_tuning_run_killed_mid_search_resumes_and_runs_each_search_trial_once(tmp_path: Path, fake_method: None) -> None:
    path = _write(tmp_path, SLOW)
    results = tmp_path / "res"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS), suite=str(path), results=str(results)))
    jsonl = results / "results.jsonl"
    assert kill_after_rows(driver, jsonl, 5, poll_s=0.02) == -signal.SIGKILL
    killed_at = len([ln for ln in jsonl.read_bytes().splitlines() if ln.strip()])
    assert 5 <= killed_at < 24, killed_at  # killed during the search, before any final trial
    code, out = _run(path, results)
    assert code == 0, out
    assert f"{killed_at} done, {24 - killed_at} to run" in out or f"{killed_at - 1} done" in out, out
    lines = [json.loads(ln) for ln in jsonl.read_bytes().splitlines() if ln.strip().endswith(b"}")]
    search_ids = [r["trial_id"] for r in lines if (r.get("tune") or {}).get("role") == "search"]
    assert len(search_ids) == len(set(search_ids)) == 24  # each search trial once, none lost, none redone
    assert sum((r.get("tune") or {}).get("role") == "final" for r in lines) == 4


def test_a_failed_search_trial_counts_as_spent_and_retry_failed_runs_it_again(tmp_path: Path) -> None:
    path = _write(tmp_path, TUNED.replace("p.debias: [0.0, 0.3]", "fail: [false, false, false, true]"))
    results = tmp_path / "res"
    code, out = _run(path, results, trial_fn=_failing_tune_trial)
    assert code == 0, out
    search, final = _by_role(results)
    assert len(search) == 24 and any(r["status"] == "failed" for r in search)
    assert all(r["tune"]["spent"] == 6 and r["tune"]["selected"]["fail"] is False for r in final)
    assert {r["tune"]["failed"] for r in final} >= {1} or {r["tune"]["failed"] for r in final} >= {2}
    failed = sum(r["status"] == "failed" for r in search)
    code, out = _run(path, results, trial_fn=_failing_tune_trial, retry_failed=True)
    assert f"{24 - failed} done, {failed} to run" in out


def _failing_tune_trial(spec: dict, data: object = None) -> dict:
    if (spec.get("settings") or {}).get("fail"):
        raise RuntimeError("this candidate breaks")
    return tune_trial(spec, data)


def test_asha_in_process_stops_poor_candidates_early_and_records_the_epochs(tmp_path: Path) -> None:
    text = TUNED.replace("  budget: 6", "  budget: 9\n  scheduler: {name: asha, grace_epochs: 1, reduction_factor: 3}")
    results = tmp_path / "res"
    code, out = _run(_write(tmp_path, text), results)
    assert code == 0, out
    search, final = _by_role(results)
    assert len(search) == 36
    epochs = collections.Counter(r["tune"]["epochs"] for r in search)
    assert epochs[1] > 0 and epochs[9] > 0 and set(epochs) <= {1, 3, 9}
    assert all(r["tune"]["stopped"] == (r["tune"]["epochs"] < 9) for r in search)
    assert all(r["spec"]["settings"]["epochs"] == r["tune"]["epochs"] for r in search)
    for row in final:
        assert row["tune"]["epochs_spent"] < 9 * 9  # early stopping saved epochs
        assert row["spec"]["settings"]["epochs"] == 9  # the selected configuration trains in full


# ---------------------------------------------------------------------------------------------
# Ray Tune
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_tune_and_local_select_the_same_values_for_the_same_seed(ray_cluster: None, tmp_path: Path) -> None:
    path = _write(tmp_path, TUNED.replace("seeds: [0, 1]", "seeds: [1]").replace("budget: 6", "budget: 4"))
    assert _run(path, tmp_path / "local")[0] == 0
    code, out = _run(path, tmp_path / "ray", executor="ray")
    assert code == 0, out
    picks = {}
    for name in ("local", "ray"):
        search, final = _by_role(tmp_path / name)
        assert len(search) == 8 and len({r["trial_id"] for r in search}) == 8
        picks[name] = {(r["divergence"], r["seed"]): (r["tune"]["selected"], r["metrics"]) for r in final}
    assert picks["local"] == picks["ray"] and len(picks["ray"]) == 2


@pytest.mark.slow
def test_ray_tune_asha_one_at_a_time_makes_the_local_decisions(ray_cluster: None, tmp_path: Path) -> None:
    text = TUNED.replace("  budget: 6", "  budget: 6\n  scheduler: asha").replace("seeds: [0, 1]", "seeds: [0]")
    text = text.replace("divergence: [kl, tv]", "divergence: [kl]")
    path = _write(tmp_path, text)
    assert _run(path, tmp_path / "local")[0] == 0
    # One trial at a time (a trial asks for both CPUs): Ray's ASHA sees the trials in the local order.
    path2 = _write(tmp_path, text + "resources: {cpus: 2}\n", "ray.yaml")
    code, out = _run(path2, tmp_path / "ray", executor="ray")
    assert code == 0, out
    local = {r["trial_id"]: r["tune"]["epochs"] for r in _by_role(tmp_path / "local")[0]}
    remote = {r["trial_id"]: r["tune"]["epochs"] for r in _by_role(tmp_path / "ray")[0]}
    assert local == remote and min(local.values()) < 9


# ---------------------------------------------------------------------------------------------
# The bundled tuned suite
# ---------------------------------------------------------------------------------------------
REPO = TESTS.parent


def test_readme_first_job_is_still_the_quickstart() -> None:
    readme = (REPO / "README.md").read_text()
    first_run = next(line for line in readme.splitlines() if "icon-bench run " in line)
    assert first_run.rstrip().endswith("icon-bench run suites/quickstart.yaml")


def test_tuned_quickstart_runs_end_to_end_with_equal_budgets(tmp_path: Path) -> None:
    """The bundled suite's pipeline (a fake trial stands in for pmi): search, selection, tables, comparisons."""
    from icon_bench.report.commands import write_report

    suite = load_suite(REPO / "suites" / "tuned_quickstart.yaml")
    assert suite.tune is not None and suite.tune.defaults and suite.tune.space == {"lr": {"loguniform": [1e-4, 3e-2]}}
    results = tmp_path / "res"
    code, out = _run(REPO / "suites" / "tuned_quickstart.yaml", results)
    assert code == 0, out
    assert "2 configurations x 3 seeds x budget 4 = 24 search trials on val" in out
    search, final = _by_role(results)
    assert sorted(collections.Counter((r["divergence"], r["seed"]) for r in search).values()) == [4] * 6
    assert len(final) == 6 and {r["divergence"] for r in final} == {"kl", "tv"}
    defaults = [r for r in ResultsStore(results).rows() if "tune" not in r]
    assert len(defaults) == 6 and all(r["spec"]["settings"] == {"epochs": 10} for r in defaults)
    write_report(results, tmp_path / "report", plots=False)
    md = (tmp_path / "report" / "leaderboard.md").read_text()
    assert "tuned (budget 4 on val)" in md and "defaults (protocol" in md and "## Paired comparisons" in md


def test_real_trials_select_on_val_shuffled_test_labels_change_no_selection(tmp_path: Path) -> None:
    """Protocol 2 end to end (k-means on digits, n_clusters tuned): test labels never reach the search."""
    from ray_trials import shuffled_test_load

    text = """
    name: poison
    datasets: [digits]
    grid: {method: [kmeans]}
    tune: {budget: 3, space: {n_clusters: [8, 10, 12]}, algorithm: grid}
    """
    path = _write(tmp_path, text)
    clean, shuffled = tmp_path / "clean", tmp_path / "shuffled"
    assert _run(path, clean, trial_fn=None, load_fn=None)[0] == 0
    assert _run(path, shuffled, trial_fn=None, load_fn=shuffled_test_load)[0] == 0
    (s_clean, f_clean), (s_shuf, f_shuf) = _by_role(clean), _by_role(shuffled)
    assert [r["spec"]["split"] for r in s_clean] == ["val"] * 3
    val = {name: {r["trial_id"]: r["metrics"] for r in rows} for name, rows in (("clean", s_clean), ("shuf", s_shuf))}
    assert val["clean"] == val["shuf"]  # every val score is the same: the search never read a test label
    assert f_clean[0]["tune"]["selected"] == f_shuf[0]["tune"]["selected"]
    assert f_shuf[0]["metrics"]["hungarian"] < f_clean[0]["metrics"]["hungarian"] - 0.3  # the test labels did change


# ---------------------------------------------------------------------------------------------
# TPE (Optuna)
# ---------------------------------------------------------------------------------------------
TPE = TUNED.replace("  budget: 6", "  budget: 6\n  algorithm: tpe").replace("seeds: [0, 1]", "seeds: [0]")


def _search_values(results: Path) -> dict[tuple, dict]:
    return {(r["divergence"], r["seed"], r["tune"]["index"]): r["tune"]["values"] for r in _by_role(results)[0]}


def test_tpe_in_process_spends_the_budget_and_is_seeded(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    path = _write(tmp_path, TPE)
    for name in ("a", "b"):
        code, out = _run(path, tmp_path / name)
        assert code == 0, out
    search, final = _by_role(tmp_path / "a")
    assert sorted(collections.Counter(r["divergence"] for r in search).values()) == [6, 6]
    assert sorted(r["tune"]["index"] for r in search if r["divergence"] == "kl") == list(range(6))
    assert _search_values(tmp_path / "a") == _search_values(tmp_path / "b")  # the same seed, the same candidates
    for row in final:
        mine = [r for r in search if r["divergence"] == row["divergence"]]
        assert row["tune"]["selected"] == max(mine, key=lambda r: r["metrics"]["hungarian"])["tune"]["values"]
    other = _write(tmp_path, TPE.replace("algorithm: tpe", "algorithm: tpe\n  seed: 1"), "other.yaml")
    assert _run(other, tmp_path / "c")[0] == 0
    assert _search_values(tmp_path / "c") != _search_values(tmp_path / "a")


def test_tpe_killed_mid_search_resumes_with_the_candidates_of_an_uninterrupted_run(tmp_path: Path, fake_method: None) -> None:
    pytest.importorskip("optuna")
    tpe = SLOW.replace("  budget: 6", "  budget: 6\n  algorithm: tpe").replace("seeds: [0, 1]", "seeds: [0]")
    path = _write(tmp_path, tpe)
    whole = tmp_path / "whole"
    assert _run(path, whole)[0] == 0
    results = tmp_path / "res"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS), suite=str(path), results=str(results)))
    assert kill_after_rows(driver, results / "results.jsonl", 4, poll_s=0.02) == -signal.SIGKILL
    code, out = _run(path, results)
    assert code == 0, out
    lines = [json.loads(ln) for ln in (results / "results.jsonl").read_bytes().splitlines() if ln.strip().endswith(b"}")]
    ids = [r["trial_id"] for r in lines if (r.get("tune") or {}).get("role") == "search"]
    assert len(ids) == len(set(ids)) == 12
    assert _search_values(results) == _search_values(whole)  # replayed, then continued as if never stopped


def test_tpe_refuses_choices_it_cannot_sample() -> None:
    pytest.importorskip("optuna")
    text = "name: t\ndatasets: [digits]\ngrid: {method: [pmi]}\ntune:\n  budget: 2\n  algorithm: tpe\n  space:\n    model.sizes: [[8, 8], [16]]\n"
    with pytest.raises(SuiteError, match=r"s.yaml:8: tune.space.model.sizes: tpe takes choices of numbers"):
        parse_suite(text, source="s.yaml")


def test_tpe_without_optuna_is_a_load_time_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now fails as if it were not installed
    text = "name: t\ndatasets: [digits]\ngrid: {method: [pmi]}\ntune:\n  budget: 2\n  algorithm: tpe\n  space: {lr: [1, 2]}\n"
    with pytest.raises(SuiteError, match=r"s.yaml:6: tune.algorithm: tpe needs optuna: pip install 'icon-bench\[tune\]'"):
        parse_suite(text, source="s.yaml")


@pytest.mark.slow
def test_ray_tune_tpe_and_local_tpe_search_the_same_candidates(ray_cluster: None, tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    path = _write(tmp_path, TPE.replace("divergence: [kl, tv]", "divergence: [tv]"))
    assert _run(path, tmp_path / "local")[0] == 0
    code, out = _run(path, tmp_path / "ray", executor="ray")
    assert code == 0, out
    assert _search_values(tmp_path / "local") == _search_values(tmp_path / "ray")
    picks = {n: [r["tune"]["selected"] for r in _by_role(tmp_path / n)[1]] for n in ("local", "ray")}
    assert picks["local"] == picks["ray"] and len(picks["ray"]) == 1


def test_a_baseline_that_takes_none_of_the_space_is_run_once_not_searched(tmp_path: Path) -> None:
    # k-means sets the suite's lr aside: three searches of it would be copies of one trial, and its
    # row would claim a "selected lr" that never ran.
    text = textwrap.dedent("""\
        name: untuned
        datasets: [{name: blobs, n_samples: 120, centers: 3}]
        seeds: [0, 1]
        grid: {method: [pmi]}
        include: [{method: kmeans}]
        settings: {epochs: 1}
        tune: {budget: 2, space: {lr: {loguniform: [1.0e-4, 1.0e-2]}}}
        """)
    results = tmp_path / "res"
    code, out = _run(_write(tmp_path, text), results)
    assert code == 0, out
    assert "1 configurations x 2 seeds x budget 2 = 4 search trials" in out
    assert "(4 trials (1 configuration with nothing to tune run as they are))" in out
    search, final = _by_role(results)
    assert {r["spec"]["method"] for r in search} == {"pmi"} and len(search) == 4
    kmeans = [r for r in final if r["spec"]["method"] == "kmeans"]
    assert len(kmeans) == 2 and all(r["status"] == "ok" for r in kmeans)
    for row in kmeans:
        assert row["tune"]["spent"] == 0 and row["tune"]["selected"] == {}
        assert row["tune"]["budget"] == 2  # the suite's: k-means ranks in the one tuned table
        assert row["tune"]["untuned"] == "kmeans takes none of lr" and "lr" not in row["spec"]["settings"]
    assert "nothing to tune" in out
    code, out = _run(_write(tmp_path, text), results)  # resumed: nothing runs again
    assert code == 0 and "nothing left to run" in out, out
    from icon_bench.report.build import build_report

    report = build_report(results)
    tuned = [s for s in report.sections if s.tuned]
    assert len(tuned) == 1 and {"pmi", "kmeans"} <= set(tuned[0].table["method"])

"""No duplicate work in a suite: the kNN graph once per dataset, a seed-independent method once per configuration."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from icon_bench.data import graph as graph_mod
from icon_bench.data.load import load_dataset
from icon_bench.report.build import aggregate, build_report
from icon_bench.report.commands import write_report
from icon_bench.run.execution.plan import seed_independent
from icon_bench.run.execution.trial import run_trial
from icon_bench.runner import run_suite
from icon_bench.train.recipes import get_recipe


def _suite(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def _rows(results: Path) -> list[dict]:
    return [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines() if line.strip()]


def test_the_knn_graph_is_computed_once_for_two_trials_of_a_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = graph_mod.knn_graph
    monkeypatch.setattr(graph_mod, "knn_graph", lambda *a, **kw: calls.append(a[1:3]) or real(*a, **kw))
    # Its own graph caches: another test of this worker may have cached the same graph already.
    monkeypatch.setenv("ICON_BENCH_CACHE", str(tmp_path / "graph-cache"))
    graph_mod.clear_graph_cache()
    path = _suite(
        tmp_path,
        """
        name: graph-once
        datasets: [{name: digits, subset: 150}]
        seeds: [0, 1]
        grid: {method: [pmi]}
        settings: {epochs: 1, heads: 2}
        """,
    )
    results = tmp_path / "res"
    assert run_suite(path, results=results, report=False, progress=False) == 0
    assert calls == [(10, "euclidean")]  # one graph for both seeds
    graphs = [row["info"]["graph"] for row in _rows(results)]
    assert [g["source"] for g in graphs] == ["computed", "memory"]
    assert all(g["k"] == 10 and g["metric"] == "euclidean" for g in graphs)
    # A second process finds it on disk (ICON_BENCH_CACHE): computing it again is not needed.
    graph_mod.clear_graph_cache()
    row = run_trial({"method": "pmi", "dataset": {"name": "digits", "subset": 150}, "seed": 2,
                     "settings": {"epochs": 1, "heads": 1}})
    assert row["status"] == "ok" and row["info"]["graph"]["source"] == "disk" and len(calls) == 1


def test_a_graph_the_dataset_brings_is_used_as_is() -> None:
    data = load_dataset({"name": "iris", "knn": 4})
    recipe = get_recipe("pmi").with_overrides({"settings": {"epochs": 1, "heads": 1}})
    out = recipe.run(data, seed=0)
    assert out.info["graph"]["source"] == "dataset" and out.info["graph"]["k"] == 4
    assert out.info["graph"]["metric"] == "cosine"


def test_tsne_and_sne_do_not_depend_on_the_seed() -> None:
    # The declaration is checked, not taken on trust: two seeds give identical maps (1 thread).
    torch.set_num_threads(1)
    data = load_dataset({"name": "digits", "subset": 120})
    for name in ("tsne", "sne"):
        recipe = get_recipe(name).with_overrides({"settings": {"epochs": 5}})
        assert recipe.seed_independent and recipe.seeded_parts() == []
        a, b = (recipe.run(data, seed=s).train_embeddings for s in (0, 3))
        assert torch.equal(a, b), name


@pytest.mark.parametrize("name", ["tsne", "sne"])
def test_a_random_start_makes_tsne_and_sne_depend_on_the_seed(name: str) -> None:
    # pca_init: false starts the table from N(0, init_std^2) drawn from the trial's seed
    # (scikit-learn's init="random", std 1e-4), so two seeds are two maps and one seed is one.
    torch.set_num_threads(1)
    data = load_dataset({"name": "digits", "subset": 120})
    for epochs, model in ((0, {}), (5, {}), (0, {"init_std": 1e-2})):
        recipe = get_recipe(name).with_overrides(
            {"settings": {"epochs": epochs, "pca_init": False, "seed_independent": False}, "model": model}
        )
        assert not recipe.seed_independent
        a, b, c = (recipe.run(data, seed=s).train_embeddings for s in (0, 0, 1))
        assert torch.equal(a, b) and not torch.allclose(a, c), (name, epochs, model)
        if epochs == 0:
            assert float(a.std()) == pytest.approx(model.get("init_std", 1e-4), rel=0.2)
    assert not seed_independent({"method": name, "dataset": {"name": "digits"}, "seed": 0,
                                 "settings": {"pca_init": False}})  # the runner plans every seed


@pytest.mark.parametrize(
    ("overrides", "part"),
    [
        ({"settings": {"batch_size": 64}}, "shuffled minibatches"),
        ({"model": {"name": "mlp"}}, "random initialisation of model 'mlp'"),
        ({"settings": {"pca_init": False}}, "random initialisation of model 'lookup'"),
        ({"settings": {"views": 2, "augment": "auto"}}, "augmented views"),
    ],
)
def test_overrides_that_draw_from_the_seed_make_it_matter(overrides: dict, part: str) -> None:
    recipe = get_recipe("tsne").with_overrides(overrides)
    assert not recipe.seed_independent and any(part in p for p in recipe.seeded_parts())


def test_which_methods_are_seed_independent() -> None:
    spec = {"dataset": {"name": "digits"}, "seed": 0}
    assert seed_independent({**spec, "method": "tsne"}) and seed_independent({**spec, "method": "sne"})
    assert not seed_independent({**spec, "method": "tsne", "settings": {"seed_independent": False}})
    for name in ("pmi", "simclr", "kmeans", "spectral", "dcl", "no-such-method"):
        assert not seed_independent({**spec, "method": name}), name


def test_a_seed_independent_method_runs_once_per_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _suite(
        tmp_path,
        """
        name: once
        datasets: [{name: digits, subset: 100}]
        seeds: [0, 1]
        grid: {method: [kmeans]}
        include:
          - {method: tsne, epochs: [3, 4]}
        """,
    )
    results, reports = tmp_path / "res", tmp_path / "rep"
    assert run_suite(path, results=results, dry_run=True, progress=False) == 0
    plan = capsys.readouterr().out
    assert "do not depend on the seed, so they run once per configuration and the report shows n = 1" in plan
    assert "tsne: 2 configurations (seed 1 skipped)" in plan
    assert "4 cells, 0 done, 0 failed, 4 to run" in plan  # kmeans x 2 seeds, tsne x 2 configurations
    assert run_suite(path, results=results, report_dir=reports, progress=False) == 0
    rows = _rows(results)
    tsne = [r for r in rows if r["method"] == "tsne"]
    assert sorted((r["spec"]["settings"]["epochs"], r["seed"]) for r in tsne) == [(3, 0), (4, 0)]
    assert all(r["seed_independent"] is True for r in tsne)
    assert all(r["seed_independent"] is False for r in rows if r["method"] == "kmeans")
    # Resuming finds nothing left to do: the configuration is done with its one seed.
    assert run_suite(path, results=results, report=False, progress=False) == 0
    assert "nothing to run: 4 of 4 cells done" in capsys.readouterr().out
    board = (reports / "leaderboard.md").read_text()
    assert board.count("| 1/1 ‡ ") == 2 and "| 2/2 " in board and "‡ seed-independent" in board
    assert "±" not in next(line for line in board.splitlines() if "1/1 ‡" in line)
    csv = pd.read_csv(reports / "leaderboard.csv")
    assert sorted(csv["seed_independent"]) == [False, True, True]


def test_report_counts_copies_of_a_seed_independent_row_once() -> None:
    def row(seed: int, value: float, flag: object, status: str = "ok") -> dict:
        return {"trial_id": f"t{seed}", "config_id": "c", "method": "tsne", "dataset": "digits", "seed": seed,
                "status": status, "metrics": {"knn2d": value} if status == "ok" else {}, "suite": "s",
                "spec": {"method": "tsne", "seed": seed}, "seed_independent": flag,
                "protocol": {"version": "1"}}

    other = [{**row(s, 0.5 + s / 10, None), "method": "kmeans", "config_id": "k", "trial_id": f"k{s}"} for s in (0, 1)]
    agg = aggregate(pd.DataFrame([row(0, 0.9, True), row(1, 0.9, True), *other]))
    tsne = agg[agg["method"] == "tsne"].iloc[0]
    assert (tsne["n"], tsne["n_expected"], tsne["complete"], tsne["seed_independent"]) == (1, 1, True, True)
    assert tsne["knn2d_mean"] == pytest.approx(0.9) and np.isnan(tsne["knn2d_std"])
    kmeans = agg[agg["method"] == "kmeans"].iloc[0]
    assert kmeans["n"] == 2 and not kmeans["seed_independent"] and kmeans["knn2d_std"] > 0
    # A failed latest run of a seed-independent configuration is incomplete, not silently n = 0.
    agg = aggregate(pd.DataFrame([row(0, 0.9, True, status="failed"), *other]))
    tsne = agg[agg["method"] == "tsne"].iloc[0]
    assert tsne["n"] == 0 and not tsne["complete"] and tsne["failed_seeds"] == [0]


def test_html_report_shows_the_note(tmp_path: Path) -> None:
    rows = [{"trial_id": "a", "config_id": "c", "method": "tsne", "dataset": "digits", "seed": 0, "status": "ok",
             "metrics": {"knn2d": 0.9}, "suite": "s", "spec": {"method": "tsne", "seed": 0},
             "seed_independent": True, "protocol": {"version": "1"}}]
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    write_report(tmp_path / "res", tmp_path / "rep")
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "1/1 ‡" in page and "‡ seed-independent" in page
    assert build_report(tmp_path / "res").aggregated["seed_independent"].tolist() == [True]


def test_the_conformance_kit_holds_a_method_to_its_seed_independence() -> None:
    from icon_bench.testing import ConformanceError, check_method

    check_method("tsne", overrides={"settings": {"epochs": 2}})  # declared, and true

    class Claims:
        """Says the seed does not matter, but draws its embedding from it."""

        seed_independent = True
        metrics = ["knn"]

        def with_overrides(self, overrides: object) -> Claims:
            return self

        def run(self, data, *, seed, device, overrides=None, progress=False):  # noqa: ANN001, ANN201
            from icon_bench.evaluation.metrics import MethodOutput

            g = torch.Generator().manual_seed(seed)
            return MethodOutput(torch.randn(len(data.x_train), 2, generator=g),
                                torch.randn(len(data.x_test), 2, generator=g), None, None, {}, {})

    with pytest.raises(ConformanceError, match="seeds 0 and 1 gave different train_embeddings"):
        check_method(Claims())

"""Suite files: id stability, grid expansion with include/exclude, and errors that name file, line and key."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from icon_bench.errors import SuiteError
from icon_bench.hooks.registry import Registry, get_registry, set_registry
from icon_bench.run.suite.ids import config_id, trial_id
from icon_bench.run.suite.model import resolve_dataset_paths
from icon_bench.run.suite.reader import load_suite, parse_suite

REPO = Path(__file__).resolve().parents[1]

SUITE_A = """
name: demo
datasets:
  - digits
  - {name: arrays, path: data/x.npz, features: x_train, pca: 50}
grid:
  method: [kmeans, pmi]
  divergence: [kl, tv]
  p.debias: [0.0, 0.6]
  seed: [0, 1]
settings: {epochs: 3, lr: 1e-3, batch_size: 64}
evaluate: [hungarian, nmi]
"""

# The same suite with every mapping's keys and the grid's axes in another order.
SUITE_B = """
evaluate: [hungarian, nmi]
settings: {batch_size: 64, lr: 0.001, epochs: 3}
grid:
  seed: [0, 1]
  p.debias: [0.0, 0.6]
  divergence: [kl, tv]
  method: [kmeans, pmi]
datasets:
  - digits
  - {pca: 50, features: x_train, path: data/x.npz, name: arrays}
name: demo
"""


def _write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_ids_stable_under_reordering_of_keys_and_axes() -> None:
    a = parse_suite(SUITE_A, "a.yaml").trials()
    b = parse_suite(SUITE_B, "b.yaml").trials()
    assert len(a) == 2 * 2 * 2 * 2 * 2
    # Same cells, same ids, and even the same order (axes are expanded in a fixed order).
    assert [trial_id(s) for s in a] == [trial_id(s) for s in b]
    assert len({trial_id(s) for s in a}) == len(a)
    assert a[0]["settings"] == {"epochs": 3, "lr": 1e-3, "batch_size": 64}  # 1e-3 is a float, not a string


def test_trial_id_ignores_key_order_and_spelling_but_not_values() -> None:
    spec = {"method": "pmi", "dataset": "digits", "seed": 0, "settings": {"lr": 0.001, "epochs": 3}}
    same = {"settings": {"epochs": 3.0, "lr": 1e-3}, "seed": 0, "dataset": {"name": "digits"}, "method": "pmi",
            "p": {}, "divergence": None}
    assert trial_id(spec) == trial_id(same)
    assert len(trial_id(spec)) == 16 and int(trial_id(spec), 16) >= 0
    assert trial_id(spec) != trial_id({**spec, "seed": 1})
    assert config_id(spec) == config_id({**spec, "seed": 1})
    assert trial_id({**spec, "divergence": "kl"}) == trial_id({**spec, "divergence": {"name": "kl"}})
    assert trial_id({**spec, "divergence": "kl"}) != trial_id({**spec, "divergence": {"name": "alpha", "a": 0.5}})


def test_spec_has_the_contract_form() -> None:
    spec = parse_suite(SUITE_A).trials()[-1]
    assert spec == {
        "method": "pmi",
        "dataset": {"name": "arrays", "path": "data/x.npz", "features": "x_train", "pca": 50},
        "divergence": "tv",
        "seed": 1,
        "p": {"debias": 0.6},
        "q": {},
        "model": {},
        "settings": {"epochs": 3, "lr": 0.001, "batch_size": 64},
        "evaluate": ["hungarian", "nmi"],
        "split": "test",
    }


def test_include_exclude_and_seeds_shorthand() -> None:
    suite = parse_suite(
        """
        name: ie
        datasets: [digits, iris]
        seeds: 3
        grid:
          method: [kmeans, pmi]
          divergence: [kl, tv, js]
          epochs: 2
        exclude:
          - {method: kmeans, divergence: [tv, js]}
          - {method: pmi, dataset: iris, divergence: js}
        include:
          - {method: tsne, dataset: digits, model.init_std: [0.001, 0.01]}
          - {method: pmi, divergence: kl, epochs: 2}
        """.replace("\n        ", "\n")
    )
    specs = suite.trials()
    grid = 2 * 3 * 2 * 3  # datasets x divergences x methods x seeds
    dropped = (2 * 2 * 3) + (1 * 3)  # kmeans tv/js on both datasets, pmi/iris/js; 3 seeds each
    tsne = 2 * 3  # two init scales x 3 seeds (the dataset is fixed)
    assert len(specs) == grid - dropped + tsne  # the second include duplicates grid cells: not repeated
    assert sorted({s["seed"] for s in specs}) == [0, 1, 2]
    assert not [s for s in specs if s["method"] == "kmeans" and s["divergence"] != "kl"]
    tsne_specs = [s for s in specs if s["method"] == "tsne"]
    assert {s["model"]["init_std"] for s in tsne_specs} == {0.001, 0.01}
    assert all(s["divergence"] is None and s["settings"] == {} for s in tsne_specs)
    assert all(s["settings"] == {"epochs": 2} for s in specs if s["method"] != "tsne")


def test_relative_dataset_paths_resolve_against_the_working_directory(tmp_path: Path) -> None:
    spec = {"name": "arrays", "path": "../shared/data/mnist.npz", "cache_dir": "/abs/dir", "pca": 50}
    resolved = resolve_dataset_paths(spec, tmp_path / "repo")
    assert resolved["path"] == os.path.normpath(str(tmp_path / "shared/data/mnist.npz"))
    assert resolved["cache_dir"] == "/abs/dir" and resolved["pca"] == 50
    assert spec["path"] == "../shared/data/mnist.npz"  # the input is not modified


def test_results_dir_defaults_to_results_name() -> None:
    assert parse_suite(SUITE_A).results_dir == Path("results/demo")


MALFORMED = [
    # (suite text, expected "line: key: ..." fragment, another fragment)
    ("name: x\ngrid:\n  method: [pmi, kmeans\n  seed: 1\n", ":4: invalid YAML", "flow sequence"),
    ("name: x\ndatasets: [digits]\ngrid:\n  method: [pmi]\nsetings: {epochs: 1}\n", ":5: setings: unknown key", "'settings'"),
    ("name: x\ndatasets: [digits]\ngrid:\n  method: [pmi]\n  divergnce: [kl]\n", ":5: grid.divergnce: unknown key", "did you mean 'divergence'?"),
    ("name: x\ndatasets: [digits]\ngrid:\n  method: [kmeans, pmii]\n", ":4: grid.method[1]: unknown method 'pmii'", "did you mean 'pmi'?"),
    ("name: x\ndatasets: [digits]\ngrid:\n  method: [pmi]\nresources:\n  cpus: 1\n  gpus: lots\n", ":7: resources.gpus:", "valid number"),
    ("name: x\ndatasets: [digits]\ngrid:\n  method: [pmi]\n  seed: [0, one]\n", ":5: grid.seed[1]: a seed is an integer", "'one'"),
    ("name: x\nname: y\n", ":2: invalid YAML", "duplicate key 'name'"),
    ("name: x\ndatasets: [digits]\ngrid:\n  method: [pmi]\nexclude:\n  - {methd: pmi}\n", ":6: exclude[0].methd:", "did you mean 'method'?"),
    ("datasets: [digits]\ngrid:\n  method: [pmi]\n", ":1: name: required key is missing", ""),
    ("name: x\ndatasets: [digits]\ngrid:\n  method: [pmi]\nexecutor: slurm\n", ":5: executor:", "'local' or 'ray'"),
    ("- just\n- a list\n", ":1: a suite is a mapping", ""),
]


@pytest.mark.parametrize(("text", "where", "detail"), MALFORMED)
def test_malformed_suites_name_file_line_and_key(tmp_path: Path, text: str, where: str, detail: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert f"{path}{where}" in message
    assert detail in message


def test_unknown_dataset_and_metric_names(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        name: x
        datasets:
          - digits
          - {name: digitz, pca: 10}
        grid:
          method: [kmeans]
        evaluate: [nmi, hungarain]
        """,
    )
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    lines = str(info.value).splitlines()
    assert f"{path}:4: datasets[1].name: unknown dataset 'digitz'; did you mean 'digits'?" in lines
    assert f"{path}:7: evaluate[1]: unknown metric 'hungarain'; did you mean 'hungarian'?" in lines


def test_name_checks_are_skipped_for_kinds_with_no_components() -> None:
    # While a component module is not written its kind is empty: nothing to check names against.
    saved = get_registry()
    set_registry(Registry())
    try:
        specs = parse_suite("name: x\ndatasets: [anything]\ngrid: {method: [not_a_method]}\n").trials()
    finally:
        set_registry(saved)
    assert specs[0]["method"] == "not_a_method"


def test_missing_file_and_empty_suite(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite(tmp_path / "nope.yaml")
    with pytest.raises(SuiteError, match=r":1: empty suite"):
        load_suite(_write(tmp_path, "# nothing\n"))


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "suites").glob("*.yaml")))
def test_bundled_suites_are_valid(name: str) -> None:
    suite = load_suite(REPO / "suites" / name)
    if suite.discover is not None:  # a discover suite plans studies, not grid cells
        from icon_bench.run.discovery.run import plan_studies

        assert plan_studies(suite) and not suite.trials()
    else:
        assert suite.trials()


PAPERS = ["clustering", "dimensionality_reduction", "contrastive", "supervised"]


@pytest.mark.parametrize("name", PAPERS)
def test_each_papers_suite_has_a_quick_variant_that_is_a_cut_of_it(name: str) -> None:
    full, quick = load_suite(REPO / "suites" / f"{name}.yaml"), load_suite(REPO / "suites" / f"{name}_quick.yaml")
    assert quick.name == f"{name}_quick" and len(quick.trials()) <= len(full.trials())
    # The same comparison: every method and divergence of the quick cut is in the full suite.
    for key in ("method", "divergence"):
        assert {s.get(key) for s in quick.trials()} <= {s.get(key) for s in full.trials()}, key
    assert (quick.tune is None) or (full.tune is not None and quick.tune.budget <= full.tune.budget)
    assert quick.resources.gpus == 0 and full.resources.gpus > 0  # the quick cut is for CPUs


def test_valid_uses_are_not_refused_by_the_load_time_checks() -> None:
    # DESIGN.md's shape: a baseline in the grid beside kernel overrides (it sets them aside), anchors
    # reused through aliases, a baseline's own parameter in an include entry, a recipe's own kernel
    # key (dcl's q.tau_plus), a swapped kernel's parameters, common dataset options.
    suite = parse_suite(
        """
        name: ok
        datasets: [digits, {name: arrays, path: x.npz, pca: 50, subset: 1000}]
        grid:
          method: [kmeans, pmi, debiased_infonce_clustering]
          divergence: [kl, tv, {name: alpha, a: 0.5}]
          p.debias: [0.0, 0.6]
          seed: &seeds [0, 1]
        exclude:
          - {method: kmeans, divergence: [tv, {name: alpha, a: 0.5}]}
        settings: {epochs: 30, batch_size: 1024, lr: 1.0e-3, heads: 5}
        include:
          - {method: kmeans, n_init: 5, seed: *seeds}
          - {method: dcl, q.tau_plus: 0.2, views: 2}
          - {method: tsne, p.name: student_t, p.dof: 2.0, model.init_std: 0.01}
        """.replace("\n        ", "\n")
    )
    specs = suite.trials()
    assert {s["method"] for s in specs} == {"kmeans", "pmi", "debiased_infonce_clustering", "dcl", "tsne"}
    # Counted before the exclude rule; each include entry runs on both datasets and both seeds.
    assert suite.cell_count() == (2 * 3 * 3 * 2 * 2 + 3 * 4, "dataset 2 x method 3 x divergence 3 x p.debias 2 x "
                                  "seed 2 + include[0] 4 + include[1] 4 + include[2] 4")


def test_settings_are_checked_per_cell_against_the_cells_method() -> None:
    # n_init is k-means's: in an include entry for k-means it is fine, on pmi it is an error.
    with pytest.raises(SuiteError) as info:
        parse_suite("name: x\ndatasets: [digits]\ngrid:\n  method: [pmi]\ninclude:\n  - {method: kmeans, n_init: 0}\n"
                    "  - {method: pmi, n_init: 5}\n", "s.yaml")
    lines = str(info.value).splitlines()
    assert lines == [
        "s.yaml:6: include[0].n_init: input should be greater than or equal to 1 (got 0)",
        "s.yaml:7: include[1].n_init: a setting of 'kmeans', not of method 'pmi'; set it in an include entry",
    ]


def test_a_huge_seed_count_is_counted_not_built() -> None:
    suite = parse_suite("name: x\ndatasets: [digits]\ngrid: {method: [kmeans]}\nseeds: 1000000000\n", max_cells=10**9)
    assert suite.cell_count() == (10**9, "dataset 1 x method 1 x seed 1000000000")
    assert next(suite.iter_cells())[1] == {"dataset": "digits", "method": "kmeans", "seed": 0}

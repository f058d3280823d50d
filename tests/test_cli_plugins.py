"""`icon-bench plugins` lists every built-in component with its parameters and source."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from icon_bench import cli
from icon_bench.errors import UnknownNameError, did_you_mean
from icon_bench.hooks.registry import BUILTIN_SOURCE, load_registry, split_spec

EXPECTED = {
    "kernel": {"gaussian", "student_t", "cosine", "knn", "label", "augmentation", "cluster", "prototype", "uniform"},
    "divergence": {"kl", "reverse_kl", "js", "tv", "hellinger", "chi2", "alpha"},
    "method": {"sne", "tsne", "simclr", "t-simclr", "supcon", "cross_entropy", "pmi",
               "debiased_infonce_clustering", "dcl", "kmeans", "spectral"},
    "dataset": {"digits", "iris", "wine", "breast_cancer", "blobs", "arrays"},
    "model": {"linear", "mlp", "cnn", "resnet", "lookup"},
    "metric": {"hungarian", "nmi", "ari", "linear_probe", "knn", "knn2d", "trustworthiness"},
}


def test_builtins_all_load_without_failures() -> None:
    reg = load_registry(entry_points=False, strict=True)
    for kind, names in EXPECTED.items():
        assert names <= set(reg.names(kind)), f"missing built-in {kind}s: {names - set(reg.names(kind))}"
    assert not reg.failures


def test_plugins_json_lists_every_builtin_with_params_and_source(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_kind = {kind: {c["name"]: c for c in comps} for kind, comps in data["components"].items()}
    for kind, names in EXPECTED.items():
        assert names <= set(by_kind[kind])
    cosine = by_kind["kernel"]["cosine"]
    assert cosine["distribution"] == BUILTIN_SOURCE and cosine["description"]
    temperature = {p["name"]: p for p in cosine["params"]}["temperature"]
    assert temperature["required"] is False and isinstance(temperature["default"], float)


def test_plugins_table_names_every_builtin() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "icon_bench.cli", "plugins"], capture_output=True, text=True, check=True
    ).stdout
    for names in EXPECTED.values():
        for name in names:
            assert name in out
    assert "temperature: float = 0.5" in out or "temperature: float" in out


def test_unknown_kind_and_name_suggest_close_matches(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["plugins", "--kind", "kernal"]) == 2
    assert "did you mean 'kernel'" in capsys.readouterr().err
    reg = load_registry(entry_points=False)
    with pytest.raises(UnknownNameError, match="did you mean 'hellinger'"):
        reg.get("divergence", "helinger")
    with pytest.raises(UnknownNameError, match="unknown parameter 'temprature'.*did you mean 'temperature'"):
        reg.create("kernel", "cosine", temprature=0.1)


def test_did_you_mean_and_spec_forms() -> None:
    assert did_you_mean("gausian", ["gaussian", "student_t"]) == ["gaussian"]
    assert did_you_mean("zzz", ["gaussian"]) == []
    assert split_spec("kl") == ("kl", {})
    assert split_spec(("alpha", {"a": 0.3})) == ("alpha", {"a": 0.3})
    assert split_spec({"name": "alpha", "a": 0.3}) == ("alpha", {"a": 0.3})
    with pytest.raises(TypeError):
        split_spec(3)


def test_create_as_checks_the_built_type() -> None:
    import torch

    from icon_bench.errors import ComponentTypeError
    from icon_bench.hooks.registry import create_as
    from icon_bench.loss.divergences import Divergence
    from icon_bench.loss.kernel import Kernel

    kl = create_as("divergence", "kl", Divergence)
    assert create_as("divergence", kl, Divergence) is kl
    with pytest.raises(ComponentTypeError, match="kernel 'cosine' built a Cosine, not a Divergence"):
        create_as("kernel", "cosine", Divergence)
    assert isinstance(create_as("kernel", ("cosine", {"temperature": 0.2}), Kernel), torch.nn.Module)


# -- issue 14, item 14: fast start-up, terminal-wide tables, real method defaults -------------------

# pydantic (~50 ms) is allowed: the suite schema's value types live beside the options the CLI reads.
HEAVY = ("torch", "pandas", "numpy", "matplotlib", "ray", "sklearn", "scipy")


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["report", "--help"], ["plugins", "--help"], ["store", "--help"]])
def test_help_imports_none_of_the_heavy_libraries(argv: list[str]) -> None:
    code = (
        "import sys\nfrom icon_bench import cli\n"
        f"try:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]", out


def _plugins(*args: str, columns: int) -> str:
    env = {**__import__("os").environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "icon_bench.cli", "plugins", *args], capture_output=True, text=True, check=True, env=env
    ).stdout


@pytest.mark.parametrize("columns", [80, 100])
def test_plugins_output_fits_the_terminal(columns: int) -> None:
    for args in ((), ("--kind", "method"), ("pmi",), ("debiased_infonce_clustering",)):
        out = _plugins(*args, columns=columns)
        widest = max(out.splitlines(), key=len)
        assert len(widest) <= columns, f"{args}: {len(widest)} > {columns}: {widest!r}"


def test_methods_show_their_recipe_defaults_not_a_generic_signature() -> None:
    out = _plugins(columns=100)
    assert "p: dict | None = None" not in out
    block = out[out.index("  pmi ") :].split("\n  simclr")[0]
    for text in ("p=knn(k=10, scope=graph)", "q=cluster", "divergence=kl", "epochs=30", "lr=0.001"):
        assert text in block, block
    full = _plugins("pmi", columns=100)  # one method in full: every setting, the trainer's defaults included
    for name, value in (("heads", "10"), ("lr_step", "10"), ("graph_k", "10"), ("head_temperature", "0.05")):
        assert any(line.split()[:1] == [name] and line.split()[-1] == value for line in full.splitlines()), name
    kind = _plugins("--kind", "method", columns=100)
    assert "…" not in kind and "head_dim=64" in kind and "lr_step=1," in kind  # supcon's own lr_step, uncut
    dic = json.loads(_plugins("debiased_infonce_clustering", "--json", columns=100))[0]
    params = {p["name"]: p["default"] for p in dic["params"]}
    assert params["q"] == {"name": "cluster", "debias": 0.2} and params["epochs"] == 30 and params["heads"] == 10


def test_method_factories_take_the_settings_they_list() -> None:
    import icon_bench

    recipe = icon_bench.method("pmi", epochs=5, heads=3, p={"k": 20})
    assert recipe.settings["epochs"] == 5 and recipe.options["heads"] == 3 and recipe.p["k"] == 20
    assert icon_bench.method("kmeans", n_init=3).params["n_init"] == 3
    with pytest.raises(UnknownNameError, match="unknown parameter 'epoch' in method 'pmi'; did you mean 'epochs'"):
        icon_bench.method("pmi", epoch=5)


def test_plugins_name_shows_every_kind_it_names_and_suggests_on_a_typo(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["plugins", "knn"]) == 0  # a kernel and a metric
    out = capsys.readouterr().out
    assert "kernel knn:" in out and "metric knn:" in out
    assert cli.main(["plugins", "knn", "--kind", "metric"]) == 0
    assert "kernel knn" not in capsys.readouterr().out
    assert cli.main(["plugins", "pmx"]) == 2
    assert "did you mean 'pmi'" in capsys.readouterr().err


@pytest.mark.parametrize("package", ["icon_bench.data", "icon_bench.report"])
def test_lazily_loaded_packages_still_export_every_name(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what it cannot load: {missing}"

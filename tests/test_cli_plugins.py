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

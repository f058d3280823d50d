"""Tests of run_trial's result row, failure rows, ids, --set parsing and the `icon-bench trial` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from icon_bench.cli import main
from icon_bench.errors import TrialError, UnknownNameError
from icon_bench.run.execution.trial import config_id, normalize_spec, parse_set, recipe_of, run_trial, trial_id

TINY = {"name": "blobs", "n_samples": 120, "n_features": 4, "centers": 3, "seed": 0}


def _spec(**extra: object) -> dict:
    spec = {
        "method": "pmi",
        "dataset": dict(TINY),
        "seed": 0,
        "settings": {"epochs": 2, "batch_size": 32},
        "model": {"hidden": 16},
    }
    spec.update(extra)
    return spec


def test_row_has_the_contract_fields() -> None:
    row = run_trial(_spec(), device="cpu")
    assert row["status"] == "ok", row["traceback"]
    assert row["trial_id"] == trial_id(_spec()) and len(row["trial_id"]) == 16
    assert row["config_id"] == config_id(_spec(seed=5))
    assert (row["method"], row["dataset"], row["divergence"], row["seed"]) == ("pmi", "blobs", "kl", 0)
    assert set(row["metrics"]) == {"hungarian", "nmi", "ari"}
    assert all(0.0 <= v <= 1.0 or k == "ari" for k, v in row["metrics"].items())
    assert row["protocol"]["version"] and "hungarian" in row["protocol"]["settings"]
    comps = row["components"]
    assert comps["method"]["name"] == "pmi" and comps["method"]["distribution"] == "icon-bench"
    assert comps["p"]["name"] == "knn" and comps["q"]["name"] == "cluster"
    assert comps["divergence"]["name"] == "kl" and comps["model"]["name"] == "mlp"
    assert set(row["timings"]) == {"load_s", "train_s", "eval_s", "total_s"}
    assert row["timings"]["total_s"] >= row["timings"]["train_s"] > 0
    assert row["peak_memory_mb"]["cpu"] > 0 and row["peak_memory_mb"]["cuda"] is None
    assert len(row["history"]["loss"]) == 2
    assert row["versions"]["torch"] == torch.__version__ and "icon-bench" in row["versions"]["plugins"]
    assert row["device"] == "cpu" and row["error"] is None and row["artifacts"] == {}
    # The recipe it ran, recorded as a resumed suite recomputes it (so a fresh row is never stale).
    assert row["recipe"] == recipe_of(normalize_spec(_spec())) == row["info"]["recipe"]
    assert row["recipe"]["settings"]["epochs"] == 2 and row["recipe"]["model"]["hidden"] == 16
    json.dumps(row)  # JSON-serialisable without arrays


def test_same_spec_and_seed_give_identical_metrics() -> None:
    a = run_trial(_spec(), device="cpu")
    b = run_trial(_spec(), device="cpu")
    assert a["metrics"] == b["metrics"] and a["history"] == b["history"]


def test_huge_lr_gives_a_failed_row_with_the_reason() -> None:
    spec = _spec(method="supcon", settings={"epochs": 3, "batch_size": 32, "lr": 1e30})
    spec["model"] = {"name": "mlp", "hidden": 16, "batchnorm": False}
    row = run_trial(spec, device="cpu")
    assert row["status"] == "failed"
    assert "TrialError" in row["error"] and "loss became" in row["error"]
    assert "Traceback" in row["traceback"]
    assert row["metrics"] == {}


def test_bad_override_is_a_failed_row_not_an_exception() -> None:
    row = run_trial(_spec(settings={"epoch": 2}), device="cpu")
    assert row["status"] == "failed" and "did you mean 'epochs'" in row["error"]


def test_keyboard_interrupt_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    import icon_bench.train.recipe as methods

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(methods.Method, "run", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_trial(_spec(), device="cpu")


def test_2d_methods_keep_the_embedding_artifact() -> None:
    spec = {"method": "tsne", "dataset": dict(TINY), "settings": {"epochs": 3}}
    row = run_trial(spec, device="cpu")
    assert row["status"] == "ok", row["traceback"]
    emb, labels = row["artifacts"]["embedding_2d"], row["artifacts"]["labels"]
    assert isinstance(emb, np.ndarray) and emb.shape == (120, 2) and labels.shape == (120,)
    assert {"knn2d", "trustworthiness"} <= set(row["metrics"])


def test_normalise_and_ids_ignore_key_order() -> None:
    spec = normalize_spec({"method": "pmi", "dataset": "digits"})
    assert spec["dataset"] == {"name": "digits"} and spec["p"] == {} and spec["settings"] == {}
    a = {"method": "pmi", "dataset": "digits", "p": {"debias": 0.6, "k": 5}, "seed": 1}
    b = {"seed": 1, "p": {"k": 5, "debias": 0.6}, "dataset": {"name": "digits"}, "method": "pmi"}
    assert trial_id(a) == trial_id(b)
    assert trial_id(a) != trial_id({**a, "seed": 2}) and config_id(a) == config_id({**a, "seed": 2})


def test_parse_set_dotted_keys_and_yaml_values() -> None:
    spec = parse_set(["p.debias=0.6", "q.temperature=0.2", "model.hidden=256", "epochs=5", "dataset.pca=50",
                      "seed=3", "evaluate=[nmi, ari]", "settings.augment={noise: 0.2}"])
    assert spec["p"] == {"debias": 0.6} and spec["q"] == {"temperature": 0.2}
    assert spec["model"] == {"hidden": 256} and spec["dataset"] == {"pca": 50}
    assert spec["settings"] == {"epochs": 5, "augment": {"noise": 0.2}}
    assert spec["seed"] == 3 and spec["evaluate"] == ["nmi", "ari"]
    with pytest.raises(TrialError, match="key=value"):
        parse_set(["epochs"])
    with pytest.raises(UnknownNameError, match="did you mean 'model'"):
        parse_set(["modle.hidden=3"])


def test_cli_prints_metrics_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["trial", "pmi", "blobs", "--set", "dataset.n_samples=120", "--set", "dataset.n_features=4",
            "--set", "dataset.centers=3", "--set", "epochs=1", "--set", "model.hidden=16", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "hungarian" in out and "nmi" in out and "pmi on blobs" in out
    assert main([*args, "--json", "--seed", "1"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["seed"] == 1 and "artifacts" not in row
    assert row["spec"]["dataset"]["n_samples"] == 120 and row["spec"]["settings"]["epochs"] == 1


def test_cli_failed_trial_exits_with_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["trial", "pmi", "blobs", "--set", "epochz=1", "--device", "cpu"])
    assert code == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err

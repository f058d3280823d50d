"""The words users write for suite keys and trainer settings, and the keys they mean (docs/suite.md lists them)."""

from __future__ import annotations

__all__ = ["SETTING_SYNONYMS", "SYNONYMS"]

#: Words users write for a key, by where they write them -> the key meant. Refused with this as the
#: "did you mean" (one spelling per key keeps suites greppable, and `seed: 3` beside `seeds: 3`
#: would be ambiguous: seed 3, or seeds 0..2?); docs/suite.md lists them.
SYNONYMS: dict[str, dict[str, str]] = {
    "top level": {
        "metrics": "evaluate", "metric": "evaluate", "evaluation": "evaluate", "eval": "evaluate",
        "dataset": "datasets", "data": "datasets", "seed": "seeds",
        "method": "grid.method", "methods": "grid.method",
        "divergence": "grid.divergence", "divergences": "grid.divergence",
        "setting": "settings", "trainer": "settings", "training": "settings", "hyperparameters": "settings",
        "resource": "resources", "cpus": "resources.cpus", "gpus": "resources.gpus",
        "backend": "executor", "executors": "executor",
        "output": "results", "results_dir": "results", "output_dir": "results",
        "includes": "include", "cells": "include", "excludes": "exclude",
    },
    "grid, include and exclude": {
        "methods": "method", "divergences": "divergence", "datasets": "dataset", "seeds": "seed",
        "metrics": "evaluate", "evaluate": "evaluate", "resources": "resources", "executor": "executor",
    },
    "resources": {"cpu": "cpus", "num_cpus": "cpus", "cores": "cpus", "gpu": "gpus", "num_gpus": "gpus"},
}

#: Names other tools give trainer settings -> icon-bench's (refused with this as the "did you mean").
SETTING_SYNONYMS = {
    "learning_rate": "lr", "epoch": "epochs", "num_epochs": "epochs", "n_epochs": "epochs", "max_epochs": "epochs",
    "batch": "batch_size", "batchsize": "batch_size", "bs": "batch_size", "wd": "weight_decay", "optim": "optimizer",
}

"""Evaluation: what a method hands over (`MethodOutput`), the metrics, and the versioned protocol that runs them."""

from __future__ import annotations

from icon_bench.evaluation.evaluator import (
    PROTOCOL_VERSION,
    SPLITS,
    evaluate,
    protocol,
    protocol_settings,
    protocol_version,
    resolve_metrics,
    split_settings,
)
from icon_bench.evaluation.metrics import (
    DEFAULT_METRICS,
    MethodOutput,
    Metric,
    hungarian_accuracy,
    knn_accuracy,
    linear_probe_accuracy,
)

__all__ = [
    "DEFAULT_METRICS",
    "PROTOCOL_VERSION",
    "SPLITS",
    "MethodOutput",
    "Metric",
    "evaluate",
    "hungarian_accuracy",
    "knn_accuracy",
    "linear_probe_accuracy",
    "protocol",
    "protocol_settings",
    "protocol_version",
    "resolve_metrics",
    "split_settings",
]

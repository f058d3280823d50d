"""The conformance kit: checks every kernel, divergence, method, dataset, model, metric, reference set, claim set and backbone must pass."""

from __future__ import annotations

from icon_bench.testing.backbone import check_backbone
from icon_bench.testing.common import ConformanceError
from icon_bench.testing.fixtures import make_batch, make_data
from icon_bench.testing.loss import check_divergence, check_kernel
from icon_bench.testing.pipeline import (
    check_claim,
    check_dataset,
    check_method,
    check_metric,
    check_model,
    check_reference,
)
from icon_bench.testing.discovery import check_discovery
from icon_bench.testing.plugin import check, check_plugin, components
from icon_bench.testing.structured import DensePathNotice

__all__ = [
    "ConformanceError",
    "DensePathNotice",
    "check",
    "check_backbone",
    "check_claim",
    "check_dataset",
    "check_discovery",
    "check_divergence",
    "check_kernel",
    "check_method",
    "check_metric",
    "check_model",
    "check_plugin",
    "check_reference",
    "components",
    "make_batch",
    "make_data",
]

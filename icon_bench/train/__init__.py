"""Training: method recipes (`Method`, `Baseline`), building their models and losses, and the trainer."""

from __future__ import annotations

from icon_bench.train.baselines import Baseline
from icon_bench.train.dcl import DCLMethod, DebiasedContrastiveLoss
from icon_bench.train.heads import CosineHead, FullBatchCache, MultiHead
from icon_bench.train.recipe import (
    CLUSTER_METRICS,
    EMBEDDING_METRICS,
    MAP_METRICS,
    OPTION_KEYS,
    Method,
)
from icon_bench.train.recipes import RECIPES, get_recipe
from icon_bench.train.trainer import TrainData, TrainSettings, embed, fit

__all__ = [
    "CLUSTER_METRICS",
    "EMBEDDING_METRICS",
    "MAP_METRICS",
    "OPTION_KEYS",
    "RECIPES",
    "Baseline",
    "CosineHead",
    "DCLMethod",
    "DebiasedContrastiveLoss",
    "FullBatchCache",
    "Method",
    "MultiHead",
    "TrainData",
    "TrainSettings",
    "embed",
    "fit",
    "get_recipe",
]

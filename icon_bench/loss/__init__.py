"""The I-Con loss: kernels (p and q), divergences, and `ICon`, the objective that combines them."""

from __future__ import annotations

from icon_bench.loss.cluster import Cluster, Prototype
from icon_bench.loss.divergences import (
    JS,
    KL,
    TV,
    Chi2,
    Divergence,
    DivergenceError,
    FDivergence,
    Hellinger,
    ReverseKL,
)
from icon_bench.loss.families import Alpha, Mixture
from icon_bench.loss.graphs import KNN, Augmentation, Label, Uniform
from icon_bench.loss.kernel import Kernel, KernelError
from icon_bench.loss.objective import ICon
from icon_bench.loss.pairwise import Cosine, Gaussian, StudentT
from icon_bench.loss.structure import (
    RowBlocks,
    SparseRows,
    log_normalise,
    safe_logsumexp,
)
from icon_bench.loss.transforms import Debias, Mix, Propagate

__all__ = [
    "JS",
    "KL",
    "KNN",
    "TV",
    "Alpha",
    "Mixture",
    "Augmentation",
    "Chi2",
    "Cluster",
    "Cosine",
    "Debias",
    "Divergence",
    "DivergenceError",
    "FDivergence",
    "Gaussian",
    "Hellinger",
    "ICon",
    "Kernel",
    "KernelError",
    "Label",
    "Mix",
    "Propagate",
    "Prototype",
    "ReverseKL",
    "RowBlocks",
    "SparseRows",
    "StudentT",
    "Uniform",
    "log_normalise",
    "safe_logsumexp",
]

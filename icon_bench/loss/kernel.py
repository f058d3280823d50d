"""The `Kernel` base class, `KernelError`, and the small validators kernels share."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from icon_bench.errors import IconBenchError
from icon_bench.loss.structure import Batch, RowBlocks, SparseRows


class KernelError(IconBenchError, ValueError):
    """A kernel (or the loss built from it) was configured or fed wrongly."""


def _check_metric(metric: str, who: str) -> str:
    if metric not in ("euclidean", "cosine"):
        raise KernelError(f"kernel {who!r}: metric must be 'euclidean' or 'cosine', got {metric!r}")
    return metric


def _positive(value: float, what: str, who: str) -> float:
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise KernelError(f"kernel {who!r}: {what} must be a positive number, got {value!r}")
    return value


def _as_kernel(spec: Any) -> Kernel:
    from icon_bench.hooks.registry import create_as

    return create_as("kernel", spec, Kernel)


# --------------------------------------------------------------------------------------------
# base
# --------------------------------------------------------------------------------------------
class Kernel(nn.Module):
    """Base class: ``kernel(batch, key) -> (N, M)`` row-normalised log-probabilities, -inf for zeros.

    Square kernels (M = N, columns are batch rows) exclude the diagonal unless ``include_self``;
    rectangular ones (columns are classes) set ``rectangular = True``. A row with no support is all
    -inf. Optional fast-path structure: :meth:`sparse` (p side) and :meth:`row_blocks` (q side).
    """

    rectangular: bool = False
    include_self: bool = False
    #: True when the q-side forms accept embeddings with a leading heads dimension, (H, N, D).
    supports_heads: bool = False
    #: Where loss discovery may use this kernel: side ("p" or "q") -> {"tasks": [...], "params": {name: range}}
    #: (tasks among hooks.specs.DISCOVERY_TASKS; ranges written as a suite's tune space writes them). None:
    #: never drawn unless a suite's discover space names it with its ranges.
    discovery: dict[str, dict[str, Any]] | None = None

    @property
    def exclude_self(self) -> bool:
        return not self.rectangular and not self.include_self

    @property
    def supports_sparse(self) -> bool:
        """True when :meth:`sparse` returns a SparseRows (for any batch with the keys it reads)."""
        return False

    @property
    def supports_row_blocks(self) -> bool:
        """True when :meth:`row_blocks` returns a RowBlocks."""
        return False

    def forward(self, batch: Batch, key: str = "embeddings") -> Tensor:
        rb = self.row_blocks(batch, key)
        if rb is not None:
            return rb.block(0, rb.num_rows)
        sp = self.sparse(batch, key)
        if sp is not None:
            return sp.dense()
        raise NotImplementedError(f"{type(self).__name__} must implement forward, sparse or row_blocks")

    @property
    def supports_entries(self) -> bool:
        """True when :meth:`log_prob_at` gives q at listed columns without an N x N block."""
        return False

    @property
    def has_uniform_share(self) -> bool:
        """True when :meth:`sparse` may give rows a uniform share (a debiased p)."""
        return False

    def sparse(self, batch: Batch, key: str = "embeddings") -> SparseRows | None:
        """This kernel as sparse positives plus a uniform share, or None when it has no such form."""
        return None

    def row_blocks(self, batch: Batch, key: str = "embeddings") -> RowBlocks | None:
        """This kernel evaluable one block of rows at a time (no N x N at once), or None."""
        return None

    def log_prob_at(self, batch: Batch, key: str, cols: Tensor) -> Tensor | None:
        """log q at listed columns: (..., N, K) for ``cols`` (N, K) with -1 padding (-inf there).

        Rows are normalised over all their allowed columns, as in :meth:`forward`, but only the
        listed entries and each row's normaliser are computed. None when the kernel has no such form.
        """
        return None

    def log_q_sums(
        self, batch: Batch, key: str, cols: Tensor, keep: float = 1.0, add: float = 0.0, block_elements: int = 1 << 24,
        matmul_dtype: Any = None, term: Any = None,
    ) -> tuple[Tensor, Tensor] | None:
        """Fused: the sum over each row's allowed columns of log(keep q_ij + add), (..., N), and the
        same log at the listed ``cols`` (N, K, -1 padded: -inf there), (..., N, K); or None.

        (keep, add) = (1 - alpha, alpha / S) is the debiased q; the KL cross term of a p with a
        uniform share needs exactly these. ``term`` (a row term of :mod:`icon_bench.loss.fused`)
        replaces the log in the row sums by another function of q' (another divergence's term where
        p holds only its share); it is passed only for divergences other than KL. ``block_elements`` bounds the rows x columns held at
        once; ``matmul_dtype`` (None: the input's) is the operand type of the big matrix products.
        Kernels without a fused form return None.
        """
        return None


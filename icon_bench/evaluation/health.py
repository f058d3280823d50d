"""Warnings about a trial that its metrics hide: a diverged loss and a collapsed output.

A trial can finish, be scored and still be meaningless: with ``lr: 1e9`` the loss rises and every
point lands in one cluster (Hungarian accuracy 1/classes, NMI 0), which reads like a weak but valid
result. Each rule below yields one warning string ``"<kind>: <what was seen>"``; the trial row keeps
them in ``warnings`` and its status stays ``ok`` unless the suite sets ``fail_on_warnings: true``.

Rules (documented in docs/architecture.md, "Result row"):
- ``diverged``: a training loss that is not finite at some epoch, or whose last epoch is above its
  first by more than ``LOSS_RISE_MARGIN`` of the first's magnitude (two epochs at least).
- ``collapsed``: a method that outputs clusters put every test point in one cluster although the
  test split holds two classes or more; or a method that outputs embeddings mapped every test
  point to the same vector (spread at most ``COLLAPSE_TOLERANCE`` of the largest magnitude).
- ``near-collapse``: clusters that are not one but nearly: the largest cluster holds at least
  ``NEAR_COLLAPSE_SHARE`` of the test points and twice the largest class's share, or the effective
  number of clusters (exp of the entropy of the cluster sizes) is below ``NEAR_COLLAPSE_EFFECTIVE``
  of the number of classes (2,045 of 2,310 points in one cluster of ten: effective number 1.8).

`chance_levels` records each clustering metric's label-permutation baseline in the row
(``chance``), so reports can mark a configuration that does not beat chance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icon_bench.data.splits import DataSplits
    from icon_bench.evaluation.metrics import MethodOutput

__all__ = ["COLLAPSED", "COLLAPSE_TOLERANCE", "DIVERGED", "LOSS_RISE_MARGIN", "NEAR_COLLAPSE", "chance_levels",
           "collapse_warnings", "loss_warnings", "near_collapse_warnings", "trial_warnings"]

DIVERGED = "diverged"
COLLAPSED = "collapsed"
NEAR_COLLAPSE = "near-collapse"
#: The largest cluster's share of the test points at and above which, with twice the largest class's share, it warns.
NEAR_COLLAPSE_SHARE = 0.5
#: The effective number of clusters below this fraction of the number of classes warns.
NEAR_COLLAPSE_EFFECTIVE = 0.5
#: A last-epoch loss this fraction of |first-epoch loss| above the first counts as a rise; below it,
#: epoch-to-epoch noise of a converged run (mini-batch means) is not mistaken for divergence.
LOSS_RISE_MARGIN = 0.01
#: Embeddings whose per-dimension range is at most this fraction of (1 + their largest magnitude).
COLLAPSE_TOLERANCE = 1e-6


def loss_warnings(loss: Sequence[float] | None) -> list[str]:
    """`diverged` warnings for a per-epoch loss history (empty when it is absent or looks sane)."""
    values = [float(v) if v is not None else math.nan for v in (loss or [])]
    for epoch, value in enumerate(values, 1):
        if not math.isfinite(value):
            return [f"{DIVERGED}: loss is {value} at epoch {epoch}"]
    if len(values) >= 2:
        first, last = values[0], values[-1]
        if last - first > LOSS_RISE_MARGIN * max(abs(first), 1e-12):
            return [f"{DIVERGED}: loss rose from {first:.4g} (epoch 1) to {last:.4g} (epoch {len(values)})"]
    return []


def collapse_warnings(output: MethodOutput, labels: Any) -> list[str]:
    """`collapsed` warnings for a method's test output against the test labels."""
    import torch

    n_classes = int(torch.as_tensor(labels).unique().numel()) if labels is not None else 0
    if output.test_clusters is not None:
        clusters = torch.as_tensor(output.test_clusters)
        if clusters.numel() and n_classes >= 2 and clusters.unique().numel() == 1:
            return [f"{COLLAPSED}: all {clusters.numel()} test points in one cluster ({n_classes} classes)"]
        return near_collapse_warnings(clusters, torch.as_tensor(labels)) if n_classes >= 2 else []
    z = output.test_embeddings
    if z is None or z.dim() != 2 or z.shape[0] < 2 or not bool(torch.isfinite(z).all()):
        return []
    z = z.detach().float()
    spread = float((z.max(0).values - z.min(0).values).max())
    if spread <= COLLAPSE_TOLERANCE * (1.0 + float(z.abs().max())):
        return [f"{COLLAPSED}: all {z.shape[0]} test points mapped to one embedding"]
    return []


def near_collapse_warnings(clusters: Any, labels: Any) -> list[str]:
    """A `near-collapse` warning when one cluster holds most points or few clusters are really used (module rule)."""
    import torch

    sizes = torch.unique(torch.as_tensor(clusters), return_counts=True)[1].double()
    n = float(sizes.sum())
    share = float(sizes.max()) / n
    class_share = float(torch.unique(torch.as_tensor(labels), return_counts=True)[1].max()) / n
    n_classes = int(torch.as_tensor(labels).unique().numel())
    p = sizes / n
    effective = float(torch.exp(-(p * p.log()).sum()))
    if (share >= NEAR_COLLAPSE_SHARE and share >= 2 * class_share) or effective < NEAR_COLLAPSE_EFFECTIVE * n_classes:
        return [f"{NEAR_COLLAPSE}: the largest cluster holds {int(sizes.max())} of {int(n)} test points "
                f"(largest class {class_share:.0%}); effective number of clusters {effective:.1f} for {n_classes} classes"]
    return []


def chance_levels(output: MethodOutput, data: DataSplits, metrics: Any = None) -> dict[str, float]:
    """Each metric's label-permutation baseline on this output (metrics with a ``chance`` method that apply)."""
    from icon_bench.evaluation.evaluator import resolve_metrics

    out = {}
    for m in resolve_metrics(metrics):
        level = m.chance(output, data) if hasattr(m, "chance") else None
        if level is not None:
            out[m.name] = float(level)
    return out


def trial_warnings(output: MethodOutput, data: DataSplits) -> list[str]:
    """Every warning for one trial's output: divergence of its loss history, collapse of its test output."""
    history: Mapping[str, Any] = output.history or {}
    return loss_warnings(history.get("loss")) + collapse_warnings(output, getattr(data, "y_test", None))

"""No host sync in a training step's loss: what a CUDA step would wait for, caught on the CPU.

Every tensor stands for one on a GPU, whose values may not be read on the host (item, int, bool,
tolist, data-dependent shapes such as unique, nonzero or boolean indexing: a TorchFunctionMode
watches), except the trainer's CPU mirror ``batch["host"]`` and what is computed from it. Each loss a recipe
trains with runs forward and backward on such a batch.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

import icon_bench as ib
from icon_bench.data.propagate import propagate_graph
from icon_bench.train.dcl import DebiasedContrastiveLoss
from icon_bench.train.heads import MultiHead
from icon_bench.train.trainer import TrainData, TrainSettings, make_batch

#: Torch functions that read a tensor's values on the host (a sync on a device).
SYNCS = {
    "item", "__int__", "__float__", "__bool__", "__index__", "tolist", "numpy", "cpu", "nonzero",
    "argwhere", "unique", "unique_consecutive", "masked_select", "bincount", "repeat_interleave",
}
#: Reads left on purpose, on the CPU only (they check for an empty batch; a device gets NaN instead).
CPU_ONLY = {("objective.py", "mean_over_support"), ("dcl.py", "forward")}


def _flat(items):
    for a in items:
        if isinstance(a, (tuple, list)):
            yield from _flat(a)
        else:
            yield a


class OnHost(torch.Tensor):
    """The trainer's CPU mirror, and what is computed from it: read freely."""


class NoHostReads(TorchFunctionMode):
    """Every other tensor stands for one on a GPU: reading its values on the host fails the test."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        name = getattr(func, "__name__", "")
        first = args[0] if args else None
        on_device = isinstance(first, torch.Tensor) and not isinstance(first, OnHost)
        bool_index = name == "__getitem__" and any(
            isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in _flat(args[1:])
        )
        if on_device and (name in SYNCS or bool_index):
            caller = sys._getframe(1)
            where = (caller.f_code.co_filename.rsplit("/", 1)[-1], caller.f_code.co_name)
            if where not in CPU_ONLY:
                raise AssertionError(f"host sync: {name} in {where[0]}:{caller.f_lineno} ({where[1]})")
        return func(*args, **(kwargs or {}))


def _batch(views: int = 1, neighbors: int = 0, n: int = 120, seed: int = 0, walks: int = 0) -> dict:
    """A trainer batch whose tensors stand for device tensors, with the trainer's CPU mirror
    (``walks``: the graph propagated that many steps on the whole graph, with its weights)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    data = TrainData(x, torch.arange(n) % 5, torch.randint(0, n, (n, 10), generator=g))
    if walks:
        cols, weights, _ = propagate_graph(data.knn, walks)
        data = TrainData(x, data.y, cols, knn_weights=weights)
    settings = TrainSettings(views=views, neighbors=neighbors)
    batch = make_batch(data, torch.randperm(n, generator=g)[:40], settings, g, host_keys=True)
    assert set(batch["host"]) == {"index", "labels", "neighbors"}
    for key, value in batch["host"].items():
        assert torch.equal(value, batch[key])
        batch["host"][key] = value.clone().as_subclass(OnHost)  # what the trainer copied to the host
    return batch


def _step(loss: torch.nn.Module, batch: dict, width: int) -> None:
    z = torch.randn(batch["index"].shape[0], width, generator=torch.Generator().manual_seed(1))
    batch["embeddings"] = z.requires_grad_(True)
    with NoHostReads():
        value = loss(batch)
        value.backward()
    assert batch["embeddings"].grad is not None


KNN = ("knn", {"k": 10, "scope": "graph"})
LOSSES = {
    "pmi (graph p, cluster q, 10 heads)": (lambda div: MultiHead(ib.ICon(KNN, "cluster", div), 10), dict(neighbors=2), 100),
    "debiased clustering (p and q debiased, 10 heads)": (
        lambda div: MultiHead(ib.ICon(("mix", {"kernels": ["augmentation", KNN]}), "cluster", div, p_debias=0.6, q_debias=0.6), 10),
        dict(views=2, neighbors=2), 100,
    ),
    "propagated graph p": (lambda div: ib.ICon(KNN, "cluster", div, p_propagate=1), dict(neighbors=2), 10),
    "graph p propagated on the whole graph": (lambda div: ib.ICon(KNN, "cluster", div), dict(neighbors=2, walks=2), 10),
    "supcon (label p, cosine q)": (lambda div: ib.ICon("label", ("cosine", {"temperature": 0.2}), div), dict(views=2), 16),
    "simclr (views p, debiased)": (lambda div: ib.ICon("augmentation", ("student_t", {"dof": 1.0}), div, p_debias=0.2), dict(views=2), 16),
    "cross entropy (label classes, prototypes)": (
        lambda div: ib.ICon(("label", {"to": "classes", "num_classes": 5}), ("prototype", {"num_classes": 5, "dim": 16}), div),
        {}, 16,
    ),
}


@pytest.mark.parametrize("div", ["kl", "tv", "js"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_a_training_step_reads_nothing_from_the_device(name, div) -> None:
    build, settings, width = LOSSES[name]
    _step(build(div), _batch(**settings), width)


def test_dcl_reads_nothing_from_the_device() -> None:
    _step(DebiasedContrastiveLoss(), _batch(views=2), 16)


def test_the_detector_catches_a_sync() -> None:
    """The check itself: without the host mirror, sizing the label support must read the device."""
    batch = _batch(views=2)
    del batch["host"]
    with pytest.raises(AssertionError, match="host sync"):
        _step(ib.ICon("label", ("cosine", {"temperature": 0.2})), batch, 16)

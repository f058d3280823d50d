"""Tests of the training loop: batches, schedule, seeding, NaN stop, EMA."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from icon_bench.errors import TrialError, UnknownNameError
from icon_bench.train.trainer import TrainData, TrainSettings, embed, fit, make_batch


class ToyLoss(nn.Module):
    """Pull each embedding towards a one-hot of its label (a loss that training must reduce)."""

    def forward(self, batch: dict) -> torch.Tensor:
        target = nn.functional.one_hot(batch["labels"], batch["embeddings"].shape[1]).float()
        return ((batch["embeddings"] - target) ** 2).sum(1).mean()


class NaNAfter(nn.Module):
    """ToyLoss until `after` calls, then NaN: simulates a diverging run."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, batch: dict) -> torch.Tensor:
        loss = ToyLoss()(batch)
        self.calls += 1
        return loss * float("nan") if self.calls > self.after else loss


def _data(n: int = 40, d: int = 5, k: int = 3) -> TrainData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = torch.arange(n) % 3
    knn = torch.stack([(torch.arange(n) + j + 1) % n for j in range(k)], 1)
    return TrainData(x, y, knn)


def test_settings_reject_unknown_keys_with_suggestion() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'epochs'"):
        TrainSettings.from_dict({"epoch": 3})
    with pytest.raises(TrialError, match="views"):
        TrainSettings.from_dict({"views": 0})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": "fast"}, "settings.lr: input should be a valid number, unable to parse string as a number"),
        ({"epochs": -1}, "settings.epochs: input should be greater than or equal to 0 (got -1)"),
        ({"batch_size": 2.5}, "settings.batch_size: input should be a valid integer, got a number with a fraction"),
        ({"lr": float("inf")}, "settings.lr: input should be a finite number (got inf)"),
        ({"optimizer": "sgd"}, "settings.optimizer: input should be 'adam' or 'adamw' (got 'sgd')"),
    ],
)
def test_settings_values_are_checked_against_their_declared_types(values: dict, message: str) -> None:
    # Before: `lr: "fast"` reached Adam and every trial failed with a bare TypeError.
    with pytest.raises(TrialError) as info:
        TrainSettings.from_dict(values)
    assert str(info.value).startswith(message)
    assert TrainSettings.from_dict({"epochs": 2.0, "lr": 1, "batch_size": None}).epochs == 2  # exact values convert


def test_batch_with_neighbours_and_views() -> None:
    data = _data()
    settings = TrainSettings(views=2, neighbors=2)
    anchors = torch.tensor([0, 5, 9])
    noise = lambda x, g: x + 1.0  # noqa: E731 - a visible, deterministic "augmentation"
    batch = make_batch(data, anchors, settings, torch.Generator().manual_seed(1), noise)
    rows = 3 + 3 * 2  # anchors plus two drawn neighbours each
    assert batch["inputs"].shape == (2 * rows, 5)
    assert torch.equal(batch["index"][:rows], batch["index"][rows:])  # views share indices
    drawn = batch["index"][3:rows].reshape(3, 2)
    for a, nb in zip(anchors, drawn):
        assert set(nb.tolist()) <= set(data.knn[a].tolist())  # neighbours come from the graph
    assert torch.equal(batch["neighbors"], data.knn[batch["index"]])
    assert torch.allclose(batch["inputs"], data.x[batch["index"]] + 1.0)
    assert torch.equal(batch["labels"], data.y[batch["index"]])


def test_neighbours_need_a_graph() -> None:
    data = _data()
    data.knn = None
    with pytest.raises(TrialError, match="kNN graph"):
        make_batch(data, torch.tensor([0, 1]), TrainSettings(neighbors=1), torch.Generator())


def test_fit_reduces_loss_and_follows_the_step_schedule() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    settings = TrainSettings(epochs=6, batch_size=16, lr=0.05, lr_step=2, lr_gamma=0.5)
    result = fit(model, ToyLoss(), _data(), settings, seed=0)
    assert len(result.history["loss"]) == 6
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]
    assert result.history["lr"] == pytest.approx([0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125])
    assert result.steps == 6 * 3  # ceil(40 / 16) steps per epoch


def test_same_seed_same_result_and_different_seed_differs() -> None:
    def run(seed: int) -> tuple[list[float], torch.Tensor]:
        torch.manual_seed(seed)
        model = nn.Linear(5, 3)
        res = fit(model, ToyLoss(), _data(), TrainSettings(epochs=2, batch_size=8, lr=0.01, neighbors=1), seed=seed)
        return res.history["loss"], model.weight.detach().clone()

    a, b, c = run(1), run(1), run(2)
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_nan_stops_with_epoch_and_step() -> None:
    model = nn.Linear(5, 3)
    # 40 rows, batch 10 -> 4 steps per epoch; NaN from the 7th call = epoch 1, step 2.
    settings = TrainSettings(epochs=5, batch_size=10, check_every=3)
    with pytest.raises(TrialError, match="loss became NaN at epoch 1 step 2"):
        fit(model, NaNAfter(6), _data(), settings, seed=0)


def test_ema_weights_are_returned_and_lag_behind() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    start = model.weight.detach().clone()
    res = fit(model, ToyLoss(), _data(), TrainSettings(epochs=2, batch_size=8, lr=0.05, ema=0.9), seed=0)
    assert res.model is not model
    moved_ema = (res.model.weight - start).norm()
    moved = (model.weight - start).norm()
    assert 0 < moved_ema < moved


def test_full_batch_and_embed_in_chunks() -> None:
    model = nn.Linear(5, 3)
    data = _data()
    res = fit(model, ToyLoss(), data, TrainSettings(epochs=1, batch_size=None), seed=0)
    assert res.steps == 1
    z = embed(res.model, data.x, torch.arange(40), batch_size=7)
    assert z.shape == (40, 3)
    assert torch.allclose(z, model(data.x), atol=1e-6)


class ScaledToyLoss(nn.Module):
    """ToyLoss with a learned scale: a loss parameter the trainer also trains (and takes the norm of)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.scale * ToyLoss()(batch)


def _first_step_norm(settings: TrainSettings, seed: int = 0) -> tuple[float, list[float]]:
    """(the first step's gradient norm recomputed by hand, the norms fit recorded), same seed and start."""
    data = _data()
    torch.manual_seed(0)
    model, loss_fn = nn.Linear(5, 3), ScaledToyLoss()
    model0, loss0 = copy.deepcopy(model), copy.deepcopy(loss_fn)
    history = fit(model, loss_fn, data, settings, seed=seed).history
    # The loop's first batch: a randperm of the trainer's generator, cut into ceil(n / bs) parts.
    n = data.x.shape[0]
    if settings.batch_size is None:
        anchors = torch.arange(n)
    else:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        anchors = perm.tensor_split(-(-n // settings.batch_size))[0]
    batch = {"inputs": data.x[anchors], "labels": data.y[anchors], "index": anchors}
    batch["embeddings"] = model0(batch["inputs"])
    params = [*model0.parameters(), *loss0.parameters()]
    grads = torch.autograd.grad(loss0(batch), params)
    return float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))), history["grad_norm"]


@pytest.mark.parametrize("batch_size", [16, None])
def test_first_grad_norm_equals_a_hand_computed_one(batch_size: int | None) -> None:
    expected, recorded = _first_step_norm(TrainSettings(epochs=2, batch_size=batch_size, lr=0.05))
    assert expected > 0
    assert recorded[0] == pytest.approx(expected, abs=1e-6, rel=1e-6)


def test_grad_norm_with_clipping_is_the_norm_before_clipping() -> None:
    expected, recorded = _first_step_norm(TrainSettings(epochs=1, batch_size=16, lr=0.05, grad_clip=1e-3))
    assert expected > 1e-2  # far above the clip, so a clipped value could not pass
    assert recorded[0] == pytest.approx(expected, abs=1e-6, rel=1e-6)


@pytest.mark.parametrize(
    ("settings", "steps"),
    [
        (TrainSettings(epochs=3, batch_size=16), 3 * 3),  # ceil(40 / 16) steps per epoch
        (TrainSettings(epochs=3, batch_size=16, drop_last=True), 3 * 2),
        (TrainSettings(epochs=4, batch_size=None), 4),  # full batch: one step per epoch
        (TrainSettings(epochs=0), 0),
    ],
)
def test_one_grad_norm_per_optimizer_step(settings: TrainSettings, steps: int) -> None:
    res = fit(nn.Linear(5, 3), ToyLoss(), _data(), settings, seed=0)
    assert res.steps == steps
    assert len(res.history["grad_norm"]) == steps
    assert len(res.history["loss"]) == settings.epochs  # the loss stays per epoch
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in res.history["grad_norm"])


def test_grad_norms_reach_the_host_once_per_epoch_not_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every host copy icon_bench makes is counted (Adam's own .item() on its CPU step counter is
    # not a device sync and not ours); the fused norm calls too.
    copies: list[str] = []
    norms: list[int] = []

    def counting(name: str):  # noqa: ANN202
        real = getattr(torch.Tensor, name)

        def call(self: torch.Tensor, *args: object) -> object:
            if "icon_bench" in Path(sys._getframe(1).f_code.co_filename).parts:
                copies.append(name)
            return real(self, *args)

        return call

    for name in ("item", "tolist", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    real_norm = torch.nn.utils.get_total_norm
    monkeypatch.setattr(torch.nn.utils, "get_total_norm", lambda *a, **kw: (norms.append(1), real_norm(*a, **kw))[1])
    settings = TrainSettings(epochs=3, batch_size=4, check_every=1000)  # 10 steps per epoch
    res = fit(nn.Linear(5, 3), ToyLoss(), _data(), settings, seed=0)
    assert len(res.history["grad_norm"]) == 30
    assert len(norms) == 30  # one fused norm call per step
    assert copies == ["tolist"] * 3  # one copy per epoch (loss sum and norms together)

"""The training loop: device-resident data, index-slice batches with views or kNN neighbours, Adam, NaN checks."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, TypeAdapter, ValidationError
from torch import Tensor, nn

from icon_bench.errors import TrialError, UnknownNameError, invalid_value
from icon_bench.terminal import bar_size

#: ``augment(x, generator) -> x'``: a batched, on-device augmentation of inputs.
Augment = Callable[[Tensor, torch.Generator], Tensor]


#: Value types with their ranges, shared by the settings below and the method options (train/recipe.py):
#: pydantic reads the bounds, so a suite is checked against them when it is loaded (run/suite/spec_check.py).
Count = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


@dataclasses.dataclass
class TrainSettings:
    """Trainer settings; a trial spec's ``settings`` overrides them key by key."""

    epochs: Count = 30
    batch_size: PositiveInt | None = 256  # anchors per batch; None = the whole training set
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    optimizer: Literal["adam", "adamw"] = "adam"
    lr_step: Count = 10  # halve (lr_gamma) every lr_step epochs, I-Con's ImageNet schedule; 0 = constant
    lr_gamma: PositiveFloat = 0.5
    views: PositiveInt = 1  # augmented views per sample, concatenated and sharing batch["index"]
    neighbors: Count = 0  # global-kNN neighbours drawn into the batch per anchor
    ema: Annotated[float, Field(ge=0, lt=1)] = 0.0  # EMA decay of the weights used for the final embedding; 0 = off
    grad_clip: PositiveFloat | None = None
    check_every: PositiveInt = 25  # steps between NaN checks (a host sync); the step is still exact
    amp: bool = True  # bf16 autocast of the model forward on CUDA
    drop_last: bool = False

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> TrainSettings:
        """Settings from a dict, rejecting unknown keys with "did you mean" and values outside their types."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = dict(values or {})
        for key in values:
            if key not in known:
                raise UnknownNameError("trainer setting", key, known)
        try:
            return _SETTINGS.validate_python(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"][:1])
            raise TrialError(f"settings.{where}: {invalid_value(err)}") from None

    def validate(self) -> None:
        """Check the settings against their declared types and ranges (raises TrialError)."""
        TrainSettings.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SETTINGS = TypeAdapter(TrainSettings)


@dataclasses.dataclass
class TrainData:
    """What the loop reads, resident on one device: inputs, labels and the optional global kNN graph.

    With `pixels` (data/pixels.py), `x` holds uint8 rows (a quarter of float32's memory on the
    device) and each batch is converted to float32 as it is drawn (`inputs`).
    """

    x: Tensor
    y: Tensor
    knn: Tensor | None = None  # (n, k) int64 dataset indices, -1 padded
    pixels: Any = None  # Pixels: uint8 rows -> float32; None: x is float32
    knn_weights: Tensor | None = None  # (n, k) float32: a propagated graph's weights (None: uniform)

    def to(self, device: torch.device | str) -> TrainData:
        return TrainData(
            self.x.to(device),
            self.y.to(device),
            None if self.knn is None else self.knn.to(device),
            None if self.pixels is None else self.pixels.to(device),
            None if self.knn_weights is None else self.knn_weights.to(device),
        )

    def inputs(self, rows: Tensor) -> Tensor:
        """float32 rows of `x` (rows drawn from it, or a slice of it): converted when x holds pixels."""
        return rows if self.pixels is None else self.pixels(rows)

    def keys_on_host(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(labels, kNN graph, its weights) on the CPU, copied once: off the CPU the trainer draws each
        batch's indices there, so the kernels size p's support without reading the device (a sync per step)."""
        if self.x.device.type == "cpu":
            return self.y, self.knn, self.knn_weights
        cached = self.__dict__.get("_host")
        if cached is None:
            keys = (self.y, self.knn, self.knn_weights)
            cached = self.__dict__["_host"] = tuple(None if t is None else t.cpu() for t in keys)
        return cached


@dataclasses.dataclass
class TrainResult:
    """The loop's record: loss and lr per epoch, gradient norm per step, steps, the weights to embed with (EMA if on)."""

    history: dict[str, list[float]]
    epochs: int
    steps: int
    model: nn.Module


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) so the same spec gives the same result on CPU."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def make_batch(
    data: TrainData,
    anchors: Tensor,
    settings: TrainSettings,
    generator: torch.Generator,
    augment: Augment | None = None,
    augment_generator: torch.Generator | None = None,
    host_keys: bool | None = None,
) -> dict[str, Tensor]:
    """A batch for the given anchor indices: kNN neighbours drawn in, then views, as docs/architecture.md says.

    Rows are ``[anchors, neighbours]`` repeated once per view; views share ``index``, and
    ``neighbors`` holds each row's list from the global graph when there is one. Anchors on the
    CPU with data on a device (the trainer off the CPU) keep the index work on the host: the batch
    then carries ``batch["host"]``, CPU copies of ``index``, ``labels`` and ``neighbors``.
    ``generator`` draws the neighbours (on the anchors' device), ``augment_generator`` (default:
    the same) the augmentations (on the data's). ``host_keys`` forces the mirror on or off.
    """
    device = data.x.device
    host = anchors.device != device if host_keys is None else host_keys
    y, knn, weights = data.keys_on_host() if host else (data.y, data.knn, data.knn_weights)
    rows = anchors
    if settings.neighbors > 0:
        if knn is None:
            raise TrialError(
                "settings.neighbors > 0 needs the global kNN graph: load the dataset with the knn option "
                "(e.g. dataset.knn=10)"
            )
        k = knn.shape[1]
        if weights is None:
            # m neighbours per anchor, drawn with replacement among its k (uniform, like the kNN kernel).
            cols = torch.randint(0, k, (anchors.numel(), settings.neighbors), generator=generator, device=anchors.device)
        else:
            # A propagated graph: the end of a walk of 1..steps steps, drawn by its weight.
            cols = torch.multinomial(weights[anchors], settings.neighbors, replacement=True, generator=generator)
        drawn = knn[anchors.unsqueeze(1), cols].reshape(-1)
        rows = torch.cat([anchors, drawn])
    on_device = rows.to(device, non_blocking=True) if rows.device != device else rows
    x = data.inputs(data.x[on_device])
    if settings.views > 1 or augment is not None:
        aug_gen = generator if augment_generator is None else augment_generator
        # An augmentation that reads stored views (StoredViews) needs the rows' dataset indices.
        extra = {"index": on_device} if getattr(augment, "takes_index", False) else {}
        views = [augment(x, aug_gen, **extra) if augment is not None else x for _ in range(settings.views)]
        x = torch.cat(views)
        rows = rows.repeat(settings.views)
        on_device = on_device.repeat(settings.views)
    batch = {"inputs": x, "labels": data.y[on_device], "index": on_device}
    if data.knn is not None:
        batch["neighbors"] = data.knn[on_device]
    if data.knn_weights is not None:
        batch["neighbor_weights"] = data.knn_weights[on_device]
    if host:
        batch["host"] = {"index": rows, "labels": y[rows], **({"neighbors": knn[rows]} if knn is not None else {})}  # type: ignore[dict-item]
    return batch


def embed(
    model: nn.Module, x: Tensor, index: Tensor, *, batch_size: int = 4096, amp: bool = True, pixels: Any = None
) -> Tensor:
    """The model's output for every row, in chunks, fp32, without gradients (uint8 rows converted by `pixels`)."""
    takes_index = getattr(model, "takes", "inputs") == "index"
    out: Tensor | None = None
    model.eval()
    with torch.no_grad():
        for start in range(0, index.numel(), batch_size):
            idx = index[start : start + batch_size]
            inp = idx if takes_index else x[start : start + batch_size]
            if pixels is not None and not takes_index:
                inp = pixels(inp)
            with _autocast(inp.device, amp):
                part = model(inp).float()
            if out is None:
                # Filled in place: one copy of the embeddings, not the batches plus their concatenation.
                out = part.new_empty((index.numel(), *part.shape[1:]))
            out[start : start + part.shape[0]] = part
    return out if out is not None else torch.empty(0)


def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    data: TrainData,
    settings: TrainSettings,
    *,
    seed: int = 0,
    augment: Augment | None = None,
    progress: bool = False,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` (and any parameters of ``loss_fn``, e.g. prototypes) on ``data``; return the history.

    Stops with TrialError when the loss becomes NaN or infinite, naming the epoch and step.
    """
    from tqdm.auto import tqdm

    device = data.x.device
    n = data.x.shape[0]
    takes_index = getattr(model, "takes", "inputs") == "index"
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    # Off the CPU, batches' indices are drawn on the host (see make_batch); on it, one generator draws all.
    index_gen = generator if device.type == "cpu" else torch.Generator().manual_seed(seed)
    params, optimizer, scheduler, ema_model = _optimiser(model, loss_fn, settings)

    bs = n if settings.batch_size is None else min(settings.batch_size, n)
    steps_per_epoch = n // bs if settings.drop_last else math.ceil(n / bs)
    k = settings.check_every
    # Per-step losses stay on the device; the host looks at them once every `check_every` steps.
    window = torch.zeros(k, device=device)
    epoch_sum = torch.zeros((), device=device)
    # The gradient norm of each step, likewise kept on the device and copied once per epoch.
    grad_norms = torch.zeros(steps_per_epoch, device=device)
    history: dict[str, list[float]] = {"loss": [], "lr": [], "grad_norm": []}
    step = 0
    # Redrawn at most twice a second: a fast epoch loop must not wait on the terminal.
    bar = tqdm(range(settings.epochs), desc=desc, unit="epoch", disable=not progress, leave=False, mininterval=0.5, **bar_size())
    full_batch = steps_per_epoch == 1 and bs == n
    # One batch of every point: the order is irrelevant to the loss, so keep one fixed index tensor
    # (lets a p kernel on fixed inputs reuse its matrix without permuting it).
    fixed = torch.arange(n, device=device) if full_batch else None
    for epoch in bar:
        model.train()
        loss_fn.train()
        perm = fixed if fixed is not None else torch.randperm(n, generator=index_gen, device=index_gen.device)
        epoch_sum.zero_()
        epoch_steps = 0
        for anchors in _batches(perm, full_batch, settings, steps_per_epoch, bs):
            if anchors.numel() < 2:  # a one-row batch has no pairs
                continue
            batch = make_batch(data, anchors, settings, index_gen, augment, generator)
            with _autocast(device, settings.amp):
                out = model(batch["index"] if takes_index else batch["inputs"])
            batch["embeddings"] = out.float()  # the loss runs in fp32
            loss = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norms[epoch_steps] = _grad_norm(params, settings.grad_clip)
            optimizer.step()
            if ema_model is not None:
                _ema_update(ema_model, model, settings.ema)
            # 0 * sum(out) is NaN when the model output overflowed, even if the loss stayed finite
            # (a cosine kernel normalises inf away); no host sync here.
            watched = loss.detach() + 0.0 * batch["embeddings"].detach().sum()
            window[step % k] = watched
            epoch_sum += watched
            step += 1
            epoch_steps += 1
            if step % k == 0:
                _check_finite(window, k, step, epoch, steps_per_epoch, settings)
        _check_finite(window, (step - 1) % k + 1, step, epoch, steps_per_epoch, settings)
        mean = _record_epoch(history, epoch_sum, grad_norms[:epoch_steps], optimizer)
        bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
        if scheduler is not None:
            scheduler.step()
    bar.close()
    final = ema_model if ema_model is not None else model
    final.eval()
    return TrainResult(history=history, epochs=settings.epochs, steps=step, model=final)


def _optimiser(
    model: nn.Module, loss_fn: nn.Module, settings: TrainSettings
) -> tuple[list[nn.Parameter], torch.optim.Optimizer, Any, nn.Module | None]:
    """The trainable parameters, their optimiser, the learning-rate schedule (or None) and the EMA copy (or None)."""
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    if not params:
        raise TrialError("nothing to train: the model and the loss have no trainable parameters")
    opt_cls = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_step, gamma=settings.lr_gamma)
        if settings.lr_step > 0
        else None
    )
    ema_model = copy.deepcopy(model) if settings.ema > 0 else None
    if ema_model is not None:
        ema_model.requires_grad_(False)
    return params, optimizer, scheduler, ema_model


def _record_epoch(
    history: dict[str, list[float]], loss_sum: Tensor, grad_norms: Tensor, optimizer: torch.optim.Optimizer
) -> float:
    """Append one epoch to `history` (mean loss, lr, each step's gradient norm); return the mean loss.

    The epoch's only host copy: the loss sum and the per-step norms come over together.
    """
    synced = torch.cat([loss_sum.view(1), grad_norms]).tolist()
    mean = synced[0] / max(grad_norms.numel(), 1)
    history["loss"].append(mean)
    history["lr"].append(optimizer.param_groups[0]["lr"])
    history["grad_norm"].extend(synced[1:])
    return mean


def _grad_norm(params: list[nn.Parameter], clip: float | None) -> Tensor:
    """The total L2 norm of the gradients before clipping (0-d, on the device), clipping them when `clip` is set."""
    if clip:
        return torch.nn.utils.clip_grad_norm_(params, clip)  # returns the norm it measured before clipping
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


def _batches(perm: Tensor, full_batch: bool, settings: TrainSettings, steps_per_epoch: int, bs: int) -> Any:
    """One epoch's batches of anchor indices from the permutation ``perm``."""
    if full_batch:
        chunks = (perm,)
    elif settings.drop_last:
        chunks = perm[: steps_per_epoch * bs].split(bs)
    else:
        # ceil(n / bs) batches of near-equal size: no tiny tail batch (a 3-row batch breaks
        # perplexity calibration and gives noisy cluster-size estimates).
        chunks = perm.tensor_split(steps_per_epoch)
    return chunks


def _check_finite(
    window: Tensor, filled: int, step: int, epoch: int, steps_per_epoch: int, settings: TrainSettings
) -> None:
    """Raise TrialError naming the first non-finite step among the last `filled` ones."""
    if step == 0 or filled <= 0:
        return
    k = window.numel()
    # The last `filled` steps sit at positions (step - filled .. step - 1) mod k.
    positions = torch.arange(step - filled, step, device=window.device) % k
    recent = window[positions]
    bad = ~torch.isfinite(recent)
    if not bool(bad.any()):
        return
    first = step - filled + int(bad.nonzero()[0, 0])  # global step index, 0-based
    bad_epoch = first // max(steps_per_epoch, 1) if steps_per_epoch else epoch
    bad_step = first - bad_epoch * steps_per_epoch
    value = float(recent[bad][0])
    raise TrialError(
        f"loss became {'NaN' if math.isnan(value) else value} at epoch {bad_epoch} step {bad_step} "
        f"(global step {first}; the loss or the model output was not finite); lr={settings.lr} may be "
        "too high, a kernel temperature too low, or (on a GPU) no row of p had support in a batch"
    )


def _ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema_model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(ema_model.buffers(), model.buffers()):
            e.copy_(b)


def _autocast(device: torch.device, amp: bool) -> Any:
    # bf16 only for CUDA forwards: CPU autocast is slow for small models and changes results.
    enabled = amp and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)

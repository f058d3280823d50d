"""The conformance kit: checks every kernel, divergence, method, dataset and model must pass (for plugin authors)."""

from __future__ import annotations

import copy
import functools
import math
import re
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from icon_bench.hooks import specs as hookspecs
from icon_bench.hooks.registry import Registry, get_registry, split_spec

__all__ = [
    "ConformanceError",
    "check",
    "check_dataset",
    "check_divergence",
    "check_kernel",
    "check_method",
    "check_metric",
    "check_model",
    "check_plugin",
    "components",
    "make_batch",
    "make_data",
]

# Tolerances: float32 sums of a few dozen terms are good to ~1e-5; bf16 keeps 8 bits of mantissa.
_TOL_F32 = 1e-4
_TOL_BF16 = 3e-2


class ConformanceError(AssertionError):
    """A component broke a property of its contract; the message says which component and which property."""

    def __init__(self, component: str, property: str, detail: str) -> None:
        self.component = component
        self.property = property
        self.detail = detail
        super().__init__(f"{component}: property {property!r} failed: {detail}")


# ---------------------------------------------------------------------------------------------
# tiny inputs
# ---------------------------------------------------------------------------------------------
def make_batch(
    n: int = 12,
    *,
    dim: int = 4,
    input_dim: int = 4,
    num_classes: int = 3,
    views: int = 2,
    k: int = 2,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """A random batch with every contract key: embeddings, inputs, labels, index (`views` per sample), neighbors.

    Rows i and i + n/views are views of one sample (same index and label); each sample's `k` graph
    neighbours are the next `k` samples, all present in the batch, so every built-in p has support.
    """
    if n % views:
        raise ValueError(f"n={n} must be a multiple of views={views}")
    samples = n // views
    if not 0 < k < samples:
        raise ValueError(f"k={k} must be in [1, {samples - 1}] for {samples} samples")
    gen = torch.Generator().manual_seed(seed)
    index = torch.arange(samples).repeat(views)
    labels = index % num_classes
    neighbors = (index[:, None] + torch.arange(1, k + 1)[None, :]) % samples
    batch = {
        "embeddings": torch.randn(n, dim, generator=gen),
        "inputs": torch.randn(n, input_dim, generator=gen),
        "labels": labels.long(),
        "index": index.long(),
        "neighbors": neighbors.long(),
    }
    return {
        key: (t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)) for key, t in batch.items()
    }


def make_data(
    n_train: int = 64,
    n_test: int = 32,
    *,
    dim: int = 8,
    num_classes: int = 3,
    seed: int = 0,
) -> Any:
    """Tiny, well-separated Gaussian blobs as ``icon_bench.data.DataSplits`` (the method check's input)."""
    from icon_bench.data.splits import DataSplits

    gen = torch.Generator().manual_seed(seed)
    centers = 4.0 * torch.randn(num_classes, dim, generator=gen)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        x = centers[y] + torch.randn(n, dim, generator=gen)
        return x.float(), y.long()

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return DataSplits(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        name="conformance_blobs",
        meta={"source": "icon_bench.testing.make_data", "seed": seed},
    )


# ---------------------------------------------------------------------------------------------
# building components
# ---------------------------------------------------------------------------------------------
def _is_spec(obj: Any) -> bool:
    return (
        isinstance(obj, str)
        or (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str))
        or (isinstance(obj, Mapping) and isinstance(obj.get("name"), str))
    )


def _builder(
    kind: str, spec: Any, params: Mapping[str, Any] | None, registry: Registry | None
) -> tuple[str, Callable[[], Any]]:
    """(label for messages, zero-argument builder) for a spec, a factory, or a ready component."""
    params = dict(params or {})
    if _is_spec(spec):
        name, spec_params = split_spec(spec)
        reg = registry or get_registry()
        comp = reg.get(kind, name)
        merged = {**spec_params, **params}
        label = f"{kind} {name!r} ({comp.distribution} {comp.version})"
        return label, lambda: comp.create(**merged)
    if isinstance(spec, type) or (callable(spec) and not isinstance(spec, torch.nn.Module) and _is_factory(spec)):
        label = f"{kind} {getattr(spec, '__qualname__', repr(spec))}"
        return label, lambda: spec(**params)
    if params:
        raise TypeError(f"params given for a ready-made {kind} {spec!r}; pass its factory or spec instead")
    label = f"{kind} {type(spec).__name__}"
    return label, lambda: copy.deepcopy(spec)  # a fresh copy per check: no state leaks between checks


def _is_factory(obj: Any) -> bool:
    # Plain functions and partials are factories; instances with __call__ (divergences, metrics) are not.
    return isinstance(obj, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial))


def _build(label: str, build: Callable[[], Any], seed: int) -> Any:
    torch.manual_seed(seed)
    try:
        return build()
    except Exception as exc:
        raise ConformanceError(label, "builds", f"{type(exc).__name__}: {exc}") from exc


def _devices(devices: Sequence[str] | None) -> list[str]:
    if devices is not None:
        return list(devices)
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _fail(label: str, prop: str, detail: str) -> ConformanceError:
    return ConformanceError(label, prop, detail)


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------
def check_kernel(
    spec_or_kernel: Any,
    *,
    params: Mapping[str, Any] | None = None,
    keys: Sequence[str] = ("embeddings", "inputs"),
    devices: Sequence[str] | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16),
    batch: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    registry: Registry | None = None,
) -> None:
    """Check a kernel (a registered name/spec, a factory, or a ``Kernel``) against its contract.

    For each key it reads (as q: ``embeddings``; as p: ``inputs``): output (N, M) log-probabilities
    with N the batch rows; no NaN or +inf (``-inf`` only for exact zeros); every row with support sums
    to one in probability space and at least one row has support; square (N, N) unless the kernel
    sets ``rectangular``, with the diagonal excluded unless ``include_self``; its ``sparse`` /
    ``row_blocks`` forms, when it has them, equal ``forward``; gradients w.r.t. the input and the
    kernel's parameters are finite; building and running twice under one seed gives identical
    values; ``.to(device)`` works and CUDA (when available) matches CPU; bfloat16 inputs give the
    float32 answer within a loose tolerance (or, for discontinuous kernels such as kNN, a valid one).
    """
    from icon_bench.loss.kernel import Kernel

    label, build = _builder("kernel", spec_or_kernel, params, registry)
    base = dict(batch) if batch is not None else make_batch(seed=seed)

    for key in keys:
        # as p (inputs) and as q (embeddings); same width by default so kernels with a declared dim read both
        where = f"{label} [key={key!r}]"
        kernel = _build(label, build, seed)
        if not isinstance(kernel, Kernel):  # ICon refuses anything else
            raise _fail(label, "is a Kernel", f"built {type(kernel).__name__}, not an icon_bench.loss.Kernel")
        reference = _kernel_forward(where, kernel, base, key, torch.float32, check_grad=True)
        _check_log_probs(where, reference, kernel, n=base[key].shape[0], tol=_TOL_F32)
        _check_fast_paths(where, kernel, base, key, reference)

        again = _kernel_forward(where, _build(label, build, seed), base, key, torch.float32, check_grad=False)
        if again.shape != reference.shape or not torch.equal(again, reference):
            diff = (again.exp() - reference.exp()).abs().max().item() if again.shape == reference.shape else "shape"
            raise _fail(where, "deterministic under a fixed seed", f"two runs with seed {seed} differ (max {diff})")

        for device in _devices(devices):
            for dtype in dtypes:
                if device == "cpu" and dtype == torch.float32:
                    continue  # the reference itself
                at = f"{where} [{device}, {str(dtype).removeprefix('torch.')}]"
                kernel = _build(label, build, seed)
                try:
                    kernel = kernel.to(device)
                except Exception as exc:  # e.g. an attribute shadowing nn.Module.to or ._apply
                    raise _fail(at, "moves with .to(device)", f"{type(exc).__name__}: {exc}") from exc
                moved = {k: v.to(device) for k, v in base.items()}
                out = _kernel_forward(at, kernel, moved, key, dtype, check_grad=True).float().cpu()
                tol = _TOL_F32 if dtype == torch.float32 else _TOL_BF16
                _check_log_probs(at, out, kernel, n=base[key].shape[0], tol=tol)
                if out.shape != reference.shape:
                    raise _fail(
                        at, "same shape on every device and dtype", f"{tuple(out.shape)} vs {tuple(reference.shape)}"
                    )
                same_support = bool((torch.isinf(out) == torch.isinf(reference)).all())
                if dtype == torch.float32 and not same_support:
                    raise _fail(at, "same support on every device", "zeros differ from the CPU float32 run")
                if not same_support:
                    continue  # bf16 rounding may flip a nearest-neighbour choice: a different, valid support
                # bf16 inputs lose ~3 significant digits; 0.1 absolute on probabilities still catches wrong maths
                atol = 1e-4 if dtype == torch.float32 else 0.1
                err = (out.exp() - reference.exp()).abs().max().item()
                if err > atol:
                    raise _fail(at, "matches CPU float32", f"probabilities differ by {err:.3g} (> {atol})")


def _kernel_forward(
    where: str, kernel: Any, batch: Mapping[str, torch.Tensor], key: str, dtype: torch.dtype, *, check_grad: bool
) -> torch.Tensor:
    if key not in batch:
        raise ValueError(f"batch has no key {key!r}")
    batch = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in batch.items()}
    x = batch[key].detach().clone().requires_grad_(check_grad)
    batch[key] = x
    try:
        out = kernel(batch, key=key)
    except Exception as exc:
        raise _fail(where, "runs", f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(out, torch.Tensor):
        raise _fail(where, "returns a tensor", f"got {type(out).__name__}")
    if check_grad and out.requires_grad:
        finite = torch.isfinite(out)
        weights = torch.linspace(0.5, 1.5, out.numel(), device=out.device).reshape(out.shape)
        (torch.where(finite, out, torch.zeros_like(out)).float() * weights).sum().backward()
        if x.grad is not None and not bool(torch.isfinite(x.grad).all()):
            raise _fail(where, "finite gradients w.r.t. the input", f"non-finite gradient w.r.t. batch[{key!r}]")
        for name, p in getattr(kernel, "named_parameters", lambda: [])():
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                raise _fail(where, "finite gradients w.r.t. parameters", f"non-finite gradient of {name!r}")
    return out.detach()


def _check_log_probs(where: str, out: torch.Tensor, kernel: Any, *, n: int, tol: float) -> None:
    if out.dim() != 2 or out.shape[0] != n:
        raise _fail(where, "shape (N, M)", f"expected {n} rows of log-probabilities, got shape {tuple(out.shape)}")
    out = out.float()
    if bool(torch.isnan(out).any()):
        raise _fail(where, "no NaN log-probabilities", f"{int(torch.isnan(out).sum())} NaN entries")
    if bool((out == math.inf).any()):
        raise _fail(where, "no +inf log-probabilities", "log-probabilities must be <= 0; +inf found")
    supported = torch.isfinite(out).any(dim=1)
    if not bool(supported.any()):
        raise _fail(where, "some row has support", "every row is all -inf (zero probability everywhere)")
    if bool((out[torch.isfinite(out)] > tol).any()):
        raise _fail(where, "probabilities <= 1", f"max log-probability {out.max().item():.4g} > 0")
    row_sums = out[supported].exp().sum(dim=1)
    err = (row_sums - 1).abs().max().item()
    if err > tol * max(1, out.shape[1] ** 0.5):
        worst = int(supported.nonzero()[(row_sums - 1).abs().argmax()].item())
        raise _fail(
            where,
            "rows sum to one",
            f"row {worst} sums to {row_sums[(row_sums - 1).abs().argmax()].item():.6g} in probability space "
            f"(max error {err:.3g}); return log_softmax-normalised rows",
        )
    rectangular = bool(getattr(kernel, "rectangular", False))
    if not rectangular and out.shape[1] != n:
        raise _fail(where, "square (N, N)", f"got {tuple(out.shape)}; a kernel over classes sets rectangular = True")
    if not rectangular and getattr(kernel, "exclude_self", not getattr(kernel, "include_self", False)):
        diag = torch.diagonal(out)
        if bool(torch.isfinite(diag).any()):
            raise _fail(where, "excludes self-pairs", "include_self is False but the diagonal has non-zero probability")


def _check_fast_paths(
    where: str, kernel: Any, batch: Mapping[str, torch.Tensor], key: str, dense: torch.Tensor
) -> None:
    """The optional structured forms (``sparse`` for p, ``row_blocks`` for q) must equal the dense output."""
    forms: list[tuple[str, Callable[[], Any]]] = []
    if getattr(kernel, "supports_sparse", False) and callable(getattr(kernel, "sparse", None)):
        forms.append(("sparse", lambda: kernel.sparse(dict(batch), key=key).dense()))
    if getattr(kernel, "supports_row_blocks", False) and callable(getattr(kernel, "row_blocks", None)):

        def blocks() -> torch.Tensor:
            rb = kernel.row_blocks(dict(batch), key=key)
            cut = max(1, rb.num_rows // 3)  # uneven blocks catch offset bugs in the self-mask
            edges = [0, cut, min(rb.num_rows, 2 * cut + 1), rb.num_rows]
            return torch.cat([rb.block(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a])

        forms.append(("row_blocks", blocks))
    for form, compute in forms:
        try:
            with torch.no_grad():
                got = compute().float()
        except Exception as exc:
            raise _fail(where, f"{form} form runs", f"{type(exc).__name__}: {exc}") from exc
        if got.shape != dense.shape or not bool((torch.isinf(got) == torch.isinf(dense)).all()):
            raise _fail(where, f"{form} form equals forward", f"support or shape differs: {tuple(got.shape)}")
        err = (got.exp() - dense.float().exp()).abs().max().item()
        if err > _TOL_F32:
            raise _fail(where, f"{form} form equals forward", f"probabilities differ by {err:.3g}")


# ---------------------------------------------------------------------------------------------
# divergences
# ---------------------------------------------------------------------------------------------
def _random_rows(n: int, m: int, gen: torch.Generator, *, zeros: float = 0.0, scale: float = 2.0) -> torch.Tensor:
    """(n, m) log-probabilities; diagonal excluded like a square kernel's; `zeros` more entries dropped."""
    logits = scale * torch.randn(n, m, generator=gen, dtype=torch.float64)
    drop = torch.eye(n, m, dtype=torch.bool)
    if zeros:
        drop |= torch.rand(n, m, generator=gen, dtype=torch.float64) < zeros
        keep = torch.randint(0, m, (n,), generator=gen)
        keep = torch.where(keep == torch.arange(n) % m, (keep + 1) % m, keep)
        drop[torch.arange(n), keep] = False  # at least one entry per row off the diagonal
    return torch.log_softmax(logits.masked_fill(drop, -math.inf), dim=1)


def check_divergence(
    spec_or_divergence: Any,
    *,
    params: Mapping[str, Any] | None = None,
    bound: float | None = None,
    n: int = 8,
    m: int = 8,
    seed: int = 0,
    devices: Sequence[str] | None = None,
    registry: Registry | None = None,
) -> None:
    """Check a divergence (name/spec, factory, or instance) against its contract.

    ``D(log_p, log_q)`` returns (N,) finite values; D(p, p) = 0 (also with zeros in p and the
    diagonal excluded in both); D(p, q) >= 0 on random rows, one-hot rows (p with a single positive,
    as augmentation gives) and near-disjoint rows; gradients w.r.t. log q are finite everywhere and
    w.r.t. log p wherever p > 0; values stay within ``bound`` (default: the divergence's ``bound``
    attribute, if any); float32 agrees with float64 where p and q share support, and CUDA (when
    available) with CPU.
    """
    label, build = _builder("divergence", spec_or_divergence, params, registry)
    from icon_bench.loss.divergences import Divergence

    div = _build(label, build, seed)
    if not isinstance(div, Divergence):  # ICon refuses anything else
        raise _fail(label, "is a Divergence", f"built {type(div).__name__}, not an icon_bench.loss.Divergence")
    if bound is None:
        declared = getattr(div, "bound", None)
        bound = float(declared) if isinstance(declared, (int, float)) and math.isfinite(declared) else None
    gen = torch.Generator().manual_seed(seed)
    p_sparse = _random_rows(n, m, gen, zeros=0.4)
    p_onehot = _random_rows(n, m, gen, zeros=1.0)  # exactly one positive per row
    q = _random_rows(n, m, gen)
    q_peaked = _random_rows(n, m, gen, scale=12.0)  # nearly disjoint from p
    cases = {
        "p vs q": (_random_rows(n, m, gen), q),
        "p with zeros vs q": (p_sparse, q),
        "one-hot p vs q": (p_onehot, q),
        "p vs peaked q": (_random_rows(n, m, gen), q_peaked),
        "one-hot p vs peaked q": (p_onehot, q_peaked),
    }

    def call(lp: torch.Tensor, lq: torch.Tensor, what: str) -> torch.Tensor:
        try:
            out = div(lp, lq)
        except Exception as exc:
            raise _fail(label, "runs", f"on {what}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(out, torch.Tensor) or out.shape != (lp.shape[0],):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise _fail(label, "one value per row", f"on {what}: expected shape ({lp.shape[0]},), got {shape}")
        if not bool(torch.isfinite(out).all()):
            raise _fail(label, "finite values", f"on {what}: {out.detach().tolist()}")
        return out

    for what, lp in {"p": q, "p with zeros": p_sparse, "one-hot p": p_onehot}.items():
        same = call(lp.float(), lp.float().clone(), f"D({what}, {what})")
        if same.abs().max().item() > 1e-4:
            raise _fail(label, "zero on equal inputs", f"D({what}, {what}) = {same.max().item():.3g}")

    for what, (lp, lq) in cases.items():
        lp32 = lp.float().requires_grad_(True)
        lq32 = lq.float().requires_grad_(True)
        out = call(lp32, lq32, what)
        if out.min().item() < -1e-5:
            raise _fail(label, "non-negative", f"on {what}: min value {out.min().item():.4g} < 0")
        if bound is not None and out.max().item() > bound + 1e-4:
            raise _fail(label, "within its bound", f"on {what}: max value {out.max().item():.4g} > {bound:.4g}")
        out.sum().backward()
        if lq32.grad is None or not bool(torch.isfinite(lq32.grad).all()):
            raise _fail(label, "finite gradients w.r.t. log q", f"on {what}: {_grad_summary(lq32.grad)}")
        if lp32.grad is not None and not bool(torch.isfinite(lp32.grad[torch.isfinite(lp)]).all()):
            raise _fail(label, "finite gradients w.r.t. log p where p > 0", f"on {what}: {_grad_summary(lp32.grad)}")
        # Only where p and q share support: elsewhere a divergence may stand in a dtype-dependent
        # finite value for an infinite one (reverse KL with p = 0 < q).
        if what == "p vs q" and _accepts_float64(div):
            exact = call(lp, lq, f"{what} (float64)")
            err = (out.detach().double() - exact.detach()).abs().max().item()
            if err > 1e-3 * max(1.0, exact.abs().max().item()):
                raise _fail(label, "float32 matches float64", f"on {what}: differ by {err:.3g}")
        for device in _devices(devices):
            if device == "cpu":
                continue
            moved = _build(label, build, seed)
            if hasattr(moved, "to"):
                moved = moved.to(device)
            on = moved(lp.float().to(device), lq.float().to(device)).cpu()
            err = (on - out.detach()).abs().max().item()
            if err > 1e-4 * max(1.0, out.abs().max().item()):
                raise _fail(label, f"matches CPU on {device}", f"on {what}: differ by {err:.3g}")


def _accepts_float64(div: Any) -> bool:
    # Parameters in float32 would make a float64 call mix dtypes; only compare parameter-free divergences.
    return not any(True for _ in getattr(div, "parameters", lambda: iter(()))())


def _grad_summary(grad: torch.Tensor | None) -> str:
    if grad is None:
        return "no gradient reached log q (is the output detached?)"
    bad = ~torch.isfinite(grad)
    return f"{int(bad.sum())} non-finite gradient entries, first at {tuple(bad.nonzero()[0].tolist())}"


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------
#: Overrides that keep a trained method's run tiny: one epoch, one batch of make_data()'s 64 points.
TINY_OVERRIDES: dict[str, Any] = {"settings": {"epochs": 1, "batch_size": 64}}


def check_method(
    spec_or_method: Any,
    *,
    params: Mapping[str, Any] | None = None,
    data: Any = None,
    overrides: Mapping[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    registry: Registry | None = None,
) -> Any:
    """Run a method (name/spec, factory, or ``Method``) on tiny blobs and check its ``MethodOutput``.

    The method follows what ``run_trial`` calls: ``with_overrides(spec)`` returns the resolved
    method, whose ``metrics`` (registered metric names) are the defaults, and
    ``run(data, *, seed, device, overrides, progress)`` trains and embeds.

    Embeddings, when returned, are (n_train, d) and (n_test, d) with one d and finite values;
    clusters, when returned, are int64 (n,) labels >= 0; at least one of the two is returned;
    ``history`` maps names to lists of finite floats; ``info`` is a dict. Returns the output.
    """
    label, build = _builder("method", spec_or_method, params, registry)
    method = _build(label, build, seed)
    data = make_data(seed=seed) if data is None else data
    if overrides is None:
        # Trained recipes (those with trainer `settings`) get one tiny epoch; baselines take no settings.
        overrides = TINY_OVERRIDES if isinstance(getattr(method, "settings", None), dict) else {}
    overrides = copy.deepcopy(dict(overrides))
    if not callable(getattr(method, "run", None)):
        raise _fail(label, "is a Method", f"{type(method).__name__} has no run(data, *, seed, device, overrides)")
    # run_trial resolves the trial spec first: with_overrides(spec).metrics are the default metrics.
    if not callable(getattr(method, "with_overrides", None)):
        raise _fail(label, "has with_overrides", f"{type(method).__name__} lacks with_overrides(overrides) -> method")
    try:
        recipe = method.with_overrides(copy.deepcopy(overrides))
    except Exception as exc:
        raise _fail(label, "with_overrides", f"{type(exc).__name__}: {exc}") from exc
    metric_names = getattr(recipe, "metrics", None)
    if not isinstance(metric_names, (list, tuple)) or not all(isinstance(m, str) for m in metric_names):
        raise _fail(
            label, "metrics", f"with_overrides(...).metrics must be a list of metric names, got {metric_names!r}"
        )
    reg = registry or get_registry()
    for metric_name in metric_names:
        if metric_name not in reg.names("metric"):
            raise _fail(
                label, "metrics", f"default metric {metric_name!r} is not registered ({', '.join(reg.names('metric'))})"
            )
    try:
        out = method.run(data, seed=seed, device=device, overrides=overrides, progress=False)
    except Exception as exc:
        raise _fail(label, "runs on tiny data", f"{type(exc).__name__}: {exc}") from exc
    fields = ("train_embeddings", "test_embeddings", "train_clusters", "test_clusters", "history", "info")
    missing = [f for f in fields if not hasattr(out, f)]
    if missing:
        raise _fail(label, "returns a MethodOutput", f"{type(out).__name__} lacks {missing}")
    n = {"train": len(data.y_train), "test": len(data.y_test)}
    dims = set()
    for split in n:
        emb = getattr(out, f"{split}_embeddings")
        if emb is not None:
            if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != n[split]:
                raise _fail(
                    label, "embedding shape", f"{split}_embeddings: expected ({n[split]}, d), got {_shape(emb)}"
                )
            if not bool(torch.isfinite(emb.float()).all()):
                raise _fail(label, "finite embeddings", f"{split}_embeddings has NaN or inf")
            dims.add(emb.shape[1])
        clusters = getattr(out, f"{split}_clusters")
        if clusters is not None:
            if not isinstance(clusters, torch.Tensor) or clusters.shape != (n[split],):
                raise _fail(label, "cluster shape", f"{split}_clusters: expected ({n[split]},), got {_shape(clusters)}")
            if clusters.dtype != torch.int64 or bool((clusters < 0).any()):
                raise _fail(label, "cluster labels", f"{split}_clusters must be int64 >= 0, got {clusters.dtype}")
    if len(dims) > 1:
        raise _fail(label, "embedding shape", f"train and test embeddings differ in width: {sorted(dims)}")
    if all(getattr(out, f) is None for f in fields[:4]):
        raise _fail(label, "returns something to evaluate", "no embeddings and no clusters")
    if not isinstance(out.history, dict):
        raise _fail(label, "history", f"history must be a dict of lists, got {type(out.history).__name__}")
    for key, values in out.history.items():
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise _fail(label, "history", f"history[{key!r}] must be a list of finite floats, got {values!r}")
    if not isinstance(out.info, dict):
        raise _fail(label, "info", f"info must be a dict, got {type(out.info).__name__}")
    return out


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------
def check_dataset(
    spec_or_dataset: Any,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    registry: Registry | None = None,
) -> Any:
    """Load a dataset (name/spec, factory, or object with ``load()``) and check its ``DataSplits``.

    Both splits non-empty; features and labels aligned (same length); int64 labels in
    [0, num_classes); finite float32 features with the same trailing shape in both splits.
    Returns the splits.
    """
    label, build = _builder("dataset", spec_or_dataset, params, registry)
    dataset = _build(label, build, seed)
    if not callable(getattr(dataset, "load", None)):
        raise _fail(label, "has load()", f"{type(dataset).__name__} has no load() -> DataSplits")
    try:
        data = dataset.load()
    except Exception as exc:
        raise _fail(label, "loads", f"{type(exc).__name__}: {exc}") from exc
    for field in ("x_train", "y_train", "x_test", "y_test", "num_classes"):
        if not hasattr(data, field):
            raise _fail(label, "returns DataSplits", f"{type(data).__name__} lacks {field!r}")
    shapes = []
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise _fail(
                label,
                "tensors",
                f"x_{split}/y_{split} must be torch tensors, got {type(x).__name__}/{type(y).__name__}",
            )
        if len(x) == 0:
            raise _fail(label, "non-empty splits", f"the {split} split is empty")
        if len(x) != len(y) or y.dim() != 1:
            raise _fail(label, "aligned features and labels", f"{split}: x {tuple(x.shape)} vs y {tuple(y.shape)}")
        if y.dtype != torch.int64:
            raise _fail(label, "int64 labels", f"y_{split} has dtype {y.dtype}")
        if int(y.min()) < 0 or int(y.max()) >= int(data.num_classes):
            raise _fail(
                label,
                "labels in [0, num_classes)",
                f"y_{split} spans [{int(y.min())}, {int(y.max())}], num_classes={data.num_classes}",
            )
        if x.dtype != torch.float32:
            raise _fail(label, "float32 features", f"x_{split} has dtype {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise _fail(label, "finite features", f"x_{split} holds NaN or inf")
        shapes.append(tuple(x.shape[1:]))
    if shapes[0] != shapes[1]:
        raise _fail(label, "same feature shape in both splits", f"train {shapes[0]} vs test {shapes[1]}")
    return data


# ---------------------------------------------------------------------------------------------
# models and metrics
# ---------------------------------------------------------------------------------------------
#: Input shapes tried, in order, for a model: a vector and a small image; a model must take one of them.
MODEL_SHAPES: tuple[tuple[int, ...], ...] = ((8,), (3, 32, 32))


def check_model(
    spec_or_factory: Any,
    *,
    params: Mapping[str, Any] | None = None,
    in_shapes: Sequence[tuple[int, ...]] = MODEL_SHAPES,
    out_dim: int = 5,
    example_input: torch.Tensor | None = None,
    seed: int = 0,
    registry: Registry | None = None,
) -> None:
    """Build a model ``factory(in_shape, out_dim, **params)`` and check (4, *in_shape) -> (4, out_dim).

    The first of `in_shapes` the model accepts is used (or `example_input`, e.g. indices for a
    lookup table); output finite, gradients of its parameters finite.
    """
    extra = dict(params or {})
    if _is_spec(spec_or_factory):
        name, spec_params = split_spec(spec_or_factory)
        comp = (registry or get_registry()).get("model", name)
        label = f"model {name!r} ({comp.distribution} {comp.version})"
        factory: Callable[..., Any] = comp.factory
        extra = {**spec_params, **extra}
    else:
        label, factory = f"model {getattr(spec_or_factory, '__qualname__', spec_or_factory)!r}", spec_or_factory
    attempts = [(tuple(example_input.shape[1:]), example_input)] if example_input is not None else []
    attempts += [(shape, None) for shape in in_shapes] if example_input is None else []
    errors = []
    for shape, x in attempts:
        torch.manual_seed(seed)
        try:
            model = factory(in_shape=shape, out_dim=out_dim, **extra)
            x = torch.randn(4, *shape) if x is None else x
            y = model(x)
        except Exception as exc:
            errors.append(f"in_shape={shape}: {type(exc).__name__}: {exc}")
            continue
        n = x.shape[0]
        if not isinstance(y, torch.Tensor) or y.shape != (n, out_dim):
            raise _fail(label, "output shape", f"in_shape={shape}: expected ({n}, {out_dim}), got {_shape(y)}")
        if not bool(torch.isfinite(y).all()):
            raise _fail(label, "finite output", f"in_shape={shape}: NaN or inf in the output")
        y.float().square().mean().backward()
        for pname, p in model.named_parameters():
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                raise _fail(label, "finite gradients", f"parameter {pname!r}")
        return
    raise _fail(label, "builds and runs", "; ".join(errors))


def check_metric(
    spec_or_metric: Any,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    registry: Registry | None = None,
) -> float | None:
    """Score a perfect and a random MethodOutput on tiny blobs: a finite float (or None: does not apply), deterministic.

    The metric must have a string ``name`` and a tuple of alternatives ``requires``. Returns the
    perfect output's score.
    """
    from icon_bench.evaluation.metrics import MethodOutput

    label, build = _builder("metric", spec_or_metric, params, registry)
    metric = _build(label, build, seed)
    if not isinstance(getattr(metric, "name", None), str) or not callable(metric):
        raise _fail(label, "is a Metric", f"{type(metric).__name__} needs a str `name` and __call__(output, data)")
    data = make_data(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    outputs = {
        # embeddings = the (well separated) features, clusters = the labels: a metric's best case
        "perfect": MethodOutput(data.x_train[:, :2], data.x_test[:, :2], data.y_train.clone(), data.y_test.clone()),
        "random": MethodOutput(
            torch.randn(len(data.y_train), 2, generator=gen),
            torch.randn(len(data.y_test), 2, generator=gen),
            torch.randint(0, data.num_classes, (len(data.y_train),), generator=gen),
            torch.randint(0, data.num_classes, (len(data.y_test),), generator=gen),
        ),
    }
    scores = {}
    for what, output in outputs.items():
        try:
            first, second = metric(copy.deepcopy(output), data), metric(copy.deepcopy(output), data)
        except Exception as exc:
            raise _fail(label, "runs", f"on a {what} output: {type(exc).__name__}: {exc}") from exc
        for value in (first, second):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(float(value))):
                raise _fail(label, "finite float or None", f"on a {what} output: got {value!r}")
        if first != second:
            raise _fail(label, "deterministic", f"on a {what} output: {first!r} then {second!r}")
        scores[what] = first
    return scores["perfect"]


# ---------------------------------------------------------------------------------------------
# whole plugins
# ---------------------------------------------------------------------------------------------
_CHECKS: dict[str, Callable[..., Any]] = {
    "kernel": check_kernel,
    "divergence": check_divergence,
    "method": check_method,
    "dataset": check_dataset,
    "model": check_model,
    "metric": check_metric,
}


def check(kind: str, spec: Any, **options: Any) -> Any:
    """Run the check for `kind` (one of hookspecs.KINDS) on `spec`; options go to that check."""
    if kind not in _CHECKS:
        from icon_bench.errors import UnknownNameError

        raise UnknownNameError("component kind", kind, _CHECKS)
    return _CHECKS[kind](spec, **options)


def components(
    plugin: str, *, kinds: Iterable[str] = tuple(hookspecs.KINDS), registry: Registry | None = None
) -> list[tuple[str, str]]:
    """``[(kind, name)]`` a plugin (or distribution) registered: handy for ``pytest.mark.parametrize``."""
    reg = registry or get_registry()
    info = _plugin_infos(plugin, reg)
    wanted = set(kinds)
    found = []
    for entry in (c for i in info for c in i.components):
        kind, name = entry.split(":", 1)
        if kind in wanted:
            found.append((kind, name))
    return found


def _normalise(name: str) -> str:
    # PEP 503: "Icon_Bench.Foo" and "icon-bench-foo" name one distribution.
    return re.sub(r"[-_.]+", "-", name).lower()


def _plugin_infos(plugin: str, reg: Registry) -> list[Any]:
    infos = [i for i in reg.plugins.values() if plugin == i.name or _normalise(plugin) == _normalise(i.distribution)]
    if not infos:
        known = sorted({i.name for i in reg.plugins.values()} | {i.distribution for i in reg.plugins.values()})
        raise ConformanceError(
            f"plugin {plugin!r}",
            "is installed",
            f"no plugin or distribution of that name is loaded (known: {', '.join(known)}); install it "
            f"with `pip install -e .` and check its [project.entry-points.icon_bench] table",
        )
    for info in infos:
        if info.status == "failed":
            raise ConformanceError(f"plugin {info.name!r} ({info.distribution} {info.version})", "loads", info.error)
        if info.status == "disabled":
            raise ConformanceError(f"plugin {info.name!r}", "is enabled", "it is listed in ICON_BENCH_DISABLE_PLUGINS")
    return infos


def check_plugin(
    distribution_or_plugin_name: str,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    registry: Registry | None = None,
) -> list[str]:
    """Check every component a plugin registered; returns ``["kind:name", ...]`` checked.

    A component whose factory has required parameters needs them in ``params[name]`` (or
    ``params["kind:name"]``); ``options`` passes extra keyword arguments to that component's check.
    Model factories' ``in_shape`` and ``out_dim`` are supplied by the kit.
    """
    reg = registry or get_registry()
    comps = components(distribution_or_plugin_name, registry=reg)
    if not comps:
        raise ConformanceError(f"plugin {distribution_or_plugin_name!r}", "registers components", "it registered none")
    params, options = dict(params or {}), dict(options or {})
    checked = []
    for kind, name in comps:
        key = f"{kind}:{name}"
        comp = reg.get(kind, name)
        given = dict(params.get(key, params.get(name, {})))
        supplied = {"in_shape", "out_dim"} if kind == "model" else set()
        missing = [p.name for p in comp.params if p.required and p.type != "**" and p.name not in {*given, *supplied}]
        if missing:
            raise ConformanceError(
                f"{kind} {name!r} ({comp.distribution})",
                "can be checked",
                f"required parameters {missing} have no values; pass check_plugin(..., params={{{key!r}: {{...}}}})",
            )
        check(kind, name, params=given, registry=reg, **dict(options.get(key, options.get(name, {}))))
        checked.append(key)
    return checked

"""The loss checks: `check_kernel` (log-probabilities, fast paths, dtypes) and `check_divergence`."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from icon_bench.hooks.registry import Registry
from icon_bench.testing.common import _build, _builder, _devices, _fail
from icon_bench.testing.fixtures import make_batch
from icon_bench.testing.structured import check_divergence_hooks, notice_dense_kernel

__all__ = ["check_divergence", "check_kernel"]


# Tolerances: float32 sums of a few dozen terms are good to ~1e-5; bf16 keeps 8 bits of mantissa.
_TOL_F32 = 1e-4
_TOL_BF16 = 3e-2


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
        if key == keys[-1]:
            notice_dense_kernel(label, kernel)

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
    available) with CPU; its structured hooks (`pointwise` + `f0`, `term_q` / `term_dq`) agree with
    its dense `rows` (testing/structured.py), and without them a DensePathNotice says it trains dense.
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

    call = functools.partial(_call_divergence, div, label)

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
        _check_divergence_devices(label, build, seed, devices, lp, lq, out, what)
    check_divergence_hooks(label, div, cases)


def _call_divergence(div: Any, label: str, lp: torch.Tensor, lq: torch.Tensor, what: str) -> torch.Tensor:
    """``div(lp, lq)``, checked to run and to give one finite value per row."""
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


def _check_divergence_devices(
    label: str,
    build: Callable[[], Any],
    seed: int,
    devices: Sequence[str] | None,
    lp: torch.Tensor,
    lq: torch.Tensor,
    out: torch.Tensor,
    what: str,
) -> None:
    """A freshly built copy on each non-CPU device agrees with the CPU values ``out``."""
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

"""icon-bench-renyi: an example plugin adding the Renyi divergence and a learnable-scale Student-t kernel."""

from __future__ import annotations

from collections.abc import Callable

from icon_bench import hookimpl
from icon_bench_renyi.divergence import Renyi, renyi
from icon_bench_renyi.kernel import LearnableT, learnable_t

__version__ = "0.1.0"
__all__ = ["LearnableT", "Renyi", "learnable_t", "register_divergences", "register_kernels", "renyi"]


@hookimpl
def register_divergences(register: Callable[..., None]) -> None:
    """The Renyi alpha-divergence, as ``renyi`` (alias ``renyi_alpha``)."""
    register("renyi", renyi, aliases=("renyi_alpha",))


@hookimpl
def register_kernels(register: Callable[..., None]) -> None:
    """The learnable-scale Student-t kernel, as ``learnable_t``."""
    register("learnable_t", learnable_t)

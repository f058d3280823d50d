"""The pluggy hook specifications every icon-bench plugin (built-in or third-party) implements."""

from __future__ import annotations

from typing import Any, Callable, Protocol

import pluggy

PROJECT = "icon_bench"
ENTRY_POINT_GROUP = "icon_bench"
#: The tasks loss discovery searches, in the words components use to declare where they fit (a kernel's or a
#: divergence's ``discovery`` attribute): clustering, representation learning, 2-D maps.
DISCOVERY_TASKS: tuple[str, ...] = ("clustering", "representation", "2d")

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The callback each hook receives: ``register(name, factory, description=None, aliases=())``."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        description: str | None = None,
        aliases: tuple[str, ...] = (),
    ) -> None: ...


@hookspec
def register_kernels(register: Register) -> None:
    """Register kernels: factories returning an ``icon_bench.loss.Kernel`` (a p or q distribution)."""


@hookspec
def register_divergences(register: Register) -> None:
    """Register divergences: factories returning an ``icon_bench.loss.Divergence``."""


@hookspec
def register_methods(register: Register) -> None:
    """Register methods: factories returning an ``icon_bench.train.Method`` recipe."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets: factories returning an ``icon_bench.data.Dataset``."""


@hookspec
def register_models(register: Register) -> None:
    """Register models: factories ``(in_shape, out_dim, **params) -> torch.nn.Module``."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register evaluation metrics: factories returning an ``icon_bench.evaluation.Metric``."""


@hookspec
def register_references(register: Register) -> None:
    """Register published reference numbers: zero-argument factories returning a list of ``icon_bench.report.Reference`` (or dicts of its fields)."""


@hookspec
def register_claims(register: Register) -> None:
    """Register claim sets: zero-argument factories returning a list of ``icon_bench.report.Claim`` (or dicts of its fields)."""


@hookspec
def register_backbones(register: Register) -> None:
    """Register backbones: factories returning an ``icon_bench.features.Backbone`` (a frozen image encoder with its preprocessing)."""


# kind (singular, as users name it) -> hook name
KINDS: dict[str, str] = {
    "kernel": "register_kernels",
    "divergence": "register_divergences",
    "method": "register_methods",
    "dataset": "register_datasets",
    "model": "register_models",
    "metric": "register_metrics",
    "reference": "register_references",
    "claim": "register_claims",
    "backbone": "register_backbones",
}

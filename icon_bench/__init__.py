"""icon-bench: a benchmark harness for I-Con losses, with kernels, divergences, methods and datasets as plugins."""

from __future__ import annotations

from typing import Any

from icon_bench._version import __version__
from icon_bench.errors import IconBenchError
from icon_bench.hooks.registry import Component, Registry, create, get_registry, load_registry
from icon_bench.hooks.specs import hookimpl

__all__ = [
    "Component",
    "ICon",
    "IconBenchError",
    "Registry",
    "__version__",
    "dataset",
    "divergence",
    "get_registry",
    "hookimpl",
    "kernel",
    "load_registry",
    "load_results",
    "method",
    "metric",
    "model",
]


def kernel(spec: Any, /, **params: Any) -> Any:
    """A kernel by name: ``kernel("cosine", temperature=0.5)`` or ``kernel(("gaussian", {"sigma": 1}))``."""
    return create("kernel", spec, **params)


def divergence(spec: Any, /, **params: Any) -> Any:
    """A divergence by name: ``divergence("alpha", a=0.5)(log_p, log_q) -> (N,)``."""
    return create("divergence", spec, **params)


def method(spec: Any, /, **params: Any) -> Any:
    """A method recipe by name, with overrides of its defaults."""
    return create("method", spec, **params)


def dataset(spec: Any, /, **params: Any) -> Any:
    """A dataset by name: ``dataset("arrays", path="mnist.npz", features="x_train")``."""
    return create("dataset", spec, **params)


def model(spec: Any, /, **params: Any) -> Any:
    """A model factory's product by name."""
    return create("model", spec, **params)


def metric(spec: Any, /, **params: Any) -> Any:
    """An evaluation metric by name."""
    return create("metric", spec, **params)


def __getattr__(name: str) -> Any:
    # The loss engine pulls in torch; import it on first use so `import icon_bench` stays light.
    if name == "ICon":
        from icon_bench.loss.objective import ICon

        return ICon
    if name == "load_results":  # pandas, likewise
        from icon_bench.report.notebook import load_results

        return load_results
    raise AttributeError(f"module 'icon_bench' has no attribute {name!r}")

"""`Method`, a learned method as data: kernels, divergence, model and settings, overridable piece by piece."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from icon_bench.errors import TrialError
from icon_bench.hooks.registry import split_spec
from icon_bench.train import build, learn

#: Values in recipe parameters resolved when the data is known (``"$num_classes"``, ...).
PLACEHOLDERS = ("$num_classes", "$dim", "$n")

CLUSTER_METRICS = ["hungarian", "nmi", "ari"]
EMBEDDING_METRICS = ["linear_probe", "knn"]
MAP_METRICS = ["knn2d", "trustworthiness"]

#: Method-level knobs a spec may set under "settings" that are not trainer settings.
OPTION_KEYS = frozenset(
    {
        "graph_k",
        "graph_metric",
        "augment",
        "transductive",
        "pca_init",
        "pca_std",
        "cache_p",
        "heads",
        "head_temperature",
        "head_dim",
    }
)

#: Keys of spec["p"] / spec["q"] that are ICon transforms rather than kernel parameters.
_P_TRANSFORMS = {"debias": "p_debias", "propagate": "p_propagate"}
_Q_TRANSFORMS = {"debias": "q_debias"}


@dataclasses.dataclass
class Method:
    """A learned method as data: kernels, divergence, model and defaults, overridable piece by piece.

    ``options`` holds method-level knobs that are not trainer settings (OPTION_KEYS): ``graph_k`` and
    ``graph_metric`` of the global kNN graph computed when the dataset brings none; ``augment``
    (None, "auto" or Augmenter parameters); ``transductive`` (embed train and test together, for
    lookup models); ``pca_init``/``pca_std``. A trial's ``settings`` may set them too.
    """

    name: str
    p: dict[str, Any]
    q: dict[str, Any]
    divergence: Any = "kl"
    model: dict[str, Any] = dataclasses.field(default_factory=lambda: {"name": "auto"})
    out_dim: Any = 128  # int or a placeholder such as "$num_classes"
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    p_debias: float = 0.0
    q_debias: float = 0.0
    p_propagate: int = 0
    metrics: list[str] = dataclasses.field(default_factory=lambda: list(EMBEDDING_METRICS))
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    output: str = "embeddings"  # "embeddings" | "clusters" (argmax of the head gives clusters too)

    # -- overrides ----------------------------------------------------------------------------
    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Method:
        """A copy with a trial spec's ``p``, ``q``, ``model``, ``settings`` and ``divergence`` applied."""
        new = copy.deepcopy(self)
        if not overrides:
            return new
        o = dict(overrides)
        if o.get("p"):
            new.p, transforms = _override_kernel(new.p, o["p"], _P_TRANSFORMS, "p")
            for key, value in transforms.items():
                setattr(new, key, value)
        if o.get("q"):
            new.q, transforms = _override_kernel(new.q, o["q"], _Q_TRANSFORMS, "q")
            for key, value in transforms.items():
                setattr(new, key, value)
        if o.get("model"):
            mo = dict(o["model"])
            if "out_dim" in mo:
                new.out_dim = mo.pop("out_dim")
            if "name" in mo and mo["name"] != new.model.get("name"):
                new.model = {"name": mo.pop("name")}
            new.model.update(mo)
        if o.get("settings"):
            for key, value in dict(o["settings"]).items():
                if key in OPTION_KEYS:
                    new.options[key] = value
                else:
                    new.settings[key] = value
        if o.get("divergence") is not None:
            new.divergence = o["divergence"]
        return new

    def resolved(self) -> dict[str, Any]:
        """The recipe as plain data (recorded in MethodOutput.info)."""
        return {
            "p": self.p,
            "q": self.q,
            "divergence": self.divergence,
            "model": self.model,
            "out_dim": self.out_dim,
            "settings": self.settings,
            "p_debias": self.p_debias,
            "q_debias": self.q_debias,
            "p_propagate": self.p_propagate,
            "options": self.options,
        }

    # -- building and running: the code lives in icon_bench.train.build and icon_bench.train.learn --
    build_loss = build.build_loss
    embedding_dim = build.embedding_dim
    build_model = build.build_model
    run = learn.run

    def components(self) -> dict[str, str]:
        """Names of the p and q kernels, divergence and model, for the result row."""
        return {
            "p": split_spec(self.p)[0],
            "q": split_spec(self.q)[0],
            "divergence": split_spec(self.divergence)[0],
            "model": split_spec(self.model)[0],
        }


# -- helpers ------------------------------------------------------------------------------------
def _override_kernel(
    base: dict[str, Any], override: Any, transforms: dict[str, str], side: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply a spec's p/q override; split off the ICon transforms (debias, propagate)."""
    if isinstance(override, str):
        override = {"name": override}
    if not isinstance(override, Mapping):
        raise TrialError(f"spec[{side!r}] must be a mapping of kernel parameters, got {override!r}")
    params = dict(override)
    found = {attr: params.pop(key) for key, attr in transforms.items() if key in params}
    for key in ("debias", "propagate"):
        if key in params:
            raise TrialError(f"{side}.{key} is not supported on the {side} side (ICon has no {side}_{key})")
    if "name" in params and params["name"] != base.get("name"):
        # Swapping the kernel drops the old kernel's parameters: they may not exist on the new one.
        return params, found
    return {**base, **params}, found

"""`Method`, a learned method as data: kernels, divergence, model and settings, overridable piece by piece."""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from icon_bench.errors import TrialError, UnknownNameError
from icon_bench.hooks.registry import get_registry, split_spec
from icon_bench.hooks.type_names import type_text
from icon_bench.train import build, learn
from icon_bench.train.trainer import Count, NonNegativeFloat, PositiveFloat, PositiveInt, TrainSettings

#: Values in recipe parameters resolved when the data is known (``"$num_classes"``, ...).
PLACEHOLDERS = ("$num_classes", "$dim", "$n")

CLUSTER_METRICS = ["hungarian", "nmi", "ari"]
EMBEDDING_METRICS = ["linear_probe", "knn"]
MAP_METRICS = ["knn2d", "trustworthiness"]

#: Method-level knobs a spec may set under "settings" that are not trainer settings, with their types.
OPTION_TYPES: dict[str, Any] = {
    "graph_k": PositiveInt,
    "graph_metric": Literal["euclidean", "cosine"],
    "augment": Literal["auto", "none"] | bool | dict[str, Any] | None,
    "transductive": bool,
    "pca_init": bool,
    "pca_std": NonNegativeFloat,
    "cache_p": bool,
    "heads": PositiveInt,
    "head_temperature": PositiveFloat | None,
    "head_dim": PositiveInt,
    "seed_independent": bool,
    "propagate_keep": PositiveInt,
}
OPTION_KEYS = frozenset(OPTION_TYPES)

#: Keys of spec["p"] / spec["q"] that are ICon transforms rather than kernel parameters.
_P_TRANSFORMS = {"debias": "p_debias", "propagate": "p_propagate"}
_Q_TRANSFORMS = {"debias": "q_debias"}
#: Their types: debias is alpha in [0, 1] (0 = off), propagate the number of walk steps (0 = off).
TRANSFORM_TYPES: dict[str, Any] = {"debias": Annotated[float, Field(ge=0, le=1)], "propagate": Count}


def setting_types() -> dict[str, Any]:
    """Every key a learned method's ``settings`` may hold -> its type: trainer settings and method options."""
    return {**typing.get_type_hints(TrainSettings, include_extras=True), **OPTION_TYPES}


def kernel_keys(side: str, kernel: Any, base: Mapping[str, Any] | None = None) -> list[str] | None:
    """Keys a spec's ``side`` ("p" or "q") may set on ``kernel``: "name", the kernel's parameters, the
    ICon transforms of that side, and the keys of the recipe's own kernel spec ``base`` (a recipe may
    read extra keys, as dcl reads q.tau_plus); None when the kernel is unknown or takes any keyword.
    """
    try:
        component = get_registry().get("kernel", split_spec(kernel)[0])
    except (UnknownNameError, TypeError):
        return None
    if component.accepts_any:
        return None
    transforms = _P_TRANSFORMS if side == "p" else _Q_TRANSFORMS
    return sorted({"name", *(p.name for p in component.params), *transforms, *(base or {})})


@dataclasses.dataclass
class Method:
    """A learned method as data: kernels, divergence, model and defaults, overridable piece by piece.

    ``options`` holds method-level knobs that are not trainer settings (OPTION_KEYS): ``graph_k`` and
    ``graph_metric`` of the global kNN graph computed when the dataset brings none; ``augment``
    (None, "auto" or Augmenter parameters); ``transductive`` (embed train and test together, for
    lookup models); ``pca_init``/``pca_std``; ``seed_independent`` (False runs every seed of a
    recipe that declares itself ``deterministic``); ``propagate_keep`` (entries kept per row when
    ``p.propagate`` walks the global graph, data/propagate.py). A trial's ``settings`` may set them too.

    ``deterministic`` declares that the recipe draws no random number at its defaults (t-SNE and
    SNE: a PCA-initialised lookup table, full batch, one view), so the seed cannot change its result;
    `seed_independent` says whether that still holds under a trial's overrides.
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
    deterministic: bool = False

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

    @property
    def seed_independent(self) -> bool:
        """True when the seed cannot change this recipe's result: it is declared ``deterministic``, not
        switched off by the ``seed_independent`` option, and nothing overridden draws from the seed."""
        return bool(self.options.get("seed_independent", self.deterministic)) and not self.seeded_parts()

    def seeded_parts(self) -> list[str]:
        """What in this recipe draws random numbers from the trial's seed (empty: nothing does)."""
        s, parts = self.settings, []
        if s.get("batch_size", 256) is not None:
            parts.append("shuffled minibatches (batch_size)")
        # "auto" augments only with several views; Augmenter parameters augment every batch.
        if int(s.get("views", 1) or 1) > 1 or isinstance(self.options.get("augment"), Mapping):
            parts.append("augmented views")
        if int(s.get("neighbors", 0) or 0) > 0:
            parts.append("drawn kNN neighbours")
        model = split_spec(self.model)[0]
        if model != "lookup" or not (self.options.get("pca_init") or "init" in self.model):
            parts.append(f"the random initialisation of model {model!r}")
        return parts

    def setting_types(self) -> dict[str, Any]:
        """The keys this recipe's ``settings`` accepts, with their types (checked when a suite loads)."""
        return setting_types()

    def parameters(self) -> dict[str, tuple[Any, str]]:
        """What a suite (or ``icon_bench.method(name, ...)``) can set, with this recipe's values: name -> (value, type).

        ``p`` and ``q`` hold their ICon transforms as a suite writes them (``p.debias``), ``model``
        its ``out_dim``; then the settings and options the recipe sets itself, then every other
        trainer setting at the trainer's default. `icon-bench plugins` shows these, in this order.
        """
        p = {**self.p, **{k: v for k, v in (("debias", self.p_debias), ("propagate", self.p_propagate)) if v}}
        q = {**self.q, **({"debias": self.q_debias} if self.q_debias else {})}
        out: dict[str, tuple[Any, str]] = {
            "p": (p, "mapping"),
            "q": (q, "mapping"),
            "divergence": (self.divergence, "string | mapping"),
            "model": ({**self.model, "out_dim": self.out_dim}, "mapping"),
        }
        types = setting_types()
        for key, value in {**self.settings, **self.options}.items():
            out[key] = (value, type_text(types.get(key, Any)))
        for field in dataclasses.fields(TrainSettings):
            out.setdefault(field.name, (field.default, type_text(types[field.name])))
        return out

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
    # Checked here, where the transforms are still in the list of known keys ("did you mean 'debias'?").
    kernel = params if "name" in params else base
    known = kernel_keys(side, kernel, base)
    for key in params:
        if known is not None and key not in known:
            where = f"{side} kernel {split_spec(kernel)[0]!r}"
            raise UnknownNameError("parameter", key, known, where=where)
    if "name" in params and params["name"] != base.get("name"):
        # Swapping the kernel drops the old kernel's parameters: they may not exist on the new one.
        return params, found
    return {**base, **params}, found

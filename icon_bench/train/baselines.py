"""The non-learned clustering baselines (k-means, spectral clustering) from scikit-learn."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from icon_bench.hooks.type_names import type_text
from icon_bench.train.recipe import CLUSTER_METRICS, OPTION_KEYS, setting_types

if TYPE_CHECKING:
    from icon_bench.data.splits import DataSplits
    from icon_bench.evaluation.metrics import MethodOutput


# -- baselines ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Baseline:
    """A non-learned clustering baseline from scikit-learn, seeded; clusters for both splits."""

    name: str
    params: dict[str, Any]
    types: dict[str, Any] = dataclasses.field(default_factory=dict)  # param -> type, checked when a suite loads
    metrics: list[str] = dataclasses.field(default_factory=lambda: list(CLUSTER_METRICS))
    description: str = ""
    ignored: dict[str, Any] = dataclasses.field(default_factory=dict)  # trainer settings set aside

    @property
    def divergence(self) -> None:
        return None

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Baseline:
        from icon_bench.train.trainer import TrainSettings

        # A suite's shared trainer settings (epochs, lr, ...) mean nothing to a non-learned
        # baseline: they are set aside, so one `settings` block can serve a whole grid, while a
        # name that is neither a trainer setting nor the baseline's own is still an error.
        learned_only = {f.name for f in dataclasses.fields(TrainSettings)} | OPTION_KEYS
        new = copy.deepcopy(self)
        for key, value in dict((overrides or {}).get("settings") or {}).items():
            if key in learned_only and key not in new.params:
                new.ignored[key] = value
                continue
            if key not in new.params:
                from icon_bench.errors import UnknownNameError

                raise UnknownNameError("setting", key, new.params, where=f"baseline {self.name!r}")
            new.params[key] = value
        return new

    def setting_types(self) -> dict[str, Any]:
        """Keys a spec's ``settings`` may hold -> type: the baseline's parameters, and the learned methods'
        settings (set aside here, but still of their types: one settings block serves a whole grid)."""
        return {**setting_types(), **{k: self.types.get(k, Any) for k in self.params}}

    def resolved(self) -> dict[str, Any]:
        """The baseline's parameters as plain data (recorded in result rows)."""
        return {"params": self.params}

    def parameters(self) -> dict[str, tuple[Any, str]]:
        """What a suite's ``settings`` can set: name -> (default, type); ``n_clusters: null`` = the classes."""
        return {k: (v, type_text(self.types.get(k, Any))) for k, v in self.params.items()}

    def components(self) -> dict[str, str]:
        return {"model": f"sklearn.{self.name}"}

    def memory_parts(self, rows: int, features: int, classes: int) -> dict[str, int]:
        """Bytes beyond the data that a fit on ``rows`` x ``features`` holds at its peak (the plan-time
        memory check reads them). Spectral clustering's ARPACK eigensolver keeps a Lanczos basis of
        min(rows, max(2k + 1, 20)) float64 vectors of every row (scipy's eigsh default, k the
        clusters): 18 GB for ImageNet's 1.15 M train rows and 1,000 clusters; k-means holds a few
        chunks of distances, nothing that grows with the rows beyond the labels."""
        k = int(self.params.get("n_clusters") or classes)
        if self.name != "spectral":
            return {"labels": rows * 8}
        basis = min(rows, max(2 * k + 1, 20)) * rows * 8
        affinity = rows * int(self.params["n_neighbors"]) * 2 * 12  # symmetrised sparse kNN graph
        return {"eigensolver": basis, "affinity": affinity}

    def run(
        self,
        data: DataSplits,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        overrides: Mapping[str, Any] | None = None,
        progress: bool = False,
    ) -> MethodOutput:
        from icon_bench.evaluation.metrics import MethodOutput

        recipe = self.with_overrides(overrides)
        xtr, xva, xte = (_flat(getattr(data, f"x_{s}")) for s in ("train", "val", "test"))
        k = int(recipe.params.get("n_clusters") or data.num_classes)
        if self.name == "kmeans":
            from sklearn.cluster import KMeans

            km = KMeans(n_clusters=k, n_init=int(recipe.params["n_init"]), random_state=seed).fit(xtr)
            assign = km.predict
            c_train = km.labels_
            info: dict[str, Any] = {"inertia": float(km.inertia_), "test_assignment": "kmeans.predict"}
        else:
            from sklearn.cluster import SpectralClustering
            from sklearn.neighbors import KNeighborsClassifier

            nn_k = int(recipe.params["n_neighbors"])
            sc = SpectralClustering(
                n_clusters=k,
                affinity="nearest_neighbors",
                n_neighbors=nn_k,
                assign_labels=str(recipe.params["assign_labels"]),
                random_state=seed,
            ).fit(xtr)
            c_train = sc.labels_
            # Spectral clustering has no out-of-sample map: test points take the majority cluster
            # of their nearest training points (fit on train, assign test by kNN vote).
            assign = KNeighborsClassifier(n_neighbors=nn_k).fit(xtr, c_train).predict
            info = {"test_assignment": f"{nn_k}-NN vote of train clusters"}
        # A transductive dataset's test split is its train rows: their clusters are the fit's own.
        c_test = c_train if data.meta.get("transductive") else assign(xte)
        c_val = assign(xva) if len(xva) else np.zeros(0, dtype=np.int64)
        info.update({"params": {**recipe.params, "n_clusters": k}, "stop_reason": "completed"})
        if recipe.ignored:
            info["ignored_settings"] = dict(recipe.ignored)
        return MethodOutput(
            train_embeddings=None,
            test_embeddings=None,
            train_clusters=torch.as_tensor(np.asarray(c_train), dtype=torch.long),
            test_clusters=torch.as_tensor(np.asarray(c_test), dtype=torch.long),
            val_clusters=torch.as_tensor(np.asarray(c_val), dtype=torch.long),
            history={},
            info=info,
        )


def _flat(x: torch.Tensor) -> np.ndarray:
    # Explicit width: reshape(0, -1) is ambiguous for a split without rows.
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:]))).float().cpu().numpy()

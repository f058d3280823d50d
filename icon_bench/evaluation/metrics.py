"""`MethodOutput`, the `Metric` base, the scoring functions and the built-in metrics with their factories."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from icon_bench.data.splits import DataSplits

__all__ = ["DEFAULT_METRICS", "MethodOutput", "Metric", "hungarian_accuracy", "knn_accuracy", "linear_probe_accuracy"]


@dataclasses.dataclass
class MethodOutput:
    """What a method hands to evaluation: embeddings and/or cluster assignments of each split."""

    train_embeddings: Tensor | None  # (n_train, d)
    test_embeddings: Tensor | None  # (n_test, d)
    train_clusters: Tensor | None  # (n_train,) int64, for methods with a clustering head
    test_clusters: Tensor | None
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # e.g. {"loss": per epoch}
    info: dict = dataclasses.field(default_factory=dict)  # epochs run, stop reason, resolved hyperparameters
    val_embeddings: Tensor | None = None  # (n_val, d); None when the method does not embed val
    val_clusters: Tensor | None = None
    # Results shared between metrics of one evaluation (the k-means clustering); not part of the contract.
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)


class Metric:
    """A protocol metric: `name`, the MethodOutput fields it `requires`, its `settings`; call -> float or None.

    `requires` lists alternatives: the metric applies when every field of at least one
    alternative is present. A metric returns None when it does not apply (e.g. knn2d on a
    10-D embedding).

    Two declarations tell reports how to rank and show the values (recorded in each row's protocol,
    outside the version hash): `higher_is_better` (False: smaller values rank first, e.g. a
    distortion) and `fraction` (values are fractions in [0, 1], shown x100; False: shown as they
    are). Every built-in keeps both defaults (ARI, which can dip below 0, is still a fraction).
    """

    name: str = ""
    requires: tuple[tuple[str, ...], ...] = ()
    settings: dict[str, Any] = {}
    higher_is_better: bool = True
    fraction: bool = True

    def applies(self, output: MethodOutput) -> bool:
        return any(all(getattr(output, f, None) is not None for f in alt) for alt in self.requires)

    def __call__(self, output: MethodOutput, data: DataSplits) -> float | None:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.settings})"


# --------------------------------------------------------------------------------------------
# Plain functions (usable without the protocol objects)
# --------------------------------------------------------------------------------------------


def _np(x: Tensor | np.ndarray | Iterable[Any]) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def hungarian_accuracy(y_true: Tensor | np.ndarray, y_pred: Tensor | np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of predicted clusters to classes.

    The confusion matrix is clusters x classes; with more clusters than classes the unmatched
    clusters' points count as errors.
    """
    from scipy.optimize import linear_sum_assignment

    t, p = _np(y_true).ravel(), _np(y_pred).ravel()
    if len(t) != len(p):
        raise ValueError(f"hungarian_accuracy: {len(t)} labels but {len(p)} predictions")
    if len(t) == 0:
        raise ValueError("hungarian_accuracy: no points")
    classes, ti = np.unique(t, return_inverse=True)
    clusters, pi = np.unique(p, return_inverse=True)
    confusion = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(confusion, (pi, ti), 1)
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    return float(confusion[rows, cols].sum() / len(t))


@torch.no_grad()
def knn_accuracy(
    train: Tensor,
    y_train: Tensor,
    test: Tensor,
    y_test: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> float:
    """Weighted kNN accuracy (the DINO protocol): cosine similarity, votes weighted by exp(sim / T).

    Train rows are the bank, test rows the queries; computed in query chunks on the tensors' device.
    """
    bank = torch.nn.functional.normalize(train.reshape(len(train), -1).float(), dim=1)
    queries = torch.nn.functional.normalize(test.reshape(len(test), -1).float().to(bank.device), dim=1)
    labels = y_train.to(bank.device).long()
    c = int(num_classes or int(torch.cat([y_train.cpu(), y_test.cpu()]).max()) + 1)
    k = min(k, len(bank))
    correct = 0
    y_test = y_test.to(bank.device)
    for start in range(0, len(queries), chunk_size):
        sim = queries[start : start + chunk_size] @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(len(sim), c, device=bank.device).scatter_add_(1, labels[top_idx], weights)
        correct += int((votes.argmax(1) == y_test[start : start + chunk_size]).sum())
    return correct / len(queries)


def linear_probe_accuracy(
    train: Tensor, y_train: Tensor, test: Tensor, y_test: Tensor, C: float = 1.0, max_iter: int = 1000
) -> float:
    """Test accuracy of a multinomial logistic regression on frozen features standardised on train."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr = _np(train).reshape(len(train), -1).astype(np.float64)
    xte = _np(test).reshape(len(test), -1).astype(np.float64)
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings():
        # A probe that stops at max_iter is still the protocol's probe: the setting is recorded.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(xtr), _np(y_train))
    return float(clf.score(scaler.transform(xte), _np(y_test)))


# --------------------------------------------------------------------------------------------
# Protocol metrics
# --------------------------------------------------------------------------------------------


def _test_clusters(output: MethodOutput, data: DataSplits, n_init: int, seed: int) -> np.ndarray:
    """The scored split's clusters (the test slots), else k-means (n_clusters = num_classes) on its embeddings."""
    if output.test_clusters is not None:
        return _np(output.test_clusters).ravel()
    key = ("kmeans", n_init, seed, id(output.test_embeddings))
    if key not in output._cache:
        from sklearn.cluster import KMeans

        emb = _np(output.test_embeddings).reshape(len(output.test_embeddings), -1).astype(np.float64)
        km = KMeans(n_clusters=data.num_classes, n_init=n_init, random_state=seed)
        output._cache[key] = km.fit_predict(emb)
    return output._cache[key]


class _ClusterMetric(Metric):
    requires = (("test_clusters",), ("test_embeddings",))

    def __init__(self, name: str, score: Callable[[np.ndarray, np.ndarray], float], n_init: int, seed: int) -> None:
        self.name, self._score = name, score
        self.settings = {"kmeans_if_no_clusters": True, "kmeans_n_init": n_init, "kmeans_seed": seed}

    def __call__(self, output: MethodOutput, data: DataSplits) -> float | None:
        if not self.applies(output):
            return None
        pred = _test_clusters(output, data, self.settings["kmeans_n_init"], self.settings["kmeans_seed"])
        return float(self._score(_np(data.y_test), pred))

    def chance(self, output: MethodOutput, data: DataSplits, repeats: int = 20, seed: int = 0) -> float | None:
        """The metric's label-permutation baseline: its 95th percentile over `repeats` shuffles of the labels.

        The clusters stay as the method made them; shuffling the labels keeps their counts and breaks
        any link to the clusters, so a method not above this level found no structure the labels share.
        """
        if not self.applies(output):
            return None
        pred = _test_clusters(output, data, self.settings["kmeans_n_init"], self.settings["kmeans_seed"])
        y = _np(data.y_test).ravel()
        rng = np.random.default_rng(seed)
        return float(np.percentile([self._score(rng.permutation(y), pred) for _ in range(repeats)], 95))


class _EmbeddingMetric(Metric):
    requires = (("train_embeddings", "test_embeddings"),)

    def __init__(self, name: str, fn: Callable[..., float], **settings: Any) -> None:
        self.name, self._fn, self.settings = name, fn, settings

    def __call__(self, output: MethodOutput, data: DataSplits) -> float | None:
        if not self.applies(output):
            return None
        bank, labels = output.train_embeddings, data.y_train
        if data.meta.get("unlabelled_rows"):
            # Train rows without a label (-1: STL-10's unlabelled images) cannot vote or fit a probe.
            keep = labels >= 0
            bank, labels = bank[keep.to(bank.device)], labels[keep]
        return float(self._fn(bank, labels, output.test_embeddings, data.y_test, **self._kwargs(data)))

    def _kwargs(self, data: DataSplits) -> dict[str, Any]:
        return {k: v for k, v in self.settings.items() if k != "features"}


class _KnnMetric(_EmbeddingMetric):
    def _kwargs(self, data: DataSplits) -> dict[str, Any]:
        return {**super()._kwargs(data), "num_classes": data.num_classes}


def _is_2d(output: MethodOutput) -> bool:
    e = output.test_embeddings
    return e is not None and e.dim() == 2 and e.shape[1] == 2


class _Knn2d(Metric):
    requires = (("test_embeddings",),)

    def __init__(self, k: int) -> None:
        self.name = "knn2d"
        self.settings = {"k": k, "scheme": "leave-one-out", "metric": "euclidean", "vote": "majority"}

    def __call__(self, output: MethodOutput, data: DataSplits) -> float | None:
        if not _is_2d(output):
            return None
        from sklearn.neighbors import NearestNeighbors

        emb = _np(output.test_embeddings).astype(np.float64)
        y = _np(data.y_test)
        k = min(self.settings["k"], len(emb) - 1)
        if k < 1:
            return None
        _, idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb)
        neigh = _drop_self(idx, k)
        votes = np.zeros((len(emb), int(y.max()) + 1), dtype=np.int64)
        np.add.at(votes, (np.repeat(np.arange(len(emb)), k), y[neigh].ravel()), 1)
        return float((votes.argmax(1) == y).mean())


def _drop_self(idx: np.ndarray, k: int) -> np.ndarray:
    """k neighbours per row from k+1 that usually include the row itself (not always first, with duplicates)."""
    rows = np.arange(len(idx))[:, None]
    is_self = idx == rows
    # Rows where self was not returned (k+1 exact duplicates) drop their last neighbour instead.
    is_self[~is_self.any(1), -1] = True
    return idx[~is_self].reshape(len(idx), k)


class _Trustworthiness(Metric):
    requires = (("test_embeddings",),)

    def __init__(self, k: int, max_points: int, seed: int) -> None:
        self.name = "trustworthiness"
        self.settings = {"k": k, "max_points": max_points, "seed": seed, "inputs": "features of the scored split"}

    def __call__(self, output: MethodOutput, data: DataSplits) -> float | None:
        if not _is_2d(output):
            return None
        from sklearn.manifold import trustworthiness

        x = _np(data.x_test).reshape(len(data.x_test), -1).astype(np.float64)
        emb = _np(output.test_embeddings).astype(np.float64)
        n = len(x)
        if n > self.settings["max_points"]:
            pick = np.sort(np.random.default_rng(self.settings["seed"]).choice(n, self.settings["max_points"], replace=False))
            x, emb = x[pick], emb[pick]
        k = self.settings["k"]
        if k >= len(x) / 2:
            return None  # scikit-learn requires n_neighbors < n_samples / 2
        return float(trustworthiness(x, emb, n_neighbors=k))


# --------------------------------------------------------------------------------------------
# Factories (registered) and the protocol
# --------------------------------------------------------------------------------------------


def hungarian(kmeans_n_init: int = 10, kmeans_seed: int = 0) -> Metric:
    """Hungarian-matched clustering accuracy on the scored split (k-means on its embeddings when no clusters)."""
    return _ClusterMetric("hungarian", hungarian_accuracy, kmeans_n_init, kmeans_seed)


def nmi(kmeans_n_init: int = 10, kmeans_seed: int = 0) -> Metric:
    """Normalised mutual information of the scored split's clusters and classes (scikit-learn, arithmetic mean)."""
    from sklearn.metrics import normalized_mutual_info_score

    return _ClusterMetric("nmi", normalized_mutual_info_score, kmeans_n_init, kmeans_seed)


def ari(kmeans_n_init: int = 10, kmeans_seed: int = 0) -> Metric:
    """Adjusted Rand index of the scored split's clusters and classes (scikit-learn)."""
    from sklearn.metrics import adjusted_rand_score

    return _ClusterMetric("ari", adjusted_rand_score, kmeans_n_init, kmeans_seed)


def linear_probe(C: float = 1.0, max_iter: int = 1000) -> Metric:
    """Scored-split accuracy of multinomial logistic regression fitted on frozen, standardised train embeddings."""
    return _EmbeddingMetric("linear_probe", linear_probe_accuracy, C=float(C), max_iter=int(max_iter))


def knn(k: int = 20, temperature: float = 0.07) -> Metric:
    """Weighted kNN accuracy (cosine, exp(sim / T) votes; DINO): train bank, scored-split queries."""
    return _KnnMetric("knn", knn_accuracy, k=int(k), temperature=float(temperature))


def knn2d(k: int = 10) -> Metric:
    """Leave-one-out k-NN accuracy inside the scored split's 2-D embedding (only for 2-D embeddings)."""
    return _Knn2d(int(k))


def trustworthiness(k: int = 10, max_points: int = 2000, seed: int = 0) -> Metric:
    """Trustworthiness (scikit-learn, k neighbours) of the scored split's 2-D embedding against its inputs."""
    return _Trustworthiness(int(k), int(max_points), int(seed))


_FACTORIES: dict[str, Callable[..., Metric]] = {
    "hungarian": hungarian,
    "nmi": nmi,
    "ari": ari,
    "linear_probe": linear_probe,
    "knn": knn,
    "knn2d": knn2d,
    "trustworthiness": trustworthiness,
}

#: The metrics `evaluate` runs when none are named (each only where it applies).
DEFAULT_METRICS: tuple[str, ...] = tuple(_FACTORIES)

"""Evaluation protocol: metrics against brute force and scikit-learn, applicability, and the protocol version."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import trustworthiness as sk_trustworthiness
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

import icon_bench
from icon_bench.data.splits import DataSplits
from icon_bench.errors import IconBenchError
from icon_bench.evaluation import (
    DEFAULT_METRICS,
    PROTOCOL_VERSION,
    MethodOutput,
    Metric,
    evaluate,
    hungarian_accuracy,
    knn_accuracy,
    linear_probe_accuracy,
    protocol,
    protocol_settings,
    protocol_version,
)


def _brute_force(y: np.ndarray, pred: np.ndarray) -> float:
    """Best accuracy over every injective map from clusters to classes (unmatched clusters wrong)."""
    clusters, classes = np.unique(pred), np.unique(y)
    best = 0
    if len(clusters) <= len(classes):
        for perm in itertools.permutations(classes, len(clusters)):
            best = max(best, sum(int(((pred == c) & (y == k)).sum()) for c, k in zip(clusters, perm)))
    else:
        for chosen in itertools.permutations(clusters, len(classes)):
            best = max(best, sum(int(((pred == c) & (y == k)).sum()) for c, k in zip(chosen, classes)))
    return best / len(y)


@pytest.mark.parametrize(("n_clusters", "n_classes"), [(3, 3), (4, 4), (6, 3), (2, 4), (5, 5)])
def test_hungarian_matches_brute_force(n_clusters: int, n_classes: int) -> None:
    rng = np.random.default_rng(n_clusters * 10 + n_classes)
    for _ in range(5):
        y = rng.integers(0, n_classes, 40)
        pred = rng.integers(0, n_clusters, 40) + 7  # arbitrary cluster ids
        assert hungarian_accuracy(y, pred) == pytest.approx(_brute_force(y, pred))
    y = np.array([0, 0, 1, 1, 2, 2])
    assert hungarian_accuracy(torch.tensor(y), torch.tensor([5, 5, 3, 3, 9, 9])) == 1.0
    # Six singleton clusters for three classes: only three points can be matched.
    assert hungarian_accuracy(y, np.arange(6)) == 0.5


def _numpy_dino_knn(train: np.ndarray, ytr: np.ndarray, test: np.ndarray, k: int, t: float, c: int) -> np.ndarray:
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    preds = []
    for row in b @ a.T:
        top = np.argsort(-row, kind="stable")[:k]
        votes = np.zeros(c)
        np.add.at(votes, ytr[top], np.exp(row[top] / t))
        preds.append(votes.argmax())
    return np.array(preds)


def _features(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 8)) * 1.5
    ytr, yte = rng.integers(0, 4, 300), rng.integers(0, 4, 120)
    xtr = centers[ytr] + rng.normal(size=(300, 8))
    xte = centers[yte] + rng.normal(size=(120, 8))
    return xtr.astype(np.float32), ytr, xte.astype(np.float32), yte


def test_knn_matches_independent_references() -> None:
    xtr, ytr, xte, yte = _features()
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    ours = knn_accuracy(t(xtr), t(ytr), t(xte), t(yte), k=20, temperature=0.07, chunk_size=17)
    ref_pred = _numpy_dino_knn(xtr, ytr, xte, 20, 0.07, 4)
    assert ours == pytest.approx((ref_pred == yte).mean(), abs=1 / 120 + 1e-9)
    # scikit-learn with cosine distance and the same exp(sim / T) weights.
    sk = KNeighborsClassifier(n_neighbors=20, metric="cosine", weights=lambda d: np.exp((1 - d) / 0.07))
    sk_acc = sk.fit(xtr, ytr).score(xte, yte)
    assert abs(ours - sk_acc) <= 0.01
    assert 0.5 < ours <= 1.0


def test_linear_probe_matches_sklearn() -> None:
    xtr, ytr, xte, yte = _features(1)
    ours = linear_probe_accuracy(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte))
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(xtr), ytr)
    assert abs(ours - clf.score(scaler.transform(xte), yte)) <= 0.01


def _data(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> DataSplits:
    t = torch.from_numpy
    return DataSplits(t(xtr), t(ytr).long(), t(xte), t(yte).long(), num_classes=4, name="toy", meta={})


def test_evaluate_on_val_scores_val_queries_against_the_train_bank() -> None:
    xtr, ytr, xte, yte = _features(3)
    xva, yva = xte[:30] + 0.25, yte[:30]
    data = DataSplits(*(torch.from_numpy(a) for a in (xtr, ytr, xte, yte)), num_classes=4, name="toy", meta={},
                      x_val=torch.from_numpy(xva), y_val=torch.from_numpy(yva))
    clusters = torch.from_numpy(yva.copy())
    clusters[:5] = (clusters[:5] + 1) % 4  # five of thirty wrong: hungarian 25/30 on val
    out = MethodOutput(torch.from_numpy(xtr), torch.from_numpy(xte), None, None,
                       val_embeddings=torch.from_numpy(xva), val_clusters=clusters)
    got = evaluate(out, data, ["knn", "hungarian"], split="val")
    ref = knn_accuracy(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xva), torch.from_numpy(yva),
                       num_classes=4)
    assert got["knn"] == pytest.approx(ref) and got["hungarian"] == pytest.approx(25 / 30)
    assert evaluate(out, data, ["knn"])["knn"] != pytest.approx(ref)  # the default still scores test
    with pytest.raises(IconBenchError, match="no val embeddings or clusters"):
        evaluate(MethodOutput(torch.from_numpy(xtr), torch.from_numpy(xte), None, None), data, ["knn"], split="val")
    with pytest.raises(IconBenchError, match="no val split"):
        evaluate(out, _data(xtr, ytr, xte, yte), ["knn"], split="val")


def test_cluster_metrics_use_method_clusters_or_seeded_kmeans() -> None:
    xtr, ytr, xte, yte = _features(2)
    data = _data(xtr, ytr, xte, yte)
    out = MethodOutput(torch.from_numpy(xtr), torch.from_numpy(xte), None, None)
    got = evaluate(out, data, ["hungarian", "nmi", "ari"])
    km = KMeans(n_clusters=4, n_init=10, random_state=0).fit_predict(xte.astype(np.float64))
    assert got["hungarian"] == pytest.approx(hungarian_accuracy(yte, km))
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(yte, km))
    assert got["ari"] == pytest.approx(adjusted_rand_score(yte, km))
    # Given clusters win over k-means, and embeddings are then not needed.
    clusters = torch.from_numpy((yte + 1) % 4)
    exact = evaluate(MethodOutput(None, None, None, clusters), data, ["hungarian", "nmi", "ari", "knn"])
    assert exact == {"hungarian": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}


def test_2d_metrics_apply_only_to_2d_embeddings() -> None:
    xtr, ytr, xte, yte = _features(3)
    data = _data(xtr, ytr, xte, yte)
    high = MethodOutput(torch.from_numpy(xtr), torch.from_numpy(xte), None, None)
    assert set(evaluate(high, data)) == {"hungarian", "nmi", "ari", "linear_probe", "knn"}
    emb = xte[:, :2].copy()
    flat = MethodOutput(torch.from_numpy(xtr[:, :2].copy()), torch.from_numpy(emb), None, None)
    got = evaluate(flat, data, ["knn2d", "trustworthiness"])
    assert got["trustworthiness"] == pytest.approx(sk_trustworthiness(xte, emb, n_neighbors=10))
    # Leave-one-out 10-NN in 2-D, against scikit-learn's classifier queried with k + 1 neighbours.
    idx = KNeighborsClassifier().fit(emb, yte).kneighbors(emb, n_neighbors=11, return_distance=False)
    loo = np.array([np.bincount(yte[[j for j in row if j != i][:10]], minlength=4).argmax() for i, row in enumerate(idx)])
    assert got["knn2d"] == pytest.approx((loo == yte).mean())


def test_trustworthiness_subsamples_large_sets() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2500, 5)).astype(np.float32)
    y = rng.integers(0, 4, 2500)
    data = _data(x[:10], y[:10], x, y)
    metric = icon_bench.metric("trustworthiness", max_points=300)
    value = metric(MethodOutput(None, torch.from_numpy(x[:, :2].copy()), None, None), data)
    pick = np.sort(np.random.default_rng(0).choice(2500, 300, replace=False))
    assert value == pytest.approx(sk_trustworthiness(x[pick], x[pick, :2], n_neighbors=10))


def test_protocol_version_tracks_settings() -> None:
    assert PROTOCOL_VERSION == "2"
    default = protocol()
    assert default["version"] == "2" and protocol_version() == "2"
    assert default["settings"]["knn"] == {"k": 20, "temperature": 0.07}
    assert default["settings"]["linear_probe"] == {"C": 1.0, "max_iter": 1000}
    assert protocol(["hungarian", "knn"])["version"] == "2"  # a subset of default metrics stays "2"
    custom = protocol(["hungarian", {"name": "knn", "k": 10}])
    assert custom["version"].startswith("2+") and custom["version"] != "2"
    assert custom["settings"]["knn"]["k"] == 10
    assert protocol([{"name": "knn", "k": 10}])["version"] == custom["version"]
    assert protocol([{"name": "knn", "k": 30}])["version"] != custom["version"]
    assert protocol([{"name": "knn", "temperature": 0.1}])["version"] not in ("2", custom["version"])
    settings = protocol_settings()
    settings["hungarian"] = {**settings["hungarian"], "kmeans_n_init": 3}
    assert protocol_version(settings).startswith("2+")


def test_split_settings_are_part_of_the_protocol_version() -> None:
    default = protocol(["hungarian"])
    assert default["settings"]["splits"] == {"val_fraction": 0.1, "val_seed": 0, "transductive": False}
    assert default["split"] == "test" and protocol(["hungarian"], split="val")["version"] == "2"
    # A dataset entry's options are the split settings; the defaults spelled out change nothing.
    assert protocol(["hungarian"], splits={"name": "digits", "val_fraction": 0.1})["version"] == "2"
    versions = {
        protocol(["hungarian"], splits=s)["version"]
        for s in ({"val_fraction": 0.2}, {"val_seed": 1}, {"transductive": True}, {"val_fraction": 0.0})
    }
    assert len(versions) == 4 and all(v.startswith("2+") for v in versions)
    transductive = protocol(["hungarian"], splits={"transductive": True})["settings"]["splits"]
    assert transductive == {"val_fraction": 0.0, "val_seed": 0, "transductive": True}
    with pytest.raises(IconBenchError, match="split must be one of test, val"):
        protocol(["hungarian"], split="train")


def test_metric_objects_describe_themselves() -> None:
    for name in ("hungarian", "nmi", "ari", "linear_probe", "knn", "knn2d", "trustworthiness"):
        m = icon_bench.metric(name)
        assert m.name == name and isinstance(m.settings, dict) and m.requires
    with pytest.raises(KeyError, match="did you mean 'hungarian'"):
        evaluate(MethodOutput(None, None, None, None), _data(*_features()), ["hungarain"])


class _Distortion(Metric):
    name = "distortion"
    requires = (("test_embeddings",),)
    settings = {"k": 5}
    higher_is_better = False
    fraction = False

    def __call__(self, output: MethodOutput, data: DataSplits) -> float | None:
        return 0.5


def test_protocol_records_metric_kinds_outside_the_version() -> None:
    from icon_bench.report.model import TASKS

    builtins = protocol()["metrics"]
    assert set(builtins) == set(DEFAULT_METRICS)
    # Every built-in is a higher-is-better fraction; the cross-suite index (TASKS) relies on it.
    assert all(kind == {"higher_is_better": True, "fraction": True} for kind in builtins.values())
    assert {m for names in TASKS.values() for m in names} <= set(builtins)
    assert protocol()["version"] == "2"

    record = protocol(["hungarian", _Distortion()])
    assert record["metrics"]["distortion"] == {"higher_is_better": False, "fraction": False}
    assert record["metrics"]["hungarian"] == {"higher_is_better": True, "fraction": True}
    assert set(record) == {"version", "split", "settings", "metrics"}

    class _Flipped(_Distortion):
        higher_is_better = True
        fraction = True

    class _Finer(_Distortion):
        settings = {"k": 6}

    # How to read values is not how they were measured: the version ignores the kinds, not the settings.
    version = protocol([_Distortion()])["version"]
    assert version == protocol_version({"distortion": {"k": 5}}) and version.startswith("2+")
    assert protocol([_Flipped()])["version"] == version
    assert protocol([_Finer()])["version"] != version

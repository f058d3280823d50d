"""What the data cannot tell, said plainly: near-collapse, chance level, and tuning that could not choose."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from icon_bench.evaluation.health import NEAR_COLLAPSE, chance_levels, near_collapse_warnings
from icon_bench.evaluation.metrics import MethodOutput
from icon_bench.report.build import aggregate
from icon_bench.report.formatting import AT_CHANCE
from icon_bench.run.tuning.candidates import resolution, select


def _labels(n: int = 2310, classes: int = 10) -> torch.Tensor:
    return torch.arange(n) % classes


def test_near_collapse_flags_one_cluster_holding_most_points() -> None:
    y = _labels()
    clusters = torch.zeros(2310, dtype=torch.long)
    clusters[:265] = torch.arange(265) % 9 + 1  # 2,045 of 2,310 points in cluster 0, the rest spread over nine
    (warning,) = near_collapse_warnings(clusters, y)
    assert warning.startswith(f"{NEAR_COLLAPSE}: the largest cluster holds 2045 of 2310")
    assert near_collapse_warnings(y.clone(), y) == []  # a perfect clustering
    # Imbalanced classes (90 / 10): clusters that follow them are not a collapse.
    y2 = torch.tensor([0] * 900 + [1] * 100)
    assert near_collapse_warnings(y2.clone(), y2) == []
    # Few clusters really used: 10 classes in 3 clusters (effective number 3 < 5).
    assert near_collapse_warnings(torch.arange(2310) % 3, y)


def _output(clusters: torch.Tensor) -> MethodOutput:
    return MethodOutput(train_embeddings=None, test_embeddings=None, train_clusters=None, test_clusters=clusters)


class _Data:  # the two fields the cluster metrics read
    def __init__(self, y: torch.Tensor) -> None:
        self.y_test, self.num_classes = y, int(y.max()) + 1


def test_chance_levels_are_the_metrics_on_shuffled_labels() -> None:
    from sklearn.metrics import normalized_mutual_info_score

    y = _labels(500)
    levels = chance_levels(_output(y.clone()), _Data(y), ["hungarian", "nmi", "ari"])
    assert set(levels) == {"hungarian", "nmi", "ari"}
    assert 0.1 <= levels["hungarian"] < 0.2  # 10 balanced classes: a bit above 1/10 after matching
    assert 0.0 < levels["nmi"] < 0.05 and abs(levels["ari"]) < 0.02
    rng = np.random.default_rng(0)  # the 95th percentile over 20 shuffles, as recorded
    by_hand = np.percentile([normalized_mutual_info_score(rng.permutation(y.numpy()), y.numpy()) for _ in range(20)],
                            95)
    assert levels["nmi"] == pytest.approx(by_hand)


def _row(method: str, seed: int, value: float, chance: float) -> dict:
    return {"trial_id": f"{method}-{seed}", "config_id": method, "method": method, "dataset": "digits", "seed": seed,
            "spec": {"method": method, "dataset": {"name": "digits"}, "seed": seed}, "status": "ok",
            "divergence": "default", "metrics": {"hungarian": value}, "chance": {"hungarian": chance},
            "protocol": {"version": "2", "metrics": {"hungarian": {"higher_is_better": True, "fraction": True}}}}


def test_a_configuration_at_chance_is_marked_and_not_ranked() -> None:
    rows = [_row("pmi", s, 0.80 + s / 100, 0.13) for s in range(3)] + \
        [_row("kmeans", s, 0.70 + s / 50, 0.13) for s in range(3)] + [_row("broken", s, 0.12, 0.13) for s in range(3)]
    agg = aggregate(pd.DataFrame(rows)).set_index("method")
    assert bool(agg.at["broken", "hungarian_at_chance"]) and not bool(agg.at["pmi", "hungarian_at_chance"])
    assert pd.isna(agg.at["broken", "hungarian_rank"])
    assert (agg.at["pmi", "hungarian_rank"], agg.at["kmeans", "hungarian_rank"]) == (1, 2)
    assert AT_CHANCE == "at chance"


def _search(index: int, lr: float, value: float, n_val: int = 20) -> dict:
    return {"status": "search", "metrics": {"hungarian": value}, "data": {"n_val": n_val},
            "tune": {"index": index, "values": {"lr": lr}}}


def test_ties_go_to_the_smallest_values_not_the_draw_order() -> None:
    rows = [_search(0, 0.01, 0.8), _search(1, 0.001, 0.8), _search(2, 0.1, 0.7)]
    assert select(rows, "hungarian")["tune"]["values"] == {"lr": 0.001}
    assert select(list(reversed(rows)), "hungarian")["tune"]["values"] == {"lr": 0.001}


def test_resolution_counts_candidates_within_one_validation_row() -> None:
    rows = [_search(0, 0.01, 0.80), _search(1, 0.001, 0.82), _search(2, 0.1, 0.70)]
    best = select(rows, "hungarian")
    assert resolution(rows, "hungarian", best) == {"candidates": 2, "step": 0.05, "n_val": 20}  # 0.02 < 1/20
    assert resolution(rows, "hungarian", best) is not None
    wide = [_search(0, 0.01, 0.80, n_val=200), _search(1, 0.001, 0.90, n_val=200)]
    assert resolution(wide, "hungarian", select(wide, "hungarian")) is None


def test_a_tuned_report_says_when_validation_could_not_choose() -> None:
    from types import SimpleNamespace

    from icon_bench.report.obtained import _resolution_lines

    tunes = [{"role": "final", "unresolved": {"candidates": 3, "step": 1 / 144, "n_val": 144}},
             {"role": "final", "unresolved": None}, {"role": "search"}]
    (line,) = _resolution_lines(SimpleNamespace(rows=pd.DataFrame({"tune": tunes})))
    assert line[0] == "tuning caveat"
    assert line[1].startswith("in 1 of 2 selections the validation split (144 rows) could not tell")
    assert _resolution_lines(SimpleNamespace(rows=pd.DataFrame({"tune": tunes[1:]}))) == []

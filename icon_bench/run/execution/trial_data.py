"""The data side of one trial: what its row records of the data, transductive mode's rules, the 2-D map artifact."""

from __future__ import annotations

from typing import Any

from icon_bench.data.options import dataset_label
from icon_bench.errors import TrialError

__all__ = ["check_transductive", "data_summary", "map_artifacts"]


def data_summary(data: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """What the row records of the data it ran on: its report label, content hashes and split sizes."""
    meta = data.meta or {}
    return {
        "label": meta.get("label") or dataset_label(spec["dataset"], meta),
        "content_hash": meta.get("content_hash"),
        "raw_content_hash": meta.get("raw_content_hash"),
        "n_train": len(data.y_train),
        "n_val": len(data.y_val),
        "n_test": len(data.y_test),
    }


#: Metrics that make sense when train and test are the same rows (transductive mode).
_TRANSDUCTIVE_METRICS = ("hungarian", "nmi", "ari", "knn2d", "trustworthiness")


def check_transductive(recipe: Any, metrics: list[Any], spec: dict[str, Any]) -> None:
    """Transductive mode scores clustering and 2-D maps on the rows they were fitted on; nothing else is fair."""
    from icon_bench.hooks.registry import split_spec

    names = [split_spec(m)[0] if not hasattr(m, "name") else m.name for m in metrics]
    bad = [n for n in names if n not in _TRANSDUCTIVE_METRICS]
    if bad:
        raise TrialError(
            f"dataset {spec['dataset'].get('name')!r} is transductive (fit and scored on all rows), which is for "
            f"clustering and 2-D maps only; {', '.join(bad)} would score on rows the method trained on"
        )
    p = getattr(recipe, "p", None)
    if isinstance(p, dict) and p.get("name") == "label":
        raise TrialError(
            f"method {spec['method']!r} learns from labels; transductive mode would train on the labels it is scored on"
        )
    if spec["split"] == "val":
        raise TrialError("a transductive dataset has no val split; tune on a dataset entry without transductive")


def map_artifacts(output: Any, data: Any) -> dict[str, Any]:
    """The 2-D map and its labels (train, val, then the scored split), for plots; {} for other outputs."""
    import numpy as np

    emb = output.test_embeddings if output.test_embeddings is not None else output.train_embeddings
    if emb is None or emb.dim() != 2 or emb.shape[1] != 2:
        return {}
    pairs = [(output.train_embeddings, data.y_train), (output.val_embeddings, data.y_val)]
    if not data.meta.get("transductive"):  # there the scored rows are the train rows: draw them once
        pairs.append((output.test_embeddings, data.y_test))
    pairs = [(e, y) for e, y in pairs if e is not None and len(e) == len(y)]
    return {
        "embedding_2d": np.concatenate([e.float().cpu().numpy() for e, _ in pairs]),
        "labels": np.concatenate([y.cpu().numpy() for _, y in pairs]),
    }

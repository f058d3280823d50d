"""Trial ids: the normalised spec, its canonical JSON, and the trial and config ids hashed from it."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from icon_bench.data.options import SPLITS
from icon_bench.errors import SuiteError

__all__ = ["canonical_json", "config_id", "normalize_spec", "trial_id"]


# ---------------------------------------------------------------------------------------------
# Trial ids (the contract in docs/architecture.md; run/execution/trial.py re-exports these)
# ---------------------------------------------------------------------------------------------
def normalize_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The full, normalised form of a trial spec: every key present, names in one spelling.

    "split" defaults to "test" and is always present, so every protocol 2 id differs from the
    protocol 1 id of the same cell (those rows trained on the val rows too).
    """
    unknown = set(spec) - {"method", "dataset", "divergence", "seed", "p", "q", "model", "settings", "evaluate", "split"}
    if unknown:
        raise SuiteError(f"trial spec has unknown key(s) {sorted(unknown)}")
    split = spec.get("split") or "test"
    if split not in SPLITS:
        raise SuiteError(f"trial spec: split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    dataset = spec.get("dataset")
    if isinstance(dataset, str):
        dataset = {"name": dataset}
    divergence = spec.get("divergence")
    if isinstance(divergence, Mapping) and set(divergence) == {"name"}:
        divergence = divergence["name"]  # {"name": "kl"} and "kl" are the same trial
    evaluate = spec.get("evaluate")
    return {
        "method": spec.get("method"),
        "dataset": dict(dataset) if dataset is not None else None,
        "divergence": copy.deepcopy(divergence),
        "seed": int(spec.get("seed", 0) or 0),
        "p": dict(spec.get("p") or {}),
        "q": dict(spec.get("q") or {}),
        "model": dict(spec.get("model") or {}),
        "settings": dict(spec.get("settings") or {}),
        "evaluate": list(evaluate) if evaluate is not None else None,
        "split": split,
    }


def _canon(value: Any) -> Any:
    # 1.0 and 1 must hash alike (YAML and Python write them either way); tuples are lists in JSON.
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        return {str(k): _canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        return _canon(value.item())
    raise TypeError(f"trial spec value {value!r} is not JSON-serialisable")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no spaces, integral floats written as integers."""
    return json.dumps(_canon(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def trial_id(spec: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the normalised spec, 16 hex characters; key order does not matter."""
    return hashlib.sha256(canonical_json(normalize_spec(spec)).encode()).hexdigest()[:16]


def config_id(spec: Mapping[str, Any]) -> str:
    """Like :func:`trial_id` but without the seed: the id shared by the repeats of one configuration."""
    norm = normalize_spec(spec)
    norm.pop("seed")
    return hashlib.sha256(canonical_json(norm).encode()).hexdigest()[:16]

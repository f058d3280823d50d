"""Short labels of trials for tables, progress lines and headers: "pmi on digits (divergence kl, seed 0)"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from icon_bench.data.options import dataset_label

__all__ = ["NONE", "bar_label", "component_label", "divergence_label", "first_line", "trial_label", "tune_label"]

#: What a table shows where a trial has no value (a baseline has no divergence).
NONE = "-"


def component_label(value: Any) -> str:
    """``"kl"`` -> kl; ``{"name": "alpha", "a": 0.5}`` -> alpha(a=0.5); None -> "-"."""
    if value is None:
        return NONE
    if isinstance(value, Mapping):
        extra = ", ".join(f"{k}={v}" for k, v in value.items() if k != "name")
        name = value.get("name")
        return f"{name}({extra})" if extra else str(name)
    return str(value)


def divergence_label(spec: Mapping[str, Any], row: Mapping[str, Any] | None = None) -> str:
    """The spec's divergence, else the one the method defaulted to (a row records it), else "-"."""
    if spec.get("divergence") is not None:
        return component_label(spec["divergence"])
    return component_label((row or {}).get("divergence"))


def trial_label(spec: Mapping[str, Any], row: Mapping[str, Any] | None = None) -> str:
    """One line naming a trial; with its row, a divergence left to the method shows the method's default
    (a live bar's narrow form is `bar_label`)."""
    # The dataset as reports name it (the row's label once the data loaded, else the spec's), as bars do.
    dataset = (row or {}).get("dataset_label") or dataset_label(spec.get("dataset"))
    divergence = divergence_label(spec, row)
    return f"{spec.get('method')} on {dataset} (divergence {divergence}, seed {spec.get('seed')})"


def _value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _cut(text: str, most: int) -> str:
    """`text` in at most `most` characters, its middle elided ("mnist-…-3f2a1b" keeps both ends); "" under 3."""
    if len(text) <= most:
        return text
    if most < 3:  # too short to say anything: left out
        return ""
    keep = most - 1
    head = (keep + 1) // 2
    return text[:head] + "…" + (text[len(text) - (keep - head):] if keep > head else "")


def bar_label(spec: Mapping[str, Any], values: Mapping[str, Any] | None = None, width: int | None = None) -> str:
    """The trial a live bar names, in at most `width` characters: method, the dataset's label,
    divergence, seed and the tuned `values` (the fields that tell a sweep's trials apart).

    Too long, it gives up in this order: "seed 3" becomes "s3"; the dataset label, the tuned values'
    names, the method and the divergence are elided in the middle, each down to a few characters,
    then the dataset goes; last, the whole line loses its middle. The seed and the tuned numbers stay.
    """
    fields = {
        "method": str(spec.get("method")),
        "dataset": dataset_label(spec.get("dataset")),
        "divergence": divergence_label(spec),
        "seed": f"seed {spec.get('seed')}",
    }
    tuned = [(str(k).rsplit(".", 1)[-1], _value(v)) for k, v in (values or {}).items()]

    def text() -> str:
        parts = [*fields.values(), *(f"{n}={v}" for n, v in tuned)]
        return " ".join(p for p in parts if p and p != NONE)

    label = text()
    if width is None or len(label) <= width:
        return label
    fields["seed"] = f"s{spec.get('seed')}"
    for key, least in (("dataset", 6), ("names", 2), ("method", 6), ("divergence", 5), ("dataset", 0)):
        over = len(text()) - width
        if over <= 0:
            break
        if key == "names":
            tuned = [(_cut(n, max(least, len(n) - -(-over // len(tuned)))), v) for n, v in tuned] if tuned else tuned
        else:  # the dataset last goes whole: one run's trials seldom differ by it alone
            fields[key] = _cut(fields[key], max(least, len(fields[key]) - over))
    label = text()
    return label if len(label) <= width else _cut(label, width)


def first_line(text: Any) -> str:
    """The first non-empty line of an error message ("" for None)."""
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else ""


def tune_label(row: Mapping[str, Any]) -> str:
    """What a tuned suite's row ran: a search trial's candidate, a final's selection, or defaults."""
    tune = row.get("tune") or {}
    values = tune.get("values") if tune.get("role") == "search" else tune.get("selected")
    if not tune:
        return "defaults"
    if tune.get("untuned"):
        return "nothing to tune"
    text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in (values or {}).items())
    epochs = f" ({tune['epochs']} epochs)" if tune.get("stopped") else ""
    return ("selected " if tune.get("role") == "final" else "") + text + epochs

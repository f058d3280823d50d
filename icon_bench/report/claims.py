"""The papers' claims as data: `Claim`, the shipped claims.yaml, the register_claims hook and loading with clear errors."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from icon_bench.errors import IconBenchError, UnknownNameError
from icon_bench.hooks.specs import hookimpl

__all__ = ["Claim", "ClaimEntries", "PublishedFigures", "load_claims", "read_claims_file", "validate_claims"]

SHIPPED_FILE = "claims.yaml"
#: Keys with a meaning of their own in a filter (as in a suite's grid and `icon-bench compare`).
AXIS_KEYS = ("method", "divergence", "dataset")
#: Dotted prefixes: "p.debias" is the p kernel's option, "q.name" the q kernel, "settings.lr" a trainer setting.
DOTTED_PREFIXES = ("p", "q", "model", "settings", "dataset")

Scalar = str | int | float | bool | None
FilterValue = Scalar | list[Scalar]


def check_filter_key(key: str) -> None:
    """Raise ValueError unless `key` names something a trial spec sets (a grid's keys: method, p.debias, epochs, ...)."""
    from icon_bench.train.trainer import (
        TrainSettings,  # torch: only when a claim is validated
    )

    settings = list(TrainSettings.__dataclass_fields__)
    prefix, dot, rest = key.partition(".")
    if not dot:
        if key in AXIS_KEYS or key in settings:
            return
        raise ValueError(str(UnknownNameError("key", key, [*AXIS_KEYS, *settings, *(f"{p}.NAME" for p in DOTTED_PREFIXES)])))
    if prefix not in DOTTED_PREFIXES or not rest:
        raise ValueError(str(UnknownNameError("key prefix", prefix + ".", [f"{p}." for p in DOTTED_PREFIXES])))
    if prefix == "settings" and rest not in settings:
        raise ValueError(str(UnknownNameError("trainer setting", rest, settings)))


def _filter(value: Mapping[str, Any]) -> dict[str, Any]:
    for key in value:
        check_filter_key(str(key))
    return dict(value)


class PublishedFigures(BaseModel):
    """Which published figures stand beside a claim: filters on one reference set's entries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    set: str = Field(min_length=1)  # a reference set name (published.yaml or a plugin's register_references)
    metric: str | None = None  # the entries' metric; None: the claim's
    contender: dict[str, FilterValue] | None  # on Reference fields (key, method, divergence, ...) or setting keys
    baseline: dict[str, FilterValue] | None  # None: the paper's baseline figure is not among the references

    @model_validator(mode="after")
    def _one_side(self) -> PublishedFigures:
        if self.contender is None and self.baseline is None:
            raise ValueError("give contender, baseline or both (filters on the set's entries)")
        return self


class Claim(BaseModel):
    """One claim of a paper: on `metric`, rows matching `contender` beat (`expect: better`) those matching `baseline`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=80)
    paper: str = Field(min_length=1)
    statement: str = Field(min_length=1)
    metric: str = Field(min_length=1)  # a registered metric; its declared direction decides "better"
    where: dict[str, FilterValue] = Field(default_factory=dict)  # both sides match it
    contender: dict[str, FilterValue] = Field(min_length=1)
    baseline: dict[str, FilterValue] = Field(min_length=1)
    expect: Literal["better", "worse"]  # the contender's side, in the metric's own direction
    published: PublishedFigures | None = None
    note: str = ""  # e.g. "qualitative in the paper: no figure"
    origin: str = ""  # "<set> (<distribution>)": filled in when loaded from the registry

    @field_validator("where", "contender", "baseline")
    @classmethod
    def _real_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _filter(value)

    @model_validator(mode="after")
    def _sides_apart(self) -> Claim:
        for side in ("contender", "baseline"):
            shared = sorted(set(self.where) & set(getattr(self, side)))
            if shared:
                raise ValueError(f"{shared[0]!r} is in both where and {side} (where holds what both sides share)")
        if not any(_disjoint(self.contender[k], self.baseline[k]) for k in set(self.contender) & set(self.baseline)):
            raise ValueError("contender and baseline must name one key with different values (else a row matches both)")
        return self

    def compared_keys(self) -> set[str]:
        """The keys the two sides differ by (never required to agree when configurations pair)."""
        return set(self.contender) | set(self.baseline)


def _disjoint(a: Any, b: Any) -> bool:
    left = {str(v) for v in (a if isinstance(a, list) else [a])}
    return not left & {str(v) for v in (b if isinstance(b, list) else [b])}


# ----------------------------------------------------------------------------------------------
# Files, validation and the registry
# ----------------------------------------------------------------------------------------------
class ClaimEntries(list):  # type: ignore[type-arg]
    """Claims as read from a YAML file: the raw entries, plus where each entry and key sits, for errors."""

    def __init__(self, entries: Iterable[Any], source: str, lines: Mapping[tuple[Any, ...], int]) -> None:
        super().__init__(entries)
        self.source = source
        self.lines = dict(lines)

    def where(self, index: int, key: Any = None) -> str:
        line = self.lines.get((index, key)) or self.lines.get((index,), 1)
        return f"{self.source}:{line}"


def read_claims_file(path: str | Path, source: str | None = None) -> ClaimEntries:
    """A claims YAML file (a list of claims) read with yaml.safe_load; `source` names it in errors (default: path)."""
    import yaml

    path = Path(path)
    source = source or str(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # the same document, for line numbers
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise IconBenchError(f"{source}:{mark.line + 1 if mark else 1}: invalid YAML: {exc}") from None
    if data is None:
        return ClaimEntries([], source, {})
    if not isinstance(data, list):
        raise IconBenchError(f"{source}:1: expected a list of claims (- id: ..., paper: ..., ...)")
    lines: dict[tuple[Any, ...], int] = {}
    for i, node in enumerate(root.value if isinstance(root, yaml.SequenceNode) else []):
        lines[(i,)] = node.start_mark.line + 1
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else []:
            lines[(i, key_node.value)] = key_node.start_mark.line + 1
    return ClaimEntries(data, source, lines)


def validate_claims(entries: Any, where: str, metrics: Iterable[str] | None = None) -> tuple[list[Claim], list[str]]:
    """`entries` (Claims or dicts of their fields) as Claims, and one problem line per entry that is not valid.

    A problem names the file and line (entries read by `read_claims_file`) or `where` and the entry,
    then the claim's id and the key: ``claims.yaml:12: claim 'x': expect: Input should be 'better' ...``.
    `metrics` (registered metric names) are checked when given.
    """
    if isinstance(entries, (Mapping, Claim)) or not isinstance(entries, Iterable):
        return [], [f"{where}: the factory must return a list of claims, got {type(entries).__name__}"]
    known = sorted(metrics) if metrics is not None else None
    claims, problems = [], []
    for i, entry in enumerate(entries):
        ident = entry.id if isinstance(entry, Claim) else (entry.get("id") if isinstance(entry, Mapping) else None)
        label = f"claim {ident!r}" if isinstance(ident, str) else f"claim {i} (no id)"
        try:
            claim = entry if isinstance(entry, Claim) else Claim.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(map(str, first["loc"])) or "entry"
            at = entries.where(i, first["loc"][0] if first["loc"] else None) if isinstance(entries, ClaimEntries) \
                else f"{where}: entry {i}"
            message = str(first["msg"]).removeprefix("Value error, ")
            got = f" (got {first['input']!r})" if first["type"] not in ("missing", "value_error") else ""
            problems.append(f"{at}: {label}: {key}: {message}{got}")
            continue
        if known is not None and claim.metric not in known:
            at = entries.where(i, "metric") if isinstance(entries, ClaimEntries) else f"{where}: entry {i}"
            problems.append(f"{at}: {label}: metric: {UnknownNameError('metric', claim.metric, known)}")
            continue
        claims.append(claim)
    return claims, problems


def _shipped() -> ClaimEntries:
    with resources.as_file(resources.files("icon_bench.report").joinpath(SHIPPED_FILE)) as path:
        return read_claims_file(path, source=f"icon_bench/report/{SHIPPED_FILE}")


@hookimpl
def register_claims(register: Callable[..., None]) -> None:
    register("icon-papers", _shipped, description="claims of I-Con and Beyond I-Con (icon_bench/report/claims.yaml)")


def load_claims(registry: Any = None, *, strict: bool = False) -> tuple[list[Claim], list[str]]:
    """Every registered claim set's valid claims (with `origin`), and a line per claim or set that was skipped.

    A factory that raises, an invalid claim or an id another set already used is skipped and
    reported, so one bad plugin never takes the claims page down; `strict` raises instead.
    """
    from icon_bench.hooks.registry import get_registry

    reg = registry or get_registry()
    metrics = reg.names("metric")
    out: list[Claim] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for name in reg.names("claim"):
        comp = reg.get("claim", name)
        dist = comp.distribution if comp.distribution.startswith("(") else f"({comp.distribution})"
        origin = f"{name} {dist}"  # "icon-papers (icon-bench)", "mine (in process)"
        where = f"claim set {name!r} {dist}"
        try:
            claims, bad = validate_claims(comp.create(), where, metrics)
        except Exception as exc:  # noqa: BLE001 - a plugin's factory may raise anything
            claims, bad = [], [str(exc) if isinstance(exc, IconBenchError) else f"{where}: {type(exc).__name__}: {exc}"]
        for claim in claims:
            if claim.id in seen:
                bad.append(f"{where}: claim {claim.id!r}: id: already used by claim set {seen[claim.id]}")
                continue
            seen[claim.id] = origin
            out.append(claim.model_copy(update={"origin": origin}))
        if bad and strict:
            raise IconBenchError(bad[0])
        problems += bad
    return out, problems

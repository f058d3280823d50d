"""The suite reference, docs/suite.md, generated from the schema (`icon-bench suite-schema`); tests keep it current.

Every key with its type, default and an example comes from the pydantic models (run/suite/model.py), the
trainer settings and method options from their declared types (train/), the limits and synonyms
from the modules that enforce them, and the table of mistakes from parsing each example: the
messages shown are the ones the loader gives today.
"""

from __future__ import annotations

import argparse
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from icon_bench.errors import SuiteError
from icon_bench.hooks.type_names import type_text

if typing.TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["MISTAKES", "add_commands", "render"]

_BASE = "name: demo\ndatasets: [digits]\ngrid:\n  method: [pmi, kmeans]\n"

#: (kind of mistake, a suite that makes it): docs/suite.md shows the line and what the loader says.
MISTAKES: list[tuple[str, str]] = [
    ("YAML syntax", "name: demo\ngrid:\n  method: [pmi, kmeans\n  seed: 1\n"),
    ("duplicate key", "name: demo\nname: other\n"),
    ("unknown top-level key", _BASE + "setings: {epochs: 3}\n"),
    ("synonym of a key", _BASE + "metrics: [nmi]\n"),
    ("a grid axis at the top level", "name: demo\ndatasets: [digits]\nmethod: pmi\n"),
    ("a trainer setting at the top level", _BASE + "epochs: 3\n"),
    ("misspelt grid axis", _BASE + "  divergnce: [kl]\n"),
    ("unknown component name", _BASE + "  divergence: [kl, tvv]\n"),
    ("unknown trainer setting", _BASE + "settings: {learning_rate: 0.01}\n"),
    ("another method's setting", _BASE + "settings: {n_init: 3}\n"),
    ("wrong type", _BASE + "settings: {lr: fast}\n"),
    ("out of range", _BASE + "  epochs: [10, -1]\n"),
    ("kernel parameter", _BASE + "  p.debais: [0.0, 0.6]\n"),
    ("kernel range (the kernel's own check)", _BASE + "  p.k: 0\n"),
    ("model parameter", _BASE + "  model.hiden: 128\n"),
    ("dataset option", "name: demo\ndatasets: [{name: digits, subset: 1e12}]\ngrid: {method: [pmi]}\n"),
    ("resources", _BASE + "resources: {cpus: 0, gpus: 2.5}\n"),
    ("tracker key", _BASE + "track:\n  mlflow: {tracking_url: http://127.0.0.1:5000}\n"),
    ("seed", _BASE + "  seed: [0, -1]\n"),
    ("huge grid", _BASE + "seeds: 1000000000\n"),
    ("alias bomb", "name: demo\na: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\ngrid: {method: *e}\n"),
    ("non-ASCII look-alike", "name: demo\ndatasets: [digits]\ngrid:\n  method: [\u0440mi]\n"),
    ("boolean for a number", _BASE + "settings: {epochs: true}\n"),
    ("evaluate a metric a method cannot produce", _BASE + "evaluate: [knn]\n"),
    ("tuning without validation rows",
     "name: demo\ndatasets: [{name: digits, transductive: true}]\ngrid: {method: [pmi]}\n"
     "tune: {budget: 2, space: {lr: [0.001, 0.01]}}\n"),
    ("a label method on unlabelled rows",
     "name: demo\ndatasets: [{name: stl10, unlabeled: true}]\ngrid: {method: [simclr, supcon]}\n"),
    ("random search budget above the lists' grid",
     "name: demo\ndatasets: [digits]\ngrid: {method: [pmi]}\ntune: {budget: 5, space: {lr: [0.001, 0.01]}}\n"),
    ("missing data file (at plan time)",
     "name: demo\ndatasets:\n  - {name: arrays, path: data/x.npz}\ngrid: {method: [pmi]}\n"),
]


# ---------------------------------------------------------------------------------------------
# Types as text
# ---------------------------------------------------------------------------------------------
def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False)
    return text.strip().removesuffix("...").strip()


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
def _model_rows(model: type[BaseModel]) -> list[list[str]]:
    from pydantic import BaseModel  # pydantic loads when the page is rendered, not at CLI start-up
    from pydantic_core import PydanticUndefined

    rows = []
    for name, field in model.model_fields.items():
        annotation = typing.Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        if field.default is PydanticUndefined and field.default_factory is None:
            default = "required"
        else:
            value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
            default = "see below" if isinstance(value, BaseModel) else f"`{_flow(value)}`"
        example = f"`{name}: {_flow(field.examples[0])}`" if field.examples else ""
        rows.append([f"`{name}`", type_text(annotation), default, field.description or "", example])
    return rows


def _settings_rows() -> list[list[str]]:
    import dataclasses

    from icon_bench.train.recipe import OPTION_TYPES
    from icon_bench.train.trainer import TrainSettings

    hints = typing.get_type_hints(TrainSettings, include_extras=True)
    rows = [[f"`{f.name}`", type_text(hints[f.name]), f"`{_flow(f.default)}`", "trainer"]
            for f in dataclasses.fields(TrainSettings)]
    rows += [[f"`{k}`", type_text(t), "the recipe's", "method option"] for k, t in OPTION_TYPES.items()]
    return rows


def _baseline_rows() -> list[list[str]]:
    from icon_bench.train.baselines import Baseline
    from icon_bench.train.recipes import RECIPES

    return [
        [f"`{name}`", f"`{key}`", type_text(recipe.types.get(key, Any)), f"`{_flow(default)}`"]
        for name, recipe in RECIPES.items()
        if isinstance(recipe, Baseline)
        for key, default in recipe.params.items()
    ]


def _dataset_rows() -> list[list[str]]:
    from icon_bench.data.load import COMMON_OPTION_TYPES, COMMON_OPTIONS

    return [[f"`{k}`", type_text(t), f"`{_flow(COMMON_OPTIONS[k])}`"] for k, t in COMMON_OPTION_TYPES.items()]


_GRID_KEYS = [
    ("`method`", "method name", "`method: [pmi, kmeans]`"),
    ("`divergence`", "name, or mapping with `name` and parameters; null: the method's",
     "`divergence: [kl, {name: alpha, a: 0.5}]`"),
    ("`dataset`", "as under `datasets` (then leave `datasets` out)", "`dataset: [digits, iris]`"),
    ("`seed`", f"int 0..{2**32 - 1} (then leave `seeds` out)", "`seed: [0, 1, 2]`"),
    ("`p.X`, `q.X`", "a parameter of the method's p / q kernel, `name` to swap it, or a transform (below)",
     "`p.debias: [0.0, 0.6]`"),
    ("`model.X`", "a parameter of the method's model (`name`, `out_dim`, ...)", "`model.hidden: 256`"),
    ("`dataset.X`", "a dataset option (below) for every dataset of the cell", "`dataset.subset: 500`"),
    ("`X`, `settings.X`", "a setting (below) of the cell's method", "`epochs: [10, 30]`"),
]
_TRANSFORMS = [
    ("`p.debias`, `q.debias`", "float >= 0, <= 1", "I-Con's debiasing: (1 - a) p + a / N; 0 is off"),
    ("`p.propagate`", "int >= 0", "walk steps on the neighbour graph (a p reading the global kNN graph walks the whole graph, keeping `propagate_keep` entries per row); 0 is off"),
]


def _limits() -> list[list[str]]:
    from icon_bench.data.headers import BOMB_BYTES, BOMB_RATIO
    from icon_bench.run.suite.limits import DEFAULT_TIMEOUT
    from icon_bench.run.suite.memory import MAX_ROW_PASSES
    from icon_bench.run.suite.model import MAX_CELLS
    from icon_bench.run.suite.reader import MAX_SEED
    from icon_bench.run.suite.yaml_lines import MAX_DEPTH, MAX_SUITE_BYTES, MAX_VALUES

    return [
        ["file size", f"{MAX_SUITE_BYTES} bytes", "read no further"],
        ["values (aliases expanded)", str(MAX_VALUES), "an alias counts as everything its anchor holds"],
        ["nesting depth (aliases expanded)", str(MAX_DEPTH), ""],
        ["cells", str(MAX_CELLS), "counted from the axes before expanding; `icon-bench run --max-cells N` raises it "
         "(the load-time checks then walk the first cells, the rest are checked as they run)"],
        ["seed", f"0..{MAX_SEED}", "what numpy and scikit-learn accept"],
        ["search trials (cells x `tune.budget`)", str(MAX_CELLS), "`--max-cells N` raises it too"],
        ["`tune.budget` of a random search over lists only", "the lists' grid size",
         "values are drawn without replacement, so no candidate runs twice"],
        ["memory per trial (plan time)", "this machine's (cgroup) memory",
         "estimated: data as float32 x 3, model parameters x 4 (built on torch's meta device), a batch's "
         "kernel matrices; `icon-bench run --max-memory SIZE` sets it"],
        [".npy / .npz arrays (plan time and load)", "the memory per trial",
         "sizes read from the headers before loading; a compressed member inflating more than "
         f"{BOMB_RATIO}:1 to over {BOMB_BYTES >> 20} MiB is a decompression bomb, loaded only under `--max-memory`"],
        ["epochs x rows per trial (rows known from a file's header)", f"{MAX_ROW_PASSES:.0e}", ""],
        ["time per trial", f"`timeout`, else {DEFAULT_TIMEOUT} s",
         "`--timeout S` overrides; a trial past it is stopped and stored as failed with status `timeout`"],
    ]


def _synonym_rows() -> list[list[str]]:
    from icon_bench.run.suite.synonyms import SETTING_SYNONYMS, SYNONYMS

    rows = [[where, ", ".join(f"`{k}`" for k, v in table.items() if v == meant), f"`{meant}`"]
            for where, table in SYNONYMS.items() for meant in dict.fromkeys(table.values())]
    rows += [["settings", ", ".join(f"`{k}`" for k, v in SETTING_SYNONYMS.items() if v == meant), f"`{meant}`"]
             for meant in dict.fromkeys(SETTING_SYNONYMS.values())]
    return rows


def mistake_message(text: str, source: str = "suite.yaml") -> str:
    """What loading (and planning, relative paths against /project) `text` says: the SuiteError's message."""
    from icon_bench.run.suite.plan_check import check_plan
    from icon_bench.run.suite.reader import parse_suite

    try:
        check_plan(parse_suite(text, source), "local", "/project")
    except SuiteError as exc:
        return str(exc)
    return ""


def _mistake_rows() -> list[list[str]]:
    rows = []
    for kind, text in MISTAKES:
        message = mistake_message(text)
        found = re.match(r"suite\.yaml:(\d+):", message)
        line = text.splitlines()[int(found.group(1)) - 1].strip() if found else ""
        rows.append([kind, f"`{line}`", "<br>".join(f"`{m}`" for m in message.splitlines())])
    return rows


def _discover_section() -> list[str]:
    from icon_bench.run.suite.discover_block import Confirm, Discover

    return [
        "## Discover",
        "",
        "The `discover:` block (docs/discovery.md): a TPE search over losses (p, q, divergence and their",
        "parameters, from what each component declares for the task) with the same budget per dataset on val,",
        "then the top candidates and the task's named methods on test at fresh seeds.",
        "",
        *_table(["key", "type", "default", "meaning", "example"], _model_rows(Discover)),
        "### Discover confirm",
        "",
        *_table(["key", "type", "default", "meaning", "example"], _model_rows(Confirm)),
    ]


def render() -> str:
    """docs/suite.md as it should be now."""
    from icon_bench.run.suite.model import Resources, Suite
    from icon_bench.run.suite.tracking import MlflowTrack, Track
    from icon_bench.run.suite.tune_block import Scheduler, Tune

    out = [
        "# Suite files",
        "",
        "<!-- Generated by `icon-bench suite-schema -o docs/suite.md` (icon_bench/run/suite/doc.py); "
        "tests/test_suite_doc.py fails when it is out of date. -->",
        "",
        "A suite is a YAML file (read with `yaml.safe_load` rules, no tags) naming a grid of trials. It is checked",
        "when it is loaded: every key, name and value against the schema below and the components' declared",
        "parameters, each mistake reported as `file:line: key: message`, all of them at once. Data files (their",
        "headers: sizes, keys, test arrays, `pca` against the features, one class), each trial's memory estimate,",
        "GPUs and the results folder's writability are checked when the plan is made (`icon-bench run SUITE",
        "--dry-run` shows them all). Example: `suites/clustering.yaml`.",
        "",
        "## Top-level keys",
        "",
        *_table(["key", "type", "default", "meaning", "example"], _model_rows(Suite)),
        "## Resources",
        "",
        *_table(["key", "type", "default", "meaning", "example"], _model_rows(Resources)),
        "## Tune",
        "",
        "The `tune:` block (docs/architecture.md, Tuning): each cell's search on the validation split, then",
        "the selection once on test.",
        "",
        *_table(["key", "type", "default", "meaning", "example"], _model_rows(Tune)),
        "### Tune scheduler",
        "",
        *_table(["key", "type", "default", "meaning", "example"], _model_rows(Scheduler)),
        *_discover_section(),
        "## Track",
        "",
        "The `track:` block logs each trial as it finishes (`icon-bench export mlflow RESULTS` logs stored rows",
        "the same way); a logging failure is warned about once and never stops the sweep.",
        "",
        *_table(["key", "type", "default", "meaning", "example"], _model_rows(Track)),
        "### Track mlflow",
        "",
        *_table(["key", "type", "default", "meaning", "example"], _model_rows(MlflowTrack)),
        "## Grid keys",
        "",
        "The same keys make up an `include` entry (one or more cells; a list value is an axis of its own) and an",
        "`exclude` rule (which may only name keys the grid varies). Cells are the product of the axes.",
        "",
        *_table(["key", "value", "example"], _GRID_KEYS),
        "Transforms, accepted as `p.`/`q.` keys of every method's kernels:",
        "",
        *_table(["key", "type", "meaning"], _TRANSFORMS),
        "## Settings",
        "",
        "Under `settings` (every cell), as a grid axis or in an `include` entry. A learned method takes the trainer",
        "settings and the method options; each method's recipe sets its own defaults (`icon-bench plugins`). A",
        "baseline sets the trainer settings aside and takes its own parameters.",
        "",
        *_table(["key", "type", "default", "kind"], _settings_rows()),
        *_table(["baseline", "key", "type", "default"], _baseline_rows()),
        "## Dataset options",
        "",
        "Every dataset takes these besides its own parameters (`icon-bench plugins --kind dataset`):",
        "",
        *_table(["key", "type", "default"], _dataset_rows()),
        "## Synonyms",
        "",
        "Words other tools use for a key are refused with the key meant as the \"did you mean\" (one spelling per",
        "key keeps suites comparable; `seed: 3` beside `seeds: 3` would be ambiguous):",
        "",
        *_table(["where", "written", "meant"], _synonym_rows()),
        "## Limits",
        "",
        *_table(["what", "at most", "note"], _limits()),
        "## What each kind of mistake gets",
        "",
        *_table(["mistake", "line", "message"], _mistake_rows()),
    ]
    return "\n".join(out).rstrip() + "\n"


def cmd_suite_schema(args: argparse.Namespace) -> int:
    text = render()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``icon-bench suite-schema``."""
    p = subparsers.add_parser(
        "suite-schema",
        help="print the suite file reference (docs/suite.md) from the schema",
        description=(
            "Print the reference of the suite YAML format (every key, its type, default and meaning, generated "
            "from the schema and the registered plugins): the text of docs/suite.md. -o FILE writes it to FILE."
        ),
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead of printing it")
    p.set_defaults(func=cmd_suite_schema)

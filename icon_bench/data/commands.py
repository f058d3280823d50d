"""`icon-bench datasets` (what can be downloaded, and what is cached) and `icon-bench datasets import`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from icon_bench.data.catalog import CATALOG
from icon_bench.data.download import ENV_DATA, ENV_MIRROR, ENV_OFFLINE, data_root, human_size
from icon_bench.errors import UnknownNameError

__all__ = ["add_commands", "dataset_rows"]


def dataset_rows() -> list[dict[str, Any]]:
    """One row per catalogued dataset (name, rows, classes, size, licence, source, cached), then imagefolder."""
    from icon_bench.data.vision import cached

    rows = [
        {
            "name": info.name,
            "rows": info.rows,
            "classes": info.classes,
            "size": human_size(info.size),
            "licence": info.licence,
            "source": info.files[0].urls[0].rsplit("/", 1)[0] + "/",
            "cached": "yes" if cached(info.name) else "no",
        }
        for info in CATALOG.values()
    ]
    trees = data_root() / "imagefolder"
    n_trees = sum(1 for p in trees.iterdir() if (p / "decoded" / "labelled.json").is_file()) if trees.is_dir() else 0
    rows.append({
        "name": "imagefolder", "rows": "yours", "classes": "yours", "size": "-", "licence": "yours",
        "source": "path: root/<split>/<class>/<image>", "cached": f"{n_trees} tree(s)" if n_trees else "no",
    })
    return rows


def add_commands(subparsers: Any) -> None:
    """Add `icon-bench datasets` and its `import` subcommand."""
    p = subparsers.add_parser(
        "datasets",
        help="list the downloadable datasets and what is cached; `datasets import` pre-fills the cache",
        description=f"The image datasets icon-bench downloads (once, verified by MD5) into ${ENV_DATA} "
        f"(else ~/.cache/icon-bench). ${ENV_OFFLINE}=1 forbids downloads; ${ENV_MIRROR} fetches from a mirror.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_datasets)
    sub = p.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND")
    imp = sub.add_parser(
        "import",
        help="pre-fill the cache from a local file or folder (no network)",
        description="Copy a dataset into the cache from a machine-local copy: an .npz with x_train, y_train, "
        "x_test, y_test (mnist, fashion_mnist), one of the published archives, or a folder holding the "
        "archives or their extracted files as torchvision lays them out. Archives are checked against "
        "their published MD5; the arrays are decoded once, so later loads are fast.",
    )
    imp.add_argument("name", metavar="NAME", help=f"one of {', '.join(CATALOG)}")
    imp.add_argument("source", metavar="FILE_OR_FOLDER", help="the local copy")
    imp.set_defaults(func=cmd_import)


def cmd_datasets(args: argparse.Namespace) -> int:
    """Handler of `icon-bench datasets`."""
    from tabulate import tabulate

    rows = dataset_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(tabulate(rows, headers="keys"))
    print(f"\ncache: {data_root()} (set {ENV_DATA} to move it); "
          "pre-fill without internet: icon-bench datasets import NAME FILE_OR_FOLDER")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Handler of `icon-bench datasets import NAME SOURCE`."""
    from icon_bench.data.vision import import_source

    if args.name not in CATALOG:
        raise UnknownNameError("dataset", args.name, list(CATALOG), where="icon-bench datasets import")
    print(import_source(args.name, args.source))
    return 0

"""`icon-bench embed` (images -> a feature cache) and `icon-bench import-features` (TEMI / TURTLE files -> one)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from icon_bench.errors import DataError


def _assignments(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["dataset.path=x", "backbone.ref=abc"]`` -> {"dataset": {...}, "backbone": {...}}; values YAML-parsed."""
    import yaml

    out: dict[str, dict[str, Any]] = {"dataset": {}, "backbone": {}}
    for item in items:
        key, sep, raw = item.partition("=")
        head, dot, name = key.strip().partition(".")
        if not sep or not dot or not name or head not in out:
            raise DataError(f"--set expects dataset.KEY=VALUE or backbone.KEY=VALUE, got {item!r}")
        try:
            out[head][name] = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError as exc:
            raise DataError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
    return out


def backbone_spec(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """A registered backbone, or a torch.hub model the `torchhub` backbone knows (dinov2_vitb14 -> torchhub)."""
    from icon_bench.features.backbones import HUB_MODELS

    if name in HUB_MODELS:
        return {"name": "torchhub", "model": name, **params}
    return {"name": name, **params}


def cmd_embed(args: argparse.Namespace) -> int:
    from icon_bench.features.embed import embed_dataset

    sets = _assignments(args.set)
    out = embed_dataset(
        {"name": args.dataset, **sets["dataset"]},
        backbone_spec(args.backbone, sets["backbone"]),
        args.output,
        views=args.views,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        shard_size=args.shard_size,
        dtype=args.dtype,
        knn=args.knn,
        seed=args.seed,
        name=args.name,
        executor=args.executor,
        progress=not args.no_progress,
    )
    print(out)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from icon_bench.features.importers import import_temi, import_turtle

    if args.format == "temi":
        out = import_temi(args.source, args.output, test=args.test, label=args.label, dtype=args.dtype, knn=args.knn)
    else:
        if not args.dataset:
            raise DataError("import-features turtle needs --dataset NAME (the {dataset} of {dataset}_{split}.npy)")
        out = import_turtle(
            args.source, args.output, dataset=args.dataset, labels=args.labels, label=args.label, dtype=args.dtype, knn=args.knn
        )
    print(out)
    return 0


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed an image dataset with a frozen backbone into a feature cache",
        description="Embed a registered image dataset with a backbone (DINO, DINOv2, timm, open_clip, ...) into a "
        "feature cache folder (features, labels, views, cosine kNN graph, manifest.json) that the `features` "
        "dataset reads. Shards are written as they finish: a killed run resumes when run again.",
    )
    p.add_argument("dataset", metavar="DATASET", help="a registered dataset (cifar10, imagefolder, arrays, ...)")
    p.add_argument("--backbone", required=True, metavar="NAME",
                   help="a backbone (torchhub, timm, open_clip) or a torch.hub model: dino_vitb16, dinov2_vitb14, ...")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset.KEY=VALUE or backbone.KEY=VALUE (repeatable), e.g. dataset.path=train/ backbone.ref=main")
    p.add_argument("--views", type=int, default=0, metavar="K", help="also store K augmented views of each train image")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=4, help="loading threads (preprocessing runs there)")
    p.add_argument("--shard-size", type=int, default=4096, help="rows per shard (a kill loses at most one)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--knn", type=int, default=50, help="neighbours in the cached cosine graph (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the views' augmentations")
    p.add_argument("--name", help="the dataset part of the label (default: the dataset's name), e.g. imagenet1k")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="ray: shards as Ray tasks over the cluster's GPUs (RAY_ADDRESS or a local cluster)")
    p.add_argument("-o", "--output", metavar="DIR", help="cache folder (default: $ICON_BENCH_CACHE/features/<label>-<key>)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_embed)

    q = subparsers.add_parser(
        "import-features",
        help="turn TEMI's or TURTLE's saved features into a feature cache",
        description="temi SRC: a folder with embeddings.pt, label.pt and optionally knn.pt (read with "
        "torch.load(weights_only=True)), --test a second such folder. turtle SRC: a folder of "
        "{dataset}_{split}.npy, labels of the same names in --labels (default SRC/../../labels).",
    )
    q.add_argument("format", choices=("temi", "turtle"))
    q.add_argument("source", metavar="SRC")
    q.add_argument("-o", "--output", metavar="DIR", required=True)
    q.add_argument("--test", metavar="DIR", help="temi: the test split's folder")
    q.add_argument("--dataset", help="turtle: the dataset name in the file names")
    q.add_argument("--labels", metavar="DIR", help="turtle: the labels folder")
    q.add_argument("--label", help="the name reports give it (e.g. cifar10-dino-vitb16)")
    q.add_argument("--dtype", choices=("float16", "float32"), default="float32")
    q.add_argument("--knn", type=int, default=50, help="neighbours of the cosine graph when the source has none")
    q.set_defaults(func=cmd_import)

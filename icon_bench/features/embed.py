"""`embed_dataset`: a dataset's images through a frozen backbone into a feature cache, in shards that survive a kill."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icon_bench.errors import DataError
from icon_bench.features.cache import cache_key, read_manifest, relabel, verify_cache
from icon_bench.features.preprocess import ViewAugment, as_images, pixel_scale, to_uint8_range

__all__ = ["EmbedJob", "embed_dataset", "plan_job"]

#: Rows a view draw covers: augmentations are drawn per chunk of this many rows from a generator
#: seeded by the chunk's first row, so a resumed or differently batched run draws the same views.
VIEW_CHUNK = 8
DTYPES = ("float16", "float32")
#: Test hook: seconds to sleep after each shard (a killed-midway test needs an embed that lasts).
ENV_SHARD_DELAY = "ICON_BENCH_EMBED_SHARD_DELAY"


@dataclass
class EmbedJob:
    """What one embed does: the raw splits, the backbone, the identity (hence the key) and where it writes."""

    splits: dict[str, tuple[Any, np.ndarray]]  # split -> (images in their own storage, labels)
    backbone: Any
    identity: dict[str, Any]
    out: Path
    label: str
    num_classes: int
    views: int = 0
    dtype: str = "float16"
    knn: int = 50
    shard_size: int = 4096
    seed: int = 0
    scales: dict[str, float] = field(default_factory=dict)  # split -> what takes its pixels to 0..255
    view_augment: Any = None  # ViewAugment
    default_out: bool = False  # out is the cache root until the weights are weighed (then <label>-<key>)

    @property
    def key(self) -> str:
        return cache_key(self.identity)

    @property
    def partial(self) -> Path:
        # The shard size names the folder too: shard i covers other rows under another size.
        return self.out / f".partial-{self.key[:12]}-s{self.shard_size}"

    def shards(self) -> list[tuple[str, int, int, int]]:
        """(split, shard number, first row, end row) of every shard."""
        out = []
        for split, (x, _) in self.splits.items():
            for i, start in enumerate(range(0, len(x), self.shard_size)):
                out.append((split, i, start, min(len(x), start + self.shard_size)))
        return out

    def shard_path(self, split: str, i: int, kind: str = "features") -> Path:
        return self.partial / f"{split}-{kind}-{i:06d}.npy"

    def views_of(self, split: str) -> int:
        return self.views if split == "train" else 0


def _raw_splits(spec: Any) -> tuple[Any, str, dict[str, Any]]:
    """The dataset as its `load()` gives it (no common options: they belong to the features dataset)."""
    from icon_bench.data.options import COMMON_OPTIONS
    from icon_bench.hooks.registry import get_registry, split_spec

    name, params = split_spec(spec)
    common = sorted(k for k in params if k in COMMON_OPTIONS)
    if common:
        raise DataError(
            f"embed: dataset option(s) {', '.join(common)} apply when the features are loaded; give them to the "
            "`features` dataset in the suite, not to embed"
        )
    data = get_registry().create("dataset", name, **params)
    # The label's dataset part: the registered name, or a file dataset's file (folder) name.
    label = Path(str(params["path"])).stem if params.get("path") else name
    return data.load(), label, {"name": name, "params": params}


def _content_sha256(arrays: list[Any]) -> str:
    """sha256 (hex, 16 chars) over the arrays' dtypes, shapes and bytes, in 64 MB slices (no full copy)."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        step = max(1, (64 << 20) // max(1, a[:1].nbytes))
        for s in range(0, len(a), step):
            h.update(np.ascontiguousarray(a[s : s + step]).tobytes())
    return h.hexdigest()[:16]


def plan_job(
    dataset: Any,
    backbone: Any,
    out: str | os.PathLike[str] | None = None,
    *,
    views: int = 0,
    dtype: str = "float16",
    knn: int = 50,
    shard_size: int = 4096,
    seed: int = 0,
    name: str | None = None,
    view_augment: ViewAugment | None = None,
) -> EmbedJob:
    """Load the raw splits and describe the embed: its identity (backbone without weights yet), label, folder.

    `backbone` is a registered name, {"name": ..., **params} or a ready `Backbone`.
    """
    from icon_bench.data.graph import cache_root
    from icon_bench.hooks.registry import get_registry, split_spec

    if dtype not in DTYPES:
        raise DataError(f"embed: dtype must be one of {DTYPES}, got {dtype!r}")
    if views < 0 or knn < 0 or shard_size < 1:
        raise DataError("embed: views and knn must be >= 0 and shard_size >= 1")
    if not hasattr(backbone, "load"):
        bname, bparams = split_spec(backbone)
        backbone = get_registry().create("backbone", bname, **bparams)
        backbone.params = dict(bparams)
    raw, label, ds_identity = _raw_splits(dataset)
    splits = {}
    # Image datasets keep their raw uint8 pixels beside the float rows (DataSplits.images): embed those.
    raw_images = getattr(raw, "images", None) or {}
    for split in ("train", "val", "test"):
        x, y = getattr(raw, f"x_{split}", None), getattr(raw, f"y_{split}", None)
        x = raw_images.get(split, x) if y is not None and len(raw_images.get(split, ())) == len(y) else x
        if x is not None and len(x):
            images = as_images(x, raw.meta.get("image_shape"), f"dataset {ds_identity['name']!r} ({split})")
            splits[split] = (images, np.asarray(y, dtype=np.int64))
    aug = view_augment or ViewAugment()
    meta = raw.meta or {}
    source = {k: v for k, v in meta.items() if k in ("source", "url", "version") or "sha" in k or "checksum" in k}
    ds_identity.update(
        splits={s: len(y) for s, (_, y) in splits.items()},
        source=source,
        content_sha256=_content_sha256([a for pair in splits.values() for a in pair]),
    )
    identity = {
        "backbone": {**backbone.describe(), "params": getattr(backbone, "params", {})},  # a plugin's own class may lack it
        "dataset": ds_identity,
        "views": {"count": views, "augment": aug.settings(), "seed": seed, "chunk": VIEW_CHUNK} if views else None,
        "dtype": dtype,
        "knn": {"k": knn, "metric": "cosine"} if knn else None,
    }
    label = f"{name or label}-{backbone.tag}"
    return EmbedJob(
        splits, backbone, identity, Path(out).expanduser() if out else cache_root() / "features", label,
        int(raw.num_classes), views, dtype, knn, shard_size, seed,
        scales={s: pixel_scale(x) for s, (x, _) in splits.items()}, view_augment=aug, default_out=out is None,
    )


def weigh(job: EmbedJob, model: torch.nn.Module) -> None:
    """Put the loaded weights' checksum in the identity (so it is in the key) and settle the folder."""
    from icon_bench.features.backbones import weights_checksum

    job.identity["backbone"]["weights_sha256"] = weights_checksum(model)
    if job.default_out:
        job.out = job.out / f"{job.label}-{job.key[:12]}"
        job.default_out = False


def _batches(job: EmbedJob, split: str, start: int, end: int, batch: int) -> Iterator[tuple[int, int]]:
    for a in range(start, end, batch):
        yield a, min(end, a + batch)


def _load_batch(job: EmbedJob, split: str, a: int, b: int, views: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(preprocessed images, one preprocessed tensor per view) of rows a..b; runs in a loading worker."""
    x = to_uint8_range(job.splits[split][0][a:b], job.scales[split])
    pre = job.backbone.preprocess
    out_views = []
    for v in range(views):
        parts = []
        for c in range(a, b, VIEW_CHUNK):
            g = torch.Generator().manual_seed(_seed(job.seed, split, c, v))
            parts.append(job.view_augment(x[c - a : min(b, c + VIEW_CHUNK) - a], g))
        out_views.append(pre(torch.cat(parts)))
    return pre(x), out_views


def _seed(seed: int, split: str, row: int, view: int) -> int:
    return int(hashlib.sha256(f"{seed}/{split}/{row}/{view}".encode()).hexdigest()[:15], 16)


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)  # a shard is there whole or not at all


def embed_shard(job: EmbedJob, model: torch.nn.Module, shard: tuple[str, int, int, int], *, device: torch.device,
                batch_size: int, pool: ThreadPoolExecutor, ahead: int, tick: Callable[[int], None]) -> None:
    """Embed one shard's rows (and views) and write them; no grad, bf16 autocast on CUDA, loading in `pool`."""
    split, i, start, end = shard
    views = job.views_of(split)
    np_dtype = np.dtype(job.dtype)
    feats, view_feats = [], []
    spans = list(_batches(job, split, start, end, batch_size))
    futures = [pool.submit(_load_batch, job, split, a, b, views) for a, b in spans[:ahead]]
    for n, (a, b) in enumerate(spans):
        x, xv = futures[n].result()
        if n + ahead < len(spans):
            futures.append(pool.submit(_load_batch, job, split, *spans[n + ahead], views))
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            feats.append(model(x.to(device, non_blocking=True)).float().cpu().numpy().astype(np_dtype))
            if views:
                view_feats.append(np.stack([model(v.to(device)).float().cpu().numpy().astype(np_dtype) for v in xv], 1))
        tick((b - a) * (1 + views))
    job.partial.mkdir(parents=True, exist_ok=True)
    if views:
        _save(job.shard_path(split, i, "views"), np.concatenate(view_feats))
    _save(job.shard_path(split, i), np.concatenate(feats))  # last: its presence marks the shard done
    delay = float(os.environ.get(ENV_SHARD_DELAY, "0") or 0)
    if delay:
        time.sleep(delay)


def _existing(job: EmbedJob) -> dict[str, Any] | None:
    """The manifest of a finished cache of this very identity in job.out (reuse), None when there is none;
    a folder holding another identity's cache is refused (it never gets overwritten)."""
    if not (job.out / "manifest.json").is_file():
        return None
    manifest = read_manifest(job.out)
    if manifest.get("key") != job.key:
        raise DataError(
            f"{job.out}: holds another feature cache (key {manifest.get('key')}, "
            f"{manifest.get('label')}); this embed's key is {job.key}. Choose another -o, or delete that folder"
        )
    return verify_cache(job.out)


def embed_dataset(
    dataset: Any,
    backbone: Any,
    out: str | os.PathLike[str] | None = None,
    *,
    views: int = 0,
    device: str = "auto",
    batch_size: int = 256,
    workers: int = 4,
    shard_size: int = 4096,
    dtype: str = "float16",
    knn: int = 50,
    seed: int = 0,
    name: str | None = None,
    executor: str = "local",
    progress: bool = True,
) -> Path:
    """Embed a registered image dataset with a backbone into a feature cache folder; returns the folder.

    The same identity (backbone and its weights, preprocessing, dataset content, views, dtype, graph)
    reuses a finished cache; a killed run resumes from the shards it wrote. `executor="ray"` embeds
    the shards as Ray tasks (one GPU each where the cluster has GPUs) writing to the same folder.
    """
    from icon_bench.features.finish import finish

    if batch_size < 1 or workers < 0:
        raise DataError("embed: batch_size must be >= 1 and workers >= 0")
    job = plan_job(dataset, backbone, out, views=views, dtype=dtype, knn=knn, shard_size=shard_size, seed=seed, name=name)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device in (None, "auto") else torch.device(device)
    model = job.backbone.load(dev)
    weigh(job, model)
    existing = _existing(job)
    if existing is not None:
        if existing.get("label") != job.label:  # a name is not content: relabel, never re-embed
            relabel(job.out, job.label)
        _say(progress, f"embed: {job.out} already holds these features (key {job.key}); reused")
        return job.out
    todo = [s for s in job.shards() if not job.shard_path(s[0], s[1]).is_file()]
    done = len(job.shards()) - len(todo)
    if done:
        _say(progress, f"embed: resuming, {done} of {len(job.shards())} shards already in {job.partial}")
    if executor == "ray":
        del model
        from icon_bench.features.distributed import embed_on_ray

        embed_on_ray(job, todo, run=run_shards, batch_size=batch_size, workers=workers, progress=progress)
    elif executor == "local":
        run_shards(job, model, todo, device=dev, batch_size=batch_size, workers=workers, progress=progress)
    else:
        raise DataError(f"embed: executor must be 'local' or 'ray', got {executor!r}")
    finish(job, device=dev, progress=progress)
    shutil.rmtree(job.partial, ignore_errors=True)
    return job.out


def run_shards(job: EmbedJob, model: torch.nn.Module, shards: list[tuple[str, int, int, int]], *,
               device: torch.device, batch_size: int, workers: int, progress: bool,
               tick: Callable[[int], None] | None = None) -> None:
    """Embed `shards` one after another in this process, with a progress bar in images (views count) per second."""
    from tqdm.auto import tqdm

    from icon_bench.terminal import bar_size

    if job.views:
        batch_size = -(-batch_size // VIEW_CHUNK) * VIEW_CHUNK  # whole view chunks per batch
    total = sum((end - start) * (1 + job.views_of(split)) for split, _, start, end in shards)
    bar = tqdm(total=total, unit="img", desc=f"embed {job.label}", disable=not progress or tick is not None,
               file=sys.stderr, **bar_size())
    with ThreadPoolExecutor(max(1, workers)) as pool, bar:
        for shard in shards:
            # Bounded prefetch: two batches per loading thread in flight, so memory stays a few batches.
            embed_shard(job, model, shard, device=device, batch_size=batch_size, pool=pool,
                        ahead=2 * max(1, workers), tick=tick or bar.update)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr)

"""`--executor ray`: the shards of an embed spread over a Ray cluster, one model-holding actor per GPU (or CPU slot)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["embed_on_ray"]


class _Embedder:
    """A Ray actor: loads the backbone once on its device, then embeds the shards it is handed."""

    def __init__(self, job: Any, batch_size: int, workers: int, run: Callable[..., None]) -> None:
        import torch

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.job, self.batch_size, self.workers, self.run_shards = job, batch_size, workers, run
        self.model = job.backbone.load(self.device)

    def run(self, shard: tuple[str, int, int, int]) -> int:
        self.run_shards(self.job, self.model, [shard], device=self.device, batch_size=self.batch_size,
                   workers=self.workers, progress=False, tick=lambda n: None)
        split, _, start, end = shard
        return (end - start) * (1 + self.job.views_of(split))


def embed_on_ray(job: Any, shards: list[tuple[str, int, int, int]], *, run: Callable[..., None], batch_size: int,
                 workers: int, progress: bool = True, actors: int | None = None) -> None:
    """Embed `shards` on the Ray cluster at RAY_ADDRESS (a local one when unset): one actor per GPU, else
    `actors` (default 2) CPU actors; each writes its shards into the job's folder, which every node must
    see (a shared filesystem on a multi-node cluster). `run` is embed.run_shards, passed in (no import
    circle). Progress counts images as shards finish."""
    import ray
    from ray.util import ActorPool
    from tqdm.auto import tqdm

    from icon_bench.terminal import bar_size

    if not shards:
        return
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = min(len(shards), gpus or actors or 2)
    cls = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1)(_Embedder)
    ref = ray.put(job)  # the images travel once, through the object store
    pool = ActorPool([cls.remote(ref, batch_size, workers, run) for _ in range(count)])
    total = sum((end - start) * (1 + job.views_of(split)) for split, _, start, end in shards)
    with tqdm(total=total, unit="img", desc=f"embed {job.label} on {count} Ray actor(s)", disable=not progress,
              file=sys.stderr, **bar_size()) as bar:
        for done in pool.map_unordered(lambda actor, shard: actor.run.remote(shard), shards):
            bar.update(done)

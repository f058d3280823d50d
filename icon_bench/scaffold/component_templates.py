"""The component module of a generated plugin, one template per kind (the placeholders of templates.py)."""

from __future__ import annotations

_COMPONENT = {
    "kernel": '''
        """The __NAME__ kernel: Laplace affinities exp(-|x_i - x_j| / scale) over the other rows of the batch."""

        from __future__ import annotations

        import torch
        from torch import Tensor

        from icon_bench.loss import Kernel, KernelError, log_normalise


        class __CLASS__(Kernel):
            """Laplace kernel: p(j|i) proportional to exp(-|x_i - x_j| / scale), Euclidean distance, self excluded."""

            # Loss discovery may use it as q for representations and 2-D maps, its scale drawn log-uniform
            # (docs/plugins.md, "Discovery declarations"); the kit checks the declaration.
            discovery = {"q": {"tasks": ("representation", "2d"), "params": {"scale": {"loguniform": [0.1, 10.0]}}}}

            def __init__(self, scale: float = 1.0, include_self: bool = False) -> None:
                super().__init__()
                if not scale > 0:
                    raise KernelError(f"kernel '__NAME__': scale must be > 0, got {scale!r}")
                self.scale = float(scale)
                self.include_self = bool(include_self)

            def forward(self, batch: dict[str, Tensor], key: str = "embeddings") -> Tensor:
                """(N, N) log-probabilities: each row log-softmax normalised, -inf on the diagonal."""
                if key not in batch:
                    raise KernelError(f"kernel '__NAME__' needs batch[{key!r}]; the batch has {sorted(batch)}")
                x = batch[key].reshape(batch[key].shape[0], -1).float()  # fp32 distances, even for bf16 input
                sq = (x * x).sum(1)
                d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
                # sqrt has an infinite slope at 0 (the diagonal, duplicate points): keep gradients finite.
                logits = -torch.sqrt(d2 + 1e-12) / self.scale
                if not self.include_self:
                    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
                    logits = logits.masked_fill(eye, float("-inf"))
                return log_normalise(logits)


        def __NAME__(scale: float = 1.0, include_self: bool = False) -> __CLASS__:
            """Laplace kernel exp(-|x_i - x_j| / scale) on Euclidean distances."""
            return __CLASS__(scale=scale, include_self=include_self)
    ''',
    "divergence": '''
        """The __NAME__ divergence: Le Cam's triangular discrimination, bounded by 1."""

        from __future__ import annotations

        import torch
        from torch import Tensor

        from icon_bench.loss import Divergence


        class __CLASS__(Divergence):
            """Le Cam divergence sum (p - q)^2 / (p + q) / 2 per row; 0 <= D <= 1, symmetric."""

            name = "__NAME__"
            bound = 1.0  # (p - q)^2 / (p + q) <= p + q, which sums to 2
            # The generator f(t) = (t - 1)^2 / (t + 1) / 2 at t = 0: with `pointwise`, ICon's structured
            # paths sum over p's support only (docs/plugins.md, "Structured hooks"); the kit checks both.
            f0 = 0.5
            # Loss discovery (`icon-bench discover`) may draw it for these tasks (docs/plugins.md); the kit checks it.
            discovery = {"tasks": ("clustering", "representation", "2d"), "params": {}}

            def generator(self, t):  # f(t), numpy: the report's Discovered section plots it
                return (t - 1.0) ** 2 / (t + 1.0) / 2.0

            def pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
                """q f(p / q) = (p - q)^2 / (p + q) / 2 where p > 0 (q may be 0)."""
                p, q = log_p.exp(), log_q.exp()
                return 0.5 * (p - q) ** 2 / (p + q)

            def rows(self, log_p: Tensor, log_q: Tensor) -> Tensor:
                p, q = log_p.exp(), log_q.exp()
                both_zero = (p == 0) & (q == 0)
                # 0 / 0 where both are zero would be NaN (and poison the gradient through torch.where).
                denom = torch.where(both_zero, torch.ones_like(p), p + q)
                return 0.5 * torch.where(both_zero, torch.zeros_like(p), (p - q) ** 2 / denom).sum(-1)


        def __NAME__() -> __CLASS__:
            """Le Cam (triangular) divergence sum (p - q)^2 / (p + q) / 2; bounded by 1."""
            return __CLASS__()
    ''',
    "method": '''
        """The __NAME__ method: PCA embeddings and k-means clusters (a non-learned baseline, written in torch)."""

        from __future__ import annotations

        import copy
        from collections.abc import Mapping
        from typing import Any

        import torch
        from torch import Tensor

        from icon_bench.data import DataSplits
        from icon_bench.errors import UnknownNameError
        from icon_bench.evaluation import MethodOutput


        class __CLASS__:
            """PCA to `dim` components (fit on train), then k-means (k-means++ init, `iters` Lloyd steps).

            A method is any object with ``with_overrides(spec) -> method`` (whose ``metrics`` are the
            default metrics) and ``run(data, *, seed, device, overrides, progress) -> MethodOutput``.
            """

            metrics = ["hungarian", "nmi", "ari", "linear_probe", "knn"]
            divergence = None  # not an I-Con loss: no divergence to report

            def __init__(self, dim: int = 8, iters: int = 25) -> None:
                if dim < 1 or iters < 1:
                    raise ValueError(f"method '__NAME__': dim and iters must be >= 1, got {dim}, {iters}")
                self.dim = int(dim)
                self.iters = int(iters)

            def with_overrides(self, overrides: Mapping[str, Any] | None) -> __CLASS__:
                """A copy with a trial spec's ``settings`` (dim, iters) applied."""
                new = copy.copy(self)
                for key, value in dict((overrides or {}).get("settings") or {}).items():
                    if key not in ("dim", "iters"):
                        raise UnknownNameError("setting", key, ["dim", "iters"], where="method '__NAME__'")
                    setattr(new, key, int(value))
                return new

            def run(
                self,
                data: DataSplits,
                *,
                seed: int = 0,
                device: str | torch.device = "cpu",
                overrides: Mapping[str, Any] | None = None,
                progress: bool = False,
            ) -> MethodOutput:
                """Embed both splits with the train split's principal components; cluster them with k-means."""
                m = self.with_overrides(overrides)
                gen = torch.Generator().manual_seed(seed)
                x_train = data.x_train.reshape(len(data.x_train), -1).double()  # float64: PCA signs and ties
                x_test = data.x_test.reshape(len(data.x_test), -1).double()
                mean = x_train.mean(0)
                _, _, vh = torch.linalg.svd(x_train - mean, full_matrices=False)
                basis = vh[: min(m.dim, vh.shape[0])].T
                z_train, z_test = (x_train - mean) @ basis, (x_test - mean) @ basis
                centers, inertia = kmeans(z_train, data.num_classes, m.iters, gen)
                return MethodOutput(
                    train_embeddings=z_train.float(),
                    test_embeddings=z_test.float(),
                    train_clusters=torch.cdist(z_train, centers).argmin(1),
                    test_clusters=torch.cdist(z_test, centers).argmin(1),
                    history={"inertia": inertia},
                    info={"dim": basis.shape[1], "iters": m.iters, "stop_reason": "completed"},
                )


        def kmeans(x: Tensor, k: int, iters: int, gen: torch.Generator) -> tuple[Tensor, list[float]]:
            """Lloyd's k-means with k-means++ seeding; returns the centers and the inertia after each step."""
            centers = x[torch.randint(len(x), (1,), generator=gen)]
            while len(centers) < k:
                d2 = torch.cdist(x, centers).min(1).values ** 2
                weights = d2 if float(d2.sum()) > 0 else torch.ones_like(d2)  # all points on the centers
                centers = torch.cat([centers, x[torch.multinomial(weights, 1, generator=gen)]])
            inertia = []
            for _ in range(iters):
                assign = torch.cdist(x, centers).argmin(1)
                for c in range(k):
                    members = x[assign == c]
                    if len(members):  # an empty cluster keeps its center
                        centers[c] = members.mean(0)
                inertia.append(float((torch.cdist(x, centers).min(1).values ** 2).sum()))
            return centers, inertia


        def __NAME__(dim: int = 8, iters: int = 25) -> __CLASS__:
            """PCA embeddings and k-means clusters, in torch (a baseline)."""
            return __CLASS__(dim=dim, iters=iters)
    ''',
    "dataset": '''
        """The __NAME__ dataset: noisy concentric rings in 2-D, one class per ring."""

        from __future__ import annotations

        import math

        import torch

        from icon_bench.data import DataSplits, Dataset
        from icon_bench.errors import DataError


        class __CLASS__(Dataset):
            """Points on `rings` concentric circles of radius 1, 2, ..., with Gaussian radial noise."""

            name = "__NAME__"

            def __init__(self, n_samples: int, rings: int, noise: float, seed: int, test_size: float) -> None:
                if rings < 2 or n_samples < 4 * rings:
                    raise DataError("dataset '__NAME__': need rings >= 2 and n_samples >= 4 * rings")
                if not 0 < test_size < 1 or noise < 0:
                    raise DataError("dataset '__NAME__': test_size must be in (0, 1) and noise >= 0")
                self.params = {
                    "n_samples": n_samples, "rings": rings, "noise": noise, "seed": seed, "test_size": test_size
                }

            def load(self) -> DataSplits:
                p = self.params
                gen = torch.Generator().manual_seed(p["seed"])
                y = torch.arange(p["n_samples"]) % p["rings"]
                angle = 2 * math.pi * torch.rand(p["n_samples"], generator=gen)
                radius = (y + 1).float() + p["noise"] * torch.randn(p["n_samples"], generator=gen)
                x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1).float()
                # Stratified split: every ring appears in both splits.
                order = torch.randperm(p["n_samples"], generator=gen)
                test = torch.zeros(p["n_samples"], dtype=torch.bool)
                for c in range(p["rings"]):
                    members = order[y[order] == c]
                    test[members[: max(1, round(p["test_size"] * len(members)))]] = True
                return DataSplits(
                    x_train=x[~test],
                    y_train=y[~test].long(),
                    x_test=x[test],
                    y_test=y[test].long(),
                    num_classes=p["rings"],
                    name="__NAME__",
                    meta={"source": "__DIST__", "params": dict(p)},
                )


        def __NAME__(
            n_samples: int = 600, rings: int = 3, noise: float = 0.1, seed: int = 0, test_size: float = 0.25
        ) -> __CLASS__:
            """Noisy concentric rings in 2-D, one class per ring (radius 1, 2, ...)."""
            return __CLASS__(n_samples=n_samples, rings=rings, noise=noise, seed=seed, test_size=test_size)
    ''',
    "backbone": '''
        """The __NAME__ backbone: colour histograms of image tiles under a fixed random projection (no weights to download)."""

        from __future__ import annotations

        import torch
        from torch import Tensor, nn

        from icon_bench.features import Backbone, ImagePreprocess


        class __CLASS__(nn.Module):
            """Average-pools each channel to `grid` x `grid` tiles, then a seeded random projection to `dim` features."""

            def __init__(self, grid: int, dim: int, seed: int) -> None:
                super().__init__()
                gen = torch.Generator().manual_seed(seed)
                self.pool = nn.AdaptiveAvgPool2d(grid)
                self.register_buffer("projection", torch.randn(3 * grid * grid, dim, generator=gen) / (3 * grid * grid) ** 0.5)

            def forward(self, x: Tensor) -> Tensor:
                return self.pool(x).flatten(1) @ self.projection


        def __NAME__(size: int = 64, grid: int = 4, dim: int = 32, seed: int = 0) -> Backbone:
            """Tile colour means of the image resized to `size` (bicubic, centre crop), projected to `dim` features."""
            return Backbone(
                "__NAME__",
                f"__NAME__-g{grid}-d{dim}",
                lambda: __CLASS__(grid, dim, seed),
                ImagePreprocess(resize=size, crop=size),
                ref=f"seed{seed}",
                tag=f"__NAME__-d{dim}",
            )
    ''',
}

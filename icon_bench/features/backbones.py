"""Backbones: frozen image encoders with their preprocessing; the built-ins `torchhub`, `timm` and `open_clip`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from icon_bench.errors import DataError
from icon_bench.features.preprocess import ImagePreprocess
from icon_bench.hooks.specs import hookimpl

__all__ = ["Backbone", "HUB_MODELS", "open_clip", "timm", "torchhub", "weights_checksum"]

#: The torch.hub repositories of the papers' backbones, pinned to one commit each (recorded in every
#: manifest, so a cache says which code built the model). A commit is not a branch head, so
#: torch.hub's fork check is skipped for it (it only knows branch heads and tags).
HUB_REFS: dict[str, str] = {
    "facebookresearch/dino": "144f70567a6ff853b9ea44503ba37fdcf8ca41fb",
    "facebookresearch/dinov2": "12592a9bdfea0a6e4ee4767cd5a8d3195c0e3509",
}
#: Model name -> (repository, the short tag reports use: `<dataset>-<tag>`).
HUB_MODELS: dict[str, tuple[str, str]] = {
    "dino_vits16": ("facebookresearch/dino", "dino-vits16"),
    "dino_vitb16": ("facebookresearch/dino", "dino-vitb16"),
    "dino_vits8": ("facebookresearch/dino", "dino-vits8"),
    "dino_vitb8": ("facebookresearch/dino", "dino-vitb8"),
    **{f"dinov2_vit{s}14": ("facebookresearch/dinov2", f"dinov2-vit{s}14") for s in "sblg"},
}


class Backbone:
    """A frozen image encoder: `load(device)` gives a module mapping preprocessed images (B, 3, S, S)
    to features (B, D); `preprocess` maps uint8-range images (B, C, H, W) to that input.

    `describe()` is what the manifest records of it (and so what the cache key covers): plugin,
    repository, model, ref, preprocessing. `tag` names it in report labels (`imagenet1k-<tag>`).
    """

    def __init__(
        self,
        plugin: str,
        model: str,
        loader: Callable[[], nn.Module],
        preprocess: Callable[[Tensor], Tensor],
        *,
        repo: str | None = None,
        ref: str | None = None,
        tag: str | None = None,
        forward: str | None = None,
    ) -> None:
        self.plugin, self.model, self.repo, self.ref = plugin, model, repo, ref
        self.tag = tag or model.replace("_", "-").replace("/", "-").lower()
        self._loader, self.preprocess, self.forward = loader, preprocess, forward
        self.params: dict[str, Any] = {}  # the factory's parameters, recorded by embed in the manifest

    def describe(self) -> dict[str, Any]:
        settings = getattr(self.preprocess, "settings", None)
        return {
            "plugin": self.plugin,
            "repo": self.repo,
            "model": self.model,
            "ref": self.ref,
            "tag": self.tag,
            "preprocessing": settings() if callable(settings) else repr(self.preprocess),
        }

    def load(self, device: str | torch.device = "cpu") -> nn.Module:
        """The model on `device`, in eval mode, with gradients off (a frozen encoder)."""
        try:
            module = self._loader()
        except (OSError, RuntimeError, ValueError, ImportError) as exc:  # offline, a bad ref, a missing hubconf entry
            where = f" from {self.repo}" + (f"@{self.ref}" if self.ref else "") if self.repo else ""
            raise DataError(
                f"backbone {self.plugin!r}: cannot load {self.model!r}{where} ({type(exc).__name__}: {exc}); "
                "torch.hub needs the network the first time, then reads $TORCH_HOME (~/.cache/torch/hub)"
            ) from None
        if self.forward:  # e.g. open_clip's encode_image: wrap so module(x) gives the features
            module = _Method(module, self.forward)
        module = module.to(device).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return module


class _Method(nn.Module):
    """Calls `module.<name>(x)` as forward."""

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__()
        self.inner, self.name = module, name

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self.inner, self.name)(x)


def weights_checksum(module: nn.Module) -> str:
    """sha256 (hex, 16 chars) over the state dict's names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        arr = t.detach().cpu().contiguous()
        h.update(f"{name}:{arr.dtype}:{tuple(arr.shape)}".encode())
        h.update(arr.view(torch.uint8).numpy().tobytes() if arr.numel() else b"")
    return h.hexdigest()[:16]


def torchhub(
    model: str = "dinov2_vitb14",
    repo: str | None = None,
    ref: str | None = None,
    source: str = "github",
    pretrained: bool = True,
    resize: int = 256,
    crop: int = 224,
) -> Backbone:
    """Any torch.hub model (DINO `facebookresearch/dino` dino_vit{s,b}16, DINOv2 `facebookresearch/dinov2` dinov2_vit{s,b,l,g}14).

    `repo` defaults from the model name; `ref` to the pinned commit of that repository; source
    "local" loads a hubconf.py folder (`repo` is its path). Preprocessing: shorter side to `resize`
    (bicubic, antialiased), centre crop `crop`, ImageNet mean and std (DINO's and DINOv2's).
    """
    known = HUB_MODELS.get(model)
    if repo is None:
        if known is None:
            raise DataError(
                f"backbone 'torchhub': no default repository for model {model!r}; give repo "
                f"(known models: {', '.join(HUB_MODELS)})"
            )
        repo = known[0]
    if source not in ("github", "local"):
        raise DataError(f"backbone 'torchhub': source must be 'github' or 'local', got {source!r}")
    if source == "github" and ref is None:
        ref = HUB_REFS.get(repo)
    tag = known[1] if known and known[0] == repo else None

    def load() -> nn.Module:
        where = repo if source == "local" or not ref else f"{repo}:{ref}"
        pinned = source == "github" and ref is not None and ref == HUB_REFS.get(repo)
        return torch.hub.load(
            where, model, source=source, pretrained=pretrained, trust_repo=True, skip_validation=pinned, verbose=False
        )

    return Backbone(
        "torchhub", model, load, ImagePreprocess(resize, crop), repo=repo, ref=ref if source == "github" else "local", tag=tag
    )


def _optional(module: str, backbone: str) -> Any:
    from icon_bench.extras import require

    return require(module, f"backbone {backbone!r}")  # one line naming icon-bench[vision] when absent


def timm(model: str = "vit_base_patch16_224.augreg_in21k", pretrained: bool = True) -> Backbone:
    """A timm model (pooled features, no classifier) with the preprocessing of its own data config; needs icon-bench[vision]."""
    timm_mod = _optional("timm", "timm")
    net = timm_mod.create_model(model, pretrained=pretrained, num_classes=0)
    cfg = timm_mod.data.resolve_data_config({}, model=net)
    size = int(cfg["input_size"][-1])
    resize = int(size / float(cfg.get("crop_pct", 1.0) or 1.0))
    interp = cfg.get("interpolation", "bicubic")
    pre = ImagePreprocess(resize, size, cfg["mean"], cfg["std"], interp if interp in ("bicubic", "bilinear") else "bicubic")
    version = getattr(timm_mod, "__version__", None)
    return Backbone("timm", model, lambda: net, pre, repo="timm", ref=version)


def open_clip(model: str = "ViT-B-32", pretrained: str = "openai") -> Backbone:
    """An open_clip image tower (encode_image) with the preprocessing of its transform (size, mean, std); needs icon-bench[vision]."""
    oc = _optional("open_clip", "open_clip")
    net, _, _ = oc.create_model_and_transforms(model, pretrained=pretrained)
    cfg = oc.get_model_preprocess_cfg(net) if hasattr(oc, "get_model_preprocess_cfg") else {}
    size = cfg.get("size", getattr(net.visual, "image_size", 224))
    size = int(size[-1] if isinstance(size, (tuple, list)) else size)
    mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))  # OpenAI CLIP's, open_clip's default
    std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
    interp = cfg.get("interpolation", "bicubic")
    pre = ImagePreprocess(size, size, mean, std, interp if interp in ("bicubic", "bilinear") else "bicubic")
    tag = f"clip-{model.lower()}-{pretrained}"
    return Backbone("open_clip", model, lambda: net, pre, repo="open_clip", ref=pretrained, tag=tag, forward="encode_image")


@hookimpl
def register_backbones(register: Callable[..., None]) -> None:
    register("torchhub", torchhub)
    register("timm", timm)
    register("open_clip", open_clip, aliases=("clip",))

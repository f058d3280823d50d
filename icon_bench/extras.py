"""Optional extras (`pip install 'icon-bench[tune]'`, ...): importing what one brings, with a one-line error naming it."""

from __future__ import annotations

import importlib
from types import ModuleType

from icon_bench.errors import IconBenchError

__all__ = ["EXTRAS", "MissingExtra", "available", "missing_message", "require"]

#: Importable module -> (the extra that installs it, the distribution named in the message).
EXTRAS: dict[str, tuple[str, str]] = {
    "optuna": ("tune", "optuna"),
    "mlflow": ("mlflow", "mlflow"),
    "timm": ("vision", "timm"),
    "open_clip": ("vision", "open_clip_torch"),
    "PIL": ("vision", "Pillow"),
    "faiss": ("ann", "faiss-cpu"),
}


class MissingExtra(IconBenchError, ImportError):
    """A feature asked for a package that only an optional extra installs."""


def missing_message(what: str, module: str) -> str:
    """``"tpe needs optuna: pip install 'icon-bench[tune]'"``: the line a user acts on."""
    extra, dist = EXTRAS[module]
    return f"{what} needs {dist}: pip install 'icon-bench[{extra}]'"


def require(module: str, what: str) -> ModuleType:
    """Import `module` (a key of EXTRAS or one of its submodules); MissingExtra naming the extra if it is absent.

    Only the absence of the package itself is turned into that message: an import error raised
    inside an installed package (a broken install, a missing dependency of its own) surfaces as is.
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise
        raise MissingExtra(missing_message(what, top)) from None


def available(module: str) -> bool:
    """Whether `module` imports (what a load-time check asks before a run starts)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True

"""Where a trial ran, as its row records it: versions, processor, git commit, peak memory."""

from __future__ import annotations

import functools
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any


def versions() -> dict[str, Any]:
    """Versions of icon-bench, torch, python and every loaded plugin distribution, and the processor.

    The processor matters: the same seeds give the same numbers on one CPU model, but another
    instruction set (other oneDNN kernels) rounds differently, and training amplifies it.
    """
    import torch

    from icon_bench._version import __version__
    from icon_bench.hooks.registry import get_registry

    return {
        "icon_bench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "plugins": dict(sorted(get_registry().distributions().items())),
        "cpu": cpu_model(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


@functools.cache
def cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what platform knows; read once per process."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit(path: str | Path | None = None) -> str | None:
    """HEAD of the git checkout that holds icon-bench (or `path`); None outside one or without git."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def peak_memory_mb(device: Any = None) -> dict[str, float | None]:
    """Peak resident memory of this process, and peak CUDA memory allocated on `device` when it is CUDA."""
    import torch

    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    cpu_mb = rss_kb / (1024 * 1024) if sys.platform == "darwin" else rss_kb / 1024
    cuda = None
    if device is not None and getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        cuda = torch.cuda.max_memory_allocated(device) / 2**20
    return {"cpu": float(cpu_mb), "cuda": cuda}

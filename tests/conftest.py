"""Shared pytest fixtures: a small thread budget and locations of optional shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores are shared by the whole suite (and pytest-xdist workers): one thread each keeps it fast.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_PATH = REPO_ROOT.parent / "shared" / "data" / "mnist.npz"


@pytest.fixture
def mnist_path() -> Path:
    """Path of the shared MNIST file; skips the test when the shared folder is absent."""
    if not MNIST_PATH.exists():
        pytest.skip(f"MNIST not found at {MNIST_PATH} (the shared/ folder beside the repository)")
    return MNIST_PATH

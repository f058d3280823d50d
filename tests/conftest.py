"""Shared pytest fixtures: a small thread budget, locations of optional shared data, fake installed plugins."""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from icon_bench.hooks import registry
from icon_bench.hooks import specs as hookspecs

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


@pytest.fixture(scope="session", autouse=True)
def _graph_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """kNN graphs of the tests go to a throwaway cache, never the user's ~/.cache/icon-bench."""
    before = os.environ.get("ICON_BENCH_CACHE")
    os.environ["ICON_BENCH_CACHE"] = str(tmp_path_factory.mktemp("icon-bench-cache"))
    yield
    if before is None:
        os.environ.pop("ICON_BENCH_CACHE", None)
    else:
        os.environ["ICON_BENCH_CACHE"] = before


@pytest.fixture(scope="session", autouse=True)
def _data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Datasets of the tests go to a throwaway cache (ICON_BENCH_DATA), never ~/.cache; nothing downloads."""
    saved = {k: os.environ.get(k) for k in ("ICON_BENCH_DATA", "ICON_BENCH_OFFLINE", "ICON_BENCH_MIRROR")}
    root = tmp_path_factory.mktemp("icon-bench-data")
    os.environ["ICON_BENCH_DATA"] = str(root)
    os.environ["ICON_BENCH_OFFLINE"] = "1"  # a test that forgets to pre-fill the cache fails, not downloads
    os.environ.pop("ICON_BENCH_MIRROR", None)
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def mnist_cache(_data_dir: Path) -> Path:
    """The test cache with `mnist` pre-filled from ../shared/data/mnist.npz (`icon-bench datasets import`); skips without it."""
    if not MNIST_PATH.exists():
        pytest.skip(f"MNIST not found at {MNIST_PATH} (the shared/ folder beside the repository)")
    from icon_bench.data.vision import cached, import_source

    if not cached("mnist"):
        import_source("mnist", MNIST_PATH)
    return _data_dir


@pytest.fixture(autouse=True)
def _fresh_graph_memory() -> None:
    """Each test starts without graphs another test left in this process's cache."""
    from icon_bench.data.graph import clear_graph_cache

    clear_graph_cache()


_counter = itertools.count()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """A throwaway sys.path entry; returns ``install(dist, source, entry=...)`` writing a fake installed plugin.

    Each plugin is a module plus a ``*.dist-info`` directory with METADATA and entry_points.txt, which
    is all importlib.metadata needs to list the entry point. sys.path, sys.modules and the process-wide
    registry are restored afterwards so nothing leaks into other tests.
    """
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))  # also invalidates the import caches
    monkeypatch.delenv(registry.ENV_STRICT, raising=False)
    monkeypatch.delenv(registry.ENV_DISABLE, raising=False)
    modules: list[str] = []

    def install(dist: str, source: str, *, entry: str | None = None, version: str = "1.2.3") -> str:
        module = f"_icb_test_plugin_{next(_counter)}"  # unique: sys.modules caches by name
        modules.append(module)
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[{hookspecs.ENTRY_POINT_GROUP}]\n{entry or dist} = {module}\n")
        return entry or dist

    yield install
    for module in modules:
        sys.modules.pop(module, None)
    registry.set_registry(None)


@pytest.fixture
def fake_method() -> Iterator[None]:
    """Method "fake" registered (fake_trial's knobs are no real method's settings); the registry restored."""
    from ray_trials import use_fake_method

    saved = registry.get_registry()
    use_fake_method()
    yield
    registry.set_registry(saved)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster of 2 CPUs started the tool's own way, shipping tests/ray_trials.py to its workers by value.

    test_executors.py overrides it with more (fake) CPUs and GPUs.
    """
    ray = pytest.importorskip("ray")
    import ray_trials
    from ray import cloudpickle

    from icon_bench.run.execution.ray_cluster import ray_session

    cloudpickle.register_pickle_by_value(ray_trials)  # workers cannot import tests/ray_trials.py by name
    try:
        with ray_session(num_cpus=2) as started:
            assert started and ray.is_initialized()
            yield
    finally:
        cloudpickle.unregister_pickle_by_value(ray_trials)

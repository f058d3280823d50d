"""The example third-party plugin plugins/icon-bench-renyi: installed, listed, conformant, and usable in a suite."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from icon_bench import testing

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "plugins" / "icon-bench-renyi"
DIST = "icon-bench-renyi"


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    """The plugin must be installed (.ci/run does `pip install -e plugins/*/`): fail loudly, never skip."""
    try:
        md.distribution(DIST)
    except md.PackageNotFoundError:
        pytest.fail(f"{DIST} is not installed; run: pip install -e {PLUGIN_DIR.relative_to(REPO)}")


def test_package_declares_its_entry_point_in_group_icon_bench() -> None:
    eps = [ep for ep in md.distribution(DIST).entry_points if ep.group == "icon_bench"]
    assert [(ep.name, ep.value) for ep in eps] == [("renyi", "icon_bench_renyi")]
    assert md.version(DIST) == "0.1.0"


def test_renyi_appears_in_icon_bench_plugins_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "icon_bench.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    plugin = next(p for p in data["plugins"] if p["distribution"] == DIST)
    assert plugin["status"] == "ok", plugin["error"]
    assert (plugin["name"], plugin["version"]) == ("renyi", "0.1.0")
    assert sorted(plugin["components"]) == ["divergence:renyi", "kernel:learnable_t"]
    renyi = next(c for c in data["components"]["divergence"] if c["name"] == "renyi")
    assert renyi["distribution"] == DIST and renyi["aliases"] == ["renyi_alpha"]
    assert renyi["params"] == [{"name": "alpha", "type": "float", "required": False, "default": 2.0}]
    assert "Renyi" in renyi["description"]
    kernel = next(c for c in data["components"]["kernel"] if c["name"] == "learnable_t")
    assert {p["name"] for p in kernel["params"]} == {"dof", "scale", "include_self"}


def test_conformance_kit_passes_on_the_installed_plugin() -> None:
    from icon_bench.hooks.registry import load_registry

    assert sorted(testing.check_plugin(DIST, registry=load_registry())) == ["divergence:renyi", "kernel:learnable_t"]
    # the plugin name works as well as the distribution name
    assert testing.components("renyi", registry=load_registry(), kinds=["divergence"]) == [("divergence", "renyi")]


def test_the_plugins_own_test_suite_passes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN_DIR / "tests")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PLUGIN_DIR,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def _runner_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("icon_bench.runner", "icon_bench.run.execution.trial"))


@pytest.mark.skipif(not _runner_available(), reason="icon_bench.runner / icon_bench.run.execution.trial not written yet")
def test_suite_with_the_renyi_divergence_records_the_plugin_in_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icon_bench.hooks import registry
    from icon_bench.runner import run_suite

    monkeypatch.chdir(tmp_path)
    registry.set_registry(None)  # a fresh registry: entry points as installed now
    suite = tmp_path / "renyi.yaml"
    suite.write_text(
        textwrap.dedent(
            """
            name: renyi_example
            datasets:
              - {name: blobs, n_samples: 120, n_features: 5, centers: 3}
            grid:
              method: [pmi]
              divergence: [{name: renyi, alpha: 0.5}]
              seed: [0]
              epochs: 1
              batch_size: 64
            evaluate: [hungarian, nmi]
            executor: local
            resources: {cpus: 1, gpus: 0}
            """
        )
    )
    out = io.StringIO()
    try:
        code = run_suite(suite, results=tmp_path / "results", report=False, progress=False, out=out)
    finally:
        registry.set_registry(None)
    assert code == 0, out.getvalue()
    rows = [
        json.loads(line)
        for f in sorted((tmp_path / "results").rglob("*.jsonl"))
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    assert len(rows) == 1, out.getvalue()
    row = rows[0]
    assert row["status"] == "ok", row.get("error")
    assert row["divergence"] == "renyi"
    assert row["components"]["divergence"] == {"name": "renyi", "distribution": DIST, "version": "0.1.0"}
    assert row["versions"]["plugins"][DIST] == "0.1.0"
    assert set(row["metrics"]) >= {"hungarian", "nmi"}

"""The corpus of bad suites (tests/bad_suites/): each fails at load or plan time, fast, with a short file:line: key
message."""

from __future__ import annotations

import io
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from icon_bench import cli
from icon_bench.errors import SuiteError
from icon_bench.run.suite.reader import load_suite
from icon_bench.runner import run_suite

CORPUS = Path(__file__).resolve().parent / "bad_suites"
EXPECTED: dict[str, list[str]] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))


def _plan_error(path: Path) -> str:
    """The error `icon-bench run PATH --dry-run` gives: loading, then planning (data files, GPUs)."""
    out = io.StringIO()
    with pytest.raises(SuiteError) as info:
        run_suite(path, dry_run=True, out=out, results=path.parent / "never")
    assert out.getvalue() == ""  # nothing planned, nothing printed before the error
    return str(info.value)


def test_the_corpus_is_complete() -> None:
    files = sorted(p.name for p in CORPUS.glob("*.yaml") if p.name != "expected.yaml")
    assert files == sorted(EXPECTED) and len(files) >= 30
    kinds = {name.split("_")[1] for name in files}
    assert {"syntax", "type", "range", "name", "synonym", "alias", "grid", "path", "unicode"} <= kinds


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_suite_gets_its_message(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative data paths resolve here, where there are none
    path = CORPUS / name
    start = time.process_time()
    message = _plan_error(path)
    assert time.process_time() - start < 5, "a bad suite is refused in bounded time"
    where, *details = EXPECTED[name]
    assert f"{path}{where}" in message
    for detail in details:
        assert detail in message
    lines = message.splitlines()
    assert 1 <= len(lines) <= 3 and all(line.startswith(f"{path}:") for line in lines)
    assert all(len(line) <= len(str(path)) + 220 for line in lines), "messages stay short"
    assert "Traceback" not in message


@pytest.mark.parametrize(
    "name", ["47_alias_billion_laughs.yaml", "50_grid_billion_seeds.yaml", "51_grid_axes_product.yaml"]
)
def test_unbounded_inputs_fail_fast_without_large_allocations(name: str) -> None:
    # Before: the 17-line alias file drove line collection to 4.7 GB, and a 1e9-cell grid was expanded.
    path = CORPUS / name
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(SuiteError):
            load_suite(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_the_cell_limit_is_an_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "big.yaml"
    suite.write_text("name: big\ndatasets: [digits]\ngrid:\n  method: [kmeans, pmi]\nseeds: 1000000000\n")
    assert cli.main(["run", str(suite), "--dry-run", "--results", str(tmp_path / "r")]) == 2
    assert "2000000000 cells (dataset 1 x method 2 x seed 1000000000), over the limit of 10000" in capsys.readouterr().err
    # Raised, the dry run counts from the axes and expands none of the cells it would only summarise
    # (before: a MemoryError at 4.4 GB for 1e9 cells, and 1e6 cells hung for more than 90 s).
    argv = ["run", str(suite), "--dry-run", "--max-cells", "2000000000", "--results", str(tmp_path / "r")]
    assert cli.main(argv) == 0  # once untimed: the plan-time checks' first imports (torch) are not the point
    capsys.readouterr()
    tracemalloc.start()
    start = time.process_time()
    try:
        assert cli.main(argv) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out = capsys.readouterr().out
    assert "2000000000 cells" in out and "not expanded" in out
    assert time.process_time() - start < 5 and peak < 50 * 2**20
    # Within the default limit the dry run shows the plan per method and dataset as before.
    suite.write_text("name: big\ndatasets: [digits]\ngrid:\n  method: [kmeans]\nseeds: 3\n")
    assert cli.main(["run", str(suite), "--dry-run", "--results", str(tmp_path / "r")]) == 0
    assert "3 cells, 0 done, 0 failed, 3 to run" in capsys.readouterr().out


def test_gpus_under_the_local_executor_need_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    suite = tmp_path / "gpu.yaml"
    suite.write_text("name: gpu\ndatasets: [digits]\ngrid:\n  method: [kmeans]\nresources:\n  gpus: 1\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = _plan_error(suite)
    assert message.startswith(f"{suite}:6: resources.gpus: 1 GPU(s) per trial, but this machine has no GPU")
    # Under Ray the cluster decides (the Ray executor checks it before the first trial).
    out = io.StringIO()
    assert run_suite(suite, dry_run=True, executor="ray", out=out, results=tmp_path / "r") == 0


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: bom\ndatasets: [digits]\ngrid: {method: [kmeans]}\n")
    assert load_suite(path).name == "bom"


def test_huge_file_is_not_read_past_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("name: huge\n# " + "x" * (2 << 20) + "\n")
    with pytest.raises(SuiteError, match=r"huge\.yaml:1: suite file too large"):
        load_suite(path)

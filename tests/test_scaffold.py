"""`icon-bench new-plugin`: names checked, nothing overwritten, every generated package installs and passes its test."""

from __future__ import annotations

import os
import re
import site
import subprocess
import venv
from pathlib import Path

import pytest

from icon_bench import cli, scaffold
from icon_bench.scaffold import ScaffoldError, create_plugin, validate_name


@pytest.mark.parametrize("name", ["renyi2", "my_kernel", "a", "x" * 40])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "hint"),
    [("My-Kernel", "try 'my_kernel'"), ("9lives", ""), ("", ""), ("a b", "try 'a_b'"), ("x" * 41, ""), ("class", "")],
)
def test_invalid_names_are_refused_with_the_rule(name: str, hint: str) -> None:
    with pytest.raises(ScaffoldError, match="invalid plugin name") as excinfo:
        validate_name(name)
    assert hint in str(excinfo.value)


def test_layout_and_entry_point(tmp_path: Path) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    target = create_plugin("heavy_tail", "kernel", tmp_path, check_registry=False)
    assert target == tmp_path / "icon-bench-heavy-tail"
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "pyproject.toml",
        "src/icon_bench_heavy_tail/__init__.py",
        "src/icon_bench_heavy_tail/kernel.py",
        "tests/test_heavy_tail.py",
    ]
    meta = tomllib.loads((target / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "icon-bench-heavy-tail"
    assert "icon-bench" in meta["project"]["dependencies"]
    assert meta["project"]["entry-points"]["icon_bench"] == {"heavy_tail": "icon_bench_heavy_tail"}
    init = (target / "src/icon_bench_heavy_tail/__init__.py").read_text()
    assert "@hookimpl\ndef register_kernels(register" in init and 'register("heavy_tail", heavy_tail)' in init
    test = (target / "tests/test_heavy_tail.py").read_text()
    assert 'testing.check_plugin("icon-bench-heavy-tail") == ["kernel:heavy_tail"]' in test
    for path in target.rglob("*"):  # every placeholder was filled
        if path.is_file():
            assert "__NAME__" not in path.read_text() and "__PKG__" not in path.read_text()


def test_refuses_to_overwrite_an_existing_directory(tmp_path: Path) -> None:
    existing = tmp_path / "icon-bench-taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="already exists; refusing to overwrite"):
        create_plugin("taken", "divergence", tmp_path, check_registry=False)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_refuses_a_name_already_registered_for_that_kind(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match=r"a divergence named 'kl' is already registered by icon-bench"):
        create_plugin("kl", "divergence", tmp_path)
    assert not (tmp_path / "icon-bench-kl").exists()
    # the same name for another kind is fine: names are per kind
    assert create_plugin("kl", "dataset", tmp_path).is_dir()


def test_refuses_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="cannot scaffold a 'metric'"):
        create_plugin("fancy", "metric", tmp_path, check_registry=False)


def test_cli_new_plugin_writes_the_package(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["new-plugin", "tiny_rings", "--kind", "dataset", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"created {tmp_path / 'icon-bench-tiny-rings'}/" in out and "pip install -e" in out
    assert (tmp_path / "icon-bench-tiny-rings/src/icon_bench_tiny_rings/dataset.py").is_file()
    # again: a clean error (exit 2), no traceback, nothing touched
    assert cli.main(["new-plugin", "tiny_rings", "--kind", "dataset", "--dir", str(tmp_path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert cli.main(["new-plugin", "Bad-Name", "--kind", "kernel", "--dir", str(tmp_path)]) == 2
    assert "invalid plugin name 'Bad-Name'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["new-plugin", "x", "--kind", "sampler"])


def _child_environment(env_dir: Path) -> str:
    """A fresh venv that sees this interpreter's packages (torch, icon-bench, pip) behind its own.

    `--system-site-packages` is not enough: it exposes the *base* interpreter's packages, not those
    of the venv the tests may run in (.ci/run's .venv). A .pth line that calls site.addsitedir on
    each of our site directories also runs their .pth files (editable installs live there).
    """
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = str(env_dir / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parents = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if os.path.isdir(p)]
    calls = "; ".join(f"site.addsitedir({p!r})" for p in parents)
    Path(purelib, "_icon_bench_parent_env.pth").write_text(f"import site; {calls}\n")
    return python


def test_generated_packages_install_and_pass_their_own_tests(tmp_path: Path) -> None:
    """Each kind: generate, `pip install -e` into a venv that sees this environment, run its test."""
    names = {kind: f"gen_{kind}" for kind in scaffold.KINDS}
    targets = [create_plugin(name, kind, tmp_path / "src", check_registry=False) for kind, name in names.items()]
    python = _child_environment(tmp_path / "venv")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("ICON_BENCH_DISABLE_PLUGINS", None)
    cmd = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    for target in targets:
        cmd += ["-e", str(target)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # One pytest run over the four packages (one interpreter start), then every test checked by name;
    # each package's first test is check_plugin, which fails if the entry point did not load.
    proc = subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", *[str(t / "tests") for t in targets]],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed = set(re.findall(r"^PASSED (\S+)", proc.stdout, flags=re.M))
    for name in names.values():
        assert any(f"test_{name}.py::test_installed_plugin_passes_the_conformance_kit" in t for t in passed), passed
        assert len([t for t in passed if f"test_{name}.py::" in t]) >= 2, passed
    assert "FAILED" not in proc.stdout and "ERROR" not in proc.stdout

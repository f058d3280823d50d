"""Optional extras: a missing one is named in one line (icon_bench/extras.py), simulated by hiding the module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from icon_bench import extras
from icon_bench.extras import MissingExtra, missing_message, require


@pytest.mark.parametrize(("module", "what", "line"), [
    ("optuna", "tpe", "tpe needs optuna: pip install 'icon-bench[tune]'"),
    ("mlflow.tracking", "MLflow logging", "MLflow logging needs mlflow: pip install 'icon-bench[mlflow]'"),
    ("open_clip", "CLIP features", "CLIP features needs open_clip_torch: pip install 'icon-bench[vision]'"),
    ("PIL.Image", "image files", "image files needs Pillow: pip install 'icon-bench[vision]'"),
])
def test_a_missing_extra_is_one_line_naming_it(module: str, what: str, line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module.split(".")[0], None)  # `import X` now fails as if X were not installed
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra) as info:
        require(module, what)
    assert str(info.value) == line
    assert isinstance(info.value, ImportError)  # code catching ImportError still does
    assert not extras.available(module)


def test_a_broken_install_is_not_reported_as_a_missing_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed "optuna" whose own dependency is missing: that error, naming the dependency, surfaces as is.
    (tmp_path / "optuna").mkdir()
    (tmp_path / "optuna" / "__init__.py").write_text("import not_a_dependency_anyone_has\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "optuna", raising=False)
    with pytest.raises(ModuleNotFoundError) as info:
        require("optuna", "tpe")
    assert not isinstance(info.value, MissingExtra) and info.value.name == "not_a_dependency_anyone_has"
    monkeypatch.delitem(sys.modules, "optuna", raising=False)


def test_present_modules_import() -> None:
    assert require("pytest", "tests") is pytest  # any module: the mapping only shapes the message


def test_tpe_without_optuna_names_the_tune_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from icon_bench.run.tuning import tpe
    from icon_bench.run.suite.tune_block import parse_param

    for name in ("optuna", "optuna.distributions"):
        monkeypatch.setitem(sys.modules, name, None)
    assert not tpe.available()
    with pytest.raises(MissingExtra, match=r"^tpe needs optuna: pip install 'icon-bench\[tune\]'$"):
        tpe.distributions([parse_param("lr", {"loguniform": [1e-4, 1e-2]})])
    assert missing_message("tpe", "optuna") == "tpe needs optuna: pip install 'icon-bench[tune]'"

"""docs/suite.md is what `icon-bench suite-schema` generates now, and covers every key of the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from icon_bench import cli
from icon_bench.run.suite.model import Resources, Suite
from icon_bench.run.suite.doc import MISTAKES, mistake_message, render
from icon_bench.train.recipe import setting_types

DOC = Path(__file__).resolve().parents[1] / "docs" / "suite.md"


def test_docs_suite_md_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), "regenerate: icon-bench suite-schema -o docs/suite.md"


def test_every_key_is_documented_with_type_and_default() -> None:
    text = render()
    for model in (Suite, Resources):
        for name in model.model_fields:
            assert f"| `{name}` |" in text
    for name in setting_types():
        assert f"| `{name}` |" in text


@pytest.mark.parametrize(("kind", "text"), MISTAKES, ids=[k for k, _ in MISTAKES])
def test_each_documented_mistake_is_refused_with_file_line_and_key(kind: str, text: str) -> None:
    message = mistake_message(text)
    assert message.startswith("suite.yaml:") and ": " in message, kind


def test_suite_schema_command_prints_the_reference(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["suite-schema"]) == 0
    assert capsys.readouterr().out == render()
    assert cli.main(["suite-schema", "-o", str(tmp_path / "s.md")]) == 0
    assert (tmp_path / "s.md").read_text(encoding="utf-8") == render()

"""Docs cite only files the repository holds: every path named in README.md, docs/ and suites/ exists (issue 22 item 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CITING = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "suites").glob("*.yaml"))]

#: A relative path with a folder and a document or code extension, a README, or a bare capitalised Markdown name.
PATH = re.compile(
    r"(?<![\w/.<>-])("
    r"(?:\.\./)*(?:\w[\w.-]*/)+(?:[\w.-]+\.(?:md|py|yaml|yml|toml|txt|cfg|ini|html|css|js)|README)"
    r"|[A-Z][A-Z_]+\.md"
    r")(?![\w/])"
)
#: Places whose files a run or a user makes (not the repository's): results folders, data files.
MADE_ELSEWHERE = ("results/",)


def _cited() -> list[tuple[str, str]]:
    found = []
    for path in CITING:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found += [(f"{path.relative_to(REPO)}:{number}", m.group(1)) for m in PATH.finditer(line)]
    return found


def _exists(cited: str, where: str) -> bool:
    citing = REPO / where.split(":")[0]
    bases = [REPO, citing.parent, REPO / "icon_bench"]  # docs/architecture.md names modules as run/execution/store.py
    return any((base / cited).exists() or (base / (cited + ".md")).exists() for base in bases)


def test_the_pattern_finds_the_kinds_of_citation_it_checks() -> None:
    line = "see shared/data/README, DESIGN.md section 2, docs/suite.md and run/execution/store.py; not results/x/y.md"
    assert [m.group(1) for m in PATH.finditer(line)] == [
        "shared/data/README", "DESIGN.md", "docs/suite.md", "run/execution/store.py", "results/x/y.md"
    ]


def test_every_file_the_docs_cite_is_in_the_repository() -> None:
    cited = _cited()
    assert len(cited) > 30, "the scan finds the docs' citations"
    missing = [f"{where}: {path}" for where, path in cited
               if not path.startswith(MADE_ELSEWHERE) and not _exists(path, where)]
    assert not missing, "cited but not in the repository:\n" + "\n".join(missing)


@pytest.mark.parametrize("name", ["DESIGN.md", "shared/"])
def test_no_doc_points_outside_the_repository_for_its_content(name: str) -> None:
    # The design notes and the shared folder are the maintainers', not a user's: docs stand alone.
    # (A data file beside the repository, ../shared/data/mnist.npz, is an input the quick suites read.)
    hits = [f"{where}: {path}" for where, path in _cited() if path.startswith(name) or path == name]
    assert not hits, hits

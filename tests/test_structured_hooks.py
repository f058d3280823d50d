"""The conformance kit checks the structured hooks of divergences (pointwise, f0, term_q/term_dq) against rows."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

from icon_bench import testing
from icon_bench.loss.divergences import KL, TV, Divergence
from icon_bench.scaffold import create_plugin


class WrongF0KL(KL):
    f0 = 1.0  # KL's generator t log t is 0 at t = 0: ICon would add the q mass off p's support


class WrongPointwiseTV(TV):
    def pointwise(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return 0.4 * (log_p.exp() - log_q.exp()).abs()


class WrongTermTV(TV):
    def term_q(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (p - q).abs()  # twice TV's 0.5 |p - q|


class DenseKL(Divergence):
    name = "dense_kl"

    def rows(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return KL().rows(log_p, log_q)


@pytest.mark.parametrize(
    ("divergence", "prop"),
    [(WrongF0KL(), r"pointwise \+ f0 equals rows"), (WrongPointwiseTV(), r"pointwise \+ f0 equals rows"),
     (WrongTermTV(), "term_q equals pointwise")],
)
def test_a_wrong_structured_hook_fails_the_kit(divergence: Divergence, prop: str) -> None:
    # Before: a deliberately wrong f0 passed the kit while training used the wrong loss (6.12 -> 3.97).
    with pytest.raises(testing.ConformanceError, match=prop):
        testing.check_divergence(divergence)


def test_a_divergence_without_hooks_passes_with_a_notice() -> None:
    with pytest.warns(testing.DensePathNotice, match="no pointwise"):
        testing.check_divergence(DenseKL())
    with warnings.catch_warnings():
        warnings.simplefilter("error", testing.DensePathNotice)
        testing.check_divergence("kl")  # the built-ins have their hooks: no notice


def test_the_scaffolds_divergence_has_checked_hooks(tmp_path: Path) -> None:
    package = create_plugin("gen_lecam", "divergence", tmp_path, check_registry=False)
    source = next(p for p in package.rglob("*.py") if "class " in p.read_text() and "Divergence" in p.read_text())
    spec = importlib.util.spec_from_file_location("gen_lecam_module", source)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    div = module.gen_lecam()
    with warnings.catch_warnings():
        warnings.simplefilter("error", testing.DensePathNotice)
        testing.check_divergence(div)
    div.f0 = 0.25  # what a user editing the generated plugin might get wrong
    with pytest.raises(testing.ConformanceError, match="pointwise \\+ f0 equals rows"):
        testing.check_divergence(div)

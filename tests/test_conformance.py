"""The conformance kit: every built-in component passes it, and each property catches the bug it is for."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from vision_files import tiny_copy

from icon_bench import testing
from icon_bench.data.catalog import CATALOG
from icon_bench.data.splits import Dataset, DataSplits
from icon_bench.evaluation.metrics import MethodOutput
from icon_bench.hooks import registry
from icon_bench.hooks import specs as hookspecs
from icon_bench.loss.divergences import TV, Divergence
from icon_bench.loss.kernel import Kernel
from icon_bench.loss.structure import SparseRows, log_normalise
from icon_bench.testing import ConformanceError

BUILTINS = registry.load_registry(entry_points=False, strict=False)

#: Values for the required parameters of built-ins (the kit cannot guess them).
EXAMPLE_PARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("kernel", "prototype"): {"num_classes": 3, "dim": 4},
    ("kernel", "debias"): {"kernel": "cosine", "alpha": 0.5},
    ("kernel", "propagate"): {"kernel": {"name": "knn", "k": 2}, "steps": 2},
    ("kernel", "mix"): {"kernels": ["augmentation", {"name": "knn", "k": 2}]},
    ("model", "lookup"): {"num_points": 10},
    ("backbone", "torchhub"): {"model": "tiny_vit", "repo": str(Path(__file__).parent / "fixtures" / "hub"), "source": "local"},
}
EXAMPLE_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("model", "lookup"): {"example_input": torch.arange(4)},  # a table lookup takes dataset indices
}


def _cases() -> list[Any]:
    return [pytest.param(kind, name, id=f"{kind}:{name}") for kind in hookspecs.KINDS for name in BUILTINS.names(kind)]


def test_builtins_load_so_the_kit_sees_them_all() -> None:
    assert not BUILTINS.failures, [f"{p.name}: {p.error}" for p in BUILTINS.failures]
    for kind in hookspecs.KINDS:
        assert BUILTINS.names(kind), f"no built-in {kind}s registered"


@pytest.mark.parametrize(("kind", "name"), _cases())
def test_every_builtin_passes_the_kit(kind: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    comp = BUILTINS.get(kind, name)
    params = dict(EXAMPLE_PARAMS.get((kind, name), {}))
    if kind == "dataset" and (name in CATALOG or name == "imagefolder"):
        params = tiny_copy(name, tmp_path, monkeypatch)  # a small copy in the published format, no download
    if (kind, name) == ("dataset", "arrays"):
        path = tmp_path / "tiny.npz"
        rng = np.random.default_rng(0)
        np.savez(path, x=rng.normal(size=(40, 5)).astype("float32"), y=np.arange(40) % 4)
        params = {"path": str(path)}
    if (kind, name) == ("dataset", "features"):
        from icon_bench.features.importers import import_turtle

        rng = np.random.default_rng(0)
        (tmp_path / "reps").mkdir()
        for split, n in (("train", 30), ("val", 10)):
            np.save(tmp_path / "reps" / f"tiny_{split}.npy", rng.normal(size=(n, 5)).astype("float32"))
            np.save(tmp_path / "reps" / f"tiny_{split}_y.npy", np.arange(n) % 3)
            (tmp_path / "reps" / f"tiny_{split}_y.npy").rename(tmp_path / f"tiny_{split}.npy")
        params = {"path": str(import_turtle(tmp_path / "reps", tmp_path / "cache", dataset="tiny", labels=str(tmp_path), knn=3))}
    if kind == "backbone" and name in ("timm", "open_clip"):
        pytest.importorskip(name, reason=f"the {name} backbone needs the optional {name} package (icon-bench[vision])")
    supplied = {"in_shape", "out_dim"} if kind == "model" else set()
    missing = [p.name for p in comp.params if p.required and p.type != "**" and p.name not in {*params, *supplied}]
    assert not missing, f"add example values for {kind} {name!r}'s required {missing} to EXAMPLE_PARAMS"
    testing.check(kind, name, params=params, registry=BUILTINS, **EXAMPLE_OPTIONS.get((kind, name), {}))


def test_make_batch_has_every_contract_key() -> None:
    b = testing.make_batch(12, views=2, k=2)
    assert set(b) == {"embeddings", "inputs", "labels", "index", "neighbors"}
    assert b["index"].tolist() == list(range(6)) * 2  # two views of each sample share an index
    assert torch.equal(b["labels"][:6], b["labels"][6:])
    assert b["neighbors"].shape == (12, 2) and bool((b["neighbors"] != b["index"][:, None]).all())
    assert b["labels"].dtype == b["index"].dtype == b["neighbors"].dtype == torch.int64
    assert testing.make_batch(dtype=torch.bfloat16)["embeddings"].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="multiple of views"):
        testing.make_batch(7, views=2)


def test_conformance_error_is_an_assertion_error_naming_component_and_property() -> None:
    err = ConformanceError("kernel 'x'", "rows sum to one", "row 3 sums to 2")
    assert isinstance(err, AssertionError)
    assert (err.component, err.property, err.detail) == ("kernel 'x'", "rows sum to one", "row 3 sums to 2")
    assert str(err) == "kernel 'x': property 'rows sum to one' failed: row 3 sums to 2"


# ---------------------------------------------------------------------------------------------
# deliberately broken kernels: each is caught, by the property it breaks
# ---------------------------------------------------------------------------------------------
def _sq_dist(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(len(x), -1).float()
    return torch.cdist(x, x) ** 2


def _no_self(logits: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(torch.eye(len(logits), dtype=torch.bool), -math.inf)


class Unnormalised(Kernel):
    def forward(self, batch: dict, key: str = "embeddings") -> torch.Tensor:
        return _no_self(-_sq_dist(batch[key]))  # log-weights, never normalised


class HasNaN(Kernel):
    def forward(self, batch: dict, key: str = "embeddings") -> torch.Tensor:
        out = log_normalise(_no_self(-_sq_dist(batch[key])))
        return out.index_put((torch.tensor([0]), torch.tensor([1])), torch.tensor(float("nan")))


class KeepsSelf(Kernel):
    def forward(self, batch: dict, key: str = "embeddings") -> torch.Tensor:
        return torch.log_softmax(-_sq_dist(batch[key]), dim=1)


class WrongShape(Kernel):
    def forward(self, batch: dict, key: str = "embeddings") -> torch.Tensor:
        x = batch[key]
        return torch.full((len(x), len(x) + 1), -math.log(len(x) + 1))


class Noisy(Kernel):
    calls = itertools.count()

    def forward(self, batch: dict, key: str = "embeddings") -> torch.Tensor:
        jitter = 1e-3 * next(self.calls)  # state outside torch's RNG: not reproducible under a seed
        return log_normalise(_no_self(-_sq_dist(batch[key]) + jitter * torch.arange(len(batch[key]))))


class SqrtAtZero(Kernel):
    def forward(self, batch: dict, key: str = "embeddings") -> torch.Tensor:
        x = batch[key].reshape(len(batch[key]), -1).float()
        diff = x[:, None, :] - x[None, :, :]
        dist = diff.pow(2).sum(-1).sqrt()  # d/dx sqrt(0) = inf on the diagonal: 0 * inf = NaN
        return log_normalise(_no_self(-dist))


class WrongSparse(Kernel):
    supports_sparse = True  # type: ignore[assignment]

    def forward(self, batch: dict, key: str = "embeddings") -> torch.Tensor:
        n = len(batch[key])
        return log_normalise(_no_self(torch.zeros(n, n)))

    def sparse(self, batch: dict, key: str = "inputs") -> SparseRows:
        n = len(batch[key])
        cols = ((torch.arange(n) + 1) % n)[:, None]  # claims one neighbour; forward is uniform
        return SparseRows(cols, torch.zeros(n, 1), torch.zeros(n), n, True)


@pytest.mark.parametrize(
    ("kernel", "prop"),
    [
        (Unnormalised, "rows sum to one"),
        (HasNaN, "no NaN log-probabilities"),
        (KeepsSelf, "excludes self-pairs"),
        (WrongShape, "square (N, N)"),
        (Noisy, "deterministic under a fixed seed"),
        (SqrtAtZero, "finite gradients w.r.t. the input"),
        (WrongSparse, "sparse form equals forward"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_broken_kernel_is_caught_by_its_property(kernel: type, prop: str) -> None:
    with pytest.raises(ConformanceError) as excinfo:
        testing.check_kernel(kernel, devices=["cpu"])
    assert excinfo.value.property == prop, str(excinfo.value)
    assert kernel.__name__ in excinfo.value.component
    assert f"property {prop!r} failed" in str(excinfo.value)


def test_kernel_that_breaks_module_to_is_caught() -> None:
    class ShadowsTo(Kernel):
        def __init__(self) -> None:
            super().__init__()
            self.to = "points"  # an attribute named like nn.Module.to: .to(device) breaks

        def forward(self, batch: dict, key: str = "embeddings") -> torch.Tensor:
            return log_normalise(_no_self(-_sq_dist(batch[key])))

    with pytest.raises(ConformanceError, match=r"moves with .to\(device\)"):
        testing.check_kernel(ShadowsTo, devices=["cpu"])


def test_kernel_check_accepts_an_instance_and_a_spec() -> None:
    testing.check_kernel(BUILTINS.create("kernel", "student_t", dof=2.0), devices=["cpu"], dtypes=[torch.float32])
    testing.check_kernel(("student_t", {"dof": 2.0}), registry=BUILTINS, keys=["embeddings"])
    with pytest.raises(ConformanceError, match=r"kernel 'student_t' \(icon-bench [^)]*\): property 'builds'"):
        testing.check_kernel({"name": "student_t", "dof": -1.0}, registry=BUILTINS)


# ---------------------------------------------------------------------------------------------
# deliberately broken divergences
# ---------------------------------------------------------------------------------------------
class Negative(Divergence):
    name = "negative"

    def rows(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return -TV().rows(log_p, log_q)


class NotZeroOnEqual(Divergence):
    def rows(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return TV().rows(log_p, log_q) + 0.1


class OverBound(Divergence):
    bound = 1.0

    def rows(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return 3.0 * TV().rows(log_p, log_q)


class NaiveKL(Divergence):
    def rows(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return (log_p.exp() * (log_p - log_q)).sum(-1)  # 0 * (-inf - x) = NaN where p = 0


class NaiveHellinger(Divergence):
    def rows(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return 0.5 * (log_p.exp().sqrt() - log_q.exp().sqrt()).pow(2).sum(-1)  # sqrt'(0) = inf


class Scalar(Divergence):
    def rows(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return TV().rows(log_p, log_q).mean()


@pytest.mark.parametrize(
    ("divergence", "prop"),
    [
        (Negative, "non-negative"),
        (NotZeroOnEqual, "zero on equal inputs"),
        (OverBound, "within its bound"),
        (NaiveKL, "finite values"),
        (NaiveHellinger, "finite gradients w.r.t. log q"),
        (Scalar, "one value per row"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_broken_divergence_is_caught_by_its_property(divergence: type, prop: str) -> None:
    with pytest.raises(ConformanceError) as excinfo:
        testing.check_divergence(divergence)
    assert excinfo.value.property == prop, str(excinfo.value)
    assert divergence.__name__ in excinfo.value.component


def test_explicit_bound_overrides_the_declared_one() -> None:
    testing.check_divergence(TV)  # declared bound 1 holds
    with pytest.raises(ConformanceError, match="within its bound"):
        testing.check_divergence(TV, bound=0.01)


# ---------------------------------------------------------------------------------------------
# deliberately broken methods and datasets
# ---------------------------------------------------------------------------------------------
class TinyMethod:
    metrics = ["hungarian"]

    def __init__(self, train_rows: int | None = None, cluster_dtype: torch.dtype = torch.int64) -> None:
        self.train_rows, self.cluster_dtype = train_rows, cluster_dtype

    def with_overrides(self, overrides: Any) -> TinyMethod:
        return self

    def run(self, data: DataSplits, *, seed: int, device: str, overrides: Any, progress: bool = False) -> MethodOutput:
        n_train = self.train_rows or len(data.x_train)
        return MethodOutput(
            train_embeddings=data.x_train[:n_train],
            test_embeddings=data.x_test,
            train_clusters=data.y_train.to(self.cluster_dtype),
            test_clusters=data.y_test.to(self.cluster_dtype),
            history={"loss": [1.0, 0.5]},
            info={},
        )


def test_a_correct_method_passes_and_returns_its_output() -> None:
    out = testing.check_method(TinyMethod)
    assert out.train_embeddings.shape == (64, 8)


@pytest.mark.parametrize(
    ("params", "prop"),
    [({"train_rows": 5}, "embedding shape"), ({"cluster_dtype": torch.float32}, "cluster labels")],
)
def test_broken_method_output_is_caught(params: dict, prop: str) -> None:
    with pytest.raises(ConformanceError) as excinfo:
        testing.check_method(TinyMethod, params=params)
    assert excinfo.value.property == prop, str(excinfo.value)


def test_method_without_with_overrides_or_that_raises_is_caught() -> None:
    class NoOverrides:
        def run(self, data: Any, **kw: Any) -> None:
            return None

    with pytest.raises(ConformanceError, match="has with_overrides"):
        testing.check_method(NoOverrides)

    class Raises(TinyMethod):
        def run(self, data: Any, **kw: Any) -> MethodOutput:
            raise RuntimeError("boom")

    with pytest.raises(ConformanceError, match=r"property 'runs on tiny data' failed: RuntimeError: boom"):
        testing.check_method(Raises)


class TinyDataset(Dataset):
    def __init__(self, defect: str = "") -> None:
        self.defect = defect

    def load(self) -> DataSplits:
        data = testing.make_data(n_train=20, n_test=10)
        if self.defect == "misaligned":
            data.y_train = data.y_train[:-1]
        elif self.defect == "float_labels":
            data.y_test = data.y_test.float()
        elif self.defect == "empty":
            data.x_test, data.y_test = data.x_test[:0], data.y_test[:0]
        elif self.defect == "nan":
            data.x_train[0, 0] = float("nan")
        elif self.defect == "label_range":
            data.y_train[0] = data.num_classes
        return data


@pytest.mark.parametrize(
    ("defect", "prop"),
    [
        ("misaligned", "aligned features and labels"),
        ("float_labels", "int64 labels"),
        ("empty", "non-empty splits"),
        ("nan", "finite features"),
        ("label_range", "labels in [0, num_classes)"),
    ],
)
def test_broken_dataset_is_caught(defect: str, prop: str) -> None:
    testing.check_dataset(TinyDataset)
    with pytest.raises(ConformanceError) as excinfo:
        testing.check_dataset(TinyDataset, params={"defect": defect})
    assert excinfo.value.property == prop, str(excinfo.value)


def test_broken_model_is_caught() -> None:
    def wrong_width(in_shape: tuple[int, ...], out_dim: int) -> torch.nn.Module:
        return torch.nn.Linear(in_shape[0], out_dim + 1)

    with pytest.raises(ConformanceError, match="output shape"):
        testing.check_model(wrong_width)


# ---------------------------------------------------------------------------------------------
# check_plugin on installed third-party packages
# ---------------------------------------------------------------------------------------------
BAD_KERNEL_PLUGIN = """
    import torch
    from icon_bench import hookimpl
    from icon_bench.loss import Kernel

    class DoubleMass(Kernel):
        '''Rows sum to two.'''
        def forward(self, batch, key="embeddings"):
            n = len(batch[key])
            p = torch.full((n, n), 2.0 / (n - 1)).fill_diagonal_(0)
            return torch.where(p > 0, p.log(), float("-inf"))

    @hookimpl
    def register_kernels(register):
        register("double_mass", DoubleMass)
"""

NEGATIVE_DIVERGENCE_PLUGIN = """
    from icon_bench import hookimpl
    from icon_bench.loss import TV

    class Negative(TV):
        name = "negative_tv"
        def rows(self, log_p, log_q):
            return -super().rows(log_p, log_q)

    @hookimpl
    def register_divergences(register):
        register("good_tv", TV)
        register("negative_tv", Negative)
"""


def test_check_plugin_reports_a_kernel_whose_rows_do_not_sum_to_one(site: Any) -> None:
    site("icon-bench-double", BAD_KERNEL_PLUGIN, entry="double", version="1.0")
    reg = registry.load_registry()
    with pytest.raises(ConformanceError) as excinfo:
        testing.check_plugin("icon-bench-double", registry=reg)
    assert excinfo.value.component.startswith("kernel 'double_mass' (icon-bench-double 1.0)")
    assert excinfo.value.property == "rows sum to one"
    assert "sums to 2" in excinfo.value.detail


def test_check_plugin_reports_a_negative_divergence(site: Any) -> None:
    site("icon-bench-negative", NEGATIVE_DIVERGENCE_PLUGIN, entry="negative", version="1.0")
    reg = registry.load_registry()
    assert testing.components("negative", registry=reg) == [("divergence", "good_tv"), ("divergence", "negative_tv")]
    with pytest.raises(ConformanceError, match=r"divergence 'negative_tv' .*property 'non-negative' failed"):
        testing.check_plugin("icon-bench-negative", registry=reg)
    testing.check_divergence("good_tv", registry=reg)


def test_check_plugin_reports_an_import_error_with_the_plugin_name(site: Any) -> None:
    site("icon-bench-broken", "import a_module_that_does_not_exist_anywhere\n", entry="broken", version="1.0")
    reg = registry.load_registry()
    with pytest.raises(ConformanceError) as excinfo:
        testing.check_plugin("icon_bench_broken", registry=reg)  # any spelling of the distribution
    assert excinfo.value.property == "loads"
    assert "plugin 'broken' (icon-bench-broken 1.0)" in excinfo.value.component
    assert (
        "ModuleNotFoundError" in excinfo.value.detail
        and "a_module_that_does_not_exist_anywhere" in excinfo.value.detail
    )


def test_check_plugin_on_a_name_that_is_not_installed() -> None:
    with pytest.raises(ConformanceError, match=r"plugin 'icon-bench-nope': property 'is installed' failed"):
        testing.check_plugin("icon-bench-nope", registry=BUILTINS)


def test_check_plugin_needs_values_for_required_parameters(site: Any) -> None:
    site(
        "icon-bench-needs",
        """
        from icon_bench import hookimpl
        from icon_bench.loss import Alpha

        def strict_alpha(a: float):
            '''Alpha divergence without a default order.'''
            return Alpha(a)

        @hookimpl
        def register_divergences(register):
            register("strict_alpha", strict_alpha)
        """,
        entry="needs",
        version="1.0",
    )
    reg = registry.load_registry()
    with pytest.raises(ConformanceError, match=r"required parameters \['a'\] have no values"):
        testing.check_plugin("icon-bench-needs", registry=reg)
    assert testing.check_plugin("icon-bench-needs", registry=reg, params={"strict_alpha": {"a": 0.5}}) == [
        "divergence:strict_alpha"
    ]

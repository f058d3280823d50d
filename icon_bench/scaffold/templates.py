"""The files of a generated plugin package around its component: pyproject, __init__, README and test,
one template per file and kind (placeholders, no braces); the component's own module per kind is in
component_templates.py.
"""

from __future__ import annotations

_HOOKS = {
    "kernel": "register_kernels",
    "divergence": "register_divergences",
    "method": "register_methods",
    "dataset": "register_datasets",
    "backbone": "register_backbones",
}

# Placeholders: __NAME__ (component and plugin), __DIST__ (distribution), __PKG__ (import package),
# __CLASS__, __KIND__, __HOOK__. Plain replacement keeps the templates free of brace escaping.
_PYPROJECT = """
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "An icon-bench plugin adding the __NAME__ __KIND__."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["icon-bench"]

[project.optional-dependencies]
test = ["pytest>=7"]

# icon-bench finds the plugin through this entry point: name = the module with the @hookimpl functions.
[project.entry-points.icon_bench]
__NAME__ = "__PKG__"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

_INIT = '''
"""__DIST__: an icon-bench plugin adding the __NAME__ __KIND__."""

from __future__ import annotations

from collections.abc import Callable

from icon_bench import hookimpl
from __PKG__.__KIND__ import __CLASS__, __NAME__

__version__ = "0.1.0"
__all__ = ["__CLASS__", "__HOOK__", "__NAME__"]


@hookimpl
def __HOOK__(register: Callable[..., None]) -> None:
    """Register the __NAME__ __KIND__; its parameters come from the factory's signature."""
    register("__NAME__", __NAME__)
'''

_README = """
# __DIST__

An [icon-bench](https://github.com/) plugin adding one __KIND__, `__NAME__`.

```bash
pip install -e .
icon-bench plugins --kind __KIND__     # lists __NAME__ from __DIST__ 0.1.0
pytest                                 # runs icon-bench's conformance kit on it
```

icon-bench finds the plugin through the entry point in `pyproject.toml`
(`[project.entry-points.icon_bench] __NAME__ = "__PKG__"`); `src/__PKG__/__init__.py` implements the
`__HOOK__` hook, and `src/__PKG__/__KIND__.py` holds the maths. If it does not show up, run
`icon-bench plugins` (a plugin that fails to import is listed with its error) and see
icon-bench's docs/plugins.md.
"""

_README_KIND = {
    "kernel": """
        ## Use

        ```python
        import icon_bench
        q = icon_bench.kernel("__NAME__", scale=0.5)       # q(batch, key="embeddings") -> (N, N) log-probs
        ```
        or in a suite: `q.name: [__NAME__]` (replaces a method's q kernel), `p.name: [__NAME__]` for p.
    """,
    "divergence": """
        ## Use

        ```python
        import icon_bench
        div = icon_bench.divergence("__NAME__")             # div(log_p, log_q) -> (N,)
        ```
        or in a suite: `divergence: [kl, __NAME__]`.
    """,
    "method": """
        ## Use

        In a suite: `method: [kmeans, __NAME__]`, with `settings` keys `dim` and `iters`; or
        `icon-bench trial __NAME__ digits`.
    """,
    "dataset": """
        ## Use

        ```python
        from icon_bench.data import load_dataset
        data = load_dataset({"name": "__NAME__", "rings": 4, "standardize": True})
        ```
        or in a suite: `datasets: [{name: __NAME__, rings: 4}]`.
    """,
    "backbone": """
        ## Use

        ```bash
        icon-bench embed cifar10 --backbone __NAME__ --set backbone.dim=64 -o features/cifar10-__NAME__
        ```
        then in a suite: `datasets: [{name: features, path: features/cifar10-__NAME__, val_fraction: 0}]`.
    """,
}

_TEST_HEAD = '''
"""Tests of __DIST__: icon-bench's conformance kit on the installed plugin, and the __KIND__'s maths."""

from __future__ import annotations

import torch

from icon_bench import testing
from __PKG__ import __NAME__


def test_installed_plugin_passes_the_conformance_kit() -> None:
    # Fails with the plugin's import error if it did not load, or names the property that broke.
    assert testing.check_plugin("__DIST__") == ["__KIND__:__NAME__"]
'''

_TEST_KIND = {
    "kernel": """

        def test_other_parameters_pass_the_kit() -> None:
            testing.check_kernel(__NAME__, params={"scale": 0.3, "include_self": True})


        def test_matches_the_laplace_formula() -> None:
            x = torch.randn(6, 3)
            w = torch.exp(-torch.cdist(x, x) / 2.0).fill_diagonal_(0)
            expected = w / w.sum(1, keepdim=True)
            got = __NAME__(scale=2.0)({"embeddings": x}).exp()
            assert torch.allclose(got, expected, atol=1e-5)
    """,
    "divergence": """

        def test_matches_the_closed_form() -> None:
            p = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
            q = torch.tensor([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]])
            expected = torch.tensor([(0.25**2 / 0.75) * 2 / 2 + 0.5**2 / 0.5 / 2, 0.0])
            assert torch.allclose(__NAME__()(p.log(), q.log()), expected, atol=1e-6)


        def test_reaches_its_bound_on_disjoint_rows() -> None:
            p = torch.tensor([[1.0, 0.0]]).log()
            q = torch.tensor([[0.0, 1.0]]).log()
            assert torch.allclose(__NAME__()(p, q), torch.tensor([1.0]))
    """,
    "method": """

        def test_separates_well_separated_blobs() -> None:
            from icon_bench.evaluation import hungarian_accuracy

            data = testing.make_data(n_train=90, n_test=30, num_classes=3)
            out = __NAME__(dim=2).run(data, seed=0)
            assert out.train_embeddings.shape == (90, 2)
            assert hungarian_accuracy(data.y_test, out.test_clusters) > 0.9
            assert out.history["inertia"][-1] <= out.history["inertia"][0]
    """,
    "dataset": """

        def test_points_lie_on_their_rings() -> None:
            data = __NAME__(n_samples=200, rings=4, noise=0.01).load()
            for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
                assert torch.allclose(x.norm(dim=1), (y + 1).float(), atol=0.1)
            assert set(data.y_test.tolist()) == {0, 1, 2, 3}
    """,
    "backbone": """

        def test_a_flat_image_gives_the_projection_of_its_colour() -> None:
            backbone = __NAME__(size=32, grid=2, dim=8)
            model = backbone.load("cpu")
            images = torch.zeros(2, 3, 40, 50, dtype=torch.uint8)
            images[1] += 255
            x = backbone.preprocess(images)
            assert x.shape == (2, 3, 32, 32)
            z = model(x)
            expected = x[:, :, 0, 0].repeat_interleave(4, dim=1) @ model.projection  # every tile holds the pixel
            assert torch.allclose(z, expected, atol=1e-4)
    """,
}

"""The built-in kernels' hook: registers every kernel family under its name."""

from __future__ import annotations

from collections.abc import Callable

from icon_bench.hooks.specs import hookimpl
from icon_bench.loss.cluster import Cluster, Prototype
from icon_bench.loss.graphs import KNN, Augmentation, Label, Uniform
from icon_bench.loss.pairwise import Cosine, Gaussian, StudentT
from icon_bench.loss.transforms import Debias, Mix, Propagate


@hookimpl
def register_kernels(register: Callable[..., None]) -> None:
    register("gaussian", Gaussian)
    register("student_t", StudentT, aliases=("student-t", "cauchy"))
    register("cosine", Cosine)
    register("knn", KNN)
    register("label", Label)
    register("augmentation", Augmentation)
    register("cluster", Cluster)
    register("prototype", Prototype)
    register("uniform", Uniform)
    register("mix", Mix)
    register("debias", Debias)
    register("propagate", Propagate)

"""The downloadable image datasets: their files, checksums, sizes, licences and where torchvision keeps them."""

from __future__ import annotations

import dataclasses

from icon_bench.data.download import RemoteFile

__all__ = ["CATALOG", "DatasetInfo"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What `icon-bench datasets` lists and what a download or a `path:` copy must provide."""

    name: str
    title: str
    files: tuple[RemoteFile, ...]
    rows: str  # "train / test", as published
    classes: str
    licence: str
    homepage: str
    #: Sub-folders of a `path:` (or an import source) where torchvision keeps the files, tried in order.
    layouts: tuple[str, ...]
    #: Extracted files (torchvision's layout) that stand in for the archives, with their MD5s where
    #: torchvision publishes them ("" where it does not: the header and size are checked instead).
    extracted: tuple[tuple[str, str], ...] = ()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


# Byte sizes: each checked against the size the servers report in published download logs
# (torchvision's and Keras's progress bars, TensorFlow's "Successfully downloaded ... N bytes"):
# all eleven agree with the values below (checked December 2026).
# MNIST: URLs, file names and MD5s from torchvision/datasets/mnist.py (pytorch/vision, class MNIST:
# `mirrors` and `resources`). yann.lecun.com often refuses downloads, so torchvision's S3 copy comes first.
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_MNIST = (
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28881),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1648877),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542),
)
# Fashion-MNIST: torchvision/datasets/mnist.py, class FashionMNIST (`mirrors`, `resources`).
_FASHION_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION = (
    ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
    ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29515),
    ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4422102),
    ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5148),
)
_IDX_EXTRACTED = tuple((name[: -len(".gz")], "") for name, _, _ in _MNIST)


def _idx_files(rows: tuple[tuple[str, str, int], ...], mirrors: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, tuple(m + name for m in mirrors), md5, size) for name, md5, size in rows)


CATALOG: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST handwritten digits, 28x28 grey",
        files=_idx_files(_MNIST, _MNIST_MIRRORS),
        rows="60000 / 10000",
        classes="10",
        licence="CC BY-SA 3.0",
        homepage="http://yann.lecun.com/exdb/mnist/",
        layouts=("", "raw", "MNIST/raw", "mnist"),
        extracted=_IDX_EXTRACTED,
    ),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        title="Fashion-MNIST clothing, 28x28 grey",
        files=_idx_files(_FASHION, (_FASHION_MIRROR,)),
        rows="60000 / 10000",
        classes="10",
        licence="MIT",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        layouts=("", "raw", "FashionMNIST/raw", "fashion_mnist"),
        extracted=_IDX_EXTRACTED,
    ),
    # CIFAR-10 / CIFAR-100: torchvision/datasets/cifar.py (classes CIFAR10, CIFAR100: `url`,
    # `tgz_md5`, and the per-batch MD5s in `train_list` / `test_list`).
    "cifar10": DatasetInfo(
        name="cifar10",
        title="CIFAR-10 tiny images, 32x32 colour",
        files=(
            RemoteFile(
                "cifar-10-python.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                "c58f30108f718f92721af3b95e74349a",
                170498071,
            ),
        ),
        rows="50000 / 10000",
        classes="10",
        licence="none stated (cite Krizhevsky 2009)",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        layouts=("", "cifar10"),
        extracted=(
            ("cifar-10-batches-py/data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("cifar-10-batches-py/data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("cifar-10-batches-py/data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("cifar-10-batches-py/data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("cifar-10-batches-py/data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ("cifar-10-batches-py/test_batch", "40351d587109b95175f43aff81a1287e"),
        ),
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        title="CIFAR-100 tiny images, 32x32 colour (coarse: true for the 20 superclasses)",
        files=(
            RemoteFile(
                "cifar-100-python.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                "eb9058c3a382ffc7106e4002c42a8d85",
                169001437,
            ),
        ),
        rows="50000 / 10000",
        classes="100 (20 coarse)",
        licence="none stated (cite Krizhevsky 2009)",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        layouts=("", "cifar100"),
        extracted=(
            ("cifar-100-python/train", "16019d7e3df5f24257cddd939b257f8d"),
            ("cifar-100-python/test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
        ),
    ),
    # STL-10: torchvision/datasets/stl10.py (class STL10: `url`, `tgz_md5`, the per-file MD5s in
    # `train_list` / `test_list`).
    "stl10": DatasetInfo(
        name="stl10",
        title="STL-10, 96x96 colour (unlabeled: true adds the 100000 unlabelled images)",
        files=(
            RemoteFile(
                "stl10_binary.tar.gz",
                ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",),
                "91f7769df0f17e558f3565bffb0c7dfb",
                2640397119,
            ),
        ),
        rows="5000 / 8000 (+100000 unlabelled)",
        classes="10",
        licence="none stated (cite Coates et al. 2011)",
        homepage="https://cs.stanford.edu/~acoates/stl10/",
        layouts=("", "stl10"),
        extracted=(
            ("stl10_binary/train_X.bin", "918c2871b30a85fa023e0c44e0bee87f"),
            ("stl10_binary/train_y.bin", "5a34089d4802c674881badbb80307741"),
            ("stl10_binary/test_X.bin", "7f263ba9f9e0b06b93213547f721ac82"),
            ("stl10_binary/test_y.bin", "36f9794fa4beb8a2c72628de14fa638e"),
            ("stl10_binary/unlabeled_X.bin", "5242ba1fed5e4be9e1e742405eb56ca4"),
        ),
    ),
}

"""Loading a CIFAR-10-sized dataset: the first load (verify + decode + write .npy) against later ones (map the .npy).

A synthetic archive in CIFAR-10's exact format and size (50000 + 10000 random 3x32x32 images,
python pickles in a .tar.gz), served from a folder through `path:` so nothing downloads. CPU and
wall seconds of each step, side by side in one run, in a throwaway $ICON_BENCH_DATA:
- `load_images` first call (MD5 of the archive, decode, per-channel mean/std, write .npy),
- `load_images` again (memory-map the cached .npy),
- the dataset's `load()` again (the float32 [0, 1] rows the DataSplits contract asks for),
- a second process's `load()` (a fresh interpreter; the decoded cache is shared).

    python benchmarks/bench_dataset_load.py              # about 1 GB of memory, under a minute
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from vision_files import make_cifar, md5  # noqa: E402


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-dataset-load-"))
    os.environ["ICON_BENCH_DATA"] = str(tmp / "cache")
    os.environ["ICON_BENCH_OFFLINE"] = "1"
    gen = make_cifar(np.random.default_rng(0), hundred=False, per_batch=10000)
    source = tmp / "src"
    source.mkdir()
    name, data = next(iter(gen.files.items()))
    (source / name).write_bytes(data)

    from icon_bench.data.catalog import CATALOG
    from icon_bench.data.download import RemoteFile
    from icon_bench.data.vision import ImageDataset, load_images

    info = CATALOG["cifar10"]
    CATALOG["cifar10"] = dataclasses.replace(
        info, files=(RemoteFile(name, info.files[0].urls, md5(data), len(data)),), extracted=()
    )
    rows = []
    _, wall, cpu = timed(lambda: load_images("cifar10", path=str(source)))
    rows.append(["first load_images (md5, decode, stats, write .npy)", wall, cpu])
    _, wall, cpu = timed(lambda: load_images("cifar10", path=str(source)))
    rows.append(["second load_images (map .npy)", wall, cpu])
    _, wall, cpu = timed(lambda: ImageDataset("cifar10", path=str(source)).load())
    rows.append(["Dataset.load() again (float32 rows)", wall, cpu])
    script = (
        "import dataclasses, sys, time\n"
        "from icon_bench.data.catalog import CATALOG\n"
        "from icon_bench.data.download import RemoteFile\n"
        "from icon_bench.data.vision import ImageDataset\n"
        f"CATALOG['cifar10'] = dataclasses.replace(CATALOG['cifar10'], files=(RemoteFile({name!r}, (), {md5(data)!r}, 0),))\n"
        "w, c = time.perf_counter(), time.process_time()\n"
        f"ImageDataset('cifar10', path={str(source)!r}).load()\n"
        "print(time.perf_counter() - w, time.process_time() - c)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    rows.append(["Dataset.load() in a second process", float(out[0]), float(out[1])])
    print(tabulate(rows, headers=["step (50000 + 10000 CIFAR-10 images)", "wall s", "CPU s"], floatfmt=".3f"))


if __name__ == "__main__":
    main()

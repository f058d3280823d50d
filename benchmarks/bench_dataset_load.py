"""Loading a CIFAR-10-sized dataset: the first load (verify + decode + write .npy) against later ones (map the .npy).

A synthetic archive in CIFAR-10's exact format and size (50000 + 10000 random 3x32x32 images,
python pickles in a .tar.gz), served from a folder through `path:` so nothing downloads. CPU and
wall seconds of each step, side by side in one run, in a throwaway $ICON_BENCH_DATA:
- `load_dataset` first call (MD5 of the archive, decode, per-channel mean/std, write .npy, the
  val split and content hashes), then again (map the .npy: the rows stay uint8, data/pixels.py),
  and the ratio of the two,
- reading `x_train` whole once (what a consumer that wants all float32 rows at once pays; the
  trainer converts each batch instead),
- `load_images` again (memory-map the cached .npy) and a second process's `load_dataset` (a fresh
  interpreter; the decoded cache is shared).

    python benchmarks/bench_dataset_load.py              # about 1 GB of memory, under a minute
"""

from __future__ import annotations

import dataclasses
import os
import shutil
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
    try:
        run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # about 1 GB of archive and decoded arrays


def run(tmp: Path) -> None:
    os.environ["ICON_BENCH_DATA"] = str(tmp / "cache")
    os.environ["ICON_BENCH_OFFLINE"] = "1"
    gen = make_cifar(np.random.default_rng(0), hundred=False, per_batch=10000)
    source = tmp / "src"
    source.mkdir()
    name, data = next(iter(gen.files.items()))
    (source / name).write_bytes(data)

    from icon_bench.data.catalog import CATALOG
    from icon_bench.data.download import RemoteFile
    from icon_bench.data.load import load_dataset
    from icon_bench.data.vision import load_images

    info = CATALOG["cifar10"]
    CATALOG["cifar10"] = dataclasses.replace(
        info, files=(RemoteFile(name, info.files[0].urls, md5(data), len(data)),), extracted=()
    )
    spec = {"name": "cifar10", "path": str(source)}
    rows = []
    _, wall, first = timed(lambda: load_dataset(spec))
    rows.append(["first load_dataset (md5, decode, stats, write .npy, val split, hashes)", wall, first])
    loaded, wall, second = timed(lambda: load_dataset(spec))
    rows.append(["second load_dataset (map .npy, uint8 rows, val split, hashes)", wall, second])
    _, wall, cpu = timed(lambda: loaded.x_train)
    rows.append(["reading x_train whole after it (45000 rows to float32, once)", wall, cpu])
    _, wall, cpu = timed(lambda: load_images("cifar10", path=str(source)))
    rows.append(["load_images again (map .npy)", wall, cpu])
    script = (
        "import dataclasses, sys, time\n"
        "from icon_bench.data.catalog import CATALOG\n"
        "from icon_bench.data.download import RemoteFile\n"
        "from icon_bench.data.load import load_dataset\n"
        f"CATALOG['cifar10'] = dataclasses.replace(CATALOG['cifar10'], files=(RemoteFile({name!r}, (), {md5(data)!r}, 0),))\n"
        "w, c = time.perf_counter(), time.process_time()\n"
        f"load_dataset({spec!r})\n"
        "print(time.perf_counter() - w, time.process_time() - c)\n"
    )
    # Run from the temporary folder: `python -c` puts the working folder first on sys.path.
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp).stdout.split()
    rows.append(["load_dataset in a second process", float(out[0]), float(out[1])])
    print(tabulate(rows, headers=["step (50000 + 10000 CIFAR-10 images)", "wall s", "CPU s"], floatfmt=".3f"))
    print(f"CPU seconds, first / second load_dataset: {first:.2f} / {second:.2f} = {first / second:.1f}x")


if __name__ == "__main__":
    main()

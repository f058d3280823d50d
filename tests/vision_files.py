"""Helpers for the image-dataset tests: small files in each published format, and a loopback HTTP server."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from icon_bench.data.catalog import CATALOG
from icon_bench.data.download import RemoteFile


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, gzipped, as MNIST publishes it."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclasses.dataclass
class Generated:
    """A dataset's files as published (name -> bytes) and the arrays they hold."""

    files: dict[str, bytes]
    arrays: dict[str, np.ndarray]
    extracted: dict[str, bytes] = dataclasses.field(default_factory=dict)


def make_mnist(rng: np.random.Generator, n_train: int = 30, n_test: int = 12) -> Generated:
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": np.arange(n_train) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.permutation(np.arange(n_test) % 10),
    }
    raw = {
        "train-images-idx3-ubyte": arrays["x_train"], "train-labels-idx1-ubyte": arrays["y_train"],
        "t10k-images-idx3-ubyte": arrays["x_test"], "t10k-labels-idx1-ubyte": arrays["y_test"],
    }
    files = {f"{k}.gz": idx(v) for k, v in raw.items()}
    extracted = {f"MNIST/raw/{k}": gzip.decompress(files[f"{k}.gz"]) for k in raw}
    return Generated(files, arrays, extracted)


def _batch(data: np.ndarray, **labels: Any) -> bytes:
    return pickle.dumps({"batch_label": "b", "data": data.reshape(len(data), -1), **labels}, protocol=2)


def make_cifar(rng: np.random.Generator, hundred: bool, per_batch: int = 6) -> Generated:
    if hundred:
        base = "cifar-100-python"
        # Every class present (as in the real data), so labels need no re-encoding.
        x_train = rng.integers(0, 256, (100, 3, 32, 32), dtype=np.uint8)
        x_test = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        fine_tr, fine_te = rng.permutation(100), rng.integers(0, 100, len(x_test))
        members = {
            f"{base}/train": _batch(x_train, fine_labels=list(map(int, fine_tr)), coarse_labels=list(map(int, fine_tr // 5))),
            f"{base}/test": _batch(x_test, fine_labels=list(map(int, fine_te)), coarse_labels=list(map(int, fine_te // 5))),
        }
        arrays = {"x_train": x_train, "y_train": fine_tr, "x_test": x_test, "y_test": fine_te,
                  "y_train_coarse": fine_tr // 5, "y_test_coarse": fine_te // 5}
        name = "cifar-100-python.tar.gz"
    else:
        base = "cifar-10-batches-py"
        xs = [rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8) for _ in range(6)]
        labels = rng.permutation(np.arange(6 * per_batch) % 10)  # every class present, as in the real data
        ys = [list(map(int, labels[i * per_batch : (i + 1) * per_batch])) for i in range(6)]
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        members = {f"{base}/{n}": _batch(x, labels=y) for n, x, y in zip(names, xs, ys)}
        arrays = {"x_train": np.concatenate(xs[:5]), "y_train": np.concatenate(ys[:5]), "x_test": xs[5], "y_test": np.asarray(ys[5])}
        name = "cifar-10-python.tar.gz"
    return Generated({name: _tar(members)}, arrays, members)


def make_stl10(rng: np.random.Generator, n_train: int = 10, n_test: int = 8, n_unlabeled: int = 5) -> Generated:
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 3, 96, 96), dtype=np.uint8),
        "y_train": np.arange(n_train) % 10,
        "x_test": rng.integers(0, 256, (n_test, 3, 96, 96), dtype=np.uint8),
        "y_test": np.arange(n_test)[::-1] % 10,
        "x_unlabeled": rng.integers(0, 256, (n_unlabeled, 3, 96, 96), dtype=np.uint8),
    }
    # Stored column-major per channel, labels 1..10.
    members = {
        "stl10_binary/train_X.bin": arrays["x_train"].transpose(0, 1, 3, 2).tobytes(),
        "stl10_binary/train_y.bin": (arrays["y_train"] + 1).astype(np.uint8).tobytes(),
        "stl10_binary/test_X.bin": arrays["x_test"].transpose(0, 1, 3, 2).tobytes(),
        "stl10_binary/test_y.bin": (arrays["y_test"] + 1).astype(np.uint8).tobytes(),
        "stl10_binary/unlabeled_X.bin": arrays["x_unlabeled"].transpose(0, 1, 3, 2).tobytes(),
    }
    return Generated({"stl10_binary.tar.gz": _tar(members)}, arrays, members)


MAKERS = {
    "mnist": lambda rng: make_mnist(rng),
    "fashion_mnist": lambda rng: make_mnist(rng),
    "cifar10": lambda rng: make_cifar(rng, hundred=False),
    "cifar100": lambda rng: make_cifar(rng, hundred=True),
    "stl10": lambda rng: make_stl10(rng),
}


def patched_info(name: str, gen: Generated, base_url: str) -> Any:
    """The catalogue entry of `name` with the generated files' URLs (on the loopback server) and MD5s."""
    info = CATALOG[name]
    files = tuple(
        RemoteFile(f.name, (f"{base_url}/{name}/{f.name}",), md5(gen.files[f.name]), len(gen.files[f.name]))
        for f in info.files
    )
    extracted = tuple((n, md5(gen.extracted[n]) if m else "") for n, m in info.extracted if n in gen.extracted)
    if name in ("mnist", "fashion_mnist"):
        extracted = tuple((n, "") for n, _ in info.extracted)
    return dataclasses.replace(info, files=files, extracted=extracted)


class Server:
    """What the loopback server answers: path -> (status, body); `mode` per path: "ok", "truncate", "stall"."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.modes: dict[str, str] = {}
        self.hits: list[str] = []
        self.url = ""


@contextmanager
def serve() -> Iterator[Server]:
    """An HTTP server on 127.0.0.1 at a free port, in a thread, for the test's lifetime."""
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state.hits.append(self.path)
            status, body = state.routes.get(self.path, (404, b"not found"))
            mode = state.modes.get(self.path, "ok")
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if mode == "ok":
                self.wfile.write(body)
                return
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if mode == "stall":  # half sent, then nothing: the client is killed meanwhile
                time.sleep(30)
            self.close_connection = True

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def publish(server: Server, name: str, gen: Generated) -> None:
    for fname, data in gen.files.items():
        server.routes[f"/{name}/{fname}"] = (200, data)


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def tiny_copy(name: str, folder: Path, monkeypatch: Any) -> dict[str, Any]:
    """Parameters that make dataset `name` read a small generated copy in `folder` (its catalogue entry patched)."""
    monkeypatch.setenv("ICON_BENCH_DATA", str(folder / "cache"))
    if name == "imagefolder":
        from PIL import Image

        rng = np.random.default_rng(0)
        for split in ("train", "test"):
            for label in ("a", "b"):
                for i in range(3):
                    path = folder / "tree" / split / label / f"{i}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(path)
        return {"path": str(folder / "tree")}
    gen = MAKERS[name](np.random.default_rng(0))
    # torchvision's layout: root/MNIST/raw/..., root/FashionMNIST/raw/...
    write_tree(folder / "copy", {k.replace("MNIST/", "FashionMNIST/") if name == "fashion_mnist" else k: v
                                 for k, v in gen.extracted.items()})
    monkeypatch.setitem(CATALOG, name, patched_info(name, gen, "http://127.0.0.1:9"))
    return {"path": str(folder / "copy")}

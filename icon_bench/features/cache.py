"""The feature cache folder: `manifest.json` (identity, whose hash is the cache key, and content hashes) and its checks.

Layout: ``features_<split>.npy`` (float16 or float32, memory-mappable), ``labels_<split>.npy``
(int64), optionally ``views_train.npy`` (n, K, D) and ``knn_train.npy`` (n, k) int64 (cosine,
nearest first), and ``manifest.json`` written last, so a folder with a manifest is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from icon_bench.errors import DataError

__all__ = ["FORMAT", "FORMAT_VERSION", "cache_key", "file_sha256", "read_cache", "relabel", "verify_cache", "write_manifest"]

FORMAT = "icon-bench-features"
#: Part of every key: raise it when the layout or what a cache holds changes, so old caches never
#: read as current. (icon-bench's own version is recorded but not keyed: an upgrade that changes
#: nothing of the embedding must not cost a GPU-day of re-embedding.)
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 16 << 20


def cache_key(identity: Mapping[str, Any]) -> str:
    """sha256 (hex, 24 chars) of the identity's canonical JSON: backbone, preprocessing, dataset, views, dtype, graph, format."""
    text = json.dumps({**identity, "format_version": FORMAT_VERSION}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in 16 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _describe_file(path: Path) -> dict[str, Any]:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    return {"sha256": file_sha256(path), "shape": list(arr.shape), "dtype": arr.dtype.str, "bytes": path.stat().st_size}


def write_manifest(folder: Path, identity: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Hash every .npy in `folder` and write manifest.json (atomically, last); returns the manifest."""
    from icon_bench._version import __version__

    files = {p.name: _describe_file(p) for p in sorted(folder.glob("*.npy"))}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "key": cache_key(identity),
        **dict(extra),
        "identity": dict(identity),
        "files": files,
        "icon_bench_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, folder / MANIFEST)
    return manifest


def relabel(folder: Path, label: str) -> None:
    """Give a cache another report label (outside the identity, so its key and files stay as they are)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["label"] = label
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST)


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a cache folder; a clear DataError when there is none or it is not one."""
    folder = Path(folder).expanduser()
    path = folder / MANIFEST
    if not folder.is_dir():
        raise DataError(f"{folder}: no such feature folder; make one with `icon-bench embed` or `icon-bench import-features`")
    if not path.is_file():
        raise DataError(
            f"{folder}: no {MANIFEST}, so not a finished feature cache (an embed still running or killed "
            "leaves none: run the same `icon-bench embed` command again to resume)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not an icon-bench feature manifest (format {manifest.get('format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: feature cache format {manifest.get('format_version')}, this icon-bench reads "
            f"{FORMAT_VERSION}; embed again"
        )
    return manifest


def verify_cache(folder: str | os.PathLike[str], *, content: bool = True) -> dict[str, Any]:
    """The manifest, after checking the cache still is what it says: the key matches the identity, every
    file is there with its shape and dtype, and (with `content`) its sha256. Refuses with a clear message."""
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    where = folder / MANIFEST
    identity = manifest.get("identity")
    if not isinstance(identity, dict) or cache_key(identity) != manifest.get("key"):
        raise DataError(
            f"{where}: the manifest was edited: its identity hashes to {cache_key(identity or {})}, "
            f"but it records key {manifest.get('key')}; refusing the cache (embed again)"
        )
    for name, info in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{folder}: {name} is listed in the manifest but missing; refusing the cache (embed again)")
        if path.stat().st_size != info["bytes"]:
            raise DataError(
                f"{path}: {path.stat().st_size} bytes, the manifest says {info['bytes']}; the cache changed "
                "after it was written, refusing it (embed again)"
            )
        if content and file_sha256(path) != info["sha256"]:
            raise DataError(
                f"{path}: content no longer matches the manifest (sha256 differs); the cache changed after "
                "it was written, refusing it (embed again, or delete the folder)"
            )
    extra = sorted(p.name for p in folder.glob("*.npy") if p.name not in manifest.get("files", {}))
    if extra:
        raise DataError(f"{folder}: {', '.join(extra)} not in the manifest; refusing a cache that holds foreign files")
    return manifest


def read_cache(folder: str | os.PathLike[str], *, verify: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(manifest, {file stem: memory-mapped array}) of a checked cache folder."""
    folder = Path(folder).expanduser()
    manifest = verify_cache(folder, content=verify)
    arrays = {Path(name).stem: np.load(folder / name, mmap_mode="r", allow_pickle=False) for name in manifest["files"]}
    return manifest, arrays

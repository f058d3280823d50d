"""Verified downloads into the dataset cache: stream to a temporary file, check the MD5, then rename."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from icon_bench.errors import DataError

__all__ = [
    "ENV_DATA",
    "ENV_MIRROR",
    "ENV_OFFLINE",
    "DownloadError",
    "RemoteFile",
    "data_root",
    "ensure_files",
    "file_md5",
    "human_size",
    "missing_files_message",
    "offline",
]

ENV_DATA = "ICON_BENCH_DATA"
ENV_MIRROR = "ICON_BENCH_MIRROR"
ENV_OFFLINE = "ICON_BENCH_OFFLINE"
CHUNK = 1 << 20
TIMEOUT_S = 60.0


class DownloadError(DataError):
    """A file could not be fetched or failed its checksum; the cache is left as it was."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One published file: its name in the cache, the URLs it is served from (tried in order), MD5 and size."""

    name: str
    urls: tuple[str, ...]
    md5: str
    size: int  # bytes, as published; shown to users, never trusted over the checksum


def data_root() -> Path:
    """Where datasets are cached: $ICON_BENCH_DATA, else ~/.cache/icon-bench (one folder per dataset)."""
    env = os.environ.get(ENV_DATA)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "icon-bench"


def offline() -> bool:
    """True when ICON_BENCH_OFFLINE is set to anything but 0/false/no/empty."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def human_size(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as published sizes are quoted)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover - the loop always returns


def file_md5(path: Path) -> str:
    """MD5 (hex) of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def mirror_urls(dataset: str, file: RemoteFile, mirror: str | None) -> tuple[str, ...]:
    """The URLs to try: the suite's `mirror` option, else $ICON_BENCH_MIRROR, else the canonical sources.

    A mirror holding `{file}` (and optionally `{dataset}`) is a template; otherwise the suite option
    is a folder holding the files (`MIRROR/FILE`) and the environment variable a folder with one
    sub-folder per dataset (`MIRROR/DATASET/FILE`), as MNIST and Fashion-MNIST share file names.
    """
    if mirror is None and os.environ.get(ENV_MIRROR):
        base = os.environ[ENV_MIRROR]
        template = base if "{file}" in base else base.rstrip("/") + "/{dataset}/{file}"
    elif mirror is not None:
        template = mirror if "{file}" in mirror else mirror.rstrip("/") + "/{file}"
    else:
        return file.urls
    return (template.format(dataset=dataset, file=file.name),)


def missing_files_message(dataset: str, folder: Path, files: Sequence[RemoteFile], mirror: str | None, why: str) -> str:
    """What to fetch by hand and where to put it, one file a line."""
    lines = [f"dataset {dataset!r}: {why}; {len(files)} file(s) missing from {folder}:"]
    for f in files:
        urls = " or ".join(mirror_urls(dataset, f, mirror))
        lines.append(f"  {f.name} ({human_size(f.size)}, md5 {f.md5}) from {urls}")
        lines.append(f"    -> put it at {folder / f.name}")
    lines.append(
        f"then run again (or `icon-bench datasets import {dataset} FILE_OR_FOLDER`, or point the dataset's "
        f"`path:` at a folder holding them); with network access and {ENV_OFFLINE} unset, it downloads them itself"
    )
    return "\n".join(lines)


def _clean_partials(folder: Path) -> None:
    """Remove temporary files a killed download left (the caller holds the folder's lock)."""
    for part in folder.glob(".*.part"):
        part.unlink(missing_ok=True)


def _stream(url: str, target: Path, file: RemoteFile, progress: bool) -> None:
    """Copy `url` into `target` (already open as a temporary file name), raising DownloadError on any fault."""
    from tqdm import tqdm

    from icon_bench.terminal import bar_size

    request = urllib.request.Request(url, headers={"User-Agent": "icon-bench"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        got = 0
        with open(target, "wb") as out, tqdm(
            total=expected or file.size or None,
            unit="B",
            unit_scale=True,
            unit_divisor=1000,
            desc=file.name,
            disable=not progress,
            file=sys.stderr,
            leave=False,
            **bar_size(),
        ) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                got += len(block)
                bar.update(len(block))
    # http.client returns short reads quietly when a server hangs up early: count the bytes.
    if expected is not None and got != expected:
        raise DownloadError(f"{url}: truncated transfer, got {got} of {expected} bytes")


def fetch(dataset: str, file: RemoteFile, folder: Path, *, mirror: str | None = None, progress: bool = True) -> Path:
    """Download `file` into `folder`, verified; raise DownloadError naming each URL tried and why it failed.

    The bytes go to a hidden temporary file in `folder` that is renamed into place only after its
    MD5 matches, so a failed, corrupt or interrupted transfer never leaves a file under its real name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for url in mirror_urls(dataset, file, mirror):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=folder)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            print(f"downloading {file.name} ({human_size(file.size)}) from {url}", file=sys.stderr, flush=True)
            _stream(url, tmp, file, progress)
            digest = file_md5(tmp)
            if digest != file.md5:
                failures.append(f"{url}: checksum mismatch (md5 {digest}, expected {file.md5})")
                continue
            os.replace(tmp, folder / file.name)
            return folder / file.name
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
        except urllib.error.URLError as exc:
            failures.append(f"{url}: cannot connect ({exc.reason})")
        except (OSError, DownloadError) as exc:  # resets, timeouts, truncation
            failures.append(str(exc) if isinstance(exc, DownloadError) else f"{url}: {type(exc).__name__}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(
        f"dataset {dataset!r}: could not download {file.name}:\n  " + "\n  ".join(failures) + "\n"
        + missing_files_message(dataset, folder, [file], mirror, "download failed").split("\n", 1)[1]
    )


def ensure_files(
    dataset: str, folder: Path, files: Sequence[RemoteFile], *, mirror: str | None = None, progress: bool = True
) -> list[Path]:
    """The verified local paths of `files` in `folder`, downloading what is missing (unless offline).

    The caller holds `folder`'s lock. A file already present is trusted only if its MD5 matches;
    one that does not is set aside as NAME.corrupt and fetched again.
    """
    folder.mkdir(parents=True, exist_ok=True)
    _clean_partials(folder)
    missing = []
    for f in files:
        path = folder / f.name
        if path.is_file() and file_md5(path) != f.md5:
            aside = path.with_name(path.name + ".corrupt")
            os.replace(path, aside)
            print(f"{path}: checksum mismatch (not the published file); moved aside to {aside.name}", file=sys.stderr)
        if not path.is_file():
            missing.append(f)
    if missing and offline():
        raise DownloadError(missing_files_message(dataset, folder, missing, mirror, f"offline ({ENV_OFFLINE} is set)"))
    for f in missing:
        fetch(dataset, f, folder, mirror=mirror, progress=progress)
    return [folder / f.name for f in files]

"""Fetch the Keras OCR example's captcha data set, verify it and extract it safely.

The zip is streamed to a temporary file while its SHA-256 is computed, checked (complete
download, a readable zip with intact CRCs, the expected number of decodable PNGs named by
their labels), extracted into a temporary sibling of the destination with every entry name
checked against path traversal, and only then renamed into place. A manifest written last
(`<dest>.download.json`: URL, SHA-256, size, file count) marks a finished download, so a
second call does nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass

from components import artifact_io
from components.settings import setting

DEFAULT_URL = "https://github.com/AakashKumarNain/CaptchaCracker/raw/master/captcha_images_v2.zip"
DEFAULT_DEST = "data/captcha_images_v2"
EXPECTED_COUNT = 1040
LABEL_LENGTH = 5
CHUNK_BYTES = 1 << 16


class DownloadError(RuntimeError):
    """The download or its content is not what was expected; nothing was kept."""


@dataclass(frozen=True)
class DownloadConfig:
    url: str = setting(DEFAULT_URL, "the zip's URL (a mirror works too)")
    dest: str = setting(DEFAULT_DEST, "folder for the PNGs")
    expected_count: int = setting(EXPECTED_COUNT, "number of PNGs the zip must hold")
    label_length: int = setting(LABEL_LENGTH, "characters in each file name's label")
    expected_sha256: str | None = setting(
        None, "refuse a zip with another SHA-256", flag="--sha256"
    )
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class DownloadResult:
    dest: str
    url: str
    sha256: str
    zip_bytes: int
    num_images: int
    downloaded: bool  # False: it was already there


def manifest_path(dest: str) -> str:
    return os.path.abspath(dest).rstrip(os.sep) + ".download.json"


def download(config: DownloadConfig, show_progress: bool = True) -> DownloadResult:
    """Downloads and extracts the data set unless a complete copy is already at `dest`."""
    dest = os.path.abspath(config.dest)
    existing = _existing(dest)
    if existing is not None:
        return existing
    if os.path.exists(dest):
        raise DownloadError(
            f"{dest} exists but has no {manifest_path(dest)}: it is not a "
            "finished download; move it away and retry"
        )
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=f".{os.path.basename(dest)}.") as tmp:
        zip_path = os.path.join(tmp, "download.zip")
        sha256, size = fetch(config.url, zip_path, config.timeout_seconds, show_progress)
        if config.expected_sha256 and sha256 != config.expected_sha256.lower():
            raise DownloadError(
                f"SHA-256 of {config.url} is {sha256}, expected {config.expected_sha256}"
            )
        extracted = os.path.join(tmp, "extracted")
        count = extract_images(zip_path, extracted)
        verify_images(extracted, config.expected_count, config.label_length)
        os.rename(extracted, dest)
    result = DownloadResult(
        dest=dest, url=config.url, sha256=sha256, zip_bytes=size, num_images=count, downloaded=True
    )
    artifact_io.write_json(manifest_path(dest), asdict(result) | {"downloaded": False})
    return result


def _existing(dest: str) -> DownloadResult | None:
    path = manifest_path(dest)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        result = DownloadResult(**json.load(f))
    if not os.path.isdir(dest):
        raise DownloadError(
            f"{path} describes a download, but {dest} is missing: delete {path} and retry"
        )
    return result


def fetch(url: str, path: str, timeout_seconds: float, show_progress: bool) -> tuple[str, int]:
    """Streams `url` into `path`; returns (SHA-256 hex, bytes). Short or broken -> DownloadError."""
    import requests
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    digest = hashlib.sha256()
    received = 0
    try:
        with requests.get(url, stream=True, timeout=timeout_seconds) as response:
            response.raise_for_status()
            expected = int(response.headers.get("Content-Length", 0)) or None
            columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
            with (
                open(path, "wb") as f,
                Progress(*columns, disable=not show_progress, transient=True) as progress,
            ):
                task = progress.add_task(f"download {posixpath.basename(url)}", total=expected)
                for chunk in response.iter_content(CHUNK_BYTES):
                    f.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.advance(task, len(chunk))
    except requests.RequestException as e:
        raise DownloadError(f"download of {url} failed after {received} bytes: {e}") from e
    if expected is not None and received != expected:
        raise DownloadError(f"truncated download of {url}: {received} of {expected} bytes")
    return digest.hexdigest(), received


def _safe_member_name(name: str) -> str:
    """The entry's path, or DownloadError if it is absolute or climbs out with `..`."""
    normalized = name.replace("\\", "/")
    parts = normalized.split("/")
    if normalized.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise DownloadError(f"unsafe path in zip (path traversal): {name!r}")
    return normalized


def extract_images(zip_path: str, out_dir: str) -> int:
    """Extracts the zip's PNG files flat into `out_dir`, after checking every entry name."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise DownloadError(f"not a complete zip file: {e}") from e
    with archive:
        members = archive.infolist()
        names = [_safe_member_name(m.filename) for m in members]  # all checked before any write
        broken = archive.testzip()
        if broken is not None:
            raise DownloadError(f"corrupt zip entry (CRC mismatch): {broken}")
        os.makedirs(out_dir)
        count = 0
        for member, name in zip(members, names, strict=True):
            base = posixpath.basename(name)
            skip = (
                member.is_dir()
                or name.startswith("__MACOSX/")
                or base.startswith(".")
                or not base.lower().endswith(".png")
            )
            if skip:
                continue
            target = os.path.join(out_dir, base)
            if os.path.exists(target):
                raise DownloadError(f"two zip entries named {base!r}")
            with archive.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            count += 1
    return count


def verify_images(folder: str, expected_count: int, label_length: int) -> None:
    """`expected_count` PNGs that decode, each named by a `label_length`-character label."""
    from PIL import Image

    names = sorted(os.listdir(folder))
    for name in names:
        stem = os.path.splitext(name)[0]
        if len(stem) != label_length or not stem.isalnum():
            raise DownloadError(f"{name}: expected a {label_length}-character label as its name")
        try:
            with open(os.path.join(folder, name), "rb") as f:
                Image.open(io.BytesIO(f.read())).load()
        except Exception as e:
            raise DownloadError(f"{name} does not decode as an image: {e}") from e
    if len(names) != expected_count:
        raise DownloadError(f"expected {expected_count} PNG files, the zip has {len(names)}")

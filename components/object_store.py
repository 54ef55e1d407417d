"""Object stores (gs://) through Beam's FileSystems: listing, copying, publishing a folder.

An object store has no folders and no atomic rename. A "folder" exists for a reader (TF
Serving polling a base path, `saved_model_versions`) as soon as one object under its prefix
does, and `tf.io.gfile.rename` of a folder copies object by object in name order, so a
SavedModel's `saved_model.pb` lands before its `variables/`. `copy_folder` copies every
object but the one that marks the folder complete, then that one: a reader that requires the
marker sees the folder only when it is whole, and an interrupted copy leaves a folder without
its marker. Beam's FileSystems do the work (server-side copies within GCS), so all of this
also runs against a local GCS emulator, which TensorFlow's own gs:// cannot use.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
from collections.abc import Callable

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

log = logging.getLogger(__name__)

RAW = CompressionTypes.UNCOMPRESSED  # byte for byte, a `.gz` name included


def list_objects(folder: str) -> list[str]:
    """Every object (file) under `folder`, as paths relative to it, sorted."""
    prefix = folder.rstrip("/") + "/"
    matched = FileSystems.match([prefix + "**"])[0].metadata_list
    return sorted(m.path[len(prefix) :] for m in matched if not m.path.endswith("/"))


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=RAW) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """One object; on GCS it becomes visible only once the upload is complete."""
    with FileSystems.create(path, compression_type=RAW) as f:
        f.write(data)


def copy_file(source: str, destination: str) -> None:
    """One file between any two Beam file systems (local to gs:// and back)."""
    with (
        FileSystems.open(source, compression_type=RAW) as src,
        FileSystems.create(destination, compression_type=RAW) as dst,
    ):
        shutil.copyfileobj(src, dst, 1 << 20)


def copy_folder(
    source: str, destination: str, marker: str, after_each: Callable[[str], None] | None = None
) -> list[str]:
    """Copy `source`'s files to `destination`, `marker` (a relative path) last; returns them.

    `after_each(relative_path)` is called after each copy (progress; where a test interrupts).
    """
    if FileSystems.exists(posixpath.join(destination, marker)):
        raise FileExistsError(f"{destination} is already published")
    objects = list_objects(source)
    if marker not in objects:
        raise FileNotFoundError(f"{source} holds no {marker}: refusing to publish it")
    same_store = FileSystems.get_scheme(source) == FileSystems.get_scheme(destination)
    for relative in [name for name in objects if name != marker] + [marker]:
        pair = posixpath.join(source, relative), posixpath.join(destination, relative)
        if same_store:
            FileSystems.copy([pair[0]], [pair[1]])
        else:
            copy_file(*pair)
        if after_each is not None:
            after_each(relative)
    log.info("published %s (%d objects, %s last)", destination, len(objects), marker)
    return objects


def publish_folder(
    source: str, destination: str, marker: str, after_each: Callable[[str], None] | None = None
) -> None:
    """`copy_folder`, then delete the source (a temporary folder beside the destination)."""
    objects = copy_folder(source, destination, marker, after_each)
    FileSystems.delete([posixpath.join(source, name) for name in objects])


def download(url: str, local: str) -> None:
    """A file, or every file under a folder, from `url` to the local path `local`."""
    objects = list_objects(url)
    if not objects and FileSystems.exists(url):
        copy_file(url, local)
        return
    for relative in objects:
        copy_file(posixpath.join(url, relative), posixpath.join(local, relative))


def remove_tree(path: str) -> None:
    """A file or every object under a folder; nothing to do when there is none."""
    doomed = [posixpath.join(path, name) for name in list_objects(path)]
    if FileSystems.exists(path):
        doomed.append(path)
    if doomed:
        FileSystems.delete(doomed)

"""Publishing a folder on an object store (gs://) so that no reader sees it half-written.

An object store has no folders and no atomic rename. A "folder" exists for a reader (TF
Serving polling a base path, `saved_model_versions`) as soon as one object under its prefix
does, and `tf.io.gfile.rename` of a folder copies object by object in name order, so a
SavedModel's `saved_model.pb` lands before its `variables/`. `publish_folder` copies every
object but the one that marks the folder complete, then that one, then deletes the source: a
reader that requires the marker sees the folder only when it is whole, and an interrupted
publish leaves a folder without its marker. Beam's FileSystems do the copies (server-side on
GCS), so this also runs against a local GCS emulator, which TensorFlow's own gs:// cannot use.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable

from apache_beam.io.filesystems import FileSystems

log = logging.getLogger(__name__)


def is_object_store(path: str) -> bool:
    """gs:// and other URLs: no atomic folder rename there."""
    return "://" in path


def list_objects(folder: str) -> list[str]:
    """Every object under `folder`, as paths relative to it, sorted."""
    prefix = folder.rstrip("/") + "/"
    matched = FileSystems.match([prefix + "**"])[0].metadata_list
    return sorted(m.path[len(prefix) :] for m in matched if not m.path.endswith("/"))


def publish_folder(
    source: str, destination: str, marker: str, after_each: Callable[[str], None] | None = None
) -> None:
    """Copy `source`'s objects to `destination`, `marker` (a relative path) last; delete source.

    `after_each(relative_path)` is called after each copy (progress; where a test interrupts).
    """
    if FileSystems.exists(posixpath.join(destination, marker)):
        raise FileExistsError(f"{destination} is already published")
    objects = list_objects(source)
    if marker not in objects:
        raise FileNotFoundError(f"{source} holds no {marker}: refusing to publish it")
    for relative in [name for name in objects if name != marker] + [marker]:
        FileSystems.copy(
            [posixpath.join(source, relative)], [posixpath.join(destination, relative)]
        )
        if after_each is not None:
            after_each(relative)
    FileSystems.delete([posixpath.join(source, name) for name in objects])
    log.info("published %s (%d objects, %s last)", destination, len(objects), marker)

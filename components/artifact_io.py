"""Artifact I/O: the small files of the pipeline (JSON, text, CSV, PNG), local or gs://.

Local paths go through `tf.io.gfile`: a file is written under a temporary name beside it and
renamed over the target; a folder is built under a temporary sibling and renamed into place
only when the block that fills it succeeds (a rename is atomic there). Object stores (any
`scheme://`) go through Beam's FileSystems (components.object_store), which honour
STORAGE_EMULATOR_HOST where TensorFlow's own gs:// does not: one object is written whole or
not at all, and a folder has no rename, so there the file each component writes last (the
pipeline's `_COMPLETE.json`, ExampleGen's `metadata.json`, a SavedModel's `saved_model.pb`)
is what tells a reader the folder is complete. What only TensorFlow can write (a Keras model,
a SavedModel) is written locally and published (components.staging).
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf


def is_object_store(path: str) -> bool:
    """gs:// and other URLs: no atomic folder rename there, and Beam's FileSystems do the I/O."""
    return "://" in path


def temporary_name(path: str, tag: str = "tmp") -> str:
    """A fresh hidden sibling name of `path`, which no reader (nor a folder listing of
    inputs, which skips hidden files) mistakes for it."""
    folder, name = posixpath.split(path.rstrip("/"))
    return posixpath.join(folder, f".{name}.{tag}-{uuid.uuid4().hex[:8]}")


def write_with(path: str, write: Callable[[str], None]) -> None:
    """`write(temporary_path)`, then rename it over `path`; the temporary file never stays."""
    temporary = temporary_name(path)
    try:
        write(temporary)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
        raise


def write_file(path: str, data: str | bytes) -> None:
    """Text or bytes into `path`, atomically."""
    if is_object_store(path):
        from components import object_store

        object_store.write_bytes(path, data.encode() if isinstance(data, str) else data)
        return

    def write(temporary: str) -> None:
        with tf.io.gfile.GFile(temporary, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)

    write_with(path, write)


def write_json(
    path: str, value: Any, *, default: Callable[[Any], Any] | None = None, sort_keys: bool = False
) -> None:
    """`value` as indented JSON into `path`, atomically."""
    write_file(path, json.dumps(value, indent=2, sort_keys=sort_keys, default=default) + "\n")


def read_bytes(path: str) -> bytes:
    if is_object_store(path):
        from components import object_store

        return object_store.read_bytes(path)
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path))


def isdir(path: str) -> bool:
    """A local folder, or a prefix with at least one object under it."""
    if is_object_store(path):
        from components import object_store

        return bool(object_store.list_objects(path))
    return tf.io.gfile.isdir(path)


def exists(path: str) -> bool:
    """A file or a folder (on an object store: an object, or a prefix holding one)."""
    if is_object_store(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path) or isdir(path)
    return tf.io.gfile.exists(path)


def listdir(path: str) -> list[str]:
    """Names of the files and folders directly in `path`."""
    if is_object_store(path):
        from components import object_store

        return sorted({name.split("/")[0] for name in object_store.list_objects(path)})
    return [name.rstrip("/") for name in tf.io.gfile.listdir(path)]


def glob(pattern: str) -> list[str]:
    if is_object_store(pattern):
        from apache_beam.io.filesystems import FileSystems

        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    return tf.io.gfile.glob(pattern)


def makedirs(path: str) -> None:
    """A local folder and its parents; object stores have no folders to make."""
    if not is_object_store(path):
        tf.io.gfile.makedirs(path)


def remove(path: str) -> None:
    """Delete a file or a folder tree; nothing to do when it is not there."""
    if is_object_store(path):
        from components import object_store

        object_store.remove_tree(path)
    elif tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yields a fresh temporary sibling folder that replaces `path` only if the block succeeds.

    Local folders only: an object store has no folder rename (stage and publish instead,
    components.staging). On failure the temporary folder is removed and an existing `path`
    stays untouched.
    """
    path = path.rstrip("/")
    temporary = temporary_name(path)
    tf.io.gfile.makedirs(temporary)
    try:
        yield temporary
    except BaseException:
        remove(temporary)
        raise
    if tf.io.gfile.exists(path):
        old = temporary_name(path, "old")
        tf.io.gfile.rename(path, old)
        tf.io.gfile.rename(temporary, path)
        remove(old)
    else:
        tf.io.gfile.rename(temporary, path)

"""Artifact I/O: every write a reader must never see half-done goes through here.

Local paths and gs:// alike (`tf.io.gfile`). A file is written under a temporary name beside
it and renamed over the target; a folder is built under a temporary sibling and renamed into
place only when the block that fills it succeeds. On local and POSIX file systems a rename is
atomic. On object stores (gs://) it is a copy, object by object, so there the file each
component writes last (the pipeline's `_COMPLETE.json`, ExampleGen's `metadata.json`, a
SavedModel's `saved_model.pb`) is what tells a reader the folder is complete.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf


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

    def write(temporary: str) -> None:
        with tf.io.gfile.GFile(temporary, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)

    write_with(path, write)


def write_json(
    path: str, value: Any, *, default: Callable[[Any], Any] | None = None, sort_keys: bool = False
) -> None:
    """`value` as indented JSON into `path`, atomically."""
    write_file(path, json.dumps(value, indent=2, sort_keys=sort_keys, default=default) + "\n")


def read_json(path: str) -> Any:
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def remove(path: str) -> None:
    """Delete a file or a folder tree; nothing to do when it is not there."""
    if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yields a fresh temporary sibling folder that replaces `path` only if the block succeeds.

    On failure the temporary folder is removed and an existing `path` stays untouched.
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

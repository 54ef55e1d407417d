"""Local copies of object-store folders, for what only TensorFlow's own file system touches.

`tf.data.TFRecordDataset`, Keras' `model.save`/`load_model`, `tf.saved_model` and the Keras
Tuner's trial folders read and write through TensorFlow's gs:// filesystem, which cannot be
pointed anywhere but Google's endpoints (no emulator). So a step given gs:// paths works on a
local mirror instead: its inputs are downloaded once per process into a scratch folder, it
writes its outputs there, and the caller publishes them with the marker-last copy of
components.object_store. On real GCS the same path runs. Local paths pass through untouched:
no copies, no scratch folder.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Any

from components import artifact_io


class Mirror:
    """`gs://bucket/a/b` <-> `<scratch>/gs/bucket/a/b`, filled on demand, removed with it."""

    def __init__(self) -> None:
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._present: set[str] = set()  # URLs whose whole tree is in the mirror

    @property
    def root(self) -> str:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="captcha-ocr-mirror-")
        return self._scratch.name

    def _path(self, url: str) -> str:
        scheme, rest = url.rstrip("/").split("://", 1)
        return os.path.join(self.root, scheme, rest)

    def _known(self, url: str) -> bool:
        url = url.rstrip("/")
        return any(url == done or url.startswith(done + "/") for done in self._present)

    def local(self, path: str) -> str:
        """A local path holding what `path` holds (downloaded on first use), or `path` itself."""
        if not artifact_io.is_object_store(path):
            return path
        local = self._path(path)
        if not self._known(path):
            from components import object_store

            artifact_io.remove(local)
            object_store.download(path, local)
            if not os.path.exists(local):  # nothing there yet (an export base before version 1)
                os.makedirs(local)
            self._present.add(path.rstrip("/"))
        return local

    def output(self, path: str) -> str:
        """An empty local folder to write what belongs at `path` into, or `path` itself."""
        if not artifact_io.is_object_store(path):
            return path
        local = self._path(path)
        artifact_io.remove(local)
        os.makedirs(local)
        self._present.add(path.rstrip("/"))
        return local

    def url(self, local: str) -> str:
        """The object-store path a mirror path stands for (a path outside the mirror: itself)."""
        if self._scratch is None or not local.startswith(self.root + os.sep):
            return local
        scheme, rest = os.path.relpath(local, self.root).split(os.sep, 1)
        return f"{scheme}://{rest.replace(os.sep, '/')}"

    def urls(self, value: Any) -> Any:
        """`value` (a step's result: dicts, lists, strings) with every mirror path as its URL."""
        if isinstance(value, dict):
            return {key: self.urls(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.urls(item) for item in value)
        return self.url(value) if isinstance(value, str) else value

    def publish(self, local: str, marker: str) -> str:
        """Copy a finished mirror folder to its URL, `marker` last; returns the URL."""
        from components import object_store

        url = self.url(local)
        if url != local:
            self._name_urls(local)
            object_store.copy_folder(local, url, marker)
        return url

    def _name_urls(self, folder: str) -> None:
        """A step's JSON files (a train summary, a blessing) name the mirror paths it was given:
        the published copies name their URLs, as its result does."""
        schemes = os.listdir(self.root)
        for path in pathlib.Path(folder).rglob("*.json"):
            text = original = path.read_text()
            for scheme in schemes:
                text = text.replace(os.path.join(self.root, scheme) + os.sep, f"{scheme}://")
            if text != original:
                path.write_text(text)

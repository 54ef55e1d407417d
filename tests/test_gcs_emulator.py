"""gs:// against a local GCS emulator (gcp-storage-emulator on 127.0.0.1, started and stopped here).

Beam's FileSystems and google-cloud-storage honour STORAGE_EMULATOR_HOST; TensorFlow 2.16's own
gs:// filesystem does not (its endpoints are compiled in: www.googleapis.com), so what runs
here is the Beam side: ExampleGen reading images from a bucket and writing its output into one,
and the object-store publish of a SavedModel (components.object_store), complete and
interrupted. Beam looks for Google
credentials once per process (about 20 s of retries offline) before connecting anonymously.
"""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys

import pytest
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from components import examples
from components.example_gen import IngestConfig, run_ingest
from components.object_store import list_objects, publish_folder
from components.predict import SAVED_MODEL_FILE

gcp_storage_emulator = pytest.importorskip(
    "gcp_storage_emulator.server",
    reason="gcp-storage-emulator is not installed (pip install -e '.[test]')",
)

BUCKET = "captcha-ocr-test"
RAW = CompressionTypes.UNCOMPRESSED  # copies byte for byte, .gz included


@pytest.fixture(scope="module")
def bucket():
    """gs://BUCKET on an in-memory emulator bound to 127.0.0.1, for this module's tests."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = gcp_storage_emulator.create_server(
        "127.0.0.1", port, in_memory=True, default_bucket=BUCKET
    )
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        patch.setenv("NO_GCE_CHECK", "True")  # no probing for a GCE metadata server
        try:
            yield f"gs://{BUCKET}"
        finally:
            server.stop()


def upload(local: pathlib.Path, url: str) -> list[str]:
    """Every file under `local` to the prefix `url`, through Beam's FileSystems."""
    names = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    for name in names:
        with FileSystems.create(f"{url}/{name}", compression_type=RAW) as f:
            f.write((local / name).read_bytes())
    return names


def download(url: str, local: pathlib.Path) -> None:
    for name in list_objects(url):
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        with FileSystems.open(f"{url}/{name}", compression_type=RAW) as f:
            (local / name).write_bytes(f.read())


def complete_versions(base: str) -> list[int]:
    """What a reader that requires saved_model.pb (saved_model_versions) counts under `base`."""
    return sorted(
        {
            int(name.split("/")[0])
            for name in list_objects(base)
            if name.split("/")[0].isdigit()
            and name.endswith("/" + SAVED_MODEL_FILE)
            and name.count("/") == 1
        }
    )


def test_ingest_from_and_into_a_bucket(bucket, synthetic_images, synthetic_examples, tmp_path):
    upload(synthetic_images, f"{bucket}/images")
    metadata = run_ingest(f"{bucket}/images", str(tmp_path / "local"), IngestConfig())
    local = json.loads((synthetic_examples / examples.METADATA_FILE).read_text())
    assert (
        metadata["counts"] == local["counts"] and metadata["num_rejected"] == local["num_rejected"]
    )
    rejected = (tmp_path / "local" / examples.REJECTED_FILE).read_text().splitlines()
    assert all(json.loads(row)["source"].startswith(f"{bucket}/images/") for row in rejected)

    # The same job writing into the bucket writes the same files, metadata.json last.
    output = f"{bucket}/examples"
    assert run_ingest(f"{bucket}/images", output, IngestConfig()) == metadata
    download(output, tmp_path / "from-bucket")
    written = sorted(
        str(p.relative_to(tmp_path / "local"))
        for p in (tmp_path / "local").rglob("*")
        if p.is_file()
    )
    assert list_objects(output) == written
    for name in written:
        assert (tmp_path / "from-bucket" / name).read_bytes() == (
            tmp_path / "local" / name
        ).read_bytes()
    with pytest.raises(FileExistsError, match="complete ExampleGen output"):
        run_ingest(f"{bucket}/images", output, IngestConfig())


def test_publish_shows_the_version_only_when_whole(bucket, exported_model_base, tmp_path):
    base = f"{bucket}/export/captcha"
    staged = upload(exported_model_base / "1", f"{base}/.tmp-export-a")
    assert SAVED_MODEL_FILE in staged and any(n.startswith("variables/") for n in staged)
    copied: list[str] = []

    def check(relative: str) -> None:
        copied.append(relative)
        assert list_objects(f"{base}/1") == sorted(copied)
        assert complete_versions(base) == ([1] if relative == SAVED_MODEL_FILE else [])

    publish_folder(f"{base}/.tmp-export-a", f"{base}/1", SAVED_MODEL_FILE, after_each=check)
    assert copied[-1] == SAVED_MODEL_FILE and sorted(copied) == staged
    assert list_objects(base) == [f"1/{name}" for name in staged]  # the temporary name is gone
    with pytest.raises(FileExistsError):
        publish_folder(f"{base}/.tmp-export-a", f"{base}/1", SAVED_MODEL_FILE)

    # What TF Serving would load, read back from the bucket, answers in a fresh process.
    download(f"{base}/1", tmp_path / "1")
    script = (
        "import sys, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "png = tf.io.encode_png(tf.fill([50, 200, 1], tf.constant(255, tf.uint8)))\n"
        "print(m(image_bytes=tf.reshape(png, [1]))['valid'].numpy().tolist())\n"
    )
    answer = (
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "1")],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert answer == "[True]"


def test_an_interrupted_publish_leaves_no_complete_version(bucket, exported_model_base):
    base = f"{bucket}/export/interrupted"
    staged = upload(exported_model_base / "1", f"{base}/.tmp-export-b")

    def die_half_way(relative: str) -> None:  # publish_folder has no cleanup: as if killed here
        if len(list_objects(f"{base}/1")) == len(staged) // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        publish_folder(
            f"{base}/.tmp-export-b", f"{base}/1", SAVED_MODEL_FILE, after_each=die_half_way
        )
    assert 0 < len(list_objects(f"{base}/1")) < len(staged)
    assert SAVED_MODEL_FILE not in list_objects(f"{base}/1")
    assert complete_versions(base) == []
    assert list_objects(f"{base}/.tmp-export-b") == staged  # the candidate is still whole
    publish_folder(f"{base}/.tmp-export-b", f"{base}/2", SAVED_MODEL_FILE)
    assert complete_versions(base) == [2]

"""gs:// against a local GCS emulator (gcp-storage-emulator on 127.0.0.1, started and stopped here).

Beam's FileSystems and google-cloud-storage honour STORAGE_EMULATOR_HOST; TensorFlow 2.16's own
gs:// filesystem does not (its endpoints are compiled in: www.googleapis.com). The pipeline's
own I/O goes through Beam (components.artifact_io, components.object_store) and what only
TensorFlow reads or writes is staged through a local mirror (components.staging), so the whole
of `run`, its resume, `retrain` and `predict` run here against the bucket; so do ExampleGen
alone and the object-store publish of a SavedModel, complete and interrupted. Beam looks for
Google credentials once per process (about 20 s of retries offline) before connecting
anonymously.
"""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from helpers import CLEAN_HEIGHT, CLEAN_WIDTH, tiny_model, write_clean_images

from components import artifact_io, examples, object_store
from components.example_gen import IngestConfig, run_ingest
from components.object_store import list_objects, publish_folder
from components.predict import SAVED_MODEL_FILE
from pipeline import cli, runner

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


def interrupted(copy_folder: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """`copy_folder` (or `publish_folder`) killed once half of the folder is copied."""

    def copy(source: str, destination: str, marker: str) -> list[str]:
        half = len(list_objects(source)) // 2

        def die_half_way(relative: str) -> None:
            if len(list_objects(destination)) >= half:
                raise KeyboardInterrupt

        return copy_folder(source, destination, marker, after_each=die_half_way)

    return copy


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

    with pytest.raises(KeyboardInterrupt):  # publish_folder has no cleanup: as if killed here
        interrupted(publish_folder)(f"{base}/.tmp-export-b", f"{base}/1", SAVED_MODEL_FILE)
    assert 0 < len(list_objects(f"{base}/1")) < len(staged)
    assert SAVED_MODEL_FILE not in list_objects(f"{base}/1")
    assert complete_versions(base) == []
    assert list_objects(f"{base}/.tmp-export-b") == staged  # the candidate is still whole
    publish_folder(f"{base}/.tmp-export-b", f"{base}/2", SAVED_MODEL_FILE)
    assert complete_versions(base) == [2]


def test_run_resume_retrain_and_predict_in_a_bucket(bucket, tmp_path, capsys, monkeypatch):
    """`captcha-ocr run`, `retrain` and `predict` with every path in the bucket."""
    upload(write_clean_images(tmp_path / "in", 120, seed=1), f"{bucket}/in")
    upload(write_clean_images(tmp_path / "in2", 60, seed=2), f"{bucket}/in2")
    tiny = tmp_path / "tiny.json"
    tiny_model(image_height=CLEAN_HEIGHT, image_width=CLEAN_WIDTH).to_json(str(tiny))
    root, export = f"{bucket}/root", f"{bucket}/export"
    flags = ["--workdir", root, "--export-dir", export, "--hyperparameters", str(tiny)]
    flags += ["--epochs", "2", "--min-accuracy", "0", "--force-push"]  # about I/O, not reading

    assert cli.main(["run", "--images", f"{bucket}/in", *flags]) == 0
    steps = ("ExampleGen", "Validation", "Trainer", "Evaluator", "Pusher")
    stored = list_objects(root)
    for step in steps:
        assert f"{step}/span-0/{runner.COMPLETE_MARKER}" in stored, step
    for name in ("Trainer/span-0/model.keras", runner.MANIFEST_FILE, runner.REPORT_FILE):
        assert name in stored
    manifest = artifact_io.read_json(f"{root}/{runner.MANIFEST_FILE}")
    trained = manifest["components"][2]["result"]
    assert trained["model_dir"] == f"{root}/Trainer/span-0"  # a URL, not the local mirror
    assert trained["examples_dirs"] == [f"{root}/ExampleGen/span-0"]
    assert complete_versions(export) == [1]

    # A crash after training, then one half-way through publishing the Evaluator's folder: the
    # folder stays incomplete (no marker), and the next run evaluates again, from the bucket.
    artifact_io.remove(f"{root}/Evaluator/span-0/{runner.COMPLETE_MARKER}")
    with monkeypatch.context() as patch:
        patch.setattr(object_store, "copy_folder", interrupted(object_store.copy_folder))
        with pytest.raises(KeyboardInterrupt):
            cli.main(["run", "--images", f"{bucket}/in", *flags])
    left = list_objects(f"{root}/Evaluator/span-0")
    assert left and runner.COMPLETE_MARKER not in left
    assert cli.main(["run", "--images", f"{bucket}/in", *flags]) == 0
    manifest = artifact_io.read_json(f"{root}/{runner.MANIFEST_FILE}")
    ran = [c["name"] for c in manifest["components"] if c["status"] == "ran"]
    assert ran == ["Evaluator"] and complete_versions(export) == [1]

    assert cli.main(["retrain", "--images", f"{bucket}/in2", *flags]) == 0
    stored = list_objects(root)
    for step in steps:
        assert f"{step}/span-1/{runner.COMPLETE_MARKER}" in stored, step
    trained = artifact_io.read_json(f"{root}/Trainer/span-1/train_summary.json")
    assert trained["examples_dirs"] == [f"{root}/ExampleGen/span-{n}" for n in (0, 1)]
    assert complete_versions(export) == [1, 2]
    # Nothing half-visible: no temporary (hidden) name is left anywhere in the bucket.
    everything = list_objects(bucket)
    assert not [name for name in everything if any(p.startswith(".") for p in name.split("/"))]

    capsys.readouterr()
    sample = sorted((tmp_path / "in2").iterdir())[:4]
    assert cli.main(["predict", "--model", export, "--format", "jsonl", *map(str, sample)]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["source"] for a in answers] == list(map(str, sample))
    assert all(a["valid"] and a["error"] is None for a in answers)

"""`captcha-ocr predict`: files through an export's serving signature, per-file errors."""

from __future__ import annotations

import io
import json
import pathlib
import shutil

import pytest
import tensorflow as tf
from PIL import Image

from components.predict import (
    INPUT_NAME,
    INVALID_IMAGE,
    ExportedModel,
    predict_files,
    resolve_saved_model,
)
from components.preprocessing import decode_rgb
from components.pusher import TEMP_PREFIX
from pipeline import cli


@pytest.fixture(scope="module")
def files(synthetic_images, tmp_path_factory) -> list[pathlib.Path]:
    """Three PNGs, a JPEG, a file that is no image and one that does not exist."""
    folder = tmp_path_factory.mktemp("predict_inputs")
    pngs = sorted(synthetic_images.glob("*.png"))[:3]
    chosen = [shutil.copy(p, folder / p.name) for p in pngs]
    buffer = io.BytesIO()
    Image.open(pngs[0]).convert("RGB").save(buffer, "JPEG")
    (folder / "photo.jpg").write_bytes(buffer.getvalue())
    (folder / "notes.png").write_bytes(b"these are not pixels")
    return [pathlib.Path(p) for p in chosen] + [
        folder / "photo.jpg",
        folder / "notes.png",
        folder / "missing.png",
    ]


def one_by_one(model: ExportedModel, paths: list[pathlib.Path]) -> list[str]:
    """Each image alone through the signature: what batching must not change."""
    return [
        model.signature(**{INPUT_NAME: tf.constant([p.read_bytes()])})["text"].numpy()[0].decode()
        for p in paths
    ]


def test_predict_jsonl_answers_every_file_in_order(exported_model_base, files, capsys):
    status = cli.main(
        [
            "predict",
            "--model",
            str(exported_model_base),
            *map(str, files),
            "--format",
            "jsonl",
            "--batch-size",
            "2",
        ]
    )
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]

    assert status == 1
    assert "2 of 6 files got no answer" in err
    assert [line["source"] for line in lines] == [str(f) for f in files]
    expected = one_by_one(ExportedModel(str(exported_model_base)), files[:4])
    assert [line["text"] for line in lines[:4]] == expected
    assert all(line["valid"] and line["error"] is None for line in lines[:4])
    assert all(0.0 <= line["confidence"] <= 1.0 for line in lines)
    assert (lines[4]["valid"], lines[4]["text"], lines[4]["error"]) == (False, "", INVALID_IMAGE)
    assert lines[5]["error"].startswith("cannot read file")


def test_predict_table_uses_the_newest_complete_version(
    exported_model_base, files, tmp_path, capsys
):
    base = tmp_path / "captcha"
    shutil.copytree(exported_model_base / "1", base / "1")
    shutil.copytree(exported_model_base / "1", base / "2")
    (base / "3").mkdir()  # a version folder being copied in by hand: no saved_model.pb yet
    (base / f"{TEMP_PREFIX}abc").mkdir()
    assert resolve_saved_model(str(base)) == str(base / "2")

    folder = files[0].parent
    status = cli.main(["predict", "--model", str(base), str(folder), "--format", "table"])
    out = capsys.readouterr().out

    assert status == 1  # notes.png in the folder is no image
    assert f"model {base / '2'}" in out.replace("\n", "")
    for path in files[:5]:
        assert path.name in out
    assert "missing.png" not in out


def test_a_signature_that_fails_on_a_batch_is_retried_item_by_item(files, tmp_path):
    """An export whose graph raises on bad bytes (no per-item guard) still answers the others."""

    class Fragile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
        def serve(self, image_bytes):
            widths = tf.map_fn(
                lambda data: tf.shape(decode_rgb(data))[1],
                image_bytes,
                fn_output_signature=tf.int32,
            )
            return {
                "text": tf.strings.as_string(widths),
                "confidence": tf.ones_like(widths, tf.float32),
            }

    module = Fragile()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})

    fragile = ExportedModel(str(tmp_path))
    answers = list(predict_files(fragile, [str(f) for f in files[:5]]))
    (alone,) = list(predict_files(fragile, [str(files[4])], batch_size=1))

    widths = [str(Image.open(f).width) for f in files[:4]]
    assert [a.text for a in answers[:4]] == widths
    assert all(a.error is None for a in answers[:4])
    assert answers[4].error.startswith("signature failed: ")
    assert "Unknown image file format" in answers[4].error
    assert alone == answers[4]


def test_a_missing_export_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `captcha-ocr export` first"):
        resolve_saved_model(str(tmp_path))

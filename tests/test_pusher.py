"""Pusher: the SavedModel with decoding built in, its TF Serving layout and the blessing.

Exports are loaded back in a fresh Python process (as TF Serving would: nothing of the
exporting process survives), both through `tf.saved_model.load` and through a TF1 session
(the graph TF Serving's C++ loader runs).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components import dataset, examples
from components.model import LOGITS_LAYER, ModelConfig, build_model, decode_logits
from components.predict import (
    INPUT_NAME,
    PREPROCESS_SIGNATURE,
    SERVING_SIGNATURE,
    evaluate_saved_model,
    saved_model_versions,
)
from components.preprocessing import preprocess_image
from components.pusher import (
    ASSETS_EXTRA,
    BLESSING_FILE,
    TEMP_PREFIX,
    WARMUP_FILE,
    PushConfig,
    bless,
    export_model,
    run_push,
)
from components.trainer import MODEL_CONFIG_FILE, MODEL_FILE, load_trained

VENV_BIN = pathlib.Path(sys.executable).parent
TINY = ModelConfig(image_height=32, image_width=64, conv_filters=(4, 8), dense_units=8,
                   lstm_units=(8,), dropout=0.0, lstm_dropout=0.0)
VOCAB = list("0123456789abcdef")
PROBE = r"""
import json, sys
import numpy as np
import tensorflow as tf

spec = json.load(sys.stdin)
images = [open(path, "rb").read() for path in spec["files"]]
loaded = tf.saved_model.load(spec["saved_model"])
served = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
preprocessed = loaded.signatures["preprocess"](image_bytes=tf.constant(images))
np.save(spec["preprocessed_npy"], preprocessed["images"].numpy())
# The way TF Serving runs it: a session over the SavedModel's graph, tensors fed by name.
with tf.compat.v1.Session(graph=tf.Graph()) as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], spec["saved_model"])
    signature = meta.signature_def["serving_default"]
    session_out = session.run(
        {name: info.name for name, info in signature.outputs.items()},
        {signature.inputs["image_bytes"].name: images},
    )
print(json.dumps({
    "text": [t.decode() for t in served["text"].numpy()],
    "confidence": served["confidence"].numpy().tolist(),
    "valid": served["valid"].numpy().tolist(),
    "session_text": [t.decode() for t in session_out["text"]],
    "session_valid": session_out["valid"].tolist(),
    "preprocessed_valid": preprocessed["valid"].numpy().tolist(),
}))
"""


def write_model_folder(folder: pathlib.Path, model, config: ModelConfig) -> pathlib.Path:
    """A model folder as `run_train` lays it out (model.keras, vocab.txt, model_config.json)."""
    folder.mkdir(parents=True)
    model.save(folder / MODEL_FILE)
    examples.write_vocab(str(folder / examples.VOCAB_FILE), VOCAB)
    config.to_json(str(folder / MODEL_CONFIG_FILE))
    return folder


def constant_reader(folder: pathlib.Path, reads: str) -> pathlib.Path:
    """A model that ignores the image and always reads `reads` (one character, or nothing)."""
    model = build_model(TINY, len(VOCAB))
    layer = model.get_layer(LOGITS_LAYER)
    kernel, bias = layer.get_weights()
    bias = np.zeros_like(bias)
    bias[VOCAB.index(reads) + 1 if reads else 0] = 50.0
    layer.set_weights([np.zeros_like(kernel), bias])
    return write_model_folder(folder, model, TINY)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def run_probe(saved_model: str, files: list[pathlib.Path], npy: pathlib.Path) -> dict:
    """The PROBE script in a fresh interpreter: serving outputs plus preprocessed tensors."""
    spec = {"saved_model": saved_model, "files": [str(f) for f in files],
            "preprocessed_npy": str(npy)}
    done = subprocess.run([sys.executable, "-c", PROBE], input=json.dumps(spec), text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def keras_reading(model_dir: pathlib.Path, files: list[pathlib.Path]) -> tuple[list[str], np.ndarray]:
    """What the Keras model reads in this process, preprocessing each file on its own."""
    model, vocab, config = load_trained(str(model_dir))
    images = tf.stack([preprocess_image(f.read_bytes(), config.image_height, config.image_width)
                       for f in files])
    text, confidence = decode_logits(model(images, training=False), vocab)
    return [t.decode() for t in text.numpy()], confidence.numpy()


@pytest.fixture(scope="module")
def trained_model_dir(synthetic_examples, tmp_path_factory) -> pathlib.Path:
    """A tiny model trained one epoch by run_train."""
    from components.trainer import TrainConfig, run_train

    out = tmp_path_factory.mktemp("trained") / "model"
    config = ModelConfig(image_height=32, image_width=128, conv_filters=(8, 16), dense_units=16,
                         lstm_units=(16,))
    run_train(str(synthetic_examples), str(out), config,
              TrainConfig(epochs=1, batch_size=32, verbose=0, measure_input_pipeline=False))
    return out


@pytest.fixture(scope="module")
def untrained_model_dir(tmp_path_factory) -> pathlib.Path:
    """Random weights read random but varied text: a sharper equality check than blanks."""
    return write_model_folder(tmp_path_factory.mktemp("untrained") / "model",
                              build_model(TINY, len(VOCAB)), TINY)


@pytest.fixture(scope="module")
def image_files(synthetic_images, tmp_path_factory) -> list[pathlib.Path]:
    """PNG (gray, RGB, RGBA) and JPEG captchas of several sizes."""
    folder = tmp_path_factory.mktemp("serving_images")
    sources = sorted(synthetic_images.glob("*.png"))[:3]
    variants = [("png", "L", (200, 50)), ("png", "RGB", (131, 37)), ("png", "RGBA", (320, 90)),
                ("jpeg", "RGB", (200, 50)), ("jpeg", "L", (90, 40)), ("jpeg", "RGB", (401, 99))]
    files = []
    for n, (fmt, mode, size) in enumerate(variants):
        image = Image.open(sources[n % len(sources)]).convert(mode).resize(size)
        files.append(folder / f"{n}_{mode}_{size[0]}x{size[1]}.{fmt}")
        files[-1].write_bytes(encode(image, fmt.upper()))
    return files


@pytest.mark.parametrize("model_fixture", ["trained_model_dir", "untrained_model_dir"])
def test_export_reads_like_keras_in_a_fresh_process(model_fixture, request, image_files,
                                                    tmp_path):
    model_dir = request.getfixturevalue(model_fixture)
    version_dir = export_model(str(model_dir), str(tmp_path / "export"))
    assert version_dir == str(tmp_path / "export" / "1")

    probe = run_probe(version_dir, image_files, tmp_path / "pre.npy")
    texts, confidences = keras_reading(model_dir, image_files)

    assert probe["valid"] == [True] * len(image_files)
    assert probe["text"] == texts
    assert probe["session_text"] == texts
    np.testing.assert_allclose(probe["confidence"], confidences, rtol=1e-4, atol=1e-7)
    assert all(0.0 <= c <= 1.0 for c in probe["confidence"])
    if model_fixture == "untrained_model_dir":
        assert sum(len(t) > 0 for t in texts) >= len(texts) // 2, texts
    extra = pathlib.Path(version_dir) / ASSETS_EXTRA
    assert examples.read_vocab(str(extra / examples.VOCAB_FILE)) == examples.read_vocab(
        str(model_dir / examples.VOCAB_FILE))
    assert (extra / WARMUP_FILE).stat().st_size > 0


def test_served_preprocessing_equals_the_training_pipeline(untrained_model_dir, synthetic_examples,
                                                           tmp_path):
    """Train/serve skew: the same bytes give the same model input on both paths."""
    version_dir = export_model(str(untrained_model_dir), str(tmp_path / "export"))
    eval_bytes = [ex["image"].numpy() for ex in dataset.read_split(str(synthetic_examples),
                                                                   examples.EVAL)]
    files = []
    for n, data in enumerate(eval_bytes):
        files.append(tmp_path / f"eval_{n}.png")
        files[-1].write_bytes(data)
    probe = run_probe(version_dir, files, tmp_path / "pre.npy")
    training_images = np.concatenate([
        images.numpy() for images, _ in dataset.make_dataset(
            str(synthetic_examples), examples.EVAL, image_height=TINY.image_height,
            image_width=TINY.image_width, max_label_length=8, batch_size=16)
    ])
    served_images = np.load(tmp_path / "pre.npy")
    assert len(eval_bytes) > 5
    assert probe["preprocessed_valid"] == [True] * len(files)
    assert served_images.shape == training_images.shape == (len(files), 32, 64, 1)
    np.testing.assert_array_equal(served_images, training_images)


def test_bad_bytes_spoil_only_their_own_answer(untrained_model_dir, image_files, tmp_path):
    good = image_files[0].read_bytes()
    bad = {"garbage.png": b"not an image", "empty.png": b"",
           "truncated.png": good[:-1], "png_magic_only.png": good[:16] + b"\0" * 64}
    files = [image_files[0]]
    for name, data in bad.items():
        files.append(tmp_path / name)
        files[-1].write_bytes(data)
    files.append(image_files[3])
    version_dir = export_model(str(untrained_model_dir), str(tmp_path / "export"))

    probe = run_probe(version_dir, files, tmp_path / "pre.npy")

    expected_valid = [True] + [False] * len(bad) + [True]
    assert probe["valid"] == expected_valid
    assert probe["session_valid"] == expected_valid
    texts, _ = keras_reading(untrained_model_dir, [files[0], files[-1]])
    assert probe["text"] == [texts[0]] + [""] * len(bad) + [texts[1]]
    assert probe["confidence"][1:-1] == [0.0] * len(bad)


def test_saved_model_cli_lists_the_documented_signature(untrained_model_dir, tmp_path):
    version_dir = export_model(str(untrained_model_dir), str(tmp_path / "export"))
    shown = subprocess.run([str(VENV_BIN / "saved_model_cli"), "show", "--dir", version_dir,
                            "--all"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    serving = shown.stdout.split(f"signature_def['{SERVING_SIGNATURE}']")[1].split(
        "signature_def[")[0]
    documented = {("inputs", INPUT_NAME): ("DT_STRING", "(-1)"),
                  ("outputs", "text"): ("DT_STRING", "(-1)"),
                  ("outputs", "confidence"): ("DT_FLOAT", "(-1)"),
                  ("outputs", "valid"): ("DT_BOOL", "(-1)")}
    for (kind, name), (dtype, shape) in documented.items():
        block = serving.split(f"{kind}['{name}'] tensor_info:")[1]
        assert f"dtype: {dtype}" in block.splitlines()[1]
        assert f"shape: {shape}" in block.splitlines()[2]
    assert f"signature_def['{PREPROCESS_SIGNATURE}']" in shown.stdout


def test_each_export_is_the_next_version_under_the_model_name(untrained_model_dir, tmp_path):
    first = export_model(str(untrained_model_dir), str(tmp_path), model_name="captcha")
    second = export_model(str(untrained_model_dir), str(tmp_path), model_name="captcha")
    assert (first, second) == (str(tmp_path / "captcha" / "1"), str(tmp_path / "captcha" / "2"))
    assert saved_model_versions(str(tmp_path / "captcha")) == [1, 2]
    assert sorted(p.name for p in (tmp_path / "captcha").iterdir()) == ["1", "2"]


def test_failed_export_leaves_nothing(untrained_model_dir, tmp_path):
    """The SavedModel is complete when the evaluator's metrics turn out to be missing."""
    export = tmp_path / "export"
    with pytest.raises(tf.errors.NotFoundError):
        export_model(str(untrained_model_dir), str(export),
                     metrics_path=str(tmp_path / "missing" / "metrics.json"))
    assert list(export.iterdir()) == []


def test_killed_export_leaves_no_version(untrained_model_dir, tmp_path):
    export = tmp_path / "export"
    command = [str(VENV_BIN / "captcha-ocr"), "export", "--model", str(untrained_model_dir),
               "--export-dir", str(export), "--force"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(export.glob(f"{TEMP_PREFIX}*")) and time.monotonic() < deadline:
        assert process.poll() is None, "the export ended before it could be stopped"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL

    left = [p.name for p in export.iterdir()]
    assert len(left) == 1 and left[0].startswith(TEMP_PREFIX) and not left[0].isdigit()
    assert saved_model_versions(str(export)) == []
    assert export_model(str(untrained_model_dir), str(export)) == str(export / "1")


@pytest.fixture(scope="module")
def sevens(tmp_path_factory) -> pathlib.Path:
    """ExampleGen-layout examples whose every label is "7" (a constant reader can ace them)."""
    out = tmp_path_factory.mktemp("sevens")
    rng = np.random.default_rng(0)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for split in examples.SPLITS:
        path = pathlib.Path(examples.split_dir(str(out), split))
        path.mkdir()
        with tf.io.TFRecordWriter(str(path / "data_tfrecord-00000-of-00001.gz"), options) as w:
            for n in range(6):
                size = (20 + 7 * n, 60 + 11 * n)
                image = tf.io.encode_png(rng.integers(0, 255, (*size, 1), np.uint8)).numpy()
                w.write(examples.make_example(
                    image=image, image_format="png", height=size[0], width=size[1], channels=1,
                    label="7", label_ids=[VOCAB.index("7")], sha256=examples.sha256_hex(image),
                    source=f"{split}_{n}.png", span=0).SerializeToString())
    examples.write_vocab(str(out / examples.VOCAB_FILE), VOCAB)
    return out


def test_blessing_keeps_the_better_model(sevens, tmp_path):
    reads_seven = str(constant_reader(tmp_path / "seven", "7"))
    reads_nothing = str(constant_reader(tmp_path / "nothing", ""))
    export = tmp_path / "export"

    too_weak = run_push(reads_nothing, str(sevens), str(export), PushConfig(min_accuracy=0.5))
    assert not too_weak.pushed and too_weak.version is None
    assert "below the threshold" in too_weak.reason
    assert list(export.iterdir()) == []

    first = run_push(reads_seven, str(sevens), str(export), PushConfig(min_accuracy=0.5))
    assert (first.pushed, first.version, first.candidate_accuracy) == (True, 1, 1.0)
    assert first.candidate_cer == 0.0
    blessing = json.loads((export / "1" / ASSETS_EXTRA / BLESSING_FILE).read_text())
    assert blessing["candidate"]["accuracy"] == 1.0

    worse = run_push(reads_nothing, str(sevens), str(export))
    assert not worse.pushed
    assert (worse.version, worse.candidate_accuracy, worse.baseline_accuracy) == (1, 0.0, 1.0)
    assert worse.candidate_cer == 1.0
    assert "worse than the served version" in worse.reason
    assert [p.name for p in export.iterdir()] == ["1"]

    forced = run_push(reads_nothing, str(sevens), str(export), PushConfig(force=True))
    assert (forced.pushed, forced.version, forced.baseline_version) == (True, 2, 1)
    # The baseline is now the forced, worse version 2; the good model beats it again.
    again = run_push(reads_seven, str(sevens), str(export))
    assert (again.pushed, again.version, again.baseline_accuracy) == (True, 3, 0.0)
    assert evaluate_saved_model(str(export), str(sevens))["accuracy"] == 1.0
    assert sorted(p.name for p in export.iterdir()) == ["1", "2", "3"]


@pytest.mark.parametrize(("accuracy", "baseline", "config", "pushed"), [
    (0.80, None, PushConfig(min_accuracy=0.8), True),
    (0.79, None, PushConfig(min_accuracy=0.8), False),
    (0.90, 0.92, PushConfig(tolerance=0.02), True),
    (0.89, 0.92, PushConfig(tolerance=0.02), False),
    (0.10, 0.92, PushConfig(min_accuracy=0.5, force=True), True),
])
def test_blessing_rule(accuracy, baseline, config, pushed):
    verdict, reason = bless({"accuracy": accuracy},
                            None if baseline is None else {"accuracy": baseline}, config)
    assert verdict is pushed, reason

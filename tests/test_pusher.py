"""Pusher: the SavedModel with decoding built in, its TF Serving layout and the blessing.

Exports are loaded back in a fresh Python process (as TF Serving would: nothing of the
exporting process survives), both through `tf.saved_model.load` and through a TF1 session
(the graph TF Serving's C++ loader runs).
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from helpers import bilevel_png_bomb, clean_captcha, encode, tiny_model, write_examples_dir
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2

from components import dataset, examples
from components.decoding import decode, load_decoding
from components.model import LOGITS_LAYER, ModelConfig, build_model
from components.predict import (
    INPUT_NAME,
    PREPROCESS_SIGNATURE,
    SERVING_SIGNATURE,
    ExportedModel,
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
from pipeline import cli

VENV_BIN = pathlib.Path(sys.executable).parent
TINY = tiny_model(image_width=64)
VOCAB = list("0123456789abcdef")
PROBE = r"""
import json, sys
import numpy as np
import tensorflow as tf

answers = []
for job in json.load(sys.stdin):
    images = [open(path, "rb").read() for path in job["files"]]
    loaded = tf.saved_model.load(job["saved_model"])
    served = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
    preprocessed = loaded.signatures["preprocess"](image_bytes=tf.constant(images))
    np.save(job["preprocessed_npy"], preprocessed["images"].numpy())
    # The way TF Serving runs it: a session over the SavedModel's graph, tensors fed by name.
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], job["saved_model"])
        signature = meta.signature_def["serving_default"]
        session_out = session.run(
            {name: info.name for name, info in signature.outputs.items()},
            {signature.inputs["image_bytes"].name: images},
        )
    answers.append({
        "text": [t.decode() for t in served["text"].numpy()],
        "confidence": served["confidence"].numpy().tolist(),
        "valid": served["valid"].numpy().tolist(),
        "session_text": [t.decode() for t in session_out["text"]],
        "session_valid": session_out["valid"].tolist(),
        "preprocessed_valid": preprocessed["valid"].numpy().tolist(),
    })
print(json.dumps(answers))
"""
MEMORY_PROBE = r"""
import json, resource, sys
import tensorflow as tf

job = json.load(sys.stdin)
signature = tf.saved_model.load(job["saved_model"]).signatures["serving_default"]
good = [open(path, "rb").read() for path in job["files"]]
bomb = open(job["bomb"], "rb").read()
signature(image_bytes=tf.constant(good))  # warm: what a served model has already allocated
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
answer = signature(image_bytes=tf.constant(good[:1] + [bomb] + good[1:]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after,
                  "valid": answer["valid"].numpy().tolist(),
                  "text": [t.decode() for t in answer["text"].numpy()]}))
"""
# The signature's peak memory may grow this much over a warm batch of good images when the
# batch also holds a decompression bomb (decoded in full, the one used takes 1.6 GB).
BOMB_MEMORY_BOUND_MIB = 64


def run_probe(script: str, job) -> Any:
    """Runs a probe script in a fresh interpreter on `job` (its stdin, JSON): its last line."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(job),
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def keras_reading(
    model_dir: pathlib.Path, files: list[pathlib.Path]
) -> tuple[list[str], np.ndarray]:
    """What the Keras model reads in this process, preprocessing each file on its own."""
    model, vocab, config = load_trained(str(model_dir))
    images = tf.stack([preprocess_image(f.read_bytes(), config.geometry) for f in files])
    decoding = load_decoding(str(model_dir))
    text, confidence = decode(model(images, training=False), vocab, decoding)
    return [t.decode() for t in text.numpy()], confidence.numpy()


@pytest.fixture(scope="module")
def untrained_model_dir(tmp_path_factory) -> pathlib.Path:
    """Random weights read random but varied text: a sharper equality check than blanks."""
    return write_model_folder(
        tmp_path_factory.mktemp("untrained") / "model", build_model(TINY, len(VOCAB)), TINY
    )


@pytest.fixture(scope="module")
def untrained_export(untrained_model_dir, tmp_path_factory) -> str:
    return export_model(str(untrained_model_dir), str(tmp_path_factory.mktemp("export")))


@pytest.fixture(scope="module")
def image_files(synthetic_images, tmp_path_factory) -> list[pathlib.Path]:
    """PNG (gray, RGB, RGBA) and JPEG captchas of several sizes."""
    folder = tmp_path_factory.mktemp("serving_images")
    sources = sorted(synthetic_images.glob("*.png"))[:3]
    variants = [
        ("png", "L", (200, 50)),
        ("png", "RGB", (131, 37)),
        ("png", "RGBA", (320, 90)),
        ("jpeg", "RGB", (200, 50)),
        ("jpeg", "L", (90, 40)),
        ("jpeg", "RGB", (401, 99)),
    ]
    files = []
    for n, (fmt, mode, size) in enumerate(variants):
        image = Image.open(sources[n % len(sources)]).convert(mode).resize(size)
        files.append(folder / f"{n}_{mode}_{size[0]}x{size[1]}.{fmt}")
        files[-1].write_bytes(encode(image, fmt.upper()))
    return files


@pytest.fixture(scope="module")
def bad_files(image_files, tmp_path_factory) -> list[pathlib.Path]:
    """Bytes no decoder takes (TF 2.16 rejects a PNG short of one byte, a JPEG cut in half)."""
    folder = tmp_path_factory.mktemp("bad_images")
    png, jpeg = image_files[0].read_bytes(), image_files[3].read_bytes()
    bad = {
        "garbage.png": b"not an image",
        "empty.png": b"",
        "truncated.png": png[:-1],
        "png_magic_only.png": png[:16] + b"\0" * 64,
        "truncated.jpg": jpeg[: len(jpeg) // 2],
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in bad]


@pytest.fixture(scope="module")
def eval_files(synthetic_examples, tmp_path_factory) -> list[pathlib.Path]:
    """The raw bytes of the eval split, one file each, in read order."""
    folder = tmp_path_factory.mktemp("eval_bytes")
    files = []
    for n, ex in enumerate(dataset.read_split(str(synthetic_examples), examples.EVAL)):
        files.append(folder / f"eval_{n}.png")
        files[-1].write_bytes(ex["image"].numpy())
    return files


@pytest.fixture(scope="module")
def probes(
    trained_model_dir, untrained_export, image_files, bad_files, eval_files, tmp_path_factory
) -> dict:
    """Both exports read back by PROBE in one fresh interpreter; preprocessed tensors as .npy."""
    folder = tmp_path_factory.mktemp("probes")
    trained_export = export_model(str(trained_model_dir), str(folder / "trained_export"))
    jobs = {
        "trained": {"saved_model": trained_export, "files": image_files},
        "untrained": {
            "saved_model": untrained_export,
            "files": image_files + bad_files + [image_files[3]] + eval_files,
        },
    }
    spec = [
        {
            "saved_model": job["saved_model"],
            "files": [str(f) for f in job["files"]],
            "preprocessed_npy": str(folder / f"{name}.npy"),
        }
        for name, job in jobs.items()
    ]
    answers = run_probe(PROBE, spec)
    return {
        name: {
            **answer,
            "saved_model": job["saved_model"],
            "images": np.load(folder / f"{name}.npy"),
        }
        for (name, job), answer in zip(jobs.items(), answers, strict=True)
    }


def check_reads_like_keras(probe: dict, model_dir: pathlib.Path, files: list[pathlib.Path]):
    texts, confidences = keras_reading(model_dir, files)
    confidences = np.where([len(t) > 0 for t in texts], confidences, 0.0)  # no text: 0
    count = len(files)
    assert probe["valid"][:count] == [True] * count
    assert probe["text"][:count] == texts
    assert probe["session_text"][:count] == texts
    np.testing.assert_allclose(probe["confidence"][:count], confidences, rtol=1e-4, atol=1e-7)
    assert all(0.0 <= c <= 1.0 for c in probe["confidence"])
    return texts


def test_trained_export_reads_like_keras_in_a_fresh_process(probes, trained_model_dir, image_files):
    assert probes["trained"]["saved_model"].endswith("/1")
    check_reads_like_keras(probes["trained"], trained_model_dir, image_files)
    extra = pathlib.Path(probes["trained"]["saved_model"]) / ASSETS_EXTRA
    assert examples.read_vocab(str(extra / examples.VOCAB_FILE)) == examples.read_vocab(
        str(trained_model_dir / examples.VOCAB_FILE)
    )
    (record,) = tf.data.TFRecordDataset(str(extra / WARMUP_FILE)).as_numpy_iterator()
    warmup = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
    assert warmup.model_spec.signature_name == SERVING_SIGNATURE
    warmup_images = list(tf.make_ndarray(warmup.inputs[INPUT_NAME]))
    served = ExportedModel(probes["trained"]["saved_model"]).predict_bytes(warmup_images, ["w"])
    assert [answer.valid for answer in served] == [True]


def test_untrained_export_reads_like_keras_in_a_fresh_process(
    probes, untrained_model_dir, image_files
):
    texts = check_reads_like_keras(probes["untrained"], untrained_model_dir, image_files)
    assert sum(len(t) > 0 for t in texts) >= len(texts) // 2, texts


def test_served_preprocessing_equals_the_training_pipeline(probes, synthetic_examples, eval_files):
    """Train/serve skew: the same bytes give the same model input on both paths."""
    served = probes["untrained"]["images"][-len(eval_files) :]
    training = np.concatenate(
        [
            images.numpy()
            for images, _ in dataset.make_dataset(
                str(synthetic_examples),
                examples.EVAL,
                geometry=TINY.geometry,
                max_label_length=8,
                batch_size=16,
            )
        ]
    )
    assert len(eval_files) > 5
    assert probes["untrained"]["preprocessed_valid"][-len(eval_files) :] == [True] * len(eval_files)
    assert (
        served.shape == training.shape == (len(eval_files), TINY.image_height, TINY.image_width, 1)
    )
    np.testing.assert_array_equal(served, training)


def test_bad_bytes_spoil_only_their_own_answer(probes, image_files, bad_files):
    probe = probes["untrained"]
    first, after = len(image_files), len(image_files) + len(bad_files)
    expected_valid = [False] * len(bad_files) + [True]
    assert probe["valid"][first : after + 1] == expected_valid
    assert probe["session_valid"][first : after + 1] == expected_valid
    assert probe["text"][first:after] == [""] * len(bad_files)
    assert probe["confidence"][first:after] == [0.0] * len(bad_files)
    assert not probe["images"][first:after].any()
    # The good image after the bad ones is read as when it came with good ones only.
    assert probe["text"][after] == probe["text"][3]


def test_saved_model_cli_lists_the_documented_signature(untrained_export):
    shown = subprocess.run(
        [str(VENV_BIN / "saved_model_cli"), "show", "--dir", untrained_export, "--all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    serving = shown.stdout.split(f"signature_def['{SERVING_SIGNATURE}']")[1].split(
        "signature_def["
    )[0]
    documented = {
        ("inputs", INPUT_NAME): ("DT_STRING", "(-1)"),
        ("outputs", "text"): ("DT_STRING", "(-1)"),
        ("outputs", "confidence"): ("DT_FLOAT", "(-1)"),
        ("outputs", "valid"): ("DT_BOOL", "(-1)"),
        ("outputs", "has_text"): ("DT_BOOL", "(-1)"),
    }
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
    (tmp_path / "captcha" / "3").mkdir()  # someone's version, still being copied in
    with pytest.raises(FileExistsError, match="holds no saved_model.pb"):
        export_model(str(untrained_model_dir), str(tmp_path), model_name="captcha")
    assert sorted(p.name for p in (tmp_path / "captcha").iterdir()) == ["1", "2", "3"]


def test_failed_export_leaves_nothing(untrained_model_dir, tmp_path):
    """It fails after the SavedModel is written (no evaluator metrics file): all of it goes."""
    export = tmp_path / "export"
    with pytest.raises(tf.errors.NotFoundError):
        export_model(
            str(untrained_model_dir),
            str(export),
            metrics_path=str(tmp_path / "missing" / "metrics.json"),
        )
    assert list(export.iterdir()) == []


def test_killed_export_leaves_no_version(untrained_model_dir, tmp_path):
    export = tmp_path / "export"
    command = [
        str(VENV_BIN / "captcha-ocr"),
        "export",
        "--model",
        str(untrained_model_dir),
        "--export-dir",
        str(export),
        "--force-push",
    ]
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
    """Examples whose every label is "7": a constant reader can ace them."""
    rng = random.Random(0)
    items = [(clean_captcha("7", rng), "7") for _ in range(6)]
    return write_examples_dir(
        tmp_path_factory.mktemp("sevens") / "examples",
        {examples.TRAIN: items, examples.EVAL: items},
        VOCAB,
    )


def test_blessing_keeps_the_better_model(sevens, tmp_path, capsys):
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

    worse = run_push(reads_nothing, str(sevens), str(export), PushConfig(min_accuracy=0.0))
    assert not worse.pushed
    assert (worse.version, worse.candidate_accuracy, worse.baseline_accuracy) == (1, 0.0, 1.0)
    assert worse.candidate_cer == 1.0
    assert "worse than the served version" in worse.reason
    assert [p.name for p in export.iterdir()] == ["1"]

    assert (
        cli.main(
            [
                "export",
                "--model",
                reads_nothing,
                "--examples",
                str(sevens),
                "--export-dir",
                str(export),
                "--force-push",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith(f"pushed version 2 -> {export / '2'}: forced")
    forced = json.loads((export / "2" / ASSETS_EXTRA / BLESSING_FILE).read_text())
    assert (forced["baseline_version"], forced["candidate"]["accuracy"]) == (1, 0.0)
    assert sorted(p.name for p in export.iterdir()) == ["1", "2"]
    # The base path now serves the forced, worse version 2.
    assert evaluate_saved_model(str(export), str(sevens))["accuracy"] == 0.0


@pytest.mark.parametrize(
    ("accuracy", "baseline", "config", "pushed"),
    [
        (0.80, None, PushConfig(min_accuracy=0.8), True),
        (0.79, None, PushConfig(min_accuracy=0.8), False),
        (0.90, 0.92, PushConfig(tolerance=0.02), True),
        (0.89, 0.92, PushConfig(tolerance=0.02), False),
        (0.10, 0.92, PushConfig(min_accuracy=0.5, force=True), True),
    ],
)
def test_blessing_rule(accuracy, baseline, config, pushed):
    verdict, reason = bless(
        {"accuracy": accuracy}, None if baseline is None else {"accuracy": baseline}, config
    )
    assert verdict is pushed, reason


def test_a_bomb_in_a_batch_costs_bounded_memory_and_spoils_only_its_answer(
    untrained_export, image_files, tmp_path
):
    """A 20000 x 20000 PNG (80 KB) is refused from its header inside the signature."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bilevel_png_bomb(20000, 20000))
    assert bomb.stat().st_size < 100_000
    job = {
        "saved_model": untrained_export,
        "files": [str(f) for f in image_files],
        "bomb": str(bomb),
    }
    probe = run_probe(MEMORY_PROBE, job)
    grown_mib = (probe["after_kib"] - probe["before_kib"]) / 1024
    assert probe["valid"] == [True, False] + [True] * (len(image_files) - 1)
    assert probe["text"][1] == ""
    assert grown_mib < BOMB_MEMORY_BOUND_MIB, probe


@pytest.mark.parametrize("reads", ["", "7"])
def test_a_blank_image_is_no_confident_reading(reads, tmp_path):
    """Whatever the model makes of it, a blank image answers has_text false, confidence 0."""
    blank = encode(Image.new("L", (200, 50), 255), "PNG")
    export = export_model(str(constant_reader(tmp_path / "model", reads)), str(tmp_path / "x"))
    (answer,) = ExportedModel(export).predict_bytes([blank], ["blank.png"])
    assert (answer.valid, answer.text, answer.has_text, answer.confidence) == (True, "", False, 0)
    ink = clean_captcha("12", random.Random(0))
    (answer,) = ExportedModel(export).predict_bytes([ink], ["ink.png"])
    assert (answer.text, answer.has_text) == (reads, reads != "")
    assert answer.confidence == (pytest.approx(1.0, abs=0.01) if reads else 0.0)

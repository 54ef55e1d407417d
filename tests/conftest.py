"""Shared fixtures: real data on disk, small and fast; nothing downloads."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
REAL_CAPTCHAS = PROJECT_ROOT.parent / "shared" / "data" / "captcha_images_v2"


@pytest.fixture(scope="session")
def real_captchas() -> pathlib.Path:
    if not REAL_CAPTCHAS.is_dir():
        pytest.skip(f"real captchas not found at {REAL_CAPTCHAS} (../shared/data is absent)")
    return REAL_CAPTCHAS


SYNTHETIC_COUNT = 150


@pytest.fixture(scope="session")
def synthetic_images(tmp_path_factory) -> pathlib.Path:
    """A folder of SYNTHETIC_COUNT seeded 200x50 captcha PNGs named `<label>_<n>.png`."""
    from components.synth import SynthConfig, generate

    folder = tmp_path_factory.mktemp("synthetic_images")
    generate(str(folder), SynthConfig(count=SYNTHETIC_COUNT, seed=0), show_progress=False)
    return folder


@pytest.fixture(scope="session")
def real_captcha_examples(real_captchas, tmp_path_factory) -> pathlib.Path:
    """The real captchas ingested by run_ingest with default options."""
    from components.example_gen import IngestConfig, run_ingest

    output = tmp_path_factory.mktemp("real_captcha_examples") / "examples"
    run_ingest(str(real_captchas), str(output), IngestConfig())
    return output


@pytest.fixture(scope="session")
def synthetic_examples(synthetic_images, tmp_path_factory) -> pathlib.Path:
    """`synthetic_images` ingested by run_ingest with default options (Split-*/, vocab.txt, ...)."""
    from components.example_gen import IngestConfig, run_ingest

    output = tmp_path_factory.mktemp("synthetic_examples") / "examples"
    run_ingest(str(synthetic_images), str(output), IngestConfig())
    return output


CLEAN_ALPHABET = "0123"
CLEAN_HEIGHT, CLEAN_WIDTH = 24, 64


def write_examples_dir(output: pathlib.Path, splits: dict, vocab: list) -> pathlib.Path:
    """Contract 1 output (GZIP shards, vocab.txt, metadata.json) from {split: [(png, label)]}."""
    import json

    import tensorflow as tf

    from components import examples

    for split, items in splits.items():
        folder = pathlib.Path(examples.split_dir(str(output), split))
        folder.mkdir(parents=True)
        with tf.io.TFRecordWriter(str(folder / "data_tfrecord-00000-of-00001.gz"), "GZIP") as w:
            for n, (png, label) in enumerate(items):
                example = examples.make_example(
                    image=png, image_format="png", height=CLEAN_HEIGHT, width=CLEAN_WIDTH,
                    channels=1, label=label, label_ids=examples.encode_label(label, vocab),
                    sha256=examples.sha256_hex(png), source=f"{split}/{label}_{n}.png", span=0,
                )
                w.write(example.SerializeToString())
    examples.write_vocab(str(output / examples.VOCAB_FILE), vocab)
    metadata = {
        "counts": {split: len(items) for split, items in splits.items()},
        "vocab_size": len(vocab),
        "max_label_length": max(len(label) for items in splits.values() for _, label in items),
    }
    (output / examples.METADATA_FILE).write_text(json.dumps(metadata))
    return output


def clean_captcha(label: str, rng) -> bytes:
    """A plain, easy-to-read PNG: dark glyphs at a jittered position on a light background."""
    import io
    import os

    import captcha
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(os.path.join(os.path.dirname(captcha.__file__), "data", "DroidSansMono.ttf"), 18)
    image = Image.new("L", (CLEAN_WIDTH, CLEAN_HEIGHT), color=rng.randint(200, 255))
    ImageDraw.Draw(image).text((rng.randint(1, 12), rng.randint(0, 3)), label, fill=rng.randint(0, 60), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def clean_examples(tmp_path_factory) -> pathlib.Path:
    """Examples that any working CTC model learns in a few epochs: 2-4 of 4 characters, 64x24."""
    import random

    rng = random.Random(0)

    def items(count: int) -> list:
        labels = ["".join(rng.choice(CLEAN_ALPHABET) for _ in range(rng.randint(2, 4))) for _ in range(count)]
        return [(clean_captcha(label, rng), label) for label in labels]

    output = tmp_path_factory.mktemp("clean_examples") / "examples"
    return write_examples_dir(output, {"train": items(480), "eval": items(60)}, list(CLEAN_ALPHABET))


TINY_MODEL_OVERRIDES = dict(conv_filters=(8, 16), dense_units=16, lstm_units=(16,), batch_norm=True)


@pytest.fixture(scope="session")
def trained_model_dir(synthetic_examples, tmp_path_factory) -> pathlib.Path:
    """A tiny model trained by run_train for 2 epochs on `synthetic_examples` (reads little)."""
    import dataclasses

    from components.trainer import PROFILES, run_train

    quick = PROFILES["quick"]
    model_config = dataclasses.replace(quick.model, **TINY_MODEL_OVERRIDES)
    train_config = quick.train.replace(epochs=2, max_minutes=None, lr_schedule="cosine", verbose=0,
                                       measure_input_pipeline=False)
    output = tmp_path_factory.mktemp("trained_model") / "model"
    run_train(str(synthetic_examples), str(output), model_config, train_config)
    return output


@pytest.fixture(scope="session")
def exported_model_base(trained_model_dir, tmp_path_factory) -> pathlib.Path:
    """`trained_model_dir` exported by the Pusher (no blessing): a TF Serving base path with `1/`."""
    from components.pusher import export_model

    base = tmp_path_factory.mktemp("exported_model") / "captcha"
    export_model(str(trained_model_dir), str(base))
    return base


def png_chunk(kind: bytes, data: bytes) -> bytes:
    import zlib

    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def bilevel_png_bomb(width: int, height: int) -> bytes:
    """A real, complete 1-bit PNG of width x height white pixels: about 80 KB at 20000^2,
    1.6 GB once decoded to RGBA (a decompression bomb)."""
    import zlib

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    row = b"\0" + b"\xff" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data)
            + png_chunk(b"IEND", b""))

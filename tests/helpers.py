"""Helpers the tests share: paths, small clean captchas, example folders, one tiny-model factory."""

from __future__ import annotations

import dataclasses
import pathlib
import random

from components.model import ModelConfig
from components.trainer import TrainConfig
from pipeline.configs import PROFILES

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
REAL_CAPTCHAS = SHARED_DATA / "captcha_images_v2"

CLEAN_ALPHABET = "0123"
CLEAN_HEIGHT, CLEAN_WIDTH = 24, 64


def write_examples_dir(output: pathlib.Path, splits: dict, vocab: list) -> pathlib.Path:
    """Contract 1 output (GZIP shards, vocab.txt, metadata.json) from {split: [(png, label)]}."""
    import collections
    import io
    import json

    import tensorflow as tf
    from PIL import Image

    from components import examples

    sizes = []
    for split, items in splits.items():
        folder = pathlib.Path(examples.split_dir(str(output), split))
        folder.mkdir(parents=True)
        with tf.io.TFRecordWriter(str(folder / "data_tfrecord-00000-of-00001.gz"), "GZIP") as w:
            for n, (png, label) in enumerate(items):
                width, height = Image.open(io.BytesIO(png)).size
                sizes.append((height, width))
                example = examples.make_example(
                    image=png,
                    image_format="png",
                    height=height,
                    width=width,
                    channels=1,
                    label=label,
                    label_ids=examples.encode_label(label, vocab),
                    sha256=examples.sha256_hex(png),
                    source=f"{split}/{label}_{n}.png",
                    span=0,
                )
                w.write(example.SerializeToString())
    examples.write_vocab(str(output / examples.VOCAB_FILE), vocab)
    metadata = {
        "counts": {split: len(items) for split, items in splits.items()},
        "vocab_size": len(vocab),
        "max_label_length": max(len(label) for items in splits.values() for _, label in items),
        "label_length_counts": dict(
            collections.Counter(str(len(label)) for items in splits.values() for _, label in items)
        ),
        "image_height_range": [min(h for h, _ in sizes), max(h for h, _ in sizes)],
        "image_width_range": [min(w for _, w in sizes), max(w for _, w in sizes)],
        "aspect_ratio_range": [min(w / h for h, w in sizes), max(w / h for h, w in sizes)],
    }
    (output / examples.METADATA_FILE).write_text(json.dumps(metadata))
    return output


def clean_captcha(label: str, rng, width: int = CLEAN_WIDTH) -> bytes:
    """A plain, easy-to-read PNG: dark glyphs at a jittered position on a light background."""
    import io
    import os

    import captcha
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(
        os.path.join(os.path.dirname(captcha.__file__), "data", "DroidSansMono.ttf"), 18
    )
    image = Image.new("L", (width, CLEAN_HEIGHT), color=rng.randint(200, 255))
    ImageDraw.Draw(image).text(
        (rng.randint(1, 12), rng.randint(0, 3)), label, fill=rng.randint(0, 60), font=font
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_clean_images(folder: pathlib.Path, count: int, seed: int, alphabet: str = CLEAN_ALPHABET):
    """`count` easy PNGs named `<label>_<n>.png`, so any working pipeline learns them fast."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for n in range(count):
        label = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 4)))
        (folder / f"{label}_{seed}-{n}.png").write_bytes(clean_captcha(label, rng))
    return folder


# The one tiny network of the tests: trains in seconds, big enough to learn clean captchas.
TINY_MODEL = ModelConfig(
    image_height=32,
    image_width=96,
    conv_filters=(8, 16),
    batch_norm=True,
    dense_units=16,
    lstm_units=(16,),
    dropout=0.0,
    lstm_dropout=0.0,
    learning_rate=3e-3,
)


def tiny_model(**changes) -> ModelConfig:
    return dataclasses.replace(TINY_MODEL, **changes)


def tiny_training(**changes) -> TrainConfig:
    """The quick profile's recipe cut to 2 epochs, with no time budget and no output."""
    quick = PROFILES["quick"].train.replace(
        epochs=2, max_minutes=None, lr_schedule="cosine", verbose=0, measure_input_pipeline=False
    )
    return quick.replace(**changes)


def encode(image, fmt: str, **options) -> bytes:
    """A PIL image saved in `fmt` (PNG, JPEG, GIF, BMP, ...) with PIL's save options."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


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
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


def read_rejected(examples_dir: pathlib.Path) -> dict[str, dict]:
    """An ExampleGen output's rejected.jsonl as {file name: rejection}."""
    import json

    from components import examples

    lines = (examples_dir / examples.REJECTED_FILE).read_text().splitlines()
    return {pathlib.Path(r["source"]).name: r for r in map(json.loads, lines)}

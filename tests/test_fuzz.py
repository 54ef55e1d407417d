"""Hostile and odd files through ingest, one training epoch and the exported signature.

A seeded generator writes what real scrapes contain: every PNG colour type, 16-bit,
interlaced, transparent, CMYK and EXIF-rotated JPEGs, GIF, BMP, WebP, TIFF, wrong
extensions, PNGs truncated at every chunk boundary, decompression bombs (PNG, JPEG, GIF,
BMP headers), zero bytes and random bytes. The one rule: every file is written and trains,
or is rejected with its reason, and the job never fails for one file; a file rejected for
its bytes is not read by the signature either, a written one is.
"""

from __future__ import annotations

import io
import pathlib
import random
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    CLEAN_ALPHABET,
    bilevel_png_bomb,
    clean_captcha,
    encode,
    png_chunk,
    read_rejected,
    tiny_model,
    tiny_training,
)
from PIL import Image

from components import dataset, examples
from components.example_gen import (
    EMPTY_FILE,
    IMPLAUSIBLE_SIZE,
    NOT_AN_IMAGE,
    TOO_LARGE,
    UNDECODABLE,
    UNSUPPORTED_FORMAT,
    IngestConfig,
    run_ingest,
)
from components.predict import ExportedModel
from components.pusher import export_model
from components.trainer import load_trained, run_train

SEED = 18
GOOD_COUNT = 40
# Reasons that are about the bytes: the signature must not read these files either.
BYTES_REASONS = {EMPTY_FILE, NOT_AN_IMAGE, TOO_LARGE, UNDECODABLE}


def png_from_rows(width: int, height: int, raw: bytes, interlace: int = 0, depth: int = 8) -> bytes:
    """A grey PNG from its filtered scanlines (PIL writes no interlaced PNG)."""
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw, 9))
        + png_chunk(b"IEND", b"")
    )


def interlaced_png(image: Image.Image) -> bytes:
    """Adam7: seven passes of sub-images, each scanline with filter byte 0."""
    pixels = np.asarray(image.convert("L"))
    passes = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ]
    raw = b"".join(
        b"\0" + row.tobytes()
        for x0, y0, dx, dy in passes
        for row in pixels[y0::dy, x0::dx]
        if row.size
    )
    return png_from_rows(image.width, image.height, raw, interlace=1)


def png_bomb(width: int, height: int) -> bytes:
    """A small valid-looking PNG whose header declares width x height (a compressed bomb)."""
    return png_from_rows(width, height, b"\0" * (width + 1) * 4)


def patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    packed = struct.pack(fmt, *values)
    return data[:offset] + packed + data[offset + len(packed) :]


def jpeg_bomb(image: Image.Image) -> bytes:
    """A real JPEG whose frame header (SOF0) claims 60000 x 60000."""
    data = encode(image.convert("L"), "JPEG")
    sof = data.index(b"\xff\xc0")
    return patch(data, sof + 5, ">HH", 60000, 60000)


def chunk_boundaries(png: bytes) -> list[int]:
    offsets, position = [8], 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        position += 12 + length
        offsets.append(position)
    return offsets


def exif_rotated_jpeg(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return encode(image.convert("RGB"), "JPEG", exif=exif.tobytes())


def transparent_png(image: Image.Image) -> bytes:
    """Dark glyphs on a transparent background whose hidden colour is black."""
    ink = 255 - np.asarray(image.convert("L"))
    rgba = np.zeros(ink.shape + (4,), np.uint8)
    rgba[..., 3] = np.where(ink > 60, 255, 0)
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def odd_files(rng: random.Random) -> dict[str, bytes]:
    """{file name: bytes}; names carry the label (`<label>_<what>.<ext>`)."""

    def label() -> str:
        return "".join(rng.choice(CLEAN_ALPHABET) for _ in range(rng.randint(2, 4)))

    def captcha() -> tuple[str, Image.Image]:
        text = label()
        return text, Image.open(io.BytesIO(clean_captcha(text, rng)))

    files: dict[str, bytes] = {}

    def add(what: str, make, ext: str) -> None:
        text, image = captcha()
        files[f"{text}_{what}.{ext}"] = make(image)

    add("gray", lambda im: encode(im, "PNG"), "png")
    add("rgb", lambda im: encode(im.convert("RGB"), "PNG"), "png")
    add("palette", lambda im: encode(im.convert("P"), "PNG"), "png")
    add("palette-trns", lambda im: encode(im.convert("P"), "PNG", transparency=0), "png")
    add("grey-alpha", lambda im: encode(im.convert("LA"), "PNG"), "png")
    add("rgba", lambda im: encode(im.convert("RGBA"), "PNG"), "png")
    add("transparent", transparent_png, "png")
    add("bilevel", lambda im: encode(im.convert("1"), "PNG"), "png")
    add(
        "16bit",
        lambda im: encode(Image.fromarray(np.asarray(im).astype(np.uint16) * 257), "PNG"),
        "png",
    )
    add("interlaced", interlaced_png, "png")
    add("jpeg-gray", lambda im: encode(im, "JPEG"), "jpg")
    add("jpeg-rgb", lambda im: encode(im.convert("RGB"), "JPEG"), "jpeg")
    add("jpeg-cmyk", lambda im: encode(im.convert("CMYK"), "JPEG"), "jpg")
    add("jpeg-progressive", lambda im: encode(im.convert("RGB"), "JPEG", progressive=True), "jpg")
    add("jpeg-exif-rotated", exif_rotated_jpeg, "jpg")
    add("jpeg-named-png", lambda im: encode(im, "JPEG"), "png")
    add("png-named-jpg", lambda im: encode(im, "PNG"), "jpg")
    add("gif", lambda im: encode(im, "GIF"), "gif")
    add("bmp", lambda im: encode(im.convert("RGB"), "BMP"), "bmp")
    add("webp", lambda im: encode(im, "WEBP"), "webp")
    add("tiff", lambda im: encode(im, "TIFF"), "png")
    add("tiny", lambda im: encode(im.resize((1, 1)), "PNG"), "png")
    add("sliver", lambda im: encode(im.resize((5000, 10)), "PNG"), "png")
    add("bomb-png", lambda im: bilevel_png_bomb(20000, 20000), "png")
    add("bomb-png-5k", lambda im: png_bomb(5000, 5000), "png")
    add("bomb-jpeg", jpeg_bomb, "jpg")
    add("bomb-gif", lambda im: patch(encode(im, "GIF"), 6, "<HH", 65535, 65535), "gif")
    add(
        "bomb-bmp",
        lambda im: patch(encode(im.convert("RGB"), "BMP"), 18, "<ii", 60000, 60000),
        "bmp",
    )
    add("zero", lambda im: b"", "png")
    add("text", lambda im: b"<html>rate limited</html>\n", "png")
    for n in range(3):
        add(f"random{n}", lambda im: rng.randbytes(rng.randint(1, 3000)), "png")
    add("random-png-magic", lambda im: b"\x89PNG\r\n\x1a\n" + rng.randbytes(200), "png")
    text, image = captcha()
    whole = encode(image, "PNG")
    for cut in [*chunk_boundaries(whole)[:-1], len(whole) - 1, len(whole) // 2, 4]:
        files[f"{text}_cut{cut}.png"] = whole[:cut]
    return files


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> tuple[pathlib.Path, dict[str, bytes]]:
    rng = random.Random(SEED)
    folder = tmp_path_factory.mktemp("fuzz")
    files = odd_files(rng)
    for n in range(GOOD_COUNT):
        text = "".join(rng.choice(CLEAN_ALPHABET) for _ in range(rng.randint(2, 4)))
        files[f"{text}_good{n}.png"] = clean_captcha(text, rng)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, files


def test_every_odd_file_is_written_and_trainable_or_rejected_with_its_reason(fuzzed, tmp_path):
    folder, files = fuzzed
    output = tmp_path / "examples"
    metadata = run_ingest(str(folder), str(output), IngestConfig(num_shards=1))

    rejected = read_rejected(output)
    written = {
        pathlib.Path(ex["source"].numpy().decode()).name
        for split in examples.SPLITS
        for ex in dataset.read_split(str(output), split)
    }
    assert not written & set(rejected)
    assert written | set(rejected) == set(files)
    assert metadata["num_inputs"] == len(written) + len(rejected) == len(files)
    assert all(r["detail"] for r in rejected.values())

    def reason(what: str) -> str | None:
        (name,) = [n for n in files if f"_{what}." in n]
        return rejected[name]["reason"] if name in rejected else None

    for what in (
        "gray",
        "rgb",
        "palette",
        "palette-trns",
        "grey-alpha",
        "rgba",
        "transparent",
        "bilevel",
        "16bit",
        "interlaced",
        "jpeg-gray",
        "jpeg-rgb",
        "jpeg-cmyk",
        "jpeg-progressive",
        "jpeg-exif-rotated",
        "jpeg-named-png",
        "png-named-jpg",
    ):
        assert reason(what) is None, (what, reason(what))
    for what in ("bomb-png", "bomb-png-5k", "bomb-jpeg", "bomb-gif", "bomb-bmp"):
        assert reason(what) == TOO_LARGE, what
    for what in ("gif", "bmp", "webp", "tiff"):
        assert reason(what) == UNSUPPORTED_FORMAT, what
    assert (reason("tiny"), reason("sliver")) == (IMPLAUSIBLE_SIZE, IMPLAUSIBLE_SIZE)
    assert (reason("zero"), reason("text")) == (EMPTY_FILE, NOT_AN_IMAGE)
    assert {r["reason"] for n, r in rejected.items() if "_cut" in n or "random" in n} <= (
        BYTES_REASONS
    )

    # Trainable: one epoch trains on the train split ...
    summary = run_train(str(output), str(tmp_path / "model"), tiny_model(), tiny_training(epochs=1))
    assert summary["epochs_run"] == 1
    # ... and every written record, of both splits, goes through the trainer's input pipeline.
    geometry = load_trained(str(tmp_path / "model"))[2].geometry
    decoded = sum(
        int(images.shape[0])
        for split in examples.SPLITS
        for images, _ in dataset.make_dataset(
            str(output), split, geometry=geometry, max_label_length=4, batch_size=64
        )
    )
    assert decoded == len(written)

    # Served: the signature reads every written file and none rejected for its bytes.
    export = export_model(str(tmp_path / "model"), str(tmp_path / "export"))
    names = sorted(files)
    answers = ExportedModel(export).predict_bytes([files[n] for n in names], names)
    valid = {answer.source: answer.valid for answer in answers}
    assert all(valid[name] for name in written)
    assert not [n for n, r in rejected.items() if r["reason"] in BYTES_REASONS and valid[n]]
    for what in ("gif", "bmp"):  # not ingested (Contract 1: PNG, JPEG), but served
        (name,) = [n for n in files if f"_{what}." in n]
        assert valid[name], name
    for what in ("webp", "tiff", "bomb-gif", "bomb-bmp"):
        (name,) = [n for n in files if f"_{what}." in n]
        assert not valid[name], name
    assert np.isfinite([answer.confidence for answer in answers]).all()
    assert tf.io.gfile.exists(export)

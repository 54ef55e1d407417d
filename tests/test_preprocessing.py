"""The shared decoder: odd encodings read alike, alpha composited, limits from the header."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.preprocessing import (
    decode_grayscale,
    decoded_sizes,
    header_size,
    preprocess_image,
    within_limits,
)

INK, PAPER = 30, 255


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def glyphs(ink: int = INK, paper: int = PAPER, mode: str = "L") -> Image.Image:
    """A 120x40 image with two solid bars of ink: where text would be."""
    image = Image.new("L", (120, 40), paper)
    for x0 in (20, 70):
        image.paste(ink, (x0, 10, x0 + 25, 30))
    return image.convert(mode)


INK_MASK = np.asarray(glyphs(0, 255)) == 0


def ink_contrast(image_bytes: bytes) -> float:
    """Mean model input on the paper minus on the ink (0: the glyphs are invisible)."""
    image = preprocess_image(image_bytes, 40, 120).numpy()[..., 0]
    return float(image[~INK_MASK].mean() - image[INK_MASK].mean())


def transparent(ink_rgb: tuple[int, int, int]) -> bytes:
    """Glyphs of `ink_rgb` on a fully transparent background whose hidden colour is black."""
    rgba = np.zeros((40, 120, 4), np.uint8)
    rgba[INK_MASK] = (*ink_rgb, 255)
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


@pytest.mark.parametrize("ink_rgb", [(0, 0, 0), (20, 20, 160), (200, 30, 30)])
def test_a_transparent_png_preprocesses_to_visible_ink(ink_rgb):
    """Dropping alpha made these all black (contrast 0); composited over white they read."""
    data = transparent(ink_rgb)
    assert ink_contrast(data) > 0.3
    gray = decode_grayscale(data).numpy()[..., 0]
    assert (gray[~INK_MASK] == 255).all()


def test_a_pale_on_white_png_keeps_its_ink():
    """Pale glyphs keep exactly their (small) contrast; normalising it is issue 13's."""
    assert ink_contrast(encode(glyphs(ink=225), "PNG")) == pytest.approx(30 / 255, abs=0.01)


@pytest.mark.parametrize(("mode", "fmt", "options", "tolerance"), [
    ("P", "PNG", {}, 0), ("LA", "PNG", {}, 0), ("RGBA", "PNG", {}, 0), ("RGB", "PNG", {}, 0),
    ("P", "PNG", {"transparency": 7}, 0), ("RGB", "BMP", {}, 0), ("P", "GIF", {}, 0),
    ("CMYK", "JPEG", {"quality": 95}, 1), ("L", "JPEG", {"quality": 95}, 1),
    ("RGB", "JPEG", {"progressive": True, "quality": 95}, 1),
])
def test_every_encoding_decodes_to_the_same_gray(mode, fmt, options, tolerance):
    reference = np.asarray(glyphs(), np.int32)
    decoded = decode_grayscale(encode(glyphs(mode=mode), fmt, **options)).numpy()[..., 0]
    assert decoded.shape == reference.shape
    error = np.abs(decoded.astype(np.int32) - reference)
    assert (error.mean() if fmt == "JPEG" else error.max()) <= tolerance  # JPEG rings at edges


def test_sixteen_bit_png_decodes():
    wide = Image.fromarray(np.asarray(glyphs()).astype(np.uint16) * 257)
    decoded = decode_grayscale(encode(wide, "PNG")).numpy()[..., 0]
    np.testing.assert_array_equal(decoded, np.asarray(glyphs()))


def test_a_palette_bmp_is_refused_not_misread():
    with pytest.raises(tf.errors.InvalidArgumentError, match="BMP with a palette"):
        decode_grayscale(encode(glyphs(mode="P"), "BMP"))


def test_header_size_reads_every_format_without_decoding():
    image = glyphs()
    for fmt in ("PNG", "JPEG", "GIF", "BMP"):
        assert header_size(encode(image, fmt)).numpy().tolist()[:2] == [40, 120], fmt
    assert header_size(b"not an image").numpy().tolist() == [0, 0, 1]
    assert header_size(b"").numpy().tolist() == [0, 0, 1]
    frames = [glyphs(ink=i * 40) for i in range(4)]
    animated = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    height, width, bound = header_size(animated).numpy().tolist()
    assert (height, width) == (40, 120) and 4 <= bound <= 8  # frames, from above


def test_limits_are_checked_from_the_header():
    small = encode(glyphs(), "PNG")
    assert within_limits(small).numpy()
    assert not within_limits(small, max_pixels=120 * 40 - 1).numpy()
    assert not within_limits(small, max_file_bytes=len(small) - 1).numpy()
    good, cut = small, small[:-1]
    big = encode(Image.new("L", (3000, 2000), 255), "PNG")
    sizes = decoded_sizes([good, cut, b"", big, good], max_pixels=1_000_000)
    assert sizes == {0: (40, 120), 4: (40, 120)}

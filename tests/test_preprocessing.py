"""The shared decoder: odd encodings read alike, alpha composited, limits from the header."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import bilevel_png_bomb, encode
from PIL import Image

from components.geometry import Geometry
from components.preprocessing import (
    INK_COLOURS,
    MIN_CONTRAST,
    SRGB_TO_LAB,
    decode_rgb,
    has_ink,
    header_sizes,
    preprocess_each,
    preprocess_image,
    scale_to_fit,
    size_check,
)

INK, PAPER = 30, 255
GEOMETRY = Geometry(40, 120, 1.0)  # the glyphs' own size: no resizing


def glyphs(ink: int = INK, paper: int = PAPER, mode: str = "L") -> Image.Image:
    """A 120x40 image with two solid bars of ink: where text would be."""
    image = Image.new("L", (120, 40), paper)
    for x0 in (20, 70):
        image.paste(ink, (x0, 10, x0 + 25, 30))
    return image.convert(mode)


INK_MASK = np.asarray(glyphs(0, 255)) == 0


def transparent(ink_rgb: tuple[int, int, int]) -> bytes:
    """Glyphs of `ink_rgb` on a fully transparent background whose hidden colour is black."""
    rgba = np.zeros((40, 120, 4), np.uint8)
    rgba[INK_MASK] = (*ink_rgb, 255)
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


@pytest.mark.parametrize("ink_rgb", [(0, 0, 0), (20, 20, 160), (200, 30, 30)])
def test_a_transparent_png_preprocesses_to_visible_ink(ink_rgb):
    """Dropping alpha made black ink on a (hidden) black background invisible."""
    data = transparent(ink_rgb)
    rgb = decode_rgb(data).numpy()
    assert (rgb[~INK_MASK] == 255).all()
    image = preprocess_image(data, GEOMETRY).numpy()[..., 0]
    assert image[INK_MASK].mean() - image[~INK_MASK].mean() > 0.5


@pytest.mark.parametrize(
    ("mode", "fmt", "options"),
    [
        ("P", "PNG", {}),
        ("LA", "PNG", {}),
        ("RGBA", "PNG", {}),
        ("RGB", "PNG", {}),
        ("P", "PNG", {"transparency": 7}),
        ("RGB", "BMP", {}),
        ("P", "GIF", {}),
        ("CMYK", "JPEG", {"quality": 95}),
        ("L", "JPEG", {"quality": 95}),
        ("RGB", "JPEG", {"progressive": True, "quality": 95}),
    ],
)
def test_every_encoding_decodes_to_the_same_colours(mode, fmt, options):
    reference = np.asarray(glyphs(mode="RGB"), np.int32)
    decoded = decode_rgb(encode(glyphs(mode=mode), fmt, **options)).numpy()
    assert decoded.shape == reference.shape
    error = np.abs(decoded.astype(np.int32) - reference)
    assert (error.mean() <= 1) if fmt == "JPEG" else (error.max() == 0)  # JPEG rings at edges


def test_sixteen_bit_png_decodes():
    wide = Image.fromarray(np.asarray(glyphs()).astype(np.uint16) * 257)
    decoded = decode_rgb(encode(wide, "PNG")).numpy()
    np.testing.assert_array_equal(decoded, np.asarray(glyphs(mode="RGB")))


def test_a_palette_bmp_is_refused_not_misread():
    with pytest.raises(tf.errors.InvalidArgumentError, match="BMP with a palette"):
        decode_rgb(encode(glyphs(mode="P"), "BMP"))


def test_header_sizes_read_png_gif_bmp_without_decoding():
    image = glyphs()
    frames = [glyphs(ink=i * 40) for i in range(4)]
    animated = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    inputs = [encode(image, fmt) for fmt in ("PNG", "GIF", "BMP", "JPEG")]
    inputs += [b"not an image", b"", animated, bilevel_png_bomb(20000, 20000)]
    sizes = header_sizes(tf.constant(inputs)).numpy().tolist()
    assert sizes[0] == sizes[2] == [40, 120, 1]
    assert sizes[1][:2] == [40, 120] and 1 <= sizes[1][2] <= 2  # GIF frames, from above
    assert sizes[3:6] == [[0, 0, 1]] * 3  # JPEG: parsed per image by decode_each
    assert sizes[6][:2] == [40, 120] and 4 <= sizes[6][2] <= 8
    assert sizes[7] == [20000, 20000, 1]


def test_the_batch_check_refuses_what_is_over_the_limits_or_does_not_decode():
    good = encode(glyphs(), "PNG")
    jpeg = encode(glyphs(), "JPEG")
    big_png = encode(Image.new("L", (3000, 2000), 255), "PNG")
    big_jpeg = encode(Image.new("L", (3000, 2000), 255), "JPEG")
    check = size_check(max_pixels=1_000_000, max_file_bytes=len(good) + 1000)
    images = [good, good[:-1], b"", big_png, big_jpeg, jpeg, good + b"\0" * 1001, good]
    sizes, valid = check(images)
    assert valid.tolist() == [True, False, False, False, False, True, False, True]
    assert sizes[valid].tolist() == [[40, 120]] * 3
    assert (sizes[~valid] == 0).all()
    assert check([])[1].tolist() == []


def test_a_blank_image_has_no_ink_and_glyphs_do():
    blank_png = encode(Image.new("L", (120, 40), 255), "PNG")
    blank_jpeg = encode(Image.new("RGB", (120, 40), (250, 248, 240)), "JPEG", quality=60)
    pale = encode(glyphs(ink=235), "PNG")
    images = [blank_png, blank_jpeg, encode(glyphs(), "PNG"), pale]
    stacked = tf.stack([preprocess_image(data, GEOMETRY) for data in images])
    assert has_ink(stacked).numpy().tolist() == [False, False, True, True]


def test_pale_coloured_ink_keeps_half_of_dark_inks_weight():
    """Pale yellow on white is 0.06 from it in gray: it was a tenth as bright as black ink.

    Colour weighs half of lightness (`CHROMA_WEIGHT`), so this yellow is about 0.3 of dark
    ink's distance from white, and the square root lifts that to about 0.55.
    """
    rgb = np.full((40, 120, 3), 255, np.uint8)
    left, right = INK_MASK.copy(), INK_MASK.copy()
    left[:, 60:], right[:, :60] = False, False
    rgb[left], rgb[right] = (30, 30, 30), (250, 250, 150)
    image = preprocess_image(encode(Image.fromarray(rgb), "PNG"), GEOMETRY).numpy()[..., 0]
    assert image[right].mean() > 0.5 * image[left].mean()
    assert image[~INK_MASK].max() < 0.05


def test_an_opaque_one_bit_png_decodes_to_its_pixels():
    """TF decodes a 1-bit PNG with four channels to an alpha of 1: no alpha, no composite."""
    bilevel = glyphs(ink=0).convert("1")
    decoded = decode_rgb(encode(bilevel, "PNG")).numpy()
    np.testing.assert_array_equal(decoded, np.asarray(bilevel.convert("RGB")))


def reference_ink(rgb: np.ndarray) -> np.ndarray:
    """`ink`'s definition for one image [h, w, 3] in [0, 1], in numpy: distance from the
    border's median colour (the upper median of each channel), stretched to the 99th
    percentile, square-rooted."""
    colours = rgb @ INK_COLOURS
    border = np.concatenate([colours[0], colours[-1], colours[:, 0], colours[:, -1]])
    background = np.sort(border, axis=0)[len(border) // 2]
    distance = np.linalg.norm(colours - background, axis=-1)
    strong = np.sort(distance, axis=None)[::-1][max(1, distance.size // 100) - 1]
    return np.sqrt(np.clip(distance / max(strong, MIN_CONTRAST), 0, 1))


def test_a_batch_turns_into_ink_as_each_image_alone_would():
    """The signature's path (each image placed, the batch inked at once) against the numpy
    definition and `preprocess_image`: images of other sizes and padding, coloured and
    transparent backgrounds, and an item that does not decode (all background, no NaN)."""
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (40, 70, 3), np.uint8)  # padded on the right
    noisy[:, :, 2] = 200
    half_transparent = np.zeros((40, 120, 4), np.uint8)
    half_transparent[INK_MASK] = (200, 30, 30, 128)
    images = [
        encode(glyphs(), "PNG"),
        encode(glyphs(ink=240, paper=20, mode="RGB").resize((60, 20)), "PNG"),
        b"not an image",
        encode(Image.fromarray(noisy), "PNG"),
        encode(Image.fromarray(half_transparent, "RGBA"), "PNG"),
        encode(Image.fromarray(rng.integers(0, 256, (40, 360, 3), np.uint8)), "JPEG"),  # shrunk
    ]
    batch, valid = preprocess_each(tf.constant(images), GEOMETRY)
    batch = batch.numpy()[..., 0]
    assert valid.numpy().tolist() == [True, True, False, True, True, True]
    assert not np.isnan(batch).any() and (batch[2] == 0).all()
    for index in [0, 1, 3, 4, 5]:
        data, inked = images[index], batch[index]
        rgb = scale_to_fit(tf.image.convert_image_dtype(decode_rgb(data), tf.float32), GEOMETRY)
        height, width = rgb.shape[:2]
        top = (GEOMETRY.height - height) // 2
        expected = np.zeros([GEOMETRY.height, GEOMETRY.width], np.float32)
        expected[top : top + height, :width] = reference_ink(rgb.numpy())
        np.testing.assert_allclose(inked, expected, atol=1e-5)
        np.testing.assert_array_equal(inked, preprocess_image(data, GEOMETRY).numpy()[..., 0])


def cielab(rgb: np.ndarray) -> np.ndarray:
    """The exact sRGB [..., 3] in [0, 1] -> CIELAB (D65 white) conversion, divided by 100."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    srgb_to_xyz = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = linear @ srgb_to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    fx, fy, fz = np.moveaxis(f, -1, 0)
    return np.stack([1.16 * fy - 0.16, 5 * (fx - fy), 2 * (fy - fz)], -1)


def test_the_reference_conversion_matches_published_cielab_values():
    """sRGB primaries and grays against their published D65 CIELAB values (L*, a*, b*)."""
    rgb = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [119] * 3])
    expected = np.array(
        [
            [100.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [53.24, 80.09, 67.20],
            [87.73, -86.18, 83.18],
            [32.30, 79.19, -107.86],
            [50.03, 0.0, 0.0],
        ]
    )
    np.testing.assert_allclose(cielab(rgb / 255.0) * 100, expected, atol=0.1)


def test_the_ink_matrix_is_the_least_squares_fit_of_cielab_over_the_cube():
    """`SRGB_TO_LAB` is what it says: refitted here from the exact conversion (an offset
    column too, which distances cancel)."""
    levels = np.linspace(0.0, 1.0, 33)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    design = np.concatenate([cube, np.ones([len(cube), 1])], 1)
    fit = np.linalg.lstsq(design, cielab(cube), rcond=None)[0][:3]
    np.testing.assert_allclose(SRGB_TO_LAB, fit, atol=1e-4)

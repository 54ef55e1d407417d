"""The one decoder and preprocessing function shared by ingestion, training and serving.

ExampleGen's check (eagerly, per file), the trainer's tf.data pipeline and the exported
serving signature all call `decode_grayscale` / `preprocess_image`, so an image that was
ingested is one that trains and is served, and a served image is turned into exactly the
tensor the model was trained on (no train/serve skew). Only TensorFlow graph ops are used
(TF Serving runs no Python).

`header_size` reads what an encoded image declares from its header, without decoding, so
that ingestion and serving refuse a decompression bomb (`within_limits`) before a byte of
it is decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

DEFAULT_IMAGE_HEIGHT = 50
DEFAULT_IMAGE_WIDTH = 200
# The most an input may cost: decoded pixels as its header declares them (GIF: all frames)
# and encoded bytes. Captchas are ~10,000 pixels and tens of KB; 4M pixels decode to 16 MB.
DEFAULT_MAX_PIXELS = 4_000_000
DEFAULT_MAX_FILE_BYTES = 2 * 1024 * 1024
# Transparent pixels are composited over white: captcha sites draw dark ink for light pages.
BACKGROUND = 255
# libpng's RGB -> gray weights (/2**15), as TF's decode_png(channels=1) applies them: an
# opaque PNG decodes to the very gray values it did before alpha was composited.
GRAY_WEIGHTS = (9797, 19234, 3737)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADER_BYTES = 32
FORMATS = ("png", "jpeg", "gif", "bmp")


def image_format(image_bytes: tf.Tensor) -> tf.Tensor:
    """`png`, `jpeg`, `gif`, `bmp` from the magic bytes, or "" (element-wise on a string tensor)."""
    head = tf.strings.substr(image_bytes, 0, 8)
    checks = [
        tf.equal(head, PNG_SIGNATURE),
        tf.io.is_jpeg(image_bytes),
        tf.strings.regex_full_match(tf.strings.substr(head, 0, 6), "GIF8[79]a"),
        tf.equal(tf.strings.substr(head, 0, 2), b"BM"),
    ]
    index = tf.argmax(tf.cast(tf.stack([*checks, tf.ones_like(checks[0])], -1), tf.int32), -1)
    return tf.gather(tf.constant([*FORMATS, ""]), index)


def _header_numbers() -> np.ndarray:
    """[HEADER_BYTES, 6] weights: header bytes @ weights = the sizes PNG, GIF and BMP declare.

    Columns: PNG height, width (big-endian uint32 at 20, 16), GIF height, width (uint16 at 8,
    6), BMP height, width (int32 at 22, 18). One matmul instead of a branch per format.
    """
    fields = [(20, 4, True), (16, 4, True), (8, 2, False), (6, 2, False), (22, 4, False),
              (18, 4, False)]
    weights = np.zeros([HEADER_BYTES, len(fields)])
    for column, (start, length, big_endian) in enumerate(fields):
        powers = [256.0**k for k in range(length)]
        weights[start : start + length, column] = powers[::-1] if big_endian else powers
    return weights


HEADER_NUMBERS = _header_numbers()


def header_sizes(image_bytes: tf.Tensor) -> tf.Tensor:
    """int64 [n, 3]: height, width, frames that each of n PNG, GIF or BMP headers declares.

    Vectorised over the batch, nothing decoded. GIF: the logical screen, and as frames an
    upper bound of the frames its decoder allocates (each frame's image descriptor follows a
    block terminator, b"\\0,"). JPEG and unknown formats give zeros: a JPEG's frame header
    needs a parser (`tf.image.extract_jpeg_shape`), run per image (`_jpeg_within`).
    """
    head = tf.strings.substr(image_bytes, 0, HEADER_BYTES)
    padded = tf.strings.substr(tf.strings.join([head, b"\0" * HEADER_BYTES]), 0, HEADER_BYTES)
    header = tf.reshape(tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.float64),
                        [-1, HEADER_BYTES])
    numbers = tf.reshape(tf.cast(header @ HEADER_NUMBERS, tf.int64), [-1, 3, 2])
    numbers = tf.abs(tf.where(numbers >= 2**31, numbers - 2**32, numbers))  # BMP: top-down < 0
    fmt = tf.reshape(image_format(image_bytes), [-1])
    row = tf.argmax(tf.cast(tf.stack([tf.equal(fmt, "png"), tf.equal(fmt, "gif"),
                                      tf.equal(fmt, "bmp"), tf.ones_like(fmt, tf.bool)], -1),
                            tf.int32), -1)
    rows = tf.concat([numbers, tf.zeros_like(numbers[:, :1])], 1)
    size = tf.gather(rows, row, batch_dims=1)
    pieces = tf.strings.split(tf.reshape(image_bytes, [-1]), b"\0,").row_lengths()
    frames = tf.where(tf.equal(fmt, "gif"), pieces, 1)
    return tf.concat([size, frames[:, None]], 1)


def header_size(image_bytes: tf.Tensor) -> tf.Tensor:
    """int64 [height, width, frames] that one image's header declares (JPEG too).

    A JPEG whose header does not parse raises, as its decoding would.
    """
    size = header_sizes(tf.reshape(image_bytes, [1]))[0]
    return tf.cond(
        tf.equal(image_format(image_bytes), "jpeg"),
        lambda: tf.concat([tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64),
                           [1]], 0),
        lambda: size,
    )


def within_limits(image_bytes: tf.Tensor, max_pixels: int = DEFAULT_MAX_PIXELS,
                  max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tf.Tensor:
    """Whether decoding one input stays within the limits (bool scalar; headers only)."""
    return ((tf.cast(tf.strings.length(image_bytes), tf.int64) <= max_file_bytes)
            & (tf.reduce_prod(header_size(image_bytes)) <= max_pixels))


def _jpeg_within(image_bytes: tf.Tensor, max_pixels: int) -> tf.Tensor:
    return tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2],
                                       tf.int64)) <= max_pixels,
        lambda: tf.constant(True),
    )


def _rgb_to_gray(rgb: tf.Tensor) -> tf.Tensor:
    """uint8 [h, w, 3 or 4] -> float32 [h, w, 1] in 0..255, libpng's integer formula.

    A fourth (alpha) channel is ignored.
    """
    weights = tf.constant([w / 2**15 for w in GRAY_WEIGHTS] + [0.0])[: rgb.shape[-1]]
    return tf.floor(tf.reduce_sum(tf.cast(rgb, tf.float32) * weights, -1, keepdims=True))


def _png_has_alpha(image_bytes: tf.Tensor) -> tf.Tensor:
    """Colour type 4 or 6 (grey or RGB + alpha), or a tRNS chunk (palette or colour key)."""
    colour_type = tf.strings.substr(image_bytes, 25, 1)
    return (tf.equal(colour_type, b"\x04") | tf.equal(colour_type, b"\x06")
            | tf.strings.regex_full_match(image_bytes, "(?s).*tRNS.*"))


def _png_over_background(image_bytes: tf.Tensor) -> tf.Tensor:
    rgba = tf.io.decode_png(image_bytes, channels=4)
    alpha = tf.cast(rgba[..., 3:], tf.float32)
    return (_rgb_to_gray(rgba) - BACKGROUND) * (alpha / 255.0) + BACKGROUND


def _png(image_bytes: tf.Tensor) -> tf.Tensor:
    """Any PNG (palette, 16-bit, grey+alpha, interlaced) -> gray, alpha over BACKGROUND.

    An opaque PNG takes libpng's own gray conversion, the cheaper path; the composite gives
    the same values for opaque pixels.
    """
    return tf.cond(
        _png_has_alpha(image_bytes),
        lambda: _png_over_background(image_bytes),
        lambda: tf.cast(tf.io.decode_png(image_bytes, channels=1), tf.float32),
    )


def _jpeg(image_bytes: tf.Tensor) -> tf.Tensor:
    """JPEG -> gray; CMYK/YCCK (4 components) through RGB: libjpeg has no CMYK -> gray."""
    components = tf.image.extract_jpeg_shape(image_bytes)[2]
    return tf.cond(
        tf.equal(components, 4),
        lambda: _rgb_to_gray(tf.io.decode_jpeg(image_bytes, channels=3)),
        lambda: tf.cast(tf.io.decode_jpeg(image_bytes, channels=1), tf.float32),
    )


def _other(image_bytes: tf.Tensor) -> tf.Tensor:
    """GIF (first frame) and BMP through RGB; raises on bytes of no known format.

    A BMP of 8 bits or fewer per pixel is refused: TF's decoder reads its palette indices
    as gray levels (or fails), so it would be read, wrongly.
    """
    bits_per_pixel = tf.strings.substr(tf.strings.join([image_bytes, b"\0" * 30]), 28, 1)
    paletted = tf.equal(image_format(image_bytes), "bmp") & (
        tf.io.decode_raw(bits_per_pixel, tf.uint8)[0] <= 8)
    check = tf.debugging.Assert(~paletted, ["BMP with a palette: not read by TF's decoder"])
    with tf.control_dependencies([check]):
        rgb = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    return _rgb_to_gray(rgb)


def decode_grayscale(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded PNG/JPEG/GIF/BMP bytes -> uint8 [height, width, 1].

    Transparent pixels are composited over a white background (dropping alpha would turn
    a transparent PNG's usually black, invisible background into ink's colour). EXIF
    orientation is ignored, as TF's decoders do: captcha servers render their images and
    send no camera rotation, and ingestion, training and serving all see the stored pixels.
    """
    fmt = image_format(image_bytes)
    gray = tf.case(
        [(tf.equal(fmt, "png"), lambda: _png(image_bytes)),
         (tf.equal(fmt, "jpeg"), lambda: _jpeg(image_bytes))],
        default=lambda: _other(image_bytes),
    )
    gray = tf.cast(tf.round(gray), tf.uint8)
    gray.set_shape([None, None, 1])
    return gray


def decoded_each(
    image_bytes: tf.Tensor,
    fn: Callable[[tf.Tensor], Any],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> tf.data.Dataset:
    """(index, fn(bytes)) of each item of a 1-D string tensor within the limits that decodes.

    A decoder raises on anything but a whole image (TF 2.16: a PNG short of even its last
    byte is "Invalid PNG data") and a graph cannot catch an op error; tf.data's
    `ignore_errors` can, and the indices carried along say which items are missing. Items
    over the limits are dropped before a byte of them is decoded: from their headers, for
    the whole batch at once (per image only for JPEG, whose header needs a parser). The
    serving signature runs this in its graph; ExampleGen runs it eagerly on a batch of files (one call, not
    one per file: a TensorFlow call costs more than decoding a captcha).
    """
    lengths = tf.cast(tf.strings.length(image_bytes), tf.int64)
    within = (lengths <= max_file_bytes) & (
        tf.reduce_prod(header_sizes(image_bytes), -1) <= max_pixels)
    indices = tf.boolean_mask(tf.range(tf.shape(image_bytes, out_type=tf.int64)[0]), within)

    def checked(index: tf.Tensor, data: tf.Tensor) -> tuple[tf.Tensor, Any]:
        check = tf.debugging.Assert(_jpeg_within(data, max_pixels), ["JPEG over max_pixels"])
        with tf.control_dependencies([check]):
            return index, fn(data)

    return (
        tf.data.Dataset.from_tensor_slices((indices, tf.boolean_mask(image_bytes, within)))
        .map(checked, num_parallel_calls=tf.data.AUTOTUNE)
        .ignore_errors()
    )


def decoded_sizes(images: Sequence[bytes], max_pixels: int = DEFAULT_MAX_PIXELS,
                  max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> dict[int, tuple[int, int]]:
    """{index: (height, width)} of the encoded images that `decode_grayscale` reads within the
    limits; the others are missing. Eager, one call for the whole list (ExampleGen's check)."""
    if not images:
        return {}
    decoded = decoded_each(tf.constant(list(images), tf.string),
                           lambda data: tf.shape(decode_grayscale(data))[:2],
                           max_pixels, max_file_bytes)
    sizes: dict[int, tuple[int, int]] = {}
    for indices, shapes in decoded.batch(len(images)):
        sizes.update(zip(indices.numpy().tolist(), map(tuple, shapes.numpy().tolist()),
                                strict=True))
    return sizes


def preprocess_image(
    image_bytes: tf.Tensor,
    image_height: int = DEFAULT_IMAGE_HEIGHT,
    image_width: int = DEFAULT_IMAGE_WIDTH,
) -> tf.Tensor:
    """Encoded image bytes -> float32 [image_height, image_width, 1] in [0, 1]."""
    image = tf.image.convert_image_dtype(decode_grayscale(image_bytes), tf.float32)
    image = tf.image.resize(image, [image_height, image_width], antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)

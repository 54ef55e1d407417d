"""The one decoder and preprocessing function shared by ingestion, training and serving.

ExampleGen's check, the trainer's tf.data pipeline and the exported serving signature all
decode with `decode_rgb`, so an image that was ingested is one that trains and is
served; the trainer calls `preprocess_image` and the signature `preprocess_each`, the same
two steps (`place`, then `ink`) on a batch, so a served image is turned into exactly the
tensor the model was trained on (no train/serve skew). Only
TensorFlow graph ops are used (TF Serving runs no Python). The input size comes from the data
(`geometry.py`); the pixels become "ink": distance from the image's own background colour as
a person sees it (CIELAB, fitted as one matrix), contrast-stretched and square-rooted, so
that pale, coloured or light-on-dark glyphs stand out as dark-on-white ones do.

`header_sizes` reads the size an encoded image declares, without decoding it, so that
ingestion and serving refuse a decompression bomb before a byte of it is decoded
(`decode_each`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from components.geometry import Geometry

# The most a faint image's contrast is stretched (see `ink`): JPEG and scanner noise is a
# few hundredths, light gray ink (235 on white) 0.07, pale yellow on white 0.25.
MIN_CONTRAST = 0.04
# `ink` takes the square root of the stretched contrast: it lifts faint strokes (a pale glyph
# at 0.25 becomes 0.5) and leaves full ink and the background where they are. It read pale
# glyphs on `wide` better than the linear ink (misread on 16.8 % of captchas with two or more
# of them against 27.4 %) and JPEG's noise no worse (benchmarks/README.md, "Two trials for
# the next shipped model"). The square root, not `** 0.5`: IEEE rounds it exactly, so a
# batch and an image alone get the same bits, where `pow` differed by an ulp between them
# (tests/test_model.py's eval batches against `preprocess_image`).
# An image whose strongest ink stays under this (after `ink`) holds no text: a blank image,
# or JPEG noise on one (at most ~0.3 after the stretch, before the root), whereas any
# stroke of at least MIN_CONTRAST / 2 reaches it.
MIN_INK = float(np.sqrt(0.5))
# The most an input may cost: decoded pixels as its header declares them (GIF: all frames)
# and encoded bytes. Captchas are ~10,000 pixels and tens of KB; 4M pixels decode to 16 MB.
DEFAULT_MAX_PIXELS = 4_000_000
DEFAULT_MAX_FILE_BYTES = 2 * 1024 * 1024
# Transparent pixels are composited over white: captcha sites draw dark ink for light pages.
BACKGROUND = 255
# What `place` pads an image with, out of the [0, 1] that resizing keeps colours in (its
# triangle kernel weighs pixels by non-negative weights): `ink` finds each image by it.
OUTSIDE = -1.0
# CIELAB (divided by 100) as a linear map of the gamma-encoded sRGB values in [0, 1] (rows R,
# G, B; columns L*, a*, b*): the least-squares fit of the exact conversion over the RGB cube,
# which tests/test_preprocessing.py fits again. Distances under it stay within a few
# hundredths of CIELAB's (pale yellow from white 0.26 against 0.25, black from white 0.95
# against 1) at one matrix product per pixel, where the exact conversion's powers took about
# 20 passes over the pixels and 40 % of serving's time (benchmarks/README.md, "serving").
SRGB_TO_LAB = (
    (0.2303, 0.6911, 0.3501),
    (0.6309, -1.2280, 0.8315),
    (0.0864, 0.4433, -1.2288),
)
# Weight of colour (a*, b*) against lightness in `ink`. JPEG keeps colour at half resolution
# and quantises it harder, so at full weight its colour edges are blocky halos around coloured
# glyphs; half weight read best on the zoo (benchmarks/README.md).
CHROMA_WEIGHT = 0.5
INK_COLOURS = np.float32(SRGB_TO_LAB) * np.float32([1.0, CHROMA_WEIGHT, CHROMA_WEIGHT])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADER_BYTES = 32
FORMATS = ("png", "jpeg", "gif", "bmp")


def image_format(image_bytes: tf.Tensor) -> tf.Tensor:
    """`png`, `jpeg`, `gif`, `bmp` from the magic bytes, or "" (element-wise)."""
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
    fields = [
        (20, 4, True),
        (16, 4, True),
        (8, 2, False),
        (6, 2, False),
        (22, 4, False),
        (18, 4, False),
    ]
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
    needs a parser (`tf.image.extract_jpeg_shape`, run per image in `decode_each`).
    """
    head = tf.strings.substr(image_bytes, 0, HEADER_BYTES)
    padded = tf.strings.substr(tf.strings.join([head, b"\0" * HEADER_BYTES]), 0, HEADER_BYTES)
    raw = tf.reshape(tf.io.decode_raw(padded, tf.uint8), [-1, HEADER_BYTES])
    numbers = tf.reshape(tf.cast(tf.cast(raw, tf.float64) @ HEADER_NUMBERS, tf.int64), [-1, 3, 2])
    numbers = tf.abs(tf.where(numbers >= 2**31, numbers - 2**32, numbers))  # BMP: top-down < 0
    fmt = tf.reshape(image_format(image_bytes), [-1])
    known = [tf.equal(fmt, "png"), tf.equal(fmt, "gif"), tf.equal(fmt, "bmp")]
    row = tf.argmax(tf.cast(tf.stack([*known, tf.ones_like(fmt, tf.bool)], -1), tf.int32), -1)
    rows = tf.concat([numbers, tf.zeros_like(numbers[:, :1])], 1)
    size = tf.gather(rows, row, batch_dims=1)
    pieces = tf.strings.split(tf.reshape(image_bytes, [-1]), b"\0,").row_lengths()
    frames = tf.where(tf.equal(fmt, "gif"), pieces, 1)
    return tf.concat([size, frames[:, None]], 1)


def _jpeg_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
    """Pixels a JPEG's frame header declares (0 for other formats); raises if it is corrupt."""
    return tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64)),
        lambda: tf.constant(0, tf.int64),
    )


def _png_has_alpha(image_bytes: tf.Tensor) -> tf.Tensor:
    """Colour type 4 or 6 (grey or RGB + alpha), or a tRNS chunk (palette or colour key)."""
    colour_type = tf.strings.substr(image_bytes, 25, 1)
    return (
        tf.equal(colour_type, b"\x04")
        | tf.equal(colour_type, b"\x06")
        | tf.strings.regex_full_match(image_bytes, "(?s).*tRNS.*")
    )


def _png_over_background(image_bytes: tf.Tensor) -> tf.Tensor:
    """Composited only where a pixel is transparent: many sites send opaque RGBA."""
    rgba = tf.io.decode_png(image_bytes, channels=4)

    def composite() -> tf.Tensor:
        colour = tf.cast(rgba, tf.float32)
        alpha = colour[..., 3:] / 255.0
        return (colour[..., :3] - BACKGROUND) * alpha + BACKGROUND

    opaque = tf.equal(tf.reduce_min(rgba[..., 3]), 255)
    return tf.cond(opaque, lambda: tf.cast(rgba[..., :3], tf.float32), composite)


def _png(image_bytes: tf.Tensor) -> tf.Tensor:
    """Any PNG (palette, 16-bit, grey+alpha, interlaced) -> RGB, alpha over BACKGROUND.

    Only a PNG with alpha takes the composite: TF gives an opaque 1-bit PNG decoded with four
    channels an alpha of 1, not 255.
    """
    return tf.cond(
        _png_has_alpha(image_bytes),
        lambda: _png_over_background(image_bytes),
        lambda: tf.cast(tf.io.decode_png(image_bytes, channels=3), tf.float32),
    )


def _other(image_bytes: tf.Tensor) -> tf.Tensor:
    """JPEG (grey, RGB, CMYK), GIF (first frame) and BMP -> RGB; raises on unknown bytes.

    A BMP of 8 bits or fewer per pixel is refused: TF's decoder reads its palette indices
    as gray levels (or fails), so it would be read, wrongly.
    """
    bits_per_pixel = tf.strings.substr(tf.strings.join([image_bytes, b"\0" * 30]), 28, 1)
    paletted = tf.equal(image_format(image_bytes), "bmp") & (
        tf.io.decode_raw(bits_per_pixel, tf.uint8)[0] <= 8
    )
    check = tf.debugging.Assert(~paletted, ["BMP with a palette: not read by TF's decoder"])
    with tf.control_dependencies([check]):
        rgb = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    return tf.cast(rgb, tf.float32)


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded PNG/JPEG/GIF/BMP bytes -> uint8 RGB [height, width, 3].

    Colour is kept: a pale yellow or cyan glyph differs from white in hue far more than in
    gray (`ink`). Transparent pixels are composited over a white background (dropping alpha
    would turn a transparent PNG's usually black, invisible background into ink's colour).
    EXIF orientation is ignored, as TF's decoders do: captcha servers render their images
    and send no camera rotation, and ingestion, training and serving all see the stored
    pixels.
    """
    rgb = tf.cond(
        tf.equal(image_format(image_bytes), "png"),
        lambda: _png(image_bytes),
        lambda: _other(image_bytes),
    )
    rgb = tf.cast(tf.round(rgb), tf.uint8)
    rgb.set_shape([None, None, 3])
    return rgb


def decode_each(
    image_bytes: tf.Tensor,
    fn: Callable[[tf.Tensor], tf.Tensor],
    empty: tf.Tensor,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> tuple[tf.Tensor, tf.Tensor]:
    """fn(bytes) of each item of a 1-D string tensor, stacked, and whether each is valid.

    An item over the limits, or that does not decode, gets `empty` (fn's output shape) and
    valid false; the others are unaffected. Decoders raise on anything but a whole image
    (TF 2.16: a PNG short of even its last byte is "Invalid PNG data") and a graph cannot
    catch an op error; tf.data's `ignore_errors` can, and the indices carried along say which
    items are missing. Items over the limits are dropped before a byte of them is decoded:
    from their headers, for the whole batch at once (per image only for JPEG, whose header
    needs a parser). The serving signature runs this in its graph; ExampleGen in a
    tf.function per batch of files (`size_check`).
    """
    count = tf.shape(image_bytes, out_type=tf.int64)[0]
    lengths = tf.cast(tf.strings.length(image_bytes), tf.int64)
    within = (lengths <= max_file_bytes) & (
        tf.reduce_prod(header_sizes(image_bytes), -1) <= max_pixels
    )
    indices = tf.boolean_mask(tf.range(count), within)

    def checked(index: tf.Tensor, data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        check = tf.debugging.Assert(_jpeg_pixels(data) <= max_pixels, ["JPEG over max_pixels"])
        with tf.control_dependencies([check]):
            return index, fn(data)

    decoded = (
        tf.data.Dataset.from_tensor_slices((indices, tf.boolean_mask(image_bytes, within)))
        .map(checked, num_parallel_calls=tf.data.AUTOTUNE)
        .ignore_errors()
    )
    # One extra row, always present, so the batch below exists even if every item failed.
    sentinel = tf.data.Dataset.from_tensors((count, empty))
    found, outputs = decoded.concatenate(sentinel).batch(count + 1).get_single_element()
    positions = found[:, None]
    shape = tf.concat([[count + 1], tf.shape(empty, out_type=tf.int64)], 0)
    # Every item found: they are in order already (the map is deterministic), no scatter.
    outputs = tf.cond(
        tf.equal(tf.size(found, out_type=tf.int64), count + 1),
        lambda: outputs[:count],
        lambda: tf.scatter_nd(positions, outputs, shape)[:count],
    )
    valid = tf.scatter_nd(positions, tf.ones_like(found, tf.bool), [count + 1])[:count]
    return outputs, valid


def size_check(
    max_pixels: int = DEFAULT_MAX_PIXELS, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> Callable[[Sequence[bytes]], tuple[np.ndarray, np.ndarray]]:
    """ExampleGen's check of a batch of files: ([n, 2] decoded height, width; [n] valid).

    Traced once: one call per batch costs about what decoding one captcha does, where
    building a tf.data pipeline per call (or one eager call per file) cost more than the
    decoding itself.
    """

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def check(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return decode_each(
            image_bytes,
            lambda data: tf.shape(decode_rgb(data))[:2],
            tf.zeros([2], tf.int32),
            max_pixels,
            max_file_bytes,
        )

    def run(images: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        sizes, valid = check(tf.constant(list(images), tf.string))
        return sizes.numpy(), valid.numpy()

    return run


def ink(placed: tf.Tensor) -> tf.Tensor:
    """Placed images [n, H, W, 3] (`place`) -> how far each pixel is from its image's
    background, [n, H, W, 1] in [0, 1], and 0 outside the image.

    The background is the median colour of the image's border pixels (glyphs rarely fill the
    border), and the distance is measured in CIELAB (`SRGB_TO_LAB`), as a person sees it: dark
    ink on white, pale yellow on white and bright dots on black all become bright ink on a
    black (0) background. Colour (a*, b*) weighs CHROMA_WEIGHT of lightness: pale yellow is
    0.06 from white in gray, 0.50 in Lab and 0.25 at half weight, against 0.89 for dark ink;
    full weight read JPEG's colour halos as ink (benchmarks/README.md, "ink"). The contrast is
    then stretched so that the image's strongest ink (its 99th percentile) reaches 1, but never
    by more than 1 / MIN_CONTRAST, so that a blank image's noise stays faint, and its square
    root taken, so that strokes the stretch leaves faint (a pale glyph beside dark ones) are
    not lost in the network's first layers.

    Each image is computed on its own, but the batch at once: run per image, these ops cost
    TF's overhead per op (about 20 microseconds on such small tensors) 30 times per image,
    which was most of the serving signature's preprocessing (benchmarks/README.md, "serving").
    """
    inside = placed[..., 0] != OUTSIDE  # [n, H, W]
    colours = tf.reshape(tf.reshape(placed, [-1, 3]) @ tf.constant(INK_COLOURS), tf.shape(placed))

    # Each image's rectangle (`place` pads around it), and the pixels on its edges.
    rows, columns = tf.reduce_any(inside, 2), tf.reduce_any(inside, 1)  # [n, H], [n, W]
    height, width = (tf.reduce_sum(tf.cast(x, tf.int32), 1) for x in (rows, columns))
    top, left = (tf.argmax(tf.cast(x, tf.int32), 1, output_type=tf.int32) for x in (rows, columns))
    bottom, right = tf.maximum(top + height - 1, 0), tf.maximum(left + width - 1, 0)
    # The background: the median of each channel over the edges' 2W + 2H places. The places
    # beyond the image are +inf on one edge of each pair and -inf on the other, as many of
    # each, so the median of all places is the median of the image's own, at the same rank in
    # every image: one nth_element, about 4x faster than a sort.
    edges = [(top, 1, columns, np.inf), (bottom, 1, columns, -np.inf)]
    edges += [(left, 2, rows, np.inf), (right, 2, rows, -np.inf)]
    border = tf.concat(
        [
            tf.where(on[..., None], tf.gather(colours, index, axis=axis, batch_dims=1), beyond)
            for index, axis, on, beyond in edges
        ],
        1,
    )  # [n, 2W + 2H, 3]
    places = tf.shape(border)[1]
    background = tf.raw_ops.NthElement(
        input=tf.transpose(border, [0, 2, 1]), n=places // 2 - 1, reverse=True
    )  # [n, 3]
    distance = tf.norm(colours - background[:, None, None, :], axis=-1)

    # The 99th percentile of each image's ink: its size // 100-th strongest pixel.
    flat = tf.reshape(tf.where(inside, distance, -1.0), [tf.shape(placed)[0], -1])
    rank = tf.maximum(1, height * width // 100)
    strongest = tf.math.top_k(flat, tf.maximum(1, tf.shape(flat)[1] // 100)).values
    strong = tf.gather(strongest, rank - 1, batch_dims=1)
    stretched = distance / tf.maximum(strong, MIN_CONTRAST)[:, None, None]
    return tf.where(inside, tf.sqrt(tf.clip_by_value(stretched, 0.0, 1.0)), 0.0)[..., None]


def has_ink(images: tf.Tensor) -> tf.Tensor:
    """bool [n]: whether each preprocessed image [n, h, w, 1] holds any ink (not blank)."""
    return tf.reduce_max(images, axis=[1, 2, 3]) >= MIN_INK


def scaled_size(height: tf.Tensor, width: tf.Tensor, geometry: Geometry) -> tf.Tensor:
    """int32 [2]: the (height, width) an image of this size is drawn at in the input.

    The geometry's height (its width scale applied), within its width: an image wider than
    the input after scaling is scaled down further to fit, never stretched, so text keeps its
    proportions and one model reads captchas of several sizes.
    """
    shape = tf.cast(tf.stack([height, width]), tf.float32)
    scale_y = geometry.height / shape[0]
    scale_x = scale_y * geometry.width_scale
    shrink = tf.minimum(1.0, geometry.width / (shape[1] * scale_x))
    scaled_height = tf.clip_by_value(tf.round(shape[0] * scale_y * shrink), 1, geometry.height)
    scaled_width = tf.clip_by_value(tf.round(shape[1] * scale_x * shrink), 1, geometry.width)
    return tf.cast(tf.stack([scaled_height, scaled_width]), tf.int32)


def scale_to_fit(image: tf.Tensor, geometry: Geometry) -> tf.Tensor:
    """Resize to `scaled_size`."""
    shape = tf.shape(image)
    return tf.image.resize(image, scaled_size(shape[0], shape[1], geometry), antialias=True)


def place(image_bytes: tf.Tensor, geometry: Geometry) -> tf.Tensor:
    """Encoded image bytes -> float32 RGB [height, width, 3] in [0, 1], the input's size.

    Decoded by `decode_rgb`, scaled to the geometry, then padded with OUTSIDE to the width on
    the right and evenly above and below: `ink` finds each image's own pixels by it.
    """
    rgb = scale_to_fit(tf.image.convert_image_dtype(decode_rgb(image_bytes), tf.float32), geometry)
    height, width = tf.unstack(tf.shape(rgb)[:2])
    top = (geometry.height - height) // 2
    padding = [[top, geometry.height - height - top], [0, geometry.width - width], [0, 0]]
    # tf.pad, not pad_to_bounding_box: its checks are 26 ops per image.
    placed = tf.pad(rgb, padding, constant_values=OUTSIDE)
    placed.set_shape([geometry.height, geometry.width, 3])
    return placed


def preprocess_image(image_bytes: tf.Tensor, geometry: Geometry) -> tf.Tensor:
    """Encoded image bytes -> float32 [height, width, 1] in [0, 1]: ink bright, background 0.

    `place` then `ink`, as the serving signature runs them on a batch (`decode_each` places
    each image, `ink` turns the batch into ink at once).
    """
    return ink(place(image_bytes, geometry)[None])[0]


def preprocess_each(image_bytes: tf.Tensor, geometry: Geometry) -> tuple[tf.Tensor, tf.Tensor]:
    """`preprocess_image` of each item of a 1-D string tensor, [n, H, W, 1], and whether each
    is valid: each placed on its own (`decode_each`, within its limits), then the batch
    turned into ink at once. An item that is over the limits or does not decode is all
    background (0) and not valid; the rest of the batch is unaffected."""
    placed, valid = decode_each(
        image_bytes,
        lambda data: place(data, geometry),
        tf.fill([geometry.height, geometry.width, 3], OUTSIDE),
    )
    return ink(placed), valid

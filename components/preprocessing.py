"""The one preprocessing function shared by training, evaluation and serving.

The trainer's tf.data pipeline and the exported serving signature both call
`preprocess_image`, so a served image is turned into exactly the tensor the model was
trained on (no train/serve skew). The input size comes from the data (`geometry.py`); the
pixels become "ink": distance from the image's own background, contrast-stretched, so that
pale, coloured or light-on-dark glyphs stand out as dark-on-white ones do.
"""

from __future__ import annotations

import tensorflow as tf

from components.geometry import Geometry

# The most a faint image's contrast is stretched (see `ink`): JPEG and scanner noise is a
# few hundredths, the palest captcha ink (pale yellow on white) about 0.05 in gray.
MIN_CONTRAST = 0.04


def decode_grayscale(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded PNG/JPEG/GIF/BMP bytes -> uint8 [height, width, 1] (alpha dropped)."""
    image = tf.io.decode_image(image_bytes, channels=1, expand_animations=False)
    image.set_shape([None, None, 1])
    return image


def ink(gray: tf.Tensor) -> tf.Tensor:
    """float32 [h, w, 1] in [0, 1] -> how far each pixel is from the background, in [0, 1].

    The background is the median of the border pixels (glyphs rarely fill the border), so
    dark ink on white, pale yellow on white and bright dots on black all become bright ink on
    a black (0) background; the contrast is then stretched so that the image's strongest ink
    (its 99th percentile) reaches 1, but never by more than 1 / MIN_CONTRAST, so that a blank
    image's noise stays faint.
    """
    border = tf.concat([gray[0, :, 0], gray[-1, :, 0], gray[:, 0, 0], gray[:, -1, 0]], 0)
    background = tf.sort(border)[tf.size(border) // 2]
    distance = tf.abs(gray - background)
    flat = tf.reshape(distance, [-1])
    strong = tf.math.top_k(flat, tf.maximum(1, tf.size(flat) // 100)).values[-1]
    return tf.clip_by_value(distance / tf.maximum(strong, MIN_CONTRAST), 0.0, 1.0)


def scale_to_fit(image: tf.Tensor, geometry: Geometry) -> tf.Tensor:
    """Resize to the geometry's height (its width scale applied), within its width.

    An image wider than the input after scaling is scaled down further to fit, never
    stretched: text keeps its proportions, so one model reads captchas of several sizes.
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale_y = geometry.height / shape[0]
    scale_x = scale_y * geometry.width_scale
    shrink = tf.minimum(1.0, geometry.width / (shape[1] * scale_x))
    height = tf.clip_by_value(tf.round(shape[0] * scale_y * shrink), 1, geometry.height)
    width = tf.clip_by_value(tf.round(shape[1] * scale_x * shrink), 1, geometry.width)
    return tf.image.resize(image, tf.cast(tf.stack([height, width]), tf.int32), antialias=True)


def preprocess_image(image_bytes: tf.Tensor, geometry: Geometry) -> tf.Tensor:
    """Encoded image bytes -> float32 [height, width, 1] in [0, 1]: ink bright, background 0.

    Scaled to the geometry, turned into ink, then padded with background (0) to the width
    on the right and evenly above and below.
    """
    gray = tf.image.convert_image_dtype(decode_grayscale(image_bytes), tf.float32)
    image = ink(scale_to_fit(gray, geometry))
    top = (geometry.height - tf.shape(image)[0]) // 2
    image = tf.image.pad_to_bounding_box(image, top, 0, geometry.height, geometry.width)
    image.set_shape([geometry.height, geometry.width, 1])
    return image

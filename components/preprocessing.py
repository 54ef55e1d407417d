"""The one preprocessing function shared by training, evaluation and serving.

The trainer's tf.data pipeline and the exported serving signature both call
`preprocess_image`, so a served image is turned into exactly the tensor the model was
trained on (no train/serve skew).
"""

from __future__ import annotations

import tensorflow as tf

DEFAULT_IMAGE_HEIGHT = 50
DEFAULT_IMAGE_WIDTH = 200


def decode_grayscale(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded PNG/JPEG/GIF/BMP bytes -> uint8 [height, width, 1] (alpha dropped)."""
    image = tf.io.decode_image(image_bytes, channels=1, expand_animations=False)
    image.set_shape([None, None, 1])
    return image


def preprocess_image(
    image_bytes: tf.Tensor,
    image_height: int = DEFAULT_IMAGE_HEIGHT,
    image_width: int = DEFAULT_IMAGE_WIDTH,
) -> tf.Tensor:
    """Encoded image bytes -> float32 [image_height, image_width, 1] in [0, 1]."""
    image = tf.image.convert_image_dtype(decode_grayscale(image_bytes), tf.float32)
    image = tf.image.resize(image, [image_height, image_width], antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)

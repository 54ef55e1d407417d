"""Training-only image augmentation: small geometric and photometric changes to a batch.

Everything here moves or recolours pixels and never touches the labels, so a captcha keeps
its text. The trainer applies it to training batches only; evaluation and serving see the
plain `preprocess_image` output.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Largest change of each kind; every image draws its own value in [-max, max]."""

    max_shift: float = 0.04  # of the image width / height
    max_scale: float = 0.05  # zoom in or out by up to this fraction
    max_rotation_degrees: float = 3.0
    max_shear: float = 0.1  # horizontal shear, x += shear * y
    max_contrast: float = 0.2  # contrast factor in [1 - c, 1 + c]
    max_noise_stddev: float = 0.03  # Gaussian noise, stddev drawn in [0, max]

    @property
    def enabled(self) -> bool:
        return any(value != 0 for value in dataclasses.asdict(self).values())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


NO_AUGMENTATION = AugmentConfig(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _uniform(batch: tf.Tensor, limit: float) -> tf.Tensor:
    return tf.random.uniform([batch], -limit, limit)


def affine_transforms(
    batch: tf.Tensor, height: tf.Tensor, width: tf.Tensor, config: AugmentConfig
) -> tf.Tensor:
    """[B, 8] projective transforms (output pixel -> input pixel) about the image centre."""
    angle = _uniform(batch, math.radians(config.max_rotation_degrees))
    scale = 1.0 + _uniform(batch, config.max_scale)
    shear = _uniform(batch, config.max_shear)
    shift_x = _uniform(batch, config.max_shift) * width
    shift_y = _uniform(batch, config.max_shift) * height
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # M = rotation(angle) @ shear @ zoom(1 / scale)
    a0, a1 = cos, cos * shear - sin
    b0, b1 = sin, sin * shear + cos
    center_x, center_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    a2 = center_x - a0 * center_x - a1 * center_y + shift_x
    b2 = center_y - b0 * center_x - b1 * center_y + shift_y
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batch(images: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """Images [B, H, W, C] in [0, 1] -> the same shape, randomly changed, in [0, 1]."""
    shape = tf.shape(images)
    batch = shape[0]
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=affine_transforms(batch, height, width, config),
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",  # repeat the border: captcha backgrounds are plain
    )
    if config.max_contrast:
        factor = 1.0 + _uniform(batch, config.max_contrast)[:, None, None, None]
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * factor + mean
    if config.max_noise_stddev:
        stddev = tf.random.uniform([batch, 1, 1, 1], 0.0, config.max_noise_stddev)
        images = images + tf.random.normal(tf.shape(images)) * stddev
    return tf.clip_by_value(images, 0.0, 1.0)


def make_augment(config: AugmentConfig | None):
    """A batch function for `make_dataset(augment=...)`, or None when nothing is augmented."""
    if config is None or not config.enabled:
        return None
    return lambda images: augment_batch(images, config)

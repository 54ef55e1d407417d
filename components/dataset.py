"""tf.data input from the ExampleGen shards, shared by the trainer, tuner and evaluator."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from components import examples
from components.geometry import FRAME_PIXELS, Geometry
from components.preprocessing import preprocess_image, scaled_size


def parse_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    return tf.io.parse_single_example(serialized, examples.FEATURE_SPEC)


def read_split(examples_dirs: str | list[str], split: str) -> tf.data.Dataset:
    """Parsed Contract 1 examples of one split, from one or more ExampleGen outputs (spans)."""
    dirs = examples.as_list(examples_dirs)
    files = sorted(f for d in dirs for f in tf.io.gfile.glob(examples.shard_pattern(d, split)))
    if not files:
        raise FileNotFoundError(f"no {split} shards under {dirs}")
    return tf.data.TFRecordDataset(files, compression_type="GZIP").map(
        parse_examples, num_parallel_calls=tf.data.AUTOTUNE
    )


def to_model_input(
    example: dict[str, tf.Tensor], geometry: Geometry, max_label_length: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """(image float32 [H, W, 1], labels int32 [max_label_length]: id + 1, zero padded)."""
    image = preprocess_image(example["image"], geometry)
    ids = tf.cast(example["label_ids"], tf.int32) + 1
    labels = tf.pad(ids, [[0, max_label_length - tf.shape(ids)[0]]])
    labels.set_shape([max_label_length])
    return image, labels


def needed_width(example: dict[str, tf.Tensor], geometry: Geometry) -> tf.Tensor:
    """Columns an example needs: its image as drawn in the input (`place` pads on the right),
    and at least the frames its label needs, with a blank between repeated characters."""
    drawn = scaled_size(example["height"], example["width"], geometry)[1]
    frames = FRAME_PIXELS * (2 * tf.cast(example["label_length"], tf.int32) + 1)
    return tf.maximum(drawn, frames)


def batch_by_width(ds: tf.data.Dataset, widths: list[int], batch_size: int) -> tf.data.Dataset:
    """Batches of (images, labels) from (image, labels, needed width) elements, each batch of
    one width bucket and cut to its width: the columns right of every image's own are padding,
    which a batch of the input's full width would compute for nothing."""
    bounds = tf.constant(widths, tf.int32)

    def bucket(image: tf.Tensor, labels: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.searchsorted(bounds, width[None])[0], tf.int64)

    def batches(key: tf.Tensor, window: tf.data.Dataset) -> tf.data.Dataset:
        cut = bounds[key]
        return window.batch(batch_size).map(lambda images, labels, _: (images[:, :, :cut], labels))

    return ds.group_by_window(bucket, batches, window_size=batch_size)


def in_validation_holdout(example: dict[str, tf.Tensor], validation_percent: int) -> tf.Tensor:
    """A stable pure function of the image digest, like the train/eval split itself."""
    bucket = tf.strings.to_hash_bucket_fast(example["sha256"], 100)
    return bucket < validation_percent


def read_subset(
    examples_dirs: str | list[str], split: str, validation_percent: int = 0, subset: str = "all"
) -> tf.data.Dataset:
    """One split, or its `fit` / `validation` part (validation_percent % of it, by digest).

    The trainer picks its best epoch on the validation part of the train split, so the eval
    split stays untouched until the evaluator reads it.
    """
    ds = read_split(examples_dirs, split)
    if subset == "all":
        return ds
    if subset not in ("fit", "validation"):
        raise ValueError(f"subset is all, fit or validation, got {subset!r}")
    want_validation = subset == "validation"
    return ds.filter(lambda ex: in_validation_holdout(ex, validation_percent) == want_validation)


def make_dataset(
    examples_dirs: str | list[str],
    split: str,
    *,
    geometry: Geometry,
    max_label_length: int,
    batch_size: int,
    training: bool = False,
    augment: Callable[[tf.Tensor], tf.Tensor] | None = None,
    seed: int = 0,
    validation_percent: int = 0,
    subset: str = "all",
    width_buckets: int = 1,
) -> tf.data.Dataset:
    """Batches of (images [B, H, W, 1], labels [B, max_label_length]) for `model.fit`.

    Decoded images are cached in memory after the first epoch; `augment` (a function of a
    batch of images, see components/augmentation.py) runs on training batches only, after
    the cache, so every epoch sees fresh variations. With `width_buckets` > 1, training
    batches hold images of similar width and are cut to it (`batch_by_width`), so W varies.
    """
    bucketed = training and width_buckets > 1

    def model_input(example: dict[str, tf.Tensor]) -> tuple[tf.Tensor, ...]:
        image, labels = to_model_input(example, geometry, max_label_length)
        return (image, labels, needed_width(example, geometry)) if bucketed else (image, labels)

    ds = read_subset(examples_dirs, split, validation_percent, subset).map(
        model_input, num_parallel_calls=tf.data.AUTOTUNE
    )
    ds = ds.cache()
    if training:
        ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    if bucketed:
        ds = batch_by_width(ds, geometry.bucket_widths(width_buckets), batch_size)
    else:
        ds = ds.batch(batch_size)
    if training and augment is not None:
        ds = ds.map(lambda images, labels: (augment(images), labels), tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fit_and_validation(
    examples_dirs: str | list[str],
    *,
    geometry: Geometry,
    max_label_length: int,
    batch_size: int,
    validation_percent: int,
    augment: Callable[[tf.Tensor], tf.Tensor] | None = None,
    seed: int = 0,
    width_buckets: int = 1,
) -> tuple[tf.data.Dataset, tf.data.Dataset, dict[str, int]]:
    """The trainer's and the tuner's input: the train split minus its validation holdout
    (shuffled, augmented, batched by width when `width_buckets` > 1), the holdout (at the
    input's full width), and how many examples each holds."""

    def dataset(subset: str, training: bool) -> tf.data.Dataset:
        return make_dataset(
            examples_dirs,
            examples.TRAIN,
            geometry=geometry,
            max_label_length=max_label_length,
            batch_size=batch_size,
            training=training,
            augment=augment,
            seed=seed,
            validation_percent=validation_percent,
            subset=subset,
            width_buckets=width_buckets,
        )

    counts = {
        subset: int(
            read_subset(examples_dirs, examples.TRAIN, validation_percent, subset).reduce(
                tf.constant(0, tf.int64), lambda count, _: count + 1
            )
        )
        for subset in ("fit", "validation")
    }
    if not counts["fit"] or not counts["validation"]:
        raise ValueError(f"need training and validation examples, have {counts} in {examples_dirs}")
    return dataset("fit", training=True), dataset("validation", training=False), counts

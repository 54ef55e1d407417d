"""Training speed: milliseconds per step of the `full` network, by CTC loss implementation.

Every zoo style stops on the `full` profile's 14-minute budget, so a faster step is more
epochs for the same minutes. This times `model.fit` steps (batch 16, the `full` recipe's) on
random images and labels with the loss the trainer compiles (`components.model.ctc_loss`,
TensorFlow's CTCLoss kernel) against `keras.losses.CTC` (the same loss computed with dense
labels: a loop of small ops per frame), each with and without the reading metrics on
training batches, alternating the variants for `--rounds` rounds. It also prints the
largest difference of the two losses' gradients on one batch.

    flock /tmp/captcha-bench.lock .venv/bin/python benchmarks/train_step.py
    flock /tmp/captcha-bench.lock .venv/bin/python benchmarks/train_step.py --width 384
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import statistics
import sys
import time

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from components.model import (  # noqa: E402
    CharacterErrorRate,
    SequenceAccuracy,
    build_model,
    ctc_loss,
)
from pipeline.configs import PROFILES  # noqa: E402

LOSSES = {"CTCLoss kernel (ctc_loss)": ctc_loss, "dense (keras.losses.CTC)": keras.losses.CTC()}
CLASSES = 40  # characters, about a zoo style's
MAX_LENGTH = 6
BATCHES = 40  # distinct batches, cycled
STEPS = 30  # per timed epoch


def random_data(height: int, width: int, batch_size: int, seed: int) -> tf.data.Dataset:
    """Random images and labels of 4-6 characters (ids + 1, zero padded), cycled."""
    rng = np.random.default_rng(seed)
    count = batch_size * BATCHES
    images = rng.random((count, height, width, 1), dtype=np.float32)
    labels = np.zeros((count, MAX_LENGTH), np.int32)
    for row, length in enumerate(rng.integers(4, MAX_LENGTH + 1, count)):
        labels[row, :length] = rng.integers(1, CLASSES + 1, length)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).cache().repeat()


def gradient_difference(model: keras.Model, data: tf.data.Dataset) -> float:
    """Largest difference of the two losses' gradients with respect to one batch's logits."""
    images, labels = next(iter(data))
    logits = model(images)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        losses = [keras.ops.mean(loss(labels, logits)) for loss in LOSSES.values()]
    first, second = (tape.gradient(loss, logits) for loss in losses)
    return float(tf.reduce_max(tf.abs(first - second)))


def ms_per_step(
    model_config, data: tf.data.Dataset, loss, with_metrics: bool, epochs: int = 4
) -> float:
    """Median milliseconds per step over the timed epochs (the first, with tracing, dropped)."""
    keras.utils.set_random_seed(0)
    model = build_model(model_config, CLASSES)
    metrics = [SequenceAccuracy(), CharacterErrorRate()] if with_metrics else []
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=metrics)
    seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds.append(time.perf_counter() - self.start)

    model.fit(data, steps_per_epoch=STEPS, epochs=epochs, verbose=0, callbacks=[Timer()])
    return statistics.median(seconds[1:]) / STEPS * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=48, help="the shipped model's height")
    parser.add_argument("--width", type=int, default=192, help="48 CTC frames")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    profile = PROFILES["full"]
    model_config = dataclasses.replace(
        profile.model, image_height=args.height, image_width=args.width
    )
    data = random_data(args.height, args.width, profile.train.batch_size, seed=0)
    difference = gradient_difference(build_model(model_config, CLASSES), data)
    print(f"largest gradient difference between the two losses: {difference:.1e}")

    times: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for name, loss in LOSSES.items():
            for with_metrics in (True, False):
                ms = ms_per_step(model_config, data, loss, with_metrics)
                times.setdefault((name, with_metrics), []).append(ms)
                print(f"{name}, metrics {'on' if with_metrics else 'off'}: {ms:.1f} ms", flush=True)

    frames = model_config.time_steps
    print(f"\n| CTC loss | reading metrics | ms per step ({frames} frames), by round |")
    print("|---|---|---|")
    for (name, with_metrics), values in times.items():
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {'on' if with_metrics else 'off'} | {rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Trainer: ExampleGen shards -> a trained CNN + BiLSTM + CTC model folder.

The model folder (`model.keras`, `vocab.txt`, `model_config.json`, `train_config.json`,
`history.csv`, `logs/`, `checkpoints/`, `train_summary.json`) is written under a temporary
name and renamed into place at the end, so a crash never leaves a folder that looks trained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import posixpath
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf

from components import examples
from components.augmentation import NO_AUGMENTATION, AugmentConfig, make_augment
from components.dataset import fit_and_validation
from components.model import (
    KERAS_EXAMPLE,
    LOGITS_LAYER,
    ModelConfig,
    build_model,
    compile_model,
)
from components.progress import keras_verbose
from components.synth import SynthConfig

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
MODEL_CONFIG_FILE = "model_config.json"
TRAIN_CONFIG_FILE = "train_config.json"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "train_summary.json"
# Whole-captcha accuracy first; among equal accuracies the lower CTC loss wins.
SELECTION_SCORE = "val_score"
MONITOR_MODES = {SELECTION_SCORE: "max", "val_sequence_accuracy": "max", "val_loss": "min"}
# cosine: warmup + cosine decay over `epochs`; cosine-time: the same over the `max_minutes`
# budget (the demo anneals fully on a fast or a slow machine); plateau: halve on a val_loss
# plateau.
LR_SCHEDULES = ("constant", "cosine", "cosine-time", "plateau")
# cosine-time holds the peak rate while the model reads nothing (the CTC plateau, whose
# length varies from run to run), at most for this share of the budget, then decays.
MAX_HOLD_FRACTION = 0.6
LEARNING_STARTED = 0.05  # validation whole-captcha accuracy that ends the plateau


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (the model's own hyperparameters live in ModelConfig)."""

    epochs: int = 100  # upper bound; early stopping and `max_minutes` may end sooner
    batch_size: int = 16
    monitor: str = SELECTION_SCORE
    # CTC models read nothing for the first epochs (the blank plateau): wait that long.
    patience: int = 20
    start_from_epoch: int = 0
    restore_best: bool = True  # False: keep the last epoch's weights (fixed-epoch recipes)
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    min_learning_rate: float = 1e-5
    augment: AugmentConfig = NO_AUGMENTATION
    validation_percent: int = 10  # of the train split, held out to pick the best epoch
    seed: int = 0
    max_minutes: float | None = None  # stop before an epoch that would end past this
    warm_start: str | None = None  # an earlier model folder; its vocab must be a prefix
    verbose: int | str = "auto"  # Keras progress output; "auto": components.progress
    measure_input_pipeline: bool = True

    def __post_init__(self) -> None:
        if self.monitor not in MONITOR_MODES:
            raise ValueError(f"monitor is one of {sorted(MONITOR_MODES)}, got {self.monitor!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule is one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_schedule == "cosine-time" and not self.max_minutes:
            raise ValueError("lr_schedule cosine-time anneals over max_minutes: set it")
        if not 0 < self.validation_percent < 100:
            raise ValueError(f"validation_percent must be in 1..99, got {self.validation_percent}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        if isinstance(values.get("augment"), dict):
            values["augment"] = AugmentConfig(**values["augment"])
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Profile:
    model: ModelConfig
    train: TrainConfig


# The Keras example's recipe: its architecture, batch 16, Adam 1e-3, early stopping with
# patience 10 on val_loss (which can stop inside the CTC plateau and read nothing).
KERAS_EXAMPLE_TRAINING = TrainConfig(
    epochs=100, batch_size=16, monitor="val_loss", patience=10, lr_schedule="constant"
)

PROFILES: dict[str, Profile] = {
    # The demo: `captcha-ocr run` on DEMO_SYNTH, 5 minutes of training on 2 cores. Images at
    # 128x32 cost 2.5x less than at 200x50; 12 epochs on 7,219 of them read 95.8 % of 1,000
    # fresh synthetic captchas, 5 minutes on a busy machine 94 % (benchmarks/README.md).
    "quick": Profile(
        model=ModelConfig(image_height=32, image_width=128, conv_filters=(16, 32, 64),
                          batch_norm=True, dense_units=64, lstm_units=(96,), dropout=0.1,
                          lstm_dropout=0.1, learning_rate=3e-3),
        train=TrainConfig(epochs=200, batch_size=32, patience=200, lr_schedule="cosine-time",
                          warmup_epochs=1, max_minutes=5.0),
    ),
    # The best model: batch norm, a third conv block, warmup + cosine LR, augmentation. Thin
    # early convs (16, 32 filters) where the activations are largest and one BiLSTM read the
    # real captchas as well as conv 32-64-64 + BiLSTM 128-64 did, at 2.5x its serving speed
    # and twice its training speed (benchmarks/README.md).
    "full": Profile(
        model=ModelConfig(conv_filters=(16, 32, 64), batch_norm=True, dense_units=128,
                          lstm_units=(128,), dropout=0.2, lstm_dropout=0.25,
                          learning_rate=2e-3),
        train=TrainConfig(epochs=60, batch_size=16, patience=20, lr_schedule="cosine",
                          warmup_epochs=2, augment=AugmentConfig(), max_minutes=14.0),
    ),
    "keras-example": Profile(model=KERAS_EXAMPLE, train=KERAS_EXAMPLE_TRAINING),
}

# The synthetic captchas `captcha-ocr run` makes when given no images: 4-6 characters at
# 200x50 like the synth defaults, from the 31 symbols left when the look-alikes 0/o and
# 1/l/i are dropped (as real captcha sets do; they were the quick model's most frequent
# confusions). 8,000 images: 6,400 to train on (80 %), 1,600 to evaluate; generating and
# ingesting them takes about 1 minute each on 2 cores.
DEMO_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
DEMO_SYNTH = SynthConfig(count=8000, seed=0, alphabet=DEMO_ALPHABET, min_length=4, max_length=6)


def read_metadata(examples_dir: str) -> dict[str, Any]:
    with tf.io.gfile.GFile(posixpath.join(examples_dir, examples.METADATA_FILE)) as f:
        return json.load(f)


def combined_vocab(examples_dirs: Sequence[str]) -> list[str]:
    """The vocab of the newest span; every older span's vocab must be a prefix of it."""
    vocabs = [examples.read_vocab(posixpath.join(d, examples.VOCAB_FILE)) for d in examples_dirs]
    newest = max(vocabs, key=len)
    for directory, vocab in zip(examples_dirs, vocabs, strict=False):
        if newest[: len(vocab)] != vocab:
            raise ValueError(f"vocab of {directory} is not a prefix of the newest vocab {newest}")
    return newest


@contextlib.contextmanager
def atomic_output_dir(output_dir: str) -> Iterator[str]:
    """Yields a temporary sibling folder that replaces `output_dir` only if the block succeeds."""
    output_dir = output_dir.rstrip("/")
    temp_dir = f"{output_dir}.tmp-{uuid.uuid4().hex[:8]}"
    tf.io.gfile.makedirs(temp_dir)
    try:
        yield temp_dir
    except BaseException:
        tf.io.gfile.rmtree(temp_dir)
        raise
    if tf.io.gfile.exists(output_dir):
        old_dir = f"{output_dir}.old-{uuid.uuid4().hex[:8]}"
        tf.io.gfile.rename(output_dir, old_dir)
        tf.io.gfile.rename(temp_dir, output_dir)
        tf.io.gfile.rmtree(old_dir)
    else:
        tf.io.gfile.rename(temp_dir, output_dir)


def load_trained(model_dir: str) -> tuple[keras.Model, list[str], ModelConfig]:
    """(compiled Keras model, vocab, ModelConfig) of a folder written by `run_train`."""
    model_path = posixpath.join(model_dir, MODEL_FILE)
    if not tf.io.gfile.exists(model_path):
        raise FileNotFoundError(f"{model_dir} is not a trained model folder (no {MODEL_FILE})")
    model = keras.models.load_model(model_path)
    vocab = examples.read_vocab(posixpath.join(model_dir, examples.VOCAB_FILE))
    config = ModelConfig.from_json(posixpath.join(model_dir, MODEL_CONFIG_FILE))
    return model, vocab, config


def warm_start(model: keras.Model, vocab: Sequence[str], earlier_model_dir: str) -> None:
    """Copy an earlier model's weights; new characters get fresh output rows.

    The earlier vocab must be a prefix of `vocab` (ExampleGen only appends characters), so
    class i of the old output layer is class i of the new one.
    """
    old_model, old_vocab, _ = load_trained(earlier_model_dir)
    if list(vocab[: len(old_vocab)]) != old_vocab:
        raise ValueError(
            f"cannot warm-start: the earlier vocab {old_vocab} is not a prefix of {list(vocab)}"
        )
    old_layers = {layer.name: layer for layer in old_model.layers}
    for layer in model.layers:
        if not layer.weights:
            continue
        old = old_layers.get(layer.name)
        if old is None or len(old.weights) != len(layer.weights):
            raise ValueError(f"cannot warm-start: layer {layer.name} differs from {earlier_model_dir}")
        new_values = []
        for new_weight, old_weight in zip(layer.get_weights(), old.get_weights(), strict=False):
            if layer.name == LOGITS_LAYER and new_weight.shape[:-1] == old_weight.shape[:-1]:
                new_weight[..., : old_weight.shape[-1]] = old_weight  # old classes keep theirs
            elif new_weight.shape == old_weight.shape:
                new_weight = old_weight
            else:
                raise ValueError(
                    f"cannot warm-start: layer {layer.name} has shape {new_weight.shape} here "
                    f"and {old_weight.shape} in {earlier_model_dir} (use the same ModelConfig)"
                )
            new_values.append(new_weight)
        layer.set_weights(new_values)
    log.info("warm-started from %s (%d -> %d characters)", earlier_model_dir, len(old_vocab),
             len(vocab))


class SelectionScore(keras.callbacks.Callback):
    """Adds `val_score` (accuracy, CTC loss as tie-break) and the learning rate to the logs."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if "val_sequence_accuracy" in logs:
            logs[SELECTION_SCORE] = logs["val_sequence_accuracy"] - 1e-4 * min(logs["val_loss"], 100.0)


class _TimeBudget(keras.callbacks.Callback):
    """Ends training at the time budget (best weights are still restored).

    With `anneal`, the learning rate follows the budget itself: warmup, the peak held until
    the model leaves the CTC plateau (validation accuracy above LEARNING_STARTED, or
    MAX_HOLD_FRACTION of the time), then cosine decay to the end, so the model is annealed
    when the time is up however fast the machine is and however long the plateau lasts.
    Without it, training stops before an epoch that would end after the budget.
    """

    def __init__(self, max_minutes: float, anneal: bool = False, peak: float = 0.0,
                 floor: float = 0.0, warmup_fraction: float = 0.0) -> None:
        super().__init__()
        self.budget = max_minutes * 60.0
        self.anneal, self.peak, self.floor, self.warmup = anneal, peak, floor, warmup_fraction
        self.stopped_epoch: int | None = None
        self.decay_from: float | None = None  # share of the budget where the decay began

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter()
        self.epoch_start = self.start

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        self.epoch_start = time.perf_counter()

    def fraction(self) -> float:
        return (time.perf_counter() - self.start) / self.budget

    def learning_rate(self, fraction: float) -> float:
        if fraction < self.warmup:
            return self.peak * (0.1 + 0.9 * fraction / self.warmup)
        if self.decay_from is None and fraction >= MAX_HOLD_FRACTION:
            self.decay_from = fraction
        if self.decay_from is None:
            return self.peak
        progress = min(1.0, (fraction - self.decay_from) / max(1e-9, 1.0 - self.decay_from))
        return self.floor + 0.5 * (self.peak - self.floor) * (1.0 + math.cos(math.pi * progress))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if not self.anneal:
            return
        fraction = self.fraction()
        if fraction >= 1.0:
            self.stopped_epoch = self.epoch
            self.model.stop_training = True
        self.model.optimizer.learning_rate.assign(self.learning_rate(fraction))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        learning = (logs or {}).get("val_sequence_accuracy", 0.0) > LEARNING_STARTED
        if self.anneal and self.decay_from is None and learning:
            self.decay_from = max(self.warmup, self.fraction())
        if not self.anneal and now - self.start + (now - self.epoch_start) > self.budget:
            self.stopped_epoch = epoch
            self.model.stop_training = True
        if self.stopped_epoch is not None:
            log.info("time budget of %.1f min reached in epoch %d", self.budget / 60, epoch + 1)


class _EpochTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs: dict | None = None) -> None:
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def _learning_rate(model_config: ModelConfig, config: TrainConfig, steps_per_epoch: int):
    if config.lr_schedule != "cosine":
        return model_config.learning_rate
    warmup_steps = config.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=model_config.learning_rate / 10 if warmup_steps else model_config.learning_rate,
        decay_steps=max(1, (config.epochs - config.warmup_epochs) * steps_per_epoch),
        alpha=config.min_learning_rate / model_config.learning_rate,
        warmup_target=model_config.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def _callbacks(
    config: TrainConfig, model_config: ModelConfig, out_dir: str
) -> list[keras.callbacks.Callback]:
    mode = MONITOR_MODES[config.monitor]
    checkpoints = posixpath.join(out_dir, "checkpoints")
    tf.io.gfile.makedirs(checkpoints)
    callbacks: list[keras.callbacks.Callback] = [
        SelectionScore(),
        keras.callbacks.EarlyStopping(
            monitor=config.monitor, mode=mode, patience=config.patience,
            start_from_epoch=config.start_from_epoch, restore_best_weights=config.restore_best,
            verbose=1,
        ),
        keras.callbacks.ModelCheckpoint(
            posixpath.join(checkpoints, "best.weights.h5"), monitor=config.monitor, mode=mode,
            save_best_only=True, save_weights_only=True,
        ),
        keras.callbacks.ModelCheckpoint(
            posixpath.join(checkpoints, "last.weights.h5"), save_weights_only=True
        ),
        keras.callbacks.CSVLogger(posixpath.join(out_dir, HISTORY_FILE)),
        keras.callbacks.TensorBoard(posixpath.join(out_dir, "logs"), profile_batch=0),
    ]
    if config.lr_schedule == "plateau":
        callbacks.insert(1, keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=5, min_lr=config.min_learning_rate, verbose=1,
        ))
    if config.max_minutes:
        # cosine-time cannot know epochs in advance: any warmup is the first 5 % of the budget.
        warmup_fraction = 0.05 if config.warmup_epochs else 0.0
        callbacks.append(_TimeBudget(
            config.max_minutes, anneal=config.lr_schedule == "cosine-time",
            peak=model_config.learning_rate, floor=config.min_learning_rate,
            warmup_fraction=warmup_fraction,
        ))
    return callbacks


def _seconds_per_pass(ds: tf.data.Dataset) -> float:
    start = time.perf_counter()
    for _ in ds:
        pass
    return time.perf_counter() - start


def run_train(
    examples_dirs: str | list[str],
    output_dir: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> dict[str, Any]:
    """Train on the train split (minus a validation holdout); returns `train_summary.json`."""
    dirs = [examples_dirs] if isinstance(examples_dirs, str) else list(examples_dirs)
    vocab = combined_vocab(dirs)
    max_label_length = max(read_metadata(d)["max_label_length"] for d in dirs)
    model_config.check_label_length(max_label_length)
    keras.utils.set_random_seed(train_config.seed)

    fit_ds, validation_ds, counts = fit_and_validation(
        dirs,
        image_height=model_config.image_height, image_width=model_config.image_width,
        max_label_length=max_label_length, batch_size=train_config.batch_size,
        validation_percent=train_config.validation_percent,
        augment=make_augment(train_config.augment), seed=train_config.seed,
    )
    steps_per_epoch = -(-counts["fit"] // train_config.batch_size)
    log.info("training on %d examples, validating on %d, %d characters, labels up to %d",
             counts["fit"], counts["validation"], len(vocab), max_label_length)

    model = build_model(model_config, len(vocab))
    if train_config.warm_start:
        warm_start(model, vocab, train_config.warm_start)
    compile_model(model, _learning_rate(model_config, train_config, steps_per_epoch))

    with atomic_output_dir(output_dir) as out:
        callbacks = _callbacks(train_config, model_config, out)
        epoch_times = _EpochTimes()
        start = time.perf_counter()
        history = model.fit(
            fit_ds, validation_data=validation_ds, epochs=train_config.epochs,
            callbacks=[*callbacks, epoch_times], verbose=keras_verbose(train_config.verbose),
        )
        train_seconds = time.perf_counter() - start
        early_stopping = next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping))
        best_epoch = early_stopping.best_epoch if train_config.restore_best else len(history.epoch) - 1
        summary: dict[str, Any] = {
            "model_dir": output_dir,
            "examples_dirs": dirs,
            "vocab_size": len(vocab),
            "max_label_length": max_label_length,
            "examples": counts,
            "epochs_run": len(history.epoch),
            "best_epoch": best_epoch + 1,  # the epoch whose weights were kept
            "best": {k: float(v[best_epoch]) for k, v in history.history.items()},
            "train_seconds": round(train_seconds, 1),
            "seconds_per_epoch": epoch_times.seconds,
            "stopped_by_time_budget": any(
                isinstance(c, _TimeBudget) and c.stopped_epoch is not None for c in callbacks
            ),
        }
        if train_config.measure_input_pipeline:
            # One pass of the cached, augmented input alone vs. a training epoch: the model
            # is starved only if the first approaches the second.
            input_seconds = _seconds_per_pass(fit_ds)
            summary["input_pipeline"] = {
                "seconds_per_epoch": round(input_seconds, 2),
                "images_per_second": round(counts["fit"] / max(input_seconds, 1e-9)),
                "train_seconds_per_epoch_median": round(sorted(epoch_times.seconds)[len(epoch_times.seconds) // 2], 2),
            }
        model.save(posixpath.join(out, MODEL_FILE))
        examples.write_vocab(posixpath.join(out, examples.VOCAB_FILE), vocab)
        model_config.to_json(posixpath.join(out, MODEL_CONFIG_FILE))
        with tf.io.gfile.GFile(posixpath.join(out, TRAIN_CONFIG_FILE), "w") as f:
            json.dump(train_config.to_dict(), f, indent=2)
        with tf.io.gfile.GFile(posixpath.join(out, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=2)
    log.info("model written to %s (best epoch %d of %d, %.0f s)", output_dir, best_epoch + 1,
             summary["epochs_run"], train_seconds)
    return summary

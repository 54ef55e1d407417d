"""Trainer: ExampleGen shards -> a trained CNN + BiLSTM + CTC model folder.

The model folder (`model.keras`, `vocab.txt`, `model_config.json`, `train_config.json`,
`history.csv`, `logs/`, `checkpoints/`, `train_summary.json`, `decoding.json`: the answer
lengths seen and the confidence calibrated on the validation holdout) is written under a temporary
name and renamed into place at the end, so a crash never leaves a folder that looks trained.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import posixpath
import time
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from components import artifact_io, examples
from components.augmentation import NO_AUGMENTATION, AugmentConfig, make_augment
from components.dataset import fit_and_validation
from components.decoding import fit_decoding, save_decoding
from components.model import BLANK, LOGITS_LAYER, ModelConfig, build_model, compile_model
from components.progress import keras_verbose
from components.schedule import LEARNING_STARTED, HoldThenCosine, StopAtDeadline
from components.settings import setting

log = logging.getLogger(__name__)

# This component's folder under the pipeline root (pipeline/runner.py).
PIPELINE_FOLDER = "Trainer"

MODEL_FILE = "model.keras"
MODEL_CONFIG_FILE = "model_config.json"
TRAIN_CONFIG_FILE = "train_config.json"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "train_summary.json"
# Whole-captcha accuracy first; among equal accuracies the lower CTC loss wins.
SELECTION_SCORE = "val_score"
MONITOR_MODES = {SELECTION_SCORE: "max", "val_sequence_accuracy": "max", "val_loss": "min"}
# constant; cosine: warmup + cosine decay over `epochs` (fixed recipes); plateau: halve on a
# val_loss plateau; hold-cosine: warmup, the peak held through the CTC plateau, then a cosine
# measured in steps and time (components/schedule.py), the profiles' schedule.
LR_SCHEDULES = ("constant", "cosine", "plateau", "hold-cosine")
# hold-cosine gives up on an attempt that reads nothing after this share of the time budget.
MAX_HOLD_FRACTION = 0.4
# Where training starts (components/head_start.py): auto resolves to one of the other two.
STARTS = ("auto", "pretrained", "scratch")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (the model's own hyperparameters live in ModelConfig)."""

    epochs: int = setting(
        100, "at most this many epochs (early stopping or --max-minutes may end sooner)"
    )
    batch_size: int = setting(16, "images per training step")
    monitor: str = SELECTION_SCORE
    # CTC models read nothing for the first epochs (the blank plateau): wait that long.
    patience: int = 20
    start_from_epoch: int = 0
    restore_best: bool = True  # False: keep the last epoch's weights (fixed-epoch recipes)
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    # hold-cosine: the decay, once the model reads, lasts this many epochs but at least
    # min_decay_steps steps (None: until max_minutes), and never past max_minutes.
    decay_epochs: int | None = None
    min_decay_steps: int = 0
    # hold-cosine: an attempt still reading nothing after this many epochs but at least
    # min_plateau_steps steps (or MAX_HOLD_FRACTION of max_minutes), its validation CER not
    # fallen either, starts again with another seed and half the rate, at most max_restarts.
    # The plateau lasts steps, not epochs: 40 epochs of 300 captchas are 600 steps.
    plateau_epochs: int | None = None
    min_plateau_steps: int = 0
    max_restarts: int = 0
    min_learning_rate: float = 1e-5
    augment: AugmentConfig = setting(
        NO_AUGMENTATION,
        "train without augmentation (for tens of thousands of captchas, where "
        "it holds the model back more than it helps)",
        flag="--no-augment",
        const=NO_AUGMENTATION,
    )
    validation_percent: int = 10  # of the train split, held out to pick the best epoch
    # Training batches grouped into this many widths and cut to them (dataset.batch_by_width):
    # for images of many widths, where most of a full-width batch would be padding.
    width_buckets: int = 1
    seed: int = setting(0, "random seed of weights, shuffling and augmentation")
    max_minutes: float | None = setting(None, "training time budget in minutes", metavar="MINUTES")
    start: str = setting(
        "auto",
        "pretrained: from the model shipped with the package (or --warm-start's), its output "
        "rows mapped by character; scratch: fresh weights; auto: pretrained when the shipped "
        "model fits the recipe's network and height, else scratch (train_config.json records "
        "the start used)",
        choices=STARTS,
    )
    warm_start: str | None = None  # the model folder to start from (start "pretrained")
    # A start from a model that already reads: the peak rate is the recipe's times this. The
    # rate made for leaving the blank plateau undoes what the weights knew on a few hundred
    # captchas; the decay keeps its length (a shorter one underfit a look the model could
    # not read, benchmarks/README.md).
    fine_tune_rate_scale: float = 1.0
    verbose: int | str = "auto"  # Keras progress output; "auto": components.progress
    measure_input_pipeline: bool = True

    def __post_init__(self) -> None:
        if self.monitor not in MONITOR_MODES:
            raise ValueError(f"monitor is one of {sorted(MONITOR_MODES)}, got {self.monitor!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule is one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_schedule == "hold-cosine" and self.decay_epochs is None and not self.max_minutes:
            raise ValueError("hold-cosine decays over decay_epochs or max_minutes: set one")
        if self.width_buckets < 1:
            raise ValueError(f"width_buckets must be >= 1, got {self.width_buckets}")
        if not 0 < self.validation_percent < 100:
            raise ValueError(f"validation_percent must be in 1..99, got {self.validation_percent}")
        if self.start not in STARTS:
            raise ValueError(f"start is one of {STARTS}, got {self.start!r}")
        if self.start == "scratch" and self.warm_start:
            raise ValueError(f"start scratch contradicts warm_start {self.warm_start!r}")

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


def load_trained(model_dir: str) -> tuple[keras.Model, list[str], ModelConfig]:
    """(Keras model, vocab, ModelConfig) of a folder written by `run_train` (compiled) or
    `captcha-ocr pretrain` (uncompiled: weights for a head start or inference)."""
    model_path = posixpath.join(model_dir, MODEL_FILE)
    if not tf.io.gfile.exists(model_path):
        raise FileNotFoundError(f"{model_dir} is not a trained model folder (no {MODEL_FILE})")
    model = keras.models.load_model(model_path)
    vocab = examples.read_vocab(posixpath.join(model_dir, examples.VOCAB_FILE))
    config = ModelConfig.from_json(posixpath.join(model_dir, MODEL_CONFIG_FILE))
    return model, vocab, config


def class_rows(old_vocab: Sequence[str], vocab: Sequence[str]) -> list[int | None]:
    """For each output row over `vocab`, the row over `old_vocab` of the same class.

    Row 0 is the CTC blank in both; a character `old_vocab` lacks has no row (None).
    """
    old_rows = {char: row for row, char in enumerate(old_vocab, start=BLANK + 1)}
    return [BLANK] + [old_rows.get(char) for char in vocab]


def warm_start(model: keras.Model, vocab: Sequence[str], earlier_model_dir: str) -> dict[str, Any]:
    """Copy an earlier model's weights; output rows go by character, new characters fresh.

    Every other layer must have the same shapes: the same network at the same input height
    (no weight depends on the width). Retraining's earlier vocab is a prefix of the new one,
    a shipped model's a different set: both are the same mapping by character. Returns what
    was mapped, for the training summary.
    """
    old_model, old_vocab, _ = load_trained(earlier_model_dir)
    rows = class_rows(old_vocab, vocab)
    new_rows = [new for new, old in enumerate(rows) if old is not None]
    old_rows = [old for old in rows if old is not None]
    old_layers = {layer.name: layer for layer in old_model.layers}
    for layer in model.layers:
        if not layer.weights:
            continue
        old = old_layers.get(layer.name)
        if old is None or len(old.weights) != len(layer.weights):
            raise ValueError(
                f"cannot warm-start: layer {layer.name} differs from {earlier_model_dir}"
            )
        new_values = []
        for new_weight, old_weight in zip(layer.get_weights(), old.get_weights(), strict=False):
            if layer.name == LOGITS_LAYER and new_weight.shape[:-1] == old_weight.shape[:-1]:
                new_weight[..., new_rows] = old_weight[..., old_rows]  # the blank's row too
            elif new_weight.shape == old_weight.shape:
                new_weight = old_weight
            else:
                raise ValueError(
                    f"cannot warm-start: layer {layer.name} has shape {new_weight.shape} here "
                    f"and {old_weight.shape} in {earlier_model_dir} (use the same ModelConfig)"
                )
            new_values.append(new_weight)
        layer.set_weights(new_values)
    fresh = "".join(char for char, row in zip(vocab, rows[1:], strict=True) if row is None)
    log.info(
        "warm-started from %s: %d of %d characters mapped by character%s",
        earlier_model_dir,
        len(vocab) - len(fresh),
        len(vocab),
        f", fresh rows for {fresh!r}" if fresh else "",
    )
    return {
        "from": earlier_model_dir,
        "characters_mapped": len(vocab) - len(fresh),
        "characters_fresh": fresh,
    }


class SelectionScore(keras.callbacks.Callback):
    """Adds `val_score` (accuracy, CTC loss as tie-break) and the learning rate to the logs."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        if "val_sequence_accuracy" in logs:
            logs[SELECTION_SCORE] = logs["val_sequence_accuracy"] - 1e-4 * min(
                logs["val_loss"], 100.0
            )


class _EpochTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs: dict | None = None) -> None:
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def _learning_rate(learning_rate: float, config: TrainConfig, steps_per_epoch: int):
    """The optimizer's rate: a Keras schedule for `cosine`; a float the callbacks may set."""
    if config.lr_schedule != "cosine":
        return learning_rate
    warmup_steps = config.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate / 10 if warmup_steps else learning_rate,
        decay_steps=max(1, (config.epochs - config.warmup_epochs) * steps_per_epoch),
        alpha=config.min_learning_rate / learning_rate,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def plateau_epochs(config: TrainConfig, steps_per_epoch: int) -> int | None:
    """The epochs an attempt may read nothing before it is restarted (None: no limit)."""
    if config.plateau_epochs is None:
        return None
    return max(config.plateau_epochs, math.ceil(config.min_plateau_steps / steps_per_epoch))


def _schedule(
    config: TrainConfig,
    learning_rate: float,
    steps_per_epoch: int,
    deadline: float | None,
    last_attempt: bool,
) -> keras.callbacks.Callback:
    """The callback that owns the learning rate and the end of training for this schedule."""
    if config.lr_schedule == "hold-cosine":
        decay_steps = None
        if config.decay_epochs is not None:
            decay_steps = max(config.decay_epochs * steps_per_epoch, config.min_decay_steps)
        budget = None if deadline is None else deadline - time.time()
        return HoldThenCosine(
            peak=learning_rate,
            floor=config.min_learning_rate,
            warmup_steps=config.warmup_epochs * steps_per_epoch,
            decay_steps=decay_steps,
            deadline=deadline,
            plateau_epochs=plateau_epochs(config, steps_per_epoch),
            plateau_seconds=None if budget is None else MAX_HOLD_FRACTION * budget,
            last_attempt=last_attempt,
        )
    if config.lr_schedule == "plateau":
        return keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            factor=0.5,
            patience=5,
            min_lr=config.min_learning_rate,
            verbose=1,
        )
    return StopAtDeadline(deadline) if deadline is not None else keras.callbacks.Callback()


def _selection_callbacks(config: TrainConfig) -> list[keras.callbacks.Callback]:
    """`val_score` in the logs and the best epoch's weights kept: every fit, trial or not."""
    # hold-cosine ends training itself, after the plateau: early stopping only restores.
    patience = config.epochs if config.lr_schedule == "hold-cosine" else config.patience
    return [
        SelectionScore(),
        keras.callbacks.EarlyStopping(
            monitor=config.monitor,
            mode=MONITOR_MODES[config.monitor],
            patience=patience,
            start_from_epoch=config.start_from_epoch,
            restore_best_weights=config.restore_best,
            verbose=1,
        ),
    ]


def _artifact_callbacks(config: TrainConfig, out_dir: str) -> list[keras.callbacks.Callback]:
    """What a model folder keeps of its training: checkpoints, history.csv, TensorBoard."""
    checkpoints = posixpath.join(out_dir, "checkpoints")
    tf.io.gfile.makedirs(checkpoints)
    return [
        keras.callbacks.ModelCheckpoint(
            posixpath.join(checkpoints, "best.weights.h5"),
            monitor=config.monitor,
            mode=MONITOR_MODES[config.monitor],
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.ModelCheckpoint(
            posixpath.join(checkpoints, "last.weights.h5"), save_weights_only=True
        ),
        keras.callbacks.CSVLogger(posixpath.join(out_dir, HISTORY_FILE)),
        keras.callbacks.TensorBoard(posixpath.join(out_dir, "logs"), profile_batch=0),
    ]


@dataclasses.dataclass
class Fitted:
    """What `fit_model` returns: the model (best epoch's weights) and how training went."""

    model: keras.Model
    history: keras.callbacks.History
    attempts: list[dict[str, Any]]
    best_epoch: int  # 0-based, in `history`
    epoch_seconds: list[float]
    warm_started: dict[str, Any] | None  # what `warm_start` mapped, when it ran


def in_memory(batches: tf.data.Dataset) -> tf.data.Dataset:
    """The same batches, from tensors held in memory (the validation holdout, which is small).

    Keras makes a new iterator over the validation data every epoch and drops the last one;
    dropping an iterator over a pipeline with background threads (the parallel map, the
    prefetch) stalled `fit` for up to 10 seconds, an epoch's work, in a third to a half of
    the epochs (benchmarks/README.md, "train_step.py"). One over tensors has no threads to
    wait for.
    """
    images, labels = zip(*batches, strict=True)
    batch_size = int(tf.shape(images[0])[0])  # every batch but the last is full
    return tf.data.Dataset.from_tensor_slices((tf.concat(images, 0), tf.concat(labels, 0))).batch(
        batch_size
    )


def fit_model(
    model_config: ModelConfig,
    vocab: Sequence[str],
    fit_ds: tf.data.Dataset,
    validation_ds: tf.data.Dataset,
    steps_per_epoch: int,
    train_config: TrainConfig,
    deadline: float | None,
    out_dir: str | None = None,
    stop_when_stalled: bool = False,
) -> Fitted:
    """The one training loop, for the Trainer and for every Tuner trial alike.

    Builds the model, trains it with the recipe's schedule and selection score, and restarts
    an attempt whose model still reads nothing when the plateau limit is reached, with the
    next seed and half the learning rate, at most `max_restarts` times, before `deadline`.
    `out_dir` (the Trainer's) gets checkpoints, history.csv and TensorBoard logs.
    `stop_when_stalled` (a Tuner trial) ends the last attempt too at the plateau limit,
    instead of decaying the rate of a model that reads nothing.
    """
    start = time.time()
    attempts: list[dict[str, Any]] = []
    warm_started = None
    validation_ds = in_memory(validation_ds)
    for attempt in range(train_config.max_restarts + 1):
        seed = train_config.seed + attempt
        learning_rate = model_config.learning_rate * 0.5**attempt
        keras.utils.set_random_seed(seed)
        model = build_model(model_config, len(vocab))
        if train_config.warm_start:
            warm_started = warm_start(model, vocab, train_config.warm_start)
        compile_model(model, _learning_rate(learning_rate, train_config, steps_per_epoch))
        schedule = _schedule(
            train_config,
            learning_rate,
            steps_per_epoch,
            deadline,
            last_attempt=attempt == train_config.max_restarts and not stop_when_stalled,
        )
        selection = _selection_callbacks(train_config)
        artifacts = _artifact_callbacks(train_config, out_dir) if out_dir else []
        epoch_times = _EpochTimes()
        history = model.fit(
            # One iterator for the whole fit (steps_per_epoch marks the epochs), for the same
            # reason as `in_memory`: a new one each epoch dropped the last one.
            fit_ds.repeat(),
            steps_per_epoch=steps_per_epoch,
            validation_data=validation_ds,
            epochs=train_config.epochs,
            callbacks=[schedule, *selection, *artifacts, epoch_times],
            verbose=keras_verbose(train_config.verbose),
        )
        stalled = getattr(schedule, "stalled", False)
        attempts.append(
            {
                "seed": seed,
                "learning_rate": learning_rate,
                "epochs": len(history.epoch),
                "stalled": stalled,
                "reading_began_epoch": getattr(schedule, "reading_began_epoch", None),
            }
        )
        if not stalled:
            break
        if attempt < train_config.max_restarts:
            log.warning(
                "attempt %d read nothing after %d epochs (%.1f min): the CTC blank plateau. "
                "Starting again with seed %d and learning rate %.2g",
                attempt + 1,
                len(history.epoch),
                (time.time() - start) / 60,
                seed + 1,
                learning_rate / 2,
            )
    early_stopping = selection[1]
    best_epoch = early_stopping.best_epoch if train_config.restore_best else len(history.epoch) - 1
    return Fitted(model, history, attempts, best_epoch, epoch_times.seconds, warm_started)


def _seconds_per_pass(ds: tf.data.Dataset) -> float:
    start = time.perf_counter()
    for _ in ds:
        pass
    return time.perf_counter() - start


@dataclasses.dataclass
class TrainingData:
    """The input of a fit: the spans' vocabulary, the data-derived model config, the datasets."""

    dirs: list[str]
    vocab: list[str]
    max_label_length: int
    model_config: ModelConfig  # with the input geometry derived from the data
    fit_ds: tf.data.Dataset
    validation_ds: tf.data.Dataset
    counts: dict[str, int]
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.counts["fit"] // self.batch_size)


def data_model_config(dirs: Sequence[str], model_config: ModelConfig) -> tuple[ModelConfig, int]:
    """The config with its input geometry derived from the spans' data, and the longest label."""
    max_label_length = examples.max_label_length(dirs)
    model_config = model_config.with_data_geometry([examples.read_metadata(d) for d in dirs])
    model_config.check_label_length(max_label_length)
    return model_config, max_label_length


def prepare_training(
    examples_dirs: str | list[str], model_config: ModelConfig, train_config: TrainConfig
) -> TrainingData:
    """Everything a fit reads, the same for the Trainer and the Tuner's trials.

    The validation holdout (train_config.validation_percent of the train split, by image
    digest) is what picks the best epoch and ranks the tuner's trials; the eval split stays
    for the Evaluator.
    """
    dirs = examples.as_list(examples_dirs)
    model_config, max_label_length = data_model_config(dirs, model_config)
    keras.utils.set_random_seed(train_config.seed)
    fit_ds, validation_ds, counts = fit_and_validation(
        dirs,
        geometry=model_config.geometry,
        max_label_length=max_label_length,
        batch_size=train_config.batch_size,
        validation_percent=train_config.validation_percent,
        augment=make_augment(train_config.augment),
        seed=train_config.seed,
        width_buckets=train_config.width_buckets,
    )
    return TrainingData(
        dirs=dirs,
        vocab=examples.combined_vocab(dirs),
        max_label_length=max_label_length,
        model_config=model_config,
        fit_ds=fit_ds,
        validation_ds=validation_ds,
        counts=counts,
        batch_size=train_config.batch_size,
    )


def run_train(
    examples_dirs: str | list[str],
    output_dir: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> dict[str, Any]:
    """Train on the train split (minus a validation holdout); returns `train_summary.json`.

    Where it starts is decided first (`head_start.resolve_start`): train_config.json and the
    summary's `start` record the start used.

    An attempt whose model still reads nothing when the plateau limit is reached is
    restarted with the next seed and half the learning rate, at most `max_restarts` times,
    within the same time budget.
    """
    from components.head_start import resolve_start  # it reads this module's file names

    start = time.time()
    deadline = start + 60 * train_config.max_minutes if train_config.max_minutes else None
    head_start = resolve_start(model_config, train_config)
    model_config, train_config = head_start.model_config, head_start.train_config
    data = prepare_training(examples_dirs, model_config, train_config)
    dirs, vocab, max_label_length = data.dirs, data.vocab, data.max_label_length
    model_config, counts = data.model_config, data.counts
    fit_ds, validation_ds = data.fit_ds, data.validation_ds
    steps_per_epoch = data.steps_per_epoch
    geometry = model_config.geometry
    log.info(
        "training on %d examples, validating on %d, %d characters, labels up to %d; "
        "input %dx%d (width scale %.2f, %d frames)",
        counts["fit"],
        counts["validation"],
        len(vocab),
        max_label_length,
        geometry.height,
        geometry.width,
        geometry.width_scale,
        geometry.time_steps,
    )

    with artifact_io.atomic_dir(output_dir) as out:
        fitted = fit_model(
            model_config, vocab, fit_ds, validation_ds, steps_per_epoch, train_config, deadline, out
        )
        model, history, attempts, best_epoch = (
            fitted.model,
            fitted.history,
            fitted.attempts,
            fitted.best_epoch,
        )
        train_seconds = time.time() - start
        best = {k: float(v[best_epoch]) for k, v in history.history.items()}
        summary: dict[str, Any] = {
            "model_dir": output_dir,
            "examples_dirs": dirs,
            "vocab_size": len(vocab),
            "max_label_length": max_label_length,
            "geometry": dataclasses.asdict(geometry),
            "examples": counts,
            "epochs_run": len(history.epoch),
            "best_epoch": best_epoch + 1,  # the epoch whose weights were kept
            "best": best,
            "learned": best.get("val_sequence_accuracy", 0.0) > LEARNING_STARTED,
            "attempts": attempts,
            "start": {**head_start.to_dict(), **(fitted.warm_started or {})},
            "reading_began_epoch": attempts[-1]["reading_began_epoch"],
            "train_seconds": round(train_seconds, 1),
            "seconds_per_epoch": fitted.epoch_seconds,
            "stopped_by_time_budget": deadline is not None and time.time() >= deadline - 1,
        }
        if not summary["learned"]:
            log.warning(
                "the model reads %.1f%% of the validation captchas: it did not learn",
                100 * best.get("val_sequence_accuracy", 0.0),
            )
        if train_config.measure_input_pipeline:
            # One pass of the cached, augmented input alone vs. a training epoch: the model
            # is starved only if the first approaches the second.
            input_seconds = _seconds_per_pass(fit_ds)
            summary["input_pipeline"] = {
                "seconds_per_epoch": round(input_seconds, 2),
                "images_per_second": round(counts["fit"] / max(input_seconds, 1e-9)),
                "train_seconds_per_epoch_median": round(
                    sorted(fitted.epoch_seconds)[len(fitted.epoch_seconds) // 2], 2
                ),
            }
        decoding = fit_decoding(model, validation_ds, examples.label_lengths(dirs))
        summary["decoding"] = decoding.to_dict()
        save_decoding(decoding, out)
        model.save(posixpath.join(out, MODEL_FILE))
        examples.write_vocab(posixpath.join(out, examples.VOCAB_FILE), vocab)
        model_config.to_json(posixpath.join(out, MODEL_CONFIG_FILE))
        artifact_io.write_json(posixpath.join(out, TRAIN_CONFIG_FILE), train_config.to_dict())
        artifact_io.write_json(posixpath.join(out, SUMMARY_FILE), summary)
    log.info(
        "model written to %s (best epoch %d of %d, %.0f s)",
        output_dir,
        best_epoch + 1,
        summary["epochs_run"],
        train_seconds,
    )
    return summary

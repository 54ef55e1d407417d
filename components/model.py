"""The CNN + BiLSTM + CTC model, built from a `ModelConfig`, and its greedy CTC decoder.

The served decoding (allowed lengths, calibrated confidence) is `components.decoding`.

Class layout of the model's output: index 0 is the CTC blank, index `i + 1` is line `i` of
`vocab.txt`. That is the convention of `keras.losses.CTC` (blank and label padding = 0), so
the trainer feeds `label_ids + 1` padded with zeros; `ctc_loss` keeps it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from components import artifact_io
from components.geometry import Geometry, data_ranges, derive_geometry

if TYPE_CHECKING:
    import keras_tuner

BLANK = 0
IMAGE_INPUT = "image"
LOGITS_LAYER = "logits"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the model: what the tuner searches, `best_hyperparameters.json` holds."""

    # The input size: None is derived from the ingested data (`with_data_geometry`).
    image_height: int | None = None
    image_width: int | None = None
    width_scale: float = 1.0  # horizontal scale relative to the vertical (geometry.py)
    conv_filters: tuple[int, ...] = (32, 64)
    kernel_size: int = 3
    batch_norm: bool = False
    dense_units: int = 64
    dropout: float = 0.2
    lstm_units: tuple[int, ...] = (128, 64)
    lstm_dropout: float = 0.25
    learning_rate: float = 1e-3

    @property
    def geometry(self) -> Geometry:
        if self.image_height is None or self.image_width is None:
            raise ValueError("the input size is not derived yet: call with_data_geometry")
        return Geometry(self.image_height, self.image_width, self.width_scale)

    def with_data_geometry(self, metadata: Sequence[Mapping[str, Any]]) -> ModelConfig:
        """The input size this config leaves open, derived from ExampleGen metadata (spans).

        A pinned height is kept and the width derived at it; only a pinned height and width
        together (with the pinned width scale) skip the derivation.
        """
        if self.image_height is not None and self.image_width is not None:
            return self
        ranges = data_ranges(metadata)
        derived = derive_geometry(
            ranges["max_height"],
            ranges["max_aspect"],
            ranges["max_label_length"],
            height=self.image_height,
        )
        return dataclasses.replace(
            self,
            image_height=derived.height,
            image_width=derived.width,
            width_scale=derived.width_scale,
        )

    @property
    def time_steps(self) -> int:
        """Output frames: the first two conv blocks halve the width, later ones keep it."""
        steps = self.geometry.width
        for _ in self.conv_filters[:2]:
            steps //= 2
        return steps

    @property
    def max_label_length(self) -> int:
        """Longest label CTC can always emit: repeated characters need a blank between them."""
        return (self.time_steps - 1) // 2

    def check_label_length(self, max_label_length: int) -> None:
        if max_label_length > self.max_label_length:
            raise ValueError(
                f"labels of up to {max_label_length} characters need at least "
                f"{2 * max_label_length + 1} time steps; this model has {self.time_steps} "
                f"(image_width {self.image_width}): use a wider image_width"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model hyperparameters: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)

    def to_json(self, path: str) -> None:
        artifact_io.write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str) -> ModelConfig:
        return cls.from_dict(artifact_io.read_json(path))


# The architecture of the Keras example "OCR model for reading Captchas", kept as a baseline,
# at its own input size.
KERAS_EXAMPLE = ModelConfig(image_height=50, image_width=200)


def search_space(hp: keras_tuner.HyperParameters, base: ModelConfig) -> ModelConfig:
    """The tuner's search space, a neighbourhood of `base`, as a `ModelConfig`.

    Every width (conv filters per block, dense units, LSTM units per layer) is half, equal to
    or double the base's, so the scale follows the base (a tiny base, a tiny search); the
    depth of both stacks, dropout, learning rate and batch norm are searched as well. Image
    size, kernel size and LSTM dropout stay as in `base`. Deeper layers than the base has
    take the base's last width; layers beyond the chosen depth are conditional
    hyperparameters, so a trial only lists what its model uses.
    """

    def around(value: int) -> list[int]:
        return sorted({max(4, value // 2), value, 2 * value})

    def widths(name: str, unit: str, base_widths: tuple[int, ...], low: int, high: int):
        depth = hp.Int(f"{name}_layers", low, high, default=min(max(len(base_widths), low), high))
        chosen = []
        for layer in range(1, high + 1):
            width = base_widths[min(layer, len(base_widths)) - 1]
            with hp.conditional_scope(f"{name}_layers", list(range(max(layer, low), high + 1))):
                value = hp.Choice(f"{name}{layer}_{unit}", around(width), default=width)
            if layer <= depth:
                chosen.append(value)
        return tuple(chosen)

    # Blocks after the second halve the height only; stop before it would reach zero.
    max_blocks = max(2, min(4, base.image_height.bit_length() - 1), len(base.conv_filters))
    dropout = min(round(base.dropout, 1), 0.5)
    learning_rate = min(max(base.learning_rate, 1e-4), 1e-2)
    return dataclasses.replace(
        base,
        conv_filters=widths("conv", "filters", base.conv_filters, 2, max_blocks),
        batch_norm=hp.Boolean("batch_norm", default=base.batch_norm),
        dense_units=hp.Choice("dense_units", around(base.dense_units), default=base.dense_units),
        dropout=round(hp.Float("dropout", 0.0, 0.5, step=0.1, default=dropout), 2),
        lstm_units=widths("lstm", "units", base.lstm_units, 1, max(2, len(base.lstm_units))),
        learning_rate=hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=learning_rate),
    )


def build_model(config: ModelConfig, vocab_size: int) -> keras.Model:
    """A model mapping images [B, H, W, 1] in [0, 1] to CTC logits [B, T, vocab_size + 1].

    No weight depends on W (T = W / 4), so the model takes any width: the serving signature
    feeds the config's, and training may feed batches cut to their images' width.
    """
    images = keras.Input((config.image_height, None, 1), name=IMAGE_INPUT)
    # Width becomes the time axis, as in the Keras example.
    x = keras.layers.Permute((2, 1, 3), name="width_first")(images)
    for block, filters in enumerate(config.conv_filters, start=1):
        x = keras.layers.Conv2D(
            filters,
            config.kernel_size,
            padding="same",
            kernel_initializer="he_normal",
            use_bias=not config.batch_norm,
            name=f"conv{block}",
        )(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization(name=f"conv{block}_bn")(x)
        x = keras.layers.Activation("relu", name=f"conv{block}_relu")(x)
        pool = (2, 2) if block <= 2 else (1, 2)
        x = keras.layers.MaxPooling2D(pool, name=f"pool{block}")(x)
    x = keras.layers.Reshape((-1, x.shape[2] * x.shape[3]), name="frames")(x)
    x = keras.layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(config.dropout, name="dense_dropout")(x)
    for layer, units in enumerate(config.lstm_units, start=1):
        x = keras.layers.Bidirectional(
            keras.layers.LSTM(units, return_sequences=True, dropout=config.lstm_dropout),
            name=f"bilstm{layer}",
        )(x)
    logits = keras.layers.Dense(vocab_size + 1, name=LOGITS_LAYER)(x)
    model = keras.Model(images, logits, name="captcha_ocr")
    compile_model(model, config.learning_rate)
    return model


def fold_batch_norm(model: keras.Model, config: ModelConfig) -> keras.Model:
    """The same function at inference with every batch norm folded into the conv before it.

    At inference a batch norm is a per-channel affine map, so conv + batch norm is one conv
    with a scaled kernel and a shifted bias. Keras runs batch norm as separate element-wise
    passes over the model's largest activations (a quarter of a batch-64 call of a conv
    32-64-64 model here); folded, each block is a conv + bias + ReLU that TensorFlow's CPU
    kernels fuse. The serving export uses it; training keeps the batch norms.
    """
    if not config.batch_norm:
        return model
    vocab_size = model.get_layer(LOGITS_LAYER).units - 1
    folded = build_model(dataclasses.replace(config, batch_norm=False), vocab_size)
    trained = {layer.name: layer for layer in model.layers}
    for layer in folded.layers:
        norm = trained.get(f"{layer.name}_bn")
        if norm is not None:
            (kernel,) = trained[layer.name].get_weights()
            gamma, beta, mean, variance = norm.get_weights()
            scale = gamma / np.sqrt(variance + norm.epsilon)
            layer.set_weights([kernel * scale, beta - mean * scale])
        elif layer.weights:
            layer.set_weights(trained[layer.name].get_weights())
    return folded


@keras.saving.register_keras_serializable(package="captcha_ocr")
def ctc_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """CTC loss per captcha of zero-padded labels (ids + 1) and logits [B, T, classes].

    `keras.losses.CTC`'s loss, computed by TensorFlow's CTCLoss kernel: given dense labels,
    `tf.nn.ctc_loss` runs its forward-backward as a loop of small ops per frame, which on a
    CPU made each training step 8 % longer (benchmarks/README.md, "train_step.py").
    Sparse labels select the kernel; the loss and its gradient are the same. The kernel
    refuses an empty label, as ExampleGen does.
    """
    labels = tf.sparse.from_dense(tf.cast(y_true, tf.int32))  # the padding (0) drops out
    frames = tf.fill(tf.shape(y_pred)[:1], tf.shape(y_pred)[1])
    return tf.nn.ctc_loss(
        labels=labels,
        logits=y_pred,
        label_length=None,
        logit_length=frames,
        logits_time_major=False,
        blank_index=BLANK,
    )


def compile_model(
    model: keras.Model, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> None:
    """Adam + CTC loss + the two reading metrics; the trainer recompiles with its LR schedule."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=ctc_loss,
        metrics=[SequenceAccuracy(), CharacterErrorRate()],
    )


def greedy_decode(logits: tf.Tensor) -> tuple[tf.RaggedTensor, tf.Tensor]:
    """Best path decoding: collapse repeats, drop blanks.

    Returns vocabulary ids (ragged [B, None]) and the log-probability of the best path, [B].
    `components.decoding` builds the served answer on it.
    """
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    best = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    previous = tf.pad(best[:, :-1], [[0, 0], [1, 0]], constant_values=-1)
    keep = tf.logical_and(best != BLANK, best != previous)
    # A typed 1, not a Python int: the result stays int32 under any dtype-promotion mode.
    ids = tf.ragged.boolean_mask(best, keep) - tf.constant(1, tf.int32)
    return ids, tf.reduce_sum(tf.reduce_max(log_probs, axis=-1), axis=-1)


def ids_to_text(ids: tf.RaggedTensor, vocab: Sequence[str]) -> tf.Tensor:
    """Ragged vocabulary ids -> one UTF-8 string per row."""
    chars = tf.gather(tf.constant(list(vocab)), ids)
    return tf.strings.reduce_join(chars, axis=-1)


def _decoded_and_true(
    y_true: tf.Tensor, y_pred: tf.Tensor
) -> tuple[tf.SparseTensor, tf.SparseTensor]:
    """Greedy decoding of `y_pred` and the zero-padded `y_true`, both as sparse class ids."""
    ids, _ = greedy_decode(y_pred)
    decoded = (ids + 1).to_sparse()
    labels = tf.cast(y_true, tf.int32)
    truth = tf.sparse.from_dense(labels)
    return tf.cast(decoded, tf.int64), tf.cast(truth, tf.int64)


@keras.saving.register_keras_serializable(package="captcha_ocr")
class SequenceAccuracy(keras.metrics.Metric):
    """Share of captchas read exactly (greedy decoding), the metric users care about."""

    def __init__(self, name: str = "sequence_accuracy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: Any = None) -> None:
        decoded, truth = _decoded_and_true(y_true, y_pred)
        distance = tf.edit_distance(decoded, truth, normalize=False)
        self.correct.assign_add(tf.reduce_sum(tf.cast(distance == 0, "float32")))
        self.total.assign_add(tf.cast(tf.shape(y_true)[0], "float32"))

    def result(self) -> tf.Tensor:
        return tf.math.divide_no_nan(self.correct, self.total)


@keras.saving.register_keras_serializable(package="captcha_ocr")
class CharacterErrorRate(keras.metrics.Metric):
    """Edit distance summed over the batch divided by the number of true characters."""

    def __init__(self, name: str = "cer", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.errors = self.add_variable(shape=(), initializer="zeros", name="errors")
        self.characters = self.add_variable(shape=(), initializer="zeros", name="characters")

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: Any = None) -> None:
        decoded, truth = _decoded_and_true(y_true, y_pred)
        distance = tf.edit_distance(decoded, truth, normalize=False)
        self.errors.assign_add(tf.reduce_sum(tf.cast(distance, "float32")))
        self.characters.assign_add(tf.reduce_sum(tf.cast(y_true != 0, "float32")))

    def result(self) -> tf.Tensor:
        return tf.math.divide_no_nan(self.errors, self.characters)

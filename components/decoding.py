"""CTC logits -> text and a confidence that means something: the decoder every reader shares.

Two things the model alone does not know are learned from the data after training and kept
next to the weights in `decoding.json`:

- **The label lengths seen in training.** Best-path (greedy) decoding answers whatever the
  frames spell, so a model trained on 4-digit captchas can answer `84121`. Rows whose answer
  has an unseen length are decoded again by a CTC beam search, keeping the most probable of its
  top paths whose length was seen. Only those rows pay for the search; an empty answer stays
  empty (the model read nothing), with confidence 0.
- **A calibration of the confidence.** The raw score is the answer's probability p (the best
  path's, or the beam's for a searched row). Platt scaling, `sigmoid(slope * logit(p) +
  intercept)`, is fitted on the trainer's validation holdout, so answers given with confidence
  0.9 are right about 9 times in 10. `review_below` is the confidence above which that holdout's
  answers were right at least `TARGET_PRECISION` of the time: the threshold for "retry this
  captcha" (`predict --review-dir` uses it).

`decode` is a TensorFlow graph: the serving signature, the evaluator and the calibration run
the same function, so what is measured is what is served.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from components import artifact_io
from components.model import BLANK, greedy_decode, ids_to_text

DECODING_FILE = "decoding.json"
BEAM_WIDTH = 16
TOP_PATHS = 8
# Answers at or above `review_below` were right this often on the validation holdout.
TARGET_PRECISION = 0.99
# Until a model carries a calibration, answers below this raw confidence go to review.
DEFAULT_REVIEW_BELOW = 0.9


@dataclasses.dataclass(frozen=True)
class Decoding:
    """What `decode` knows of the site: allowed answer lengths and the confidence's calibration.

    The defaults decode as before any data was seen: any length, confidence = best-path
    probability (uncalibrated).
    """

    label_lengths: tuple[int, ...] = ()  # empty: any length
    platt: tuple[float, float] | None = None  # (slope, intercept) on logit(probability)
    review_below: float = DEFAULT_REVIEW_BELOW
    fitted_on: dict[str, Any] = dataclasses.field(default_factory=dict)

    def confidence(self, log_p: tf.Tensor) -> tf.Tensor:
        if self.platt is None:
            return tf.exp(log_p)
        slope, intercept = self.platt
        return tf.sigmoid(slope * raw_logit(log_p) + intercept)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Decoding:
        platt = values.get("platt")
        return cls(
            label_lengths=tuple(values.get("label_lengths", ())),
            platt=tuple(platt) if platt is not None else None,
            review_below=float(values.get("review_below", DEFAULT_REVIEW_BELOW)),
            fitted_on=dict(values.get("fitted_on", {})),
        )


def save_decoding(decoding: Decoding, folder: str) -> None:
    artifact_io.write_json(posixpath.join(folder, DECODING_FILE), decoding.to_dict())


def load_decoding(folder: str) -> Decoding:
    """A model folder's (or an export's assets.extra's) decoding; the defaults if it has none."""
    path = posixpath.join(folder, DECODING_FILE)
    if not tf.io.gfile.exists(path):
        return Decoding()
    return Decoding.from_dict(artifact_io.read_json(path))


def best_path(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Greedy CTC decoding as dense ids [B, T] padded with -1, and the path's log-probability."""
    ids, log_p = greedy_decode(logits)
    return ids.to_tensor(default_value=-1, shape=tf.shape(logits)[:2]), log_p


def _lengths(ids: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(ids >= 0, tf.int32), axis=-1)


def _allowed(lengths: tf.Tensor, label_lengths: Sequence[int]) -> tf.Tensor:
    allowed = tf.constant(list(label_lengths), tf.int32)
    return tf.reduce_any(lengths[..., None] == allowed, axis=-1)


def _beam_within_lengths(
    logits: tf.Tensor, label_lengths: Sequence[int]
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Beam search; per row the most probable top path of an allowed length.

    Returns ids [R, T] (-1 padded), their log-probability and whether any path was allowed.
    TensorFlow's decoder takes the blank as the last class: the blank column moves there,
    so the class ids it returns are vocabulary ids.
    """
    steps = tf.shape(logits)[1]
    rows = tf.shape(logits)[0]
    blank_last = tf.concat([logits[..., BLANK + 1 :], logits[..., : BLANK + 1]], axis=-1)
    time_major = tf.transpose(tf.nn.log_softmax(blank_last, axis=-1), [1, 0, 2])
    paths, log_p = tf.nn.ctc_beam_search_decoder(
        time_major, tf.fill([rows], steps), beam_width=BEAM_WIDTH, top_paths=TOP_PATHS
    )
    shape = tf.cast(tf.stack([rows, steps]), tf.int64)
    dense = tf.stack(
        [
            tf.sparse.to_dense(
                tf.SparseTensor(p.indices, tf.cast(p.values, tf.int32), shape), default_value=-1
            )
            for p in paths
        ],
        axis=1,
    )  # [R, P, T]
    ok = _allowed(_lengths(dense), label_lengths)  # [R, P]
    first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
    return (
        tf.gather(dense, first, batch_dims=1),
        tf.gather(log_p, first, batch_dims=1),
        tf.reduce_any(ok, axis=1),
    )


def decode_ids(logits: tf.Tensor, label_lengths: Sequence[int] = ()) -> tuple[tf.Tensor, tf.Tensor]:
    """Vocabulary ids [B, T] (-1 padded) and the answer's log-probability [B].

    A non-empty best path of a length not in `label_lengths` is replaced by the beam's best
    path of an allowed length, if the beam has one.
    """
    ids, log_p = best_path(logits)
    if not label_lengths:
        return ids, log_p
    lengths = _lengths(ids)
    redo = tf.where(tf.logical_and(lengths > 0, ~_allowed(lengths, label_lengths)))[:, 0]

    def search() -> tuple[tf.Tensor, tf.Tensor]:
        beam_ids, beam_log_p, found = _beam_within_lengths(tf.gather(logits, redo), label_lengths)
        replaced = redo[found][:, None]
        return (
            tf.tensor_scatter_nd_update(ids, replaced, beam_ids[found]),
            tf.tensor_scatter_nd_update(log_p, replaced, beam_log_p[found]),
        )

    return tf.cond(tf.size(redo) > 0, search, lambda: (ids, log_p))


def decode(
    logits: tf.Tensor, vocab: Sequence[str], decoding: Decoding = Decoding()
) -> tuple[tf.Tensor, tf.Tensor]:
    """CTC logits -> (text [B] tf.string, confidence [B] float32), as served."""
    ids, log_p = decode_ids(logits, decoding.label_lengths)
    ragged = tf.RaggedTensor.from_tensor(ids, padding=-1)
    confidence = decoding.confidence(log_p)
    if decoding.label_lengths and 0 not in decoding.label_lengths:
        # Reading nothing where every captcha has text is never a right answer.
        confidence = tf.where(ragged.row_lengths() > 0, confidence, 0.0)
    return ids_to_text(ragged, vocab), confidence


def raw_logit(log_p: np.ndarray | tf.Tensor) -> np.ndarray | tf.Tensor:
    """The log-odds of the uncalibrated confidence exp(log_p): Platt's input feature.

    On this scale Platt's (1, 0) is the raw confidence itself, the prior the fit starts from.
    """
    module = tf.math if isinstance(log_p, tf.Tensor) else np
    log_p = module.minimum(log_p, -1e-7)  # exp(0) = 1 has infinite log-odds
    return log_p - module.log(-module.expm1(log_p))


def fit_platt(
    log_p: np.ndarray, correct: np.ndarray, prior_weight: float = 1.0, iterations: int = 100
) -> tuple[float, float]:
    """Platt scaling by Newton's method, with Platt's smoothed targets and a weak prior.

    The targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2) keep a holdout with no wrong answer
    (or no right one) from pushing the confidence to certainty; the prior (an L2 pull towards
    the raw confidence, `prior_weight` pseudo-examples' worth) keeps such a holdout from
    flattening it: without errors to learn from, a less probable answer still scores lower.
    """
    x = raw_logit(np.asarray(log_p, dtype=np.float64))
    y = np.asarray(correct, dtype=bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    target = np.where(y, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    features = np.stack([x, np.ones_like(x)], axis=1)
    prior = np.array([1.0, 0.0])
    weights = prior.copy()

    def loss(w: np.ndarray) -> float:
        z = features @ w
        penalty = prior_weight / 2 * float(np.sum((w - prior) ** 2))
        return float(np.sum(np.logaddexp(0, z) - target * z)) + penalty

    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(features @ weights)))
        gradient = features.T @ (p - target) + prior_weight * (weights - prior)
        hessian = features.T @ (features * (p * (1 - p))[:, None]) + prior_weight * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while loss(weights - scale * step) > loss(weights) and scale > 1e-4:
            scale /= 2  # backtracking: Newton steps overshoot on well-separated scores
        weights = weights - scale * step
        if np.max(np.abs(scale * step)) < 1e-9:
            break
    return float(weights[0]), float(weights[1])


def threshold_for_precision(confidence: np.ndarray, correct: np.ndarray, precision: float) -> float:
    """The lowest confidence such that answers at or above it are right >= `precision`.

    1.0 (review everything) when not even the most confident answers reach it.
    """
    order = np.argsort(-np.asarray(confidence), kind="stable")
    ranked = np.asarray(confidence)[order]
    share = np.cumsum(np.asarray(correct)[order]) / np.arange(1, len(order) + 1)
    # A cut may only fall between two different confidences: ties are in or out together.
    cut_after = np.append(ranked[1:] < ranked[:-1], True)
    reached = np.nonzero(cut_after & (share >= precision))[0]
    return float(ranked[reached[-1]]) if len(reached) else 1.0


def calibrate(log_p: np.ndarray, correct: np.ndarray, label_lengths: Sequence[int]) -> Decoding:
    """The decoding to keep with a model, from its validation answers' scores and rightness."""
    fitted_on = {"examples": len(correct), "right": int(np.sum(correct))}
    if not len(correct):
        return Decoding(label_lengths=tuple(label_lengths), fitted_on=fitted_on)
    platt = fit_platt(log_p, correct)
    calibrated = Decoding(label_lengths=tuple(label_lengths), platt=platt)
    confidence = calibrated.confidence(tf.constant(log_p, tf.float32)).numpy()
    review_below = threshold_for_precision(confidence, correct, TARGET_PRECISION)
    return dataclasses.replace(calibrated, review_below=review_below, fitted_on=fitted_on)


def answer_scores(
    model: keras.Model, batches: tf.data.Dataset, label_lengths: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Each answer's raw log-probability and whether it is right, over batches of (images,
    labels id + 1)."""
    scores, correct = [], []
    for images, labels in batches:
        ids, log_p = decode_ids(model(images, training=False), label_lengths)
        truth = tf.ragged.boolean_mask(labels, labels > 0) - 1
        answers = tf.RaggedTensor.from_tensor(ids, padding=-1)
        scores.append(log_p.numpy())
        correct += [
            list(a) == list(t) for a, t in zip(answers.to_list(), truth.to_list(), strict=True)
        ]
    return (np.concatenate(scores) if scores else np.zeros(0)), np.array(correct, dtype=bool)


def fit_decoding(
    model: keras.Model, validation: tf.data.Dataset, label_lengths: Sequence[int]
) -> Decoding:
    """Calibrate on the trainer's validation holdout: batches of (images, labels id + 1)."""
    return calibrate(*answer_scores(model, validation, label_lengths), label_lengths)


def reliability(
    confidence: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> list[dict[str, float]]:
    """Answers grouped by confidence: per bin its count, mean confidence and share right."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        table.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": count,
                "mean_confidence": float(confidence[members].mean()) if count else 0.0,
                "accuracy": float(correct[members].mean()) if count else 0.0,
            }
        )
    return table


def calibration_metrics(
    confidence: Sequence[float], correct: Sequence[bool], high: float = 0.9
) -> dict[str, Any]:
    """Expected calibration error and how right the confident answers are (for metrics.json)."""
    table = reliability(confidence, correct)
    total = max(len(correct), 1)
    confident = np.asarray(confidence) > high
    right = np.asarray(correct, dtype=bool)
    return {
        "expected_calibration_error": sum(
            row["count"] / total * abs(row["accuracy"] - row["mean_confidence"]) for row in table
        ),
        f"share_above_{high:g}": float(confident.mean()) if len(right) else 0.0,
        f"accuracy_above_{high:g}": float(right[confident].mean()) if confident.any() else None,
        "reliability": table,
    }

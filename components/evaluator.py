"""Evaluator: how well a trained model reads one split, and where it goes wrong.

Writes `metrics.json` (whole-captcha accuracy, character error rate, ...), `errors.csv`
(source, label, prediction, confidence), `confusions.csv` (true -> predicted character
counts from the edit-distance alignment) and pictures: training images with their labels,
eval predictions with errors in red, the training curves and the reliability diagram (does
a confidence of 0.9 mean 9 right answers in 10?).
"""

from __future__ import annotations

import collections
import csv
import io
import logging
import posixpath
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from components import artifact_io, examples
from components.dataset import read_split
from components.decoding import calibration_metrics, decode, load_decoding
from components.geometry import Geometry
from components.plots import (
    ERROR_COLOR,
    OK_COLOR,
    image_grid,
    reliability_diagram,
    training_curves,
)
from components.preprocessing import preprocess_image
from components.trainer import HISTORY_FILE, load_trained

log = logging.getLogger(__name__)

# This component's folder under the pipeline root (pipeline/runner.py).
PIPELINE_FOLDER = "Evaluator"

METRICS_FILE = "metrics.json"
ERRORS_FILE = "errors.csv"
CONFUSIONS_FILE = "confusions.csv"
TRAIN_GRID_FILE = "train_images.png"
PREDICTIONS_GRID_FILE = "eval_predictions.png"
CURVES_FILE = "training_curves.png"
RELIABILITY_FILE = "reliability.png"
GRID_SIZE = 24
# Marks a missing character in an alignment: a deletion (true -> "") or insertion ("" -> pred).
GAP = ""


def edit_distance(truth: str, prediction: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions, each costing 1."""
    previous = list(range(len(prediction) + 1))
    for i, t in enumerate(truth, start=1):
        current = [i]
        for j, p in enumerate(prediction, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (t != p)))
        previous = current
    return previous[-1]


def align(truth: str, prediction: str) -> list[tuple[str, str]]:
    """A minimal edit-distance alignment as (true char or GAP, predicted char or GAP) pairs."""
    rows, cols = len(truth) + 1, len(prediction) + 1
    cost = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        cost[i][0] = i
    for j in range(cols):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            cost[i][j] = min(
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
                cost[i - 1][j - 1] + (truth[i - 1] != prediction[j - 1]),
            )
    pairs: list[tuple[str, str]] = []
    i, j = len(truth), len(prediction)
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (truth[i - 1] != prediction[j - 1]):
            pairs.append((truth[i - 1], prediction[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((truth[i - 1], GAP))
            i -= 1
        else:
            pairs.append((GAP, prediction[j - 1]))
            j -= 1
    return pairs[::-1]


def reading_metrics(labels: Sequence[str], predictions: Sequence[str]) -> dict[str, Any]:
    """Whole-captcha accuracy and CER (summed edit distance / true characters)."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not labels:
        raise ValueError("no examples to evaluate")
    distances = [edit_distance(t, p) for t, p in zip(labels, predictions, strict=False)]
    characters = sum(len(t) for t in labels)
    correct = sum(d == 0 for d in distances)
    return {
        "accuracy": correct / len(labels),
        "cer": sum(distances) / max(characters, 1),
        "num_examples": len(labels),
        "num_correct": correct,
        "num_errors": len(labels) - correct,
        "num_characters": characters,
        "edit_distance_total": sum(distances),
    }


def confusions(labels: Sequence[str], predictions: Sequence[str]) -> collections.Counter:
    """Counts of (true, predicted) character pairs that differ, over all alignments."""
    counts: collections.Counter = collections.Counter()
    for truth, prediction in zip(labels, predictions, strict=False):
        counts.update(pair for pair in align(truth, prediction) if pair[0] != pair[1])
    return counts


def predict_split(
    model_dir: str, examples_dirs: str | list[str], split: str, batch_size: int = 64
) -> dict[str, Any]:
    """Model readings of every example of a split, with the images (for the pictures)."""
    model, vocab, config = load_trained(model_dir)
    decoding = load_decoding(model_dir)
    ds = (
        read_split(examples_dirs, split)
        .map(
            lambda ex: (
                preprocess_image(ex["image"], config.geometry),
                ex["label"],
                ex["source"],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    images, labels, sources, texts, confidences = [], [], [], [], []
    for image_batch, label_batch, source_batch in ds:
        text, confidence = decode(model(image_batch, training=False), vocab, decoding)
        images.append(image_batch.numpy())
        labels += [v.decode("utf-8") for v in label_batch.numpy()]
        sources += [v.decode("utf-8") for v in source_batch.numpy()]
        texts += [v.decode("utf-8") for v in text.numpy()]
        confidences += [float(v) for v in confidence.numpy()]
    return {
        "images": np.concatenate(images) if images else np.zeros((0, 1, 1, 1)),
        "labels": labels,
        "sources": sources,
        "predictions": texts,
        "confidences": confidences,
        "model_config": config,
        "decoding": decoding,
    }


def _write_csv(path: str, header: Sequence[str], rows: list[Sequence[Any]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text.getvalue())


def _train_grid(examples_dirs: str | list[str], geometry: Geometry, path: str) -> None:
    """Training images as the model sees them; skipped (logged) when there are none."""
    try:
        ds = read_split(examples_dirs, examples.TRAIN).take(GRID_SIZE)
        pairs = [
            (preprocess_image(ex["image"], geometry).numpy(), ex["label"].numpy().decode())
            for ex in ds
        ]
    except FileNotFoundError:
        pairs = []
    if not pairs:
        log.warning("no training images in %s: %s not drawn", examples_dirs, path)
        return
    image_grid([p[0] for p in pairs], [p[1] for p in pairs], path, suptitle="training images")


def _predictions_grid(readings: dict[str, Any], path: str) -> None:
    """Errors first (red, `label -> prediction`), then correct readings, GRID_SIZE in all."""
    wrong = [
        i
        for i, (t, p) in enumerate(zip(readings["labels"], readings["predictions"], strict=False))
        if t != p
    ]
    right = [
        i
        for i, (t, p) in enumerate(zip(readings["labels"], readings["predictions"], strict=False))
        if t == p
    ]
    shown = (wrong + right)[:GRID_SIZE]
    titles, colors = [], []
    for i in shown:
        truth, prediction, confidence = (
            readings[k][i] for k in ("labels", "predictions", "confidences")
        )
        if truth == prediction:
            titles.append(f"{prediction} ({confidence:.2f})")
            colors.append(OK_COLOR)
        else:
            titles.append(f"{truth} -> {prediction or '(nothing)'} ({confidence:.2f})")
            colors.append(ERROR_COLOR)
    image_grid(
        [readings["images"][i] for i in shown],
        titles,
        path,
        colors=colors,
        suptitle=f"eval predictions: {len(wrong)} errors in red",
    )


def run_evaluate(
    model_dir: str,
    examples_dirs: str | list[str],
    output_dir: str,
    split: str = examples.EVAL,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Read every example of `split` with the model; write metrics, CSVs and pictures."""
    readings = predict_split(model_dir, examples_dirs, split, batch_size)
    labels, predictions = readings["labels"], readings["predictions"]
    metrics = reading_metrics(labels, predictions)
    metrics.update(
        split=split,
        model_dir=model_dir,
        examples_dirs=examples.as_list(examples_dirs),
        mean_confidence=float(np.mean(readings["confidences"])),
    )
    decoding = readings["decoding"]
    correct = [t == p for t, p in zip(labels, predictions, strict=True)]
    metrics["calibration"] = {
        **calibration_metrics(readings["confidences"], correct),
        "review_below": decoding.review_below,
        "calibrated": decoding.platt is not None,
        "label_lengths": list(decoding.label_lengths),
    }
    confusion_counts = confusions(labels, predictions)
    metrics["top_confusions"] = [
        {"true": t, "predicted": p, "count": n} for (t, p), n in confusion_counts.most_common(10)
    ]
    config = readings["model_config"]
    with artifact_io.atomic_dir(output_dir) as out:
        _write_csv(
            posixpath.join(out, ERRORS_FILE),
            ["source", "label", "prediction", "confidence", "edit_distance"],
            [
                (s, t, p, f"{c:.4f}", edit_distance(t, p))
                for s, t, p, c in zip(
                    readings["sources"], labels, predictions, readings["confidences"], strict=False
                )
                if t != p
            ],
        )
        _write_csv(
            posixpath.join(out, CONFUSIONS_FILE),
            ["true", "predicted", "count"],
            [(t, p, n) for (t, p), n in confusion_counts.most_common()],
        )
        _train_grid(examples_dirs, config.geometry, posixpath.join(out, TRAIN_GRID_FILE))
        _predictions_grid(readings, posixpath.join(out, PREDICTIONS_GRID_FILE))
        history = posixpath.join(model_dir, HISTORY_FILE)
        if tf.io.gfile.exists(history):
            training_curves(history, posixpath.join(out, CURVES_FILE))
        reliability_diagram(
            metrics["calibration"]["reliability"],
            posixpath.join(out, RELIABILITY_FILE),
            review_below=decoding.review_below,
        )
        artifact_io.write_json(posixpath.join(out, METRICS_FILE), metrics)
    log.info(
        "%s: accuracy %.4f, CER %.4f on %d %s examples",
        model_dir,
        metrics["accuracy"],
        metrics["cer"],
        metrics["num_examples"],
        split,
    )
    return metrics

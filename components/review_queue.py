"""Review queue: the captchas a model is unsure of, copied aside with a labels.csv to correct.

`captcha-ocr predict --review-dir DIR` adds every captcha read below a confidence threshold,
or that failed to decode, to DIR; `captcha-ocr review DIR` (components/review.py) lets a
person answer them; `captcha-ocr retrain --images DIR --labels DIR/labels.csv` trains on the
answers. DIR/labels.csv is the one record of the queue:

    filename,label,prediction,confidence,status

`label` starts as the model's guess, `status` says what a person has made of the row:
`queued` (not answered yet), `failed_to_decode` (the model got no image out of the bytes),
`labelled` (a person confirmed or corrected `label`) or `unreadable` (a person could not
read it). Only `labelled` rows are trained on; ExampleGen lists the others in rejected.jsonl
with the reason, so a half-reviewed queue never teaches the model its own guesses.

Nothing is lost: a file already in DIR is never overwritten (a new file with the same name
gets a suffix), the same bytes (SHA-256) are never queued twice, and labels.csv is replaced
atomically (written to a hidden temporary name, then renamed), so a crash leaves the old
file or the new one.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import posixpath
from collections.abc import Iterable, Sequence

import tensorflow as tf

from components import artifact_io
from components.decoding import load_decoding
from components.predict import Prediction

LABELS_FILE = "labels.csv"
HEADER = ("filename", "label", "prediction", "confidence", "status")
QUEUED = "queued"
FAILED_TO_DECODE = "failed_to_decode"
LABELLED = "labelled"
UNREADABLE = "unreadable"
STATUSES = (QUEUED, FAILED_TO_DECODE, LABELLED, UNREADABLE)
ANSWERED = (LABELLED, UNREADABLE)


@dataclasses.dataclass(frozen=True)
class ReviewRow:
    """One queued captcha: its file in the review folder and what is known about its text."""

    filename: str
    label: str
    prediction: str
    confidence: float
    status: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class QueueResult:
    """What one `add_to_queue` call did, file by file."""

    queued: list[ReviewRow]  # newly copied in
    already_queued: list[str]  # sources whose bytes were in the queue already
    not_copied: list[tuple[str, str]]  # (source, reason): no bytes to copy
    confident: int  # predictions at or above the threshold, left out
    total: int  # rows in labels.csv afterwards


class ReviewCsvError(ValueError):
    """labels.csv is not a review queue this code can trust; the message says what to fix."""


def labels_path(review_dir: str) -> str:
    return posixpath.join(review_dir, LABELS_FILE)


def read_rows(path: str) -> list[ReviewRow]:
    """The rows of a review labels.csv; a wrong header or status is refused, not guessed at."""
    with tf.io.gfile.GFile(path, "r") as f:
        reader = csv.reader(io.StringIO(f.read()))
    header = tuple(next(reader, ()))
    if header != HEADER:
        raise ReviewCsvError(
            f"{path}: the header must be `{','.join(HEADER)}` (a review queue written by "
            f"`captcha-ocr predict --review-dir`), got `{','.join(header)}`"
        )
    rows = []
    for line, values in enumerate(reader, start=2):
        if not values:
            continue
        if len(values) != len(HEADER):
            raise ReviewCsvError(f"{path}:{line}: {len(values)} fields, expected {len(HEADER)}")
        filename, label, prediction, confidence, status = values
        if status not in STATUSES:
            raise ReviewCsvError(
                f"{path}:{line}: status {status!r} is not one of {', '.join(STATUSES)}"
            )
        try:
            value = float(confidence)
        except ValueError:
            raise ReviewCsvError(f"{path}:{line}: confidence {confidence!r} is no number") from None
        rows.append(ReviewRow(filename, label, prediction, value, status))
    names = [row.filename for row in rows]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ReviewCsvError(f"{path}: files listed twice: {', '.join(twice)}")
    return rows


def check_files(path: str, rows: Sequence[ReviewRow]) -> None:
    """Every row names a plain file next to labels.csv (a hand edit may have mistyped one)."""
    folder = posixpath.dirname(path)
    unknown = [
        row.filename
        for row in rows
        if posixpath.basename(row.filename) != row.filename
        or not tf.io.gfile.exists(posixpath.join(folder, row.filename))
    ]
    if unknown:
        raise ReviewCsvError(
            f"{path}: {len(unknown)} rows name files that are not in {folder}: "
            f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}"
        )


def write_rows(path: str, rows: Iterable[ReviewRow]) -> None:
    """Replace labels.csv atomically: a hidden temporary file beside it, then a rename."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(
        (r.filename, r.label, r.prediction, f"{r.confidence:.6f}", r.status) for r in rows
    )
    artifact_io.write_file(path, text.getvalue())


def review_threshold(saved_model_dir: str) -> float:
    """The export's own `review_below`, fitted with its calibration (components/decoding.py).

    An export without one (from before calibration) gives decoding.DEFAULT_REVIEW_BELOW.
    """
    from components.pusher import ASSETS_EXTRA

    return load_decoding(posixpath.join(saved_model_dir, ASSETS_EXTRA)).review_below


def needs_review(prediction: Prediction, review_below: float) -> bool:
    return prediction.error is not None or prediction.confidence < review_below


def _free_name(folder: str, name: str, taken: set[str]) -> str:
    """`name`, or `stem-1.ext`, `stem-2.ext` ...: never a file that exists or is listed."""
    stem, ext = posixpath.splitext(name)
    candidate, n = name, 0
    while candidate in taken or tf.io.gfile.exists(posixpath.join(folder, candidate)):
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return candidate


def _sha256(path: str) -> str:
    with tf.io.gfile.GFile(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def add_to_queue(
    review_dir: str, predictions: Iterable[Prediction], review_below: float
) -> QueueResult:
    """Copy the unsure and undecodable captchas into `review_dir`; rewrite its labels.csv.

    Rows are sorted from least to most confident, so the page starts with the worst reads.
    """
    tf.io.gfile.makedirs(review_dir)
    path = labels_path(review_dir)
    rows = read_rows(path) if tf.io.gfile.exists(path) else []
    known = {_sha256(posixpath.join(review_dir, row.filename)) for row in rows}
    taken = {row.filename for row in rows}
    queued, already, not_copied, confident = [], [], [], 0
    for prediction in predictions:
        if not needs_review(prediction, review_below):
            confident += 1
            continue
        try:
            with tf.io.gfile.GFile(prediction.source, "rb") as f:
                data = f.read()
        except (tf.errors.OpError, OSError) as error:
            not_copied.append((prediction.source, prediction.error or str(error)))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in known:
            already.append(prediction.source)
            continue
        name = _free_name(review_dir, posixpath.basename(prediction.source), taken)
        with tf.io.gfile.GFile(posixpath.join(review_dir, name), "wb") as f:
            f.write(data)
        status = QUEUED if prediction.error is None else FAILED_TO_DECODE
        row = ReviewRow(name, prediction.text, prediction.text, prediction.confidence, status)
        queued.append(row)
        known.add(digest)
        taken.add(name)
    rows = sorted(rows + queued, key=lambda row: (row.confidence, row.filename))
    if queued or not tf.io.gfile.exists(path):
        write_rows(path, rows)
    return QueueResult(queued, already, not_copied, confident, len(rows))


def queue_predictions(
    review_dir: str,
    predictions: Sequence[Prediction],
    saved_model_dir: str,
    review_below: float | None = None,
) -> str:
    """`add_to_queue` with the export's threshold unless one is given; a summary to print."""
    threshold = review_threshold(saved_model_dir) if review_below is None else review_below
    result = add_to_queue(review_dir, predictions, threshold)
    lines = [
        f"review queue {review_dir}: {len(result.queued)} added (confidence below "
        f"{threshold:g} or failed to decode), {len(result.already_queued)} already "
        f"queued, {result.confident} confident; {result.total} in {LABELS_FILE}"
    ]
    lines += [f"  not queued, {source}: {reason}" for source, reason in result.not_copied]
    lines.append(f"  label them: captcha-ocr review {review_dir}")
    return "\n".join(lines)


def answer(path: str, filename: str, label: str, status: str) -> list[ReviewRow]:
    """Record a person's answer for one row, at once and atomically; returns all rows."""
    if status not in ANSWERED:
        raise ReviewCsvError(f"an answer is {' or '.join(ANSWERED)}, got {status!r}")
    label = label.strip()
    if status == LABELLED and not label:
        raise ReviewCsvError(f"{filename}: an empty label; mark it unreadable instead")
    rows = read_rows(path)
    if filename not in {row.filename for row in rows}:
        raise ReviewCsvError(f"{path} has no row for {filename!r}")
    rows = [
        dataclasses.replace(row, label=label if status == LABELLED else row.label, status=status)
        if row.filename == filename
        else row
        for row in rows
    ]
    write_rows(path, rows)
    return rows

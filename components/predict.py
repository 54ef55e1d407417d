"""Read captchas with an exported SavedModel, through the very signature TF Serving runs.

Used by `captcha-ocr predict` (files), by the Pusher's blessing and by the pipeline when it
compares models on retraining (`evaluate_saved_model`: the signature over the eval split's
raw image bytes, so a model is judged on exactly what a client would get back).
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable, Iterator, Sequence

import tensorflow as tf

from components import artifact_io, dataset, examples
from components.preprocessing import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS
from components.staging import Mirror

SERVING_SIGNATURE = "serving_default"
PREPROCESS_SIGNATURE = "preprocess"
INPUT_NAME = "image_bytes"
SAVED_MODEL_FILE = "saved_model.pb"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
INVALID_IMAGE = (
    "not a decodable image within the limits (PNG, JPEG, GIF or BMP of at most "
    f"{DEFAULT_MAX_PIXELS:,} pixels and {DEFAULT_MAX_FILE_BYTES:,} bytes expected)"
)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One file's answer; `error` says why there is no text (unreadable file, bad bytes).

    `has_text` false with no error: the image was read and holds no text (blank, no ink).
    """

    source: str
    text: str
    confidence: float
    valid: bool
    error: str | None = None
    has_text: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def saved_model_versions(base_dir: str) -> list[int]:
    """Complete versions under a TF Serving base path, oldest first.

    Only numeric folders holding a saved_model.pb count: an export still being written (or
    killed half-way) sits in a non-numeric temporary folder that TF Serving ignores too.
    """
    if not artifact_io.isdir(base_dir):
        return []
    versions = []
    for name in artifact_io.listdir(base_dir):
        if (
            name.isdigit()
            and int(name) > 0
            and artifact_io.exists(posixpath.join(base_dir, name, SAVED_MODEL_FILE))
        ):
            versions.append(int(name))
    return sorted(versions)


def resolve_saved_model(path: str) -> str:
    """A SavedModel folder as given, or the newest version under a TF Serving base path."""
    if artifact_io.exists(posixpath.join(path, SAVED_MODEL_FILE)):
        return path
    versions = saved_model_versions(path)
    if not versions:
        raise FileNotFoundError(
            f"{path} is neither a SavedModel nor a base path with numeric version folders "
            f"(run `captcha-ocr export` first)"
        )
    return posixpath.join(path, str(versions[-1]))


class ExportedModel:
    """A loaded export: calls `serving_default` on batches of encoded image bytes."""

    def __init__(self, path: str) -> None:
        self.path = resolve_saved_model(path)
        self._mirror = Mirror()  # a gs:// export is loaded from a local copy (staging)
        self._loaded = tf.saved_model.load(self._mirror.local(self.path))
        self.signature = self._loaded.signatures[SERVING_SIGNATURE]

    def predict_bytes(self, images: Sequence[bytes], sources: Sequence[str]) -> list[Prediction]:
        """One signature call; if it fails as a whole, item by item: a bad file costs one answer."""
        try:
            return self._call(images, sources)
        except tf.errors.InvalidArgumentError as error:
            if len(images) == 1:
                reason = _op_error_reason(error.message)
                return [Prediction(sources[0], "", 0.0, False, f"signature failed: {reason}")]
        return [
            answer
            for image, source in zip(images, sources, strict=True)
            for answer in self.predict_bytes([image], [source])
        ]

    def _call(self, images: Sequence[bytes], sources: Sequence[str]) -> list[Prediction]:
        outputs = self.signature(**{INPUT_NAME: tf.constant(list(images), tf.string)})
        texts = outputs["text"].numpy()
        confidences = outputs["confidence"].numpy()
        valids = outputs["valid"].numpy() if "valid" in outputs else [True] * len(images)
        has_texts = outputs["has_text"].numpy() if "has_text" in outputs else texts != b""
        return [
            Prediction(
                source,
                text.decode("utf-8"),
                float(confidence),
                bool(valid),
                None if valid else INVALID_IMAGE,
                bool(has_text),
            )
            for source, text, confidence, valid, has_text in zip(
                sources, texts, confidences, valids, has_texts, strict=True
            )
        ]


def _op_error_reason(message: str) -> str:
    """The op's own words in a graph error: the last line before its `[[{{node ...}}]]`."""
    lines = [line.strip() for line in message.split("[[", 1)[0].splitlines() if line.strip()]
    return lines[-1] if lines else message.strip()


def expand_inputs(paths: Iterable[str]) -> list[str]:
    """Files as given; a folder stands for the image files directly inside it, sorted."""
    files = []
    for path in paths:
        if tf.io.gfile.isdir(path):
            files.extend(
                posixpath.join(path, name)
                for name in sorted(tf.io.gfile.listdir(path))
                if name.lower().endswith(IMAGE_SUFFIXES)
            )
        else:
            files.append(path)
    return files


def predict_files(
    model: ExportedModel, files: Sequence[str], batch_size: int = 64
) -> Iterator[Prediction]:
    """Predictions in the order of `files`, a batch at a time; unreadable files get an error."""
    for start in range(0, len(files), batch_size):
        answers: dict[int, Prediction] = {}
        readable: list[tuple[int, bytes]] = []
        for index, path in enumerate(files[start : start + batch_size], start=start):
            try:
                with tf.io.gfile.GFile(path, "rb") as f:
                    readable.append((index, f.read()))
            except (tf.errors.OpError, OSError) as error:
                reason = getattr(error, "message", None) or str(error)
                answers[index] = Prediction(path, "", 0.0, False, f"cannot read file: {reason}")
        if readable:
            batch = model.predict_bytes(
                [data for _, data in readable], [files[index] for index, _ in readable]
            )
            answers.update(zip((index for index, _ in readable), batch, strict=True))
        yield from (answers[index] for index in sorted(answers))


def evaluate_saved_model(
    path: str, examples_dirs: str | list[str], split: str = examples.EVAL, batch_size: int = 64
) -> dict:
    """Sequence accuracy and CER of an export's serving signature on one split's raw bytes."""
    model = ExportedModel(path)
    correct = errors = characters = total = invalid = 0
    batches = (
        dataset.read_split(examples_dirs, split)
        .map(lambda ex: (ex["image"], ex["label"]))
        .batch(batch_size)
    )
    for image_bytes, labels in batches:
        outputs = model.signature(**{INPUT_NAME: image_bytes})
        texts = outputs["text"]
        distance = tf.edit_distance(
            tf.strings.unicode_split(texts, "UTF-8").to_sparse(),
            tf.strings.unicode_split(labels, "UTF-8").to_sparse(),
            normalize=False,
        )
        correct += int(tf.reduce_sum(tf.cast(texts == labels, tf.int32)))
        errors += float(tf.reduce_sum(distance))
        characters += int(tf.reduce_sum(tf.strings.length(labels, unit="UTF8_CHAR")))
        total += int(tf.shape(labels)[0])
        if "valid" in outputs:
            invalid += int(tf.reduce_sum(tf.cast(~outputs["valid"], tf.int32)))
    if total == 0:
        raise ValueError(f"the {split} split of {examples_dirs} is empty")
    return {
        "accuracy": correct / total,
        "cer": errors / max(characters, 1),
        "num_examples": total,
        "num_invalid": invalid,
        "saved_model": model.path,
        "split": split,
    }

"""Contract 1 of DESIGN.md: the TFRecord example, its splits and the vocabulary file.

Every component that reads or writes examples goes through this module, so the feature
names, the split rule and the vocabulary format are written down exactly once.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Sequence
from typing import Any

import tensorflow as tf

from components import artifact_io

TRAIN = "train"
EVAL = "eval"
SPLITS = (TRAIN, EVAL)
VOCAB_FILE = "vocab.txt"
METADATA_FILE = "metadata.json"
REJECTED_FILE = "rejected.jsonl"
SHARD_PREFIX = "data_tfrecord"
DEFAULT_EVAL_PERCENT = 20

FEATURE_SPEC = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "image_format": tf.io.FixedLenFeature([], tf.string),
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
    "channels": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.string),
    "label_ids": tf.io.RaggedFeature(tf.int64),
    "label_length": tf.io.FixedLenFeature([], tf.int64),
    "sha256": tf.io.FixedLenFeature([], tf.string),
    "source": tf.io.FixedLenFeature([], tf.string),
    "span": tf.io.FixedLenFeature([], tf.int64),
}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_for(sha256: str, eval_percent: int = DEFAULT_EVAL_PERCENT) -> str:
    """A pure function of the image bytes' digest, so an image never changes split."""
    return EVAL if int(sha256[:8], 16) % 100 < eval_percent else TRAIN


def split_dir(examples_dir: str, split: str) -> str:
    return posixpath.join(examples_dir, f"Split-{split}")


def shard_pattern(examples_dir: str, split: str) -> str:
    """Glob for one split's GZIP shards (works with tf.io.gfile.glob on gs:// too)."""
    return posixpath.join(split_dir(examples_dir, split), f"{SHARD_PREFIX}-*.gz")


def make_example(
    *,
    image: bytes,
    image_format: str,
    height: int,
    width: int,
    channels: int,
    label: str,
    label_ids: Sequence[int],
    sha256: str,
    source: str,
    span: int,
) -> tf.train.Example:
    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _ints(values: Iterable[int]) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": _bytes(image),
                "image_format": _bytes(image_format.encode()),
                "height": _ints([height]),
                "width": _ints([width]),
                "channels": _ints([channels]),
                "label": _bytes(label.encode("utf-8")),
                "label_ids": _ints(label_ids),
                "label_length": _ints([len(label_ids)]),
                "sha256": _bytes(sha256.encode()),
                "source": _bytes(source.encode("utf-8")),
                "span": _ints([span]),
            }
        )
    )


def read_vocab(path: str) -> list[str]:
    """One character per line; line number = id. The CTC blank is not in the file."""
    return parse_vocab(artifact_io.read_text(path))


def parse_vocab(text: str) -> list[str]:
    """The characters of a `vocab.txt`'s text, in order."""
    chars = text.split("\n")
    if chars and chars[-1] == "":
        chars.pop()
    return chars


def vocab_text(chars: Sequence[str]) -> str:
    """What `vocab.txt` holds for `chars`."""
    if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
        raise ValueError(f"a vocabulary is distinct single characters, got {list(chars)!r}")
    return "".join(f"{c}\n" for c in chars)


def write_vocab(path: str, chars: Sequence[str]) -> None:
    artifact_io.write_file(path, vocab_text(chars))


def encode_label(label: str, vocab: Sequence[str]) -> list[int]:
    index = {c: i for i, c in enumerate(vocab)}
    return [index[c] for c in label]


def read_metadata(examples_dir: str) -> dict[str, Any]:
    """ExampleGen's `metadata.json`: counts, label lengths and image sizes of one span."""
    return artifact_io.read_json(posixpath.join(examples_dir, METADATA_FILE))


def max_label_length(examples_dirs: Sequence[str]) -> int:
    """The longest label of any span: what the model's time steps must leave room for."""
    return max(read_metadata(d)["max_label_length"] for d in examples_dirs)


def label_lengths(examples_dirs: Sequence[str]) -> list[int]:
    """Every label length seen in any span: the lengths an answer may have.

    Empty (any length) when a span's metadata predates `label_length_counts`.
    """
    counts = [read_metadata(d).get("label_length_counts") for d in examples_dirs]
    if not all(counts):
        return []
    return sorted({int(n) for span in counts for n in span})


def combined_vocab(examples_dirs: Sequence[str]) -> list[str]:
    """The vocab of the newest span; every older span's vocab must be a prefix of it."""
    vocabs = [read_vocab(posixpath.join(d, VOCAB_FILE)) for d in examples_dirs]
    newest = max(vocabs, key=len)
    for directory, vocab in zip(examples_dirs, vocabs, strict=True):
        if newest[: len(vocab)] != vocab:
            raise ValueError(f"vocab of {directory} is not a prefix of the newest vocab {newest}")
    return newest


def as_list(examples_dirs: str | Sequence[str]) -> list[str]:
    """One ExampleGen output folder or several (spans) -> a list of folders."""
    return [examples_dirs] if isinstance(examples_dirs, str) else list(examples_dirs)

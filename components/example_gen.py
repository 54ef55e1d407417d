"""ExampleGen: an Apache Beam job that turns labelled captcha images into Contract 1 examples.

One job checks every image (it must decode with `preprocessing.decode_grayscale`, the decoder
training and serving use, within the same limits on pixels and bytes, checked from the header
before decoding), takes its label from the file name or a CSV,
rejects what cannot be used (with the reason, into `rejected.jsonl`), removes duplicate
images, builds the vocabulary, splits train/eval by SHA-256 and writes GZIP TFRecord shards.
Shards are written by the job itself, one shard per (split, shard number), with records sorted
by SHA-256, so a re-run on the same inputs gives byte-identical files.

An image's bytes cross one shuffle: the split and the shard are functions of its SHA-256, so
records are grouped by (split, shard) straight after decoding and exact duplicates meet in the
shard writer, which drops them. Beside it, a shuffle of the records without their bytes, by
SHA-256, decides the same duplicates for `rejected.jsonl` and the vocabulary.

The job writes into a temporary sibling folder that is renamed into place only after it has
succeeded and the counts add up (inputs = written + rejected); on filesystems without
directory rename (gs://) it writes in place and `metadata.json`, written last, marks the
output complete.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import logging
import os
import posixpath
import re
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from components import examples, preprocessing

# Parses `226md.png` (the Keras data set) and `ab12_17.png` (synth output) alike.
DEFAULT_LABEL_PATTERN = r"^(?P<label>[^_]+)"
DEFAULT_NUM_SHARDS = 4
SUMMARY_FILE = "_summary.json"
# Input paths per element of the job's first PCollection: the unit of work a worker takes.
# Batches keep the job's start (pickling the input list, redistributing it) cheap at 50,000.
INPUTS_PER_BATCH = 256
SUPPORTED_FORMATS = {"PNG": "png", "JPEG": "jpeg"}  # Contract 1's `image_format` values
# Geometry no captcha has: fewer rows or columns than a glyph needs, or a shape that the
# model's input (200x50 by default) would squash beyond reading.
DEFAULT_MIN_SIDE = 8
DEFAULT_MAX_ASPECT = 25.0  # longer side / shorter side
# Kept images whose shape is far from the data set's own (aspect ratio more than this factor
# from the median's, or area more than its square) are listed in metadata.json.
OUTLIER_FACTOR = 2.0
OUTLIER_EXAMPLES = 5  # example sources kept per outlying size
OUTLIER_SIZES = 100  # outlying sizes listed at most

# Rejection reasons (the `reason` field of rejected.jsonl).
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not_an_image"
UNSUPPORTED_FORMAT = "unsupported_format"
EMPTY_FILE = "empty_file"
TOO_LARGE = "too_large"
UNDECODABLE = "undecodable"
IMPLAUSIBLE_SIZE = "implausible_size"
EMPTY_LABEL = "empty_label"
BAD_CHARACTER = "bad_character"
LABEL_TOO_LONG = "label_too_long"
DUPLICATE = "duplicate"
CONFLICTING_LABELS = "conflicting_labels"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    labels_csv: str | None = None  # `filename,label` rows, names relative to the CSV's folder
    label_pattern: str = DEFAULT_LABEL_PATTERN  # regex on the file name stem; group `label`
    alphabet: str | None = None  # allowed characters; None allows any
    vocab_path: str | None = None  # an existing vocab.txt (retraining): never re-mapped
    max_label_length: int | None = None  # longer labels are rejected; None: no limit
    eval_percent: int = examples.DEFAULT_EVAL_PERCENT
    num_shards: int = DEFAULT_NUM_SHARDS  # per split
    span: int = 0
    overwrite: bool = False
    max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS  # declared by the header; else too_large
    max_file_bytes: int = preprocessing.DEFAULT_MAX_FILE_BYTES  # larger files: too_large
    min_side: int = DEFAULT_MIN_SIDE  # fewer rows or columns: implausible_size
    max_aspect: float = DEFAULT_MAX_ASPECT  # longer / shorter side beyond it: implausible_size

    def __post_init__(self) -> None:
        if not 0 <= self.eval_percent <= 100:
            raise ValueError(f"eval_percent must be in 0..100, got {self.eval_percent}")
        if self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")
        if self.max_label_length is not None and self.max_label_length < 1:
            raise ValueError(f"max_label_length must be >= 1, got {self.max_label_length}")
        if min(self.max_pixels, self.max_file_bytes, self.min_side) < 1 or self.max_aspect < 1:
            raise ValueError("max_pixels, max_file_bytes, min_side must be >= 1 and "
                             f"max_aspect >= 1, got {self}")
        re.compile(self.label_pattern)


class Inspected(NamedTuple):
    """An input that decoded and has a usable label."""

    sha256: str
    source: str
    label: str
    image: bytes
    image_format: str
    height: int
    width: int
    channels: int


@dataclass
class IngestPlan:
    """Everything the job needs, resolved in the driver before the pipeline is built."""

    inputs: list[str]
    output_dir: str  # where the job writes (a temporary sibling of the final output locally)
    config: IngestConfig
    labels_by_source: dict[str, str] | None = None  # from the CSV; None: from file names
    vocab: list[str] | None = None  # fixed vocabulary (retraining); None: built by the job
    skipped_hidden: int = 0


def _rejection(source: str, reason: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"source": source, "reason": reason, "detail": detail, **extra}


def _channels(image) -> int:
    """Channels TensorFlow's decoder returns: palette images decode to RGB or RGBA."""
    if image.mode == "P":
        return 4 if "transparency" in image.info else 3
    return len(image.getbands())


def _op_message(error: tf.errors.OpError) -> str:
    """An eager op error in the op's own words, without TF's node and op decorations."""
    return re.sub(r"\{\{.*?\}\}\s*", "", error.message).split(" [Op:")[0].strip()


class _Candidate(NamedTuple):
    """A file that PIL identified as PNG or JPEG, waiting for the shared decoder's check."""

    source: str
    label: str
    data: bytes
    sha256: str
    image_format: str
    channels: int


class InspectImage(beam.DoFn):
    """Reads a batch of files and checks each: it decodes with the decoder training and serving
    use, within the limits, in a plausible shape, with a usable label; else a reason.

    Batches, because one TensorFlow call costs more than decoding a captcha: the batch's
    images are checked in one `preprocessing.decoded_each` call, and only the few that fail
    it are looked at one by one for the reason.
    """

    REJECTED = "rejected"

    def __init__(self, plan_labels: dict[str, str] | None, config: IngestConfig,
                 vocab: list[str] | None) -> None:
        self._labels = plan_labels
        self._config = config
        self._allowed = set(config.alphabet) if config.alphabet is not None else None
        self._vocab = set(vocab) if vocab is not None else None

    def setup(self) -> None:
        self._regex = re.compile(self._config.label_pattern)

    def _label(self, source: str) -> str:
        if self._labels is not None:
            return self._labels.get(source, "")
        stem = posixpath.splitext(posixpath.basename(source))[0]
        match = self._regex.search(stem)
        if match is None:
            return ""
        return match.group("label") if "label" in self._regex.groupindex else match.group(0)

    def _label_problem(self, label: str) -> tuple[str, str] | None:
        max_length = self._config.max_label_length
        if not label:
            where = "no row in the labels CSV" if self._labels is not None else (
                f"file name does not match label pattern {self._config.label_pattern!r}")
            return EMPTY_LABEL, where
        if self._allowed is not None and (bad := sorted(set(label) - self._allowed)):
            return BAD_CHARACTER, f"characters {''.join(bad)!r} are not in the alphabet"
        if self._vocab is not None and (bad := sorted(set(label) - self._vocab)):
            return BAD_CHARACTER, f"characters {''.join(bad)!r} are not in the vocabulary"
        if max_length is not None and len(label) > max_length:
            return LABEL_TOO_LONG, f"{len(label)} characters > maximum {max_length}"
        return None

    def _geometry_problem(self, height: int, width: int) -> tuple[str, str] | None:
        config = self._config
        if min(height, width) < config.min_side:
            return IMPLAUSIBLE_SIZE, (f"{width}x{height}: a side under {config.min_side} "
                                      "pixels cannot hold a glyph")
        aspect = max(height, width) / min(height, width)
        if aspect > config.max_aspect:
            return IMPLAUSIBLE_SIZE, (f"{width}x{height}: aspect ratio {aspect:.0f}:1 beyond "
                                      f"{config.max_aspect:g}:1")
        return None

    def _decode_problem(self, data: bytes) -> tuple[str, str]:
        """Why an image failed the batch check (too large, or the decoder's own error)."""
        try:
            height, width, frames = (int(v) for v in preprocessing.header_size(data).numpy())
            if height * width * frames > self._config.max_pixels:
                shape = f"{width}x{height}" + (f", up to {frames} frames" if frames > 1 else "")
                return TOO_LARGE, (f"{shape}: {height * width * frames:,} pixels > the limit "
                                   f"{self._config.max_pixels:,}")
            preprocessing.decode_grayscale(data)
        except tf.errors.OpError as e:
            return UNDECODABLE, _op_message(e)
        return UNDECODABLE, "did not decode with the shared decoder"

    def _identify(self, source: str) -> _Candidate | dict[str, Any]:
        """Reads and identifies one file (PIL reads the header only): a candidate or a rejection."""
        from PIL import Image, UnidentifiedImageError

        label = self._label(source)
        limit = self._config.max_file_bytes
        try:
            with FileSystems.open(source, compression_type="uncompressed") as f:
                data = f.read(limit + 1)  # never more than the limit into memory
        except Exception as e:
            return _rejection(source, UNREADABLE, f"{type(e).__name__}: {e}", label=label)
        if not data:
            return _rejection(source, EMPTY_FILE, "0 bytes", label=label)
        if len(data) > limit:
            return _rejection(source, TOO_LARGE, f"more than the limit of {limit:,} bytes",
                              label=label)
        sha256 = examples.sha256_hex(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            return _rejection(source, NOT_AN_IMAGE, "not a format PIL can identify",
                              label=label, sha256=sha256)
        except Image.DecompressionBombError as e:
            return _rejection(source, TOO_LARGE, str(e), label=label, sha256=sha256)
        except Exception as e:  # a header PIL cannot parse
            return _rejection(source, UNDECODABLE, f"{type(e).__name__}: {e}", label=label,
                              sha256=sha256)
        image_format = SUPPORTED_FORMATS.get(image.format or "")
        if image_format is None:
            return _rejection(source, UNSUPPORTED_FORMAT,
                              f"{image.format}: only PNG and JPEG are ingested", label=label,
                              sha256=sha256)
        return _Candidate(source, label, data, sha256, image_format, _channels(image))

    def process(self, sources: list[str]) -> Iterator[Any]:
        candidates = []
        for source in sources:
            identified = self._identify(source)
            if isinstance(identified, dict):
                yield beam.pvalue.TaggedOutput(self.REJECTED, identified)
            else:
                candidates.append(identified)
        sizes = preprocessing.decoded_sizes([c.data for c in candidates],
                                            self._config.max_pixels, self._config.max_file_bytes)
        for index, c in enumerate(candidates):
            if index in sizes:
                height, width = sizes[index]
                problem = self._geometry_problem(height, width) or self._label_problem(c.label)
            else:
                problem = self._decode_problem(c.data)
            if problem is not None:
                yield beam.pvalue.TaggedOutput(self.REJECTED, _rejection(
                    c.source, problem[0], problem[1], label=c.label, sha256=c.sha256))
                continue
            yield Inspected(c.sha256, c.source, c.label, c.data, c.image_format, height, width,
                            c.channels)


def resolve_duplicates(records: Iterable[Inspected]) -> tuple[Inspected | None, list[dict[str, Any]]]:
    """Records of one SHA-256 -> (the one to write or None, the rejected).

    Same bytes and label: keep the smallest source path. Same bytes, other labels: reject all.
    A pure function of the group, so the job's two steps that see a group decide alike.
    """
    records = sorted(records, key=lambda r: r.source)
    labels = sorted({r.label for r in records})
    if len(labels) > 1:
        detail = "same image bytes with labels " + ", ".join(
            f"{r.label!r} ({r.source})" for r in records)
        return None, [_rejection(r.source, CONFLICTING_LABELS, detail, label=r.label,
                                 sha256=r.sha256) for r in records]
    keep, *duplicates = records
    return keep, [_rejection(r.source, DUPLICATE, f"duplicate of {keep.source}", label=r.label,
                             sha256=r.sha256) for r in duplicates]


class ResolveDuplicates(beam.DoFn):
    """(sha256, records without image bytes) -> the kept record, and the rejected ones."""

    REJECTED = "rejected"

    def process(self, element: tuple[str, Iterable[Inspected]]) -> Iterator[Any]:
        keep, rejected = resolve_duplicates(element[1])
        if keep is not None:
            yield keep
        for rejection in rejected:
            yield beam.pvalue.TaggedOutput(self.REJECTED, rejection)


class ExampleStats(beam.CombineFn):
    """Character counts, label lengths, image sizes and split counts in one pass."""

    def __init__(self, eval_percent: int) -> None:
        self._eval_percent = eval_percent

    def create_accumulator(self) -> dict[str, Any]:
        return {"chars": collections.Counter(), "lengths": collections.Counter(),
                "splits": collections.Counter(), "formats": collections.Counter(),
                "channels": collections.Counter(), "heights": [], "widths": [], "sizes": {}}

    def add_input(self, acc: dict[str, Any], r: Inspected) -> dict[str, Any]:
        _add_size(acc["sizes"], f"{r.width}x{r.height}", 1, [r.source])
        acc["chars"].update(r.label)
        acc["lengths"][len(r.label)] += 1
        acc["splits"][examples.split_for(r.sha256, self._eval_percent)] += 1
        acc["formats"][r.image_format] += 1
        acc["channels"][r.channels] += 1
        acc["heights"] = _min_max(acc["heights"], [r.height])
        acc["widths"] = _min_max(acc["widths"], [r.width])
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, Any]]) -> dict[str, Any]:
        merged = self.create_accumulator()
        for acc in accs:
            for key in ("chars", "lengths", "splits", "formats", "channels"):
                merged[key].update(acc[key])
            merged["heights"] = _min_max(merged["heights"], acc["heights"])
            merged["widths"] = _min_max(merged["widths"], acc["widths"])
            for size, (count, sources) in acc["sizes"].items():
                _add_size(merged["sizes"], size, count, sources)
        return merged

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        return {
            "character_counts": dict(sorted(acc["chars"].items())),
            "label_length_counts": {str(k): v for k, v in sorted(acc["lengths"].items())},
            "split_counts": dict(sorted(acc["splits"].items())),
            "format_counts": dict(sorted(acc["formats"].items())),
            "channel_counts": {str(k): v for k, v in sorted(acc["channels"].items())},
            "height_range": acc["heights"],
            "width_range": acc["widths"],
            "sizes": dict(sorted(acc["sizes"].items())),
        }


def _add_size(sizes: dict[str, list], size: str, count: int, sources: list[str]) -> None:
    """{"WxH": [count, the first OUTLIER_EXAMPLES sources]}, updated in place."""
    total, examples_so_far = sizes.get(size, (0, []))
    sizes[size] = [total + count, sorted(examples_so_far + sources)[:OUTLIER_EXAMPLES]]


def size_outliers(sizes: dict[str, list]) -> dict[str, Any]:
    """Kept images whose shape is far from the data set's: listed, not silently trained on.

    Far: an aspect ratio more than OUTLIER_FACTOR times above or below the median image's,
    or an area more than OUTLIER_FACTOR squared times. Medians over images, not sizes.
    """
    parsed = [(tuple(map(int, size.split("x"))), count, sources)
              for size, (count, sources) in sizes.items()]
    if not parsed:
        return {"count": 0, "sizes": []}

    def median(key) -> float:
        values = sorted((key(w, h), count) for (w, h), count, _ in parsed)
        middle, seen = sum(count for _, count in values) / 2, 0
        for value, count in values:
            seen += count
            if seen >= middle:
                return value
        return values[-1][0]

    aspect, area = median(lambda w, h: w / h), median(lambda w, h: w * h)
    far = [{"width": w, "height": h, "count": count, "examples": sources}
           for (w, h), count, sources in sorted(parsed, key=lambda p: -p[1])
           if max(w / h / aspect, aspect * h / w) > OUTLIER_FACTOR
           or max(w * h / area, area / (w * h)) > OUTLIER_FACTOR**2]
    return {"count": sum(o["count"] for o in far), "median_aspect": round(aspect, 3),
            "median_area": area, "rule": (f"aspect ratio over {OUTLIER_FACTOR:g}x, or area over "
                                          f"{OUTLIER_FACTOR**2:g}x, from the median image's"),
            "sizes": far[:OUTLIER_SIZES]}


def _min_max(current: list[int], values: Sequence[int]) -> list[int]:
    both = list(current) + list(values)
    return [min(both), max(both)] if both else []


def _choose_vocab(stats: dict[str, Any], fixed: list[str] | None) -> list[str]:
    """A fixed vocabulary stays as it is; otherwise the sorted characters seen."""
    return list(fixed) if fixed is not None else sorted(stats["character_counts"])


def shard_key(sha256: str, eval_percent: int, num_shards: int) -> tuple[str, int]:
    """(split, shard) of an image: both functions of its digest, so exact duplicates meet."""
    shard = int(sha256[8:16], 16) % num_shards  # other digits than the split's
    return examples.split_for(sha256, eval_percent), shard


def shard_path(output_dir: str, split: str, shard: int, num_shards: int) -> str:
    name = f"{examples.SHARD_PREFIX}-{shard:05d}-of-{num_shards:05d}.gz"
    return posixpath.join(examples.split_dir(output_dir, split), name)


def write_shard(path: str, records: Iterable[bytes]) -> int:
    """GZIP TFRecord file (deterministic bytes: zlib's gzip header carries no time)."""
    count = 0
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for record in records:
            writer.write(record)
            count += 1
    return count


class WriteShard(beam.DoFn):
    """Writes one shard: duplicates resolved, records sorted by SHA-256 (re-runs byte-identical).

    The images reach this step through a single shuffle, keyed by (split, shard); the same
    `resolve_duplicates` already ran on their SHA-256 groups, without the bytes, for the
    rejections and the vocabulary, so both steps keep the same records.
    """

    def __init__(self, output_dir: str, num_shards: int, span: int) -> None:
        self._output_dir = output_dir
        self._num_shards = num_shards
        self._span = span

    def process(self, element: tuple[tuple[str, int], Iterable[Inspected]],
                vocab: list[str]) -> Iterator[tuple[str, int]]:
        (split, shard), records = element
        by_sha256: dict[str, list[Inspected]] = collections.defaultdict(list)
        for r in records:
            by_sha256[r.sha256].append(r)
        path = shard_path(self._output_dir, split, shard, self._num_shards)
        tf.io.gfile.makedirs(posixpath.dirname(path))
        kept = (resolve_duplicates(by_sha256[sha256])[0] for sha256 in sorted(by_sha256))
        yield split, write_shard(path, (self._encode(r, vocab) for r in kept if r is not None))

    def _encode(self, r: Inspected, vocab: list[str]) -> bytes:
        return examples.make_example(
            image=r.image, image_format=r.image_format, height=r.height, width=r.width,
            channels=r.channels, label=r.label, label_ids=examples.encode_label(r.label, vocab),
            sha256=r.sha256, source=r.source, span=self._span,
        ).SerializeToString()


def _write_summary(stats: dict[str, Any], output_dir: str, vocab: list[str],
                   written: dict[str, int], rejected: list[dict[str, Any]]) -> None:
    """The job's last step: rejected.jsonl and the counts the driver checks."""
    rejected = sorted(rejected, key=lambda r: (r["source"], r["reason"]))
    with tf.io.gfile.GFile(posixpath.join(output_dir, examples.REJECTED_FILE), "w") as f:
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rejected))
    summary = {**stats, "vocab": vocab, "written": dict(sorted(written.items())),
               "rejected_reasons": dict(sorted(collections.Counter(
                   r["reason"] for r in rejected).items())),
               "num_rejected": len(rejected)}
    with tf.io.gfile.GFile(posixpath.join(output_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f)


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def build_pipeline(pipeline: beam.Pipeline, plan: IngestPlan) -> None:
    """Adds the ExampleGen transforms to `pipeline` (separate from run, so it can be inspected)."""
    config = plan.config
    inspected = (
        pipeline
        | "ListInputs" >> beam.Create(_batches(plan.inputs, INPUTS_PER_BATCH))  # spread out by Create
        | "Inspect" >> beam.ParDo(InspectImage(plan.labels_by_source, config, plan.vocab))
        .with_outputs(InspectImage.REJECTED, main="ok")
    )
    kept = (
        inspected.ok
        | "KeyBySha256" >> beam.Map(lambda r: (r.sha256, r._replace(image=b"")))
        | "GroupBySha256" >> beam.GroupByKey()
        | "ResolveDuplicates" >> beam.ParDo(ResolveDuplicates())
        .with_outputs(ResolveDuplicates.REJECTED, main="kept")
    )
    stats = kept.kept | "Stats" >> beam.CombineGlobally(ExampleStats(config.eval_percent))
    vocab = stats | "Vocab" >> beam.Map(_choose_vocab, plan.vocab)
    written = (
        inspected.ok
        | "KeyByShard" >> beam.Map(
            lambda r: (shard_key(r.sha256, config.eval_percent, config.num_shards), r))
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(
            WriteShard(plan.output_dir, config.num_shards, config.span),
            beam.pvalue.AsSingleton(vocab))
        | "CountWritten" >> beam.CombinePerKey(sum)
    )
    rejected = (
        (inspected[InspectImage.REJECTED], kept[ResolveDuplicates.REJECTED])
        | "AllRejected" >> beam.Flatten()
        | "CollectRejected" >> beam.combiners.ToList()
    )
    _ = stats | "WriteSummary" >> beam.Map(
        _write_summary, plan.output_dir, beam.pvalue.AsSingleton(vocab),
        beam.pvalue.AsDict(written), beam.pvalue.AsSingleton(rejected))


def _is_local(path: str) -> bool:
    return "://" not in path


def list_inputs(images: str) -> tuple[list[str], int]:
    """Files of a folder (not recursive) or of a glob pattern, sorted; hidden files skipped."""
    pattern = images
    if not any(c in images for c in "*?["):
        is_folder = (os.path.isdir(images) if _is_local(images)
                     else tf.io.gfile.isdir(images))
        if is_folder:
            pattern = images.rstrip("/") + "/*"
    paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    if _is_local(images):
        paths = [os.path.abspath(p) for p in paths if not os.path.isdir(p)]
    visible = sorted(p for p in paths if not posixpath.basename(p).startswith("."))
    return visible, len(paths) - len(visible)


def read_labels_csv(path: str) -> dict[str, str]:
    """`filename,label` rows (file names relative to the CSV's folder) -> {source: label}."""
    with tf.io.gfile.GFile(path, "r") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    if not {"filename", "label"} <= set(reader.fieldnames or ()):
        raise ValueError(f"{path}: the header must be `filename,label`, got {reader.fieldnames}")
    folder = posixpath.dirname(path)
    labels: dict[str, str] = {}
    for row in rows:
        source = posixpath.join(folder, row["filename"].strip())
        if _is_local(source):
            source = os.path.abspath(source)
        label = (row["label"] or "").strip()
        if labels.get(source, label) != label:
            raise ValueError(f"{path}: {row['filename']!r} has two labels, "
                             f"{labels[source]!r} and {label!r}")
        labels[source] = label
    return labels


def plan_ingest(images: str, output_dir: str, config: IngestConfig) -> IngestPlan:
    inputs, skipped_hidden = list_inputs(images)
    labels = None
    if config.labels_csv:
        labels = read_labels_csv(config.labels_csv)
        csv_path = os.path.abspath(config.labels_csv) if _is_local(config.labels_csv) else config.labels_csv
        inputs = sorted((set(inputs) | set(labels)) - {csv_path})
    if not inputs:
        raise FileNotFoundError(f"no input files match {images!r}")
    vocab = examples.read_vocab(config.vocab_path) if config.vocab_path else None
    return IngestPlan(inputs=inputs, output_dir=output_dir, config=config,
                      labels_by_source=labels, vocab=vocab, skipped_hidden=skipped_hidden)


def _check_output(output: str, overwrite: bool) -> None:
    if tf.io.gfile.exists(output) and tf.io.gfile.listdir(output) and not overwrite:
        complete = tf.io.gfile.exists(posixpath.join(output, examples.METADATA_FILE))
        state = "a complete ExampleGen output" if complete else "not empty"
        raise FileExistsError(f"{output} is {state}; choose another folder or overwrite")


def _prepare_work_dir(output: str) -> str:
    """The folder the job writes into: a fresh temporary sibling locally, else `output`."""
    if _is_local(output):
        parent, name = os.path.split(os.path.abspath(output))
        os.makedirs(parent, exist_ok=True)
        return os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    if tf.io.gfile.exists(output):
        tf.io.gfile.rmtree(output)  # only reached with overwrite (see _check_output)
    return output


def _publish(work_dir: str, output: str) -> None:
    if work_dir == output:
        return
    if os.path.exists(output):
        trash = f"{work_dir}.old"
        os.rename(output, trash)
        os.rename(work_dir, output)
        tf.io.gfile.rmtree(trash)
    else:
        os.rename(work_dir, output)


def _ensure_all_shards(work_dir: str, num_shards: int) -> None:
    """A split with fewer examples than shards still gets every shard file (empty ones)."""
    for split in examples.SPLITS:
        tf.io.gfile.makedirs(examples.split_dir(work_dir, split))
        for shard in range(num_shards):
            path = shard_path(work_dir, split, shard, num_shards)
            if not tf.io.gfile.exists(path):
                write_shard(path, [])


def _metadata(images: str, plan: IngestPlan, summary: dict[str, Any],
              options: PipelineOptions) -> dict[str, Any]:
    config = plan.config
    lengths = sorted(int(k) for k in summary["label_length_counts"])
    counts = {split: summary["written"].get(split, 0) for split in examples.SPLITS}
    return {
        "source": images,
        "labels_csv": config.labels_csv,
        "span": config.span,
        "num_inputs": len(plan.inputs),
        "num_written": sum(counts.values()),
        "num_rejected": summary["num_rejected"],
        "rejected_reasons": summary["rejected_reasons"],
        "skipped_hidden_files": plan.skipped_hidden,
        "counts": counts,
        "vocab_size": len(summary["vocab"]),
        "vocab_from": config.vocab_path or "built from these labels",
        "character_counts": summary["character_counts"],
        "label_length_range": [lengths[0], lengths[-1]] if lengths else [],
        "label_length_counts": summary["label_length_counts"],
        "max_label_length": config.max_label_length or (lengths[-1] if lengths else 0),
        "image_height_range": summary["height_range"],
        "image_width_range": summary["width_range"],
        "size_outliers": size_outliers(summary["sizes"]),
        "format_counts": summary["format_counts"],
        "channel_counts": summary["channel_counts"],
        "eval_percent": config.eval_percent,
        "num_shards": config.num_shards,
        "config": asdict(config),
        "beam_options": options.get_all_options(drop_default=True, retain_unknown_options=True),
    }


def run_ingest(images: str, output: str, config: IngestConfig,
               beam_args: Sequence[str] = ()) -> dict:
    """Runs the ExampleGen job; returns the content of `<output>/metadata.json`."""
    _check_output(output, config.overwrite)
    plan = plan_ingest(images, output, config)
    work_dir = _prepare_work_dir(output)
    plan.output_dir = work_dir
    options = PipelineOptions(list(beam_args))
    log.info("ingesting %d files from %s into %s", len(plan.inputs), images, output)
    try:
        tf.io.gfile.makedirs(work_dir)
        with beam.Pipeline(options=options) as pipeline:
            build_pipeline(pipeline, plan)
        summary_path = posixpath.join(work_dir, SUMMARY_FILE)
        with tf.io.gfile.GFile(summary_path) as f:
            summary = json.load(f)
        num_written = sum(summary["written"].values())
        if num_written + summary["num_rejected"] != len(plan.inputs):
            hint = ""
            if options.get_all_options().get("direct_num_workers", 1) != 1:
                hint = (" (Beam 2.61's DirectRunner with several workers, multi_threading or "
                        "multi_processing, has dropped elements of large jobs here; use the "
                        "default in_memory mode)")
            raise RuntimeError(
                f"lost inputs: {len(plan.inputs)} in, {num_written} written, "
                f"{summary['num_rejected']} rejected; nothing was kept{hint}")
        if num_written == 0:
            raise ValueError(f"no usable images in {images}: rejected "
                             f"{summary['rejected_reasons']}")
        _ensure_all_shards(work_dir, config.num_shards)
        examples.write_vocab(posixpath.join(work_dir, examples.VOCAB_FILE), summary["vocab"])
        metadata = _metadata(images, plan, summary, options)
        tf.io.gfile.remove(summary_path)
        with tf.io.gfile.GFile(posixpath.join(work_dir, examples.METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
    except BaseException:
        if work_dir != output and tf.io.gfile.exists(work_dir):
            tf.io.gfile.rmtree(work_dir)
        raise
    _publish(work_dir, output)
    if metadata["size_outliers"]["count"]:
        log.warning("%d images are far from the data set's shape (metadata.json, "
                    "size_outliers): %s", metadata["size_outliers"]["count"],
                    ", ".join(f"{o['width']}x{o['height']} ({o['count']})"
                              for o in metadata["size_outliers"]["sizes"][:5]))
    log.info("wrote %s: %s, %d rejected", output, metadata["counts"], metadata["num_rejected"])
    return metadata

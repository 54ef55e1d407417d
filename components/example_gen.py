"""ExampleGen: an Apache Beam job that turns labelled captcha images into Contract 1 examples.

One job checks every image, takes its label from the file name or a CSV, rejects what cannot
be used (with the reason, into `rejected.jsonl`), removes duplicate images, builds the
vocabulary, splits train/eval by SHA-256 and writes GZIP TFRecord shards. An image must be
within the size limits and of a plausible shape by its header (PIL reads it without decoding,
so a decompression bomb is refused undecoded), and must decode with
`preprocessing.decode_rgb`, the decoder training and serving use: what is written
trains and is served. Kept images far from the data set's usual shape are listed in
`metadata.json` (`size_outliers`).
Shards are written by the job itself, one shard per (split, shard number), with records sorted
by SHA-256, so a re-run on the same inputs gives byte-identical files.

An image's bytes cross one shuffle: the split and the shard are functions of its SHA-256, so
records are grouped by (split, shard) straight after decoding and exact duplicates meet in the
shard writer, which drops them. Beside it, a shuffle of the records without their bytes, by
SHA-256, decides the same duplicates for `rejected.jsonl` and the vocabulary. An image already
in an earlier span (`earlier_spans`: their digests, read from their shards, reach both steps as
a side input) is a duplicate too, and its rejection names that span.

The job writes into a temporary sibling folder that is renamed into place only after it has
succeeded and the counts add up (inputs = written + rejected); on filesystems without
directory rename (gs://) it writes in place and `metadata.json`, written last, marks the
output complete. All of its I/O goes through Beam's FileSystems (TFRecords framed by Beam's
TFRecord coder), so it runs unchanged on local paths, gs:// and a local GCS emulator.
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
import shutil
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.options.pipeline_options import PipelineOptions

from components import examples, preprocessing, review_queue
from components.settings import setting

# Parses `226md.png` (the Keras data set) and `ab12_17.png` (synth output) alike.
DEFAULT_LABEL_PATTERN = r"^(?P<label>[^_]+)"
DEFAULT_NUM_SHARDS = 4
SUMMARY_FILE = "_summary.json"
# Input paths per element of the job's first PCollection: the unit of work a worker takes.
# Batches keep the job's start (pickling the input list, redistributing it) cheap at 50,000,
# and `InspectImage` decodes a batch in one TensorFlow call.
INPUTS_PER_BATCH = 256
SUPPORTED_FORMATS = {"PNG": "png", "JPEG": "jpeg"}  # Contract 1's `image_format` values
# Geometry no captcha has: fewer rows or columns than a glyph needs, or a shape that the
# model's input would squash beyond reading (and that would stretch the input size the
# trainer derives from the data).
DEFAULT_MIN_SIDE = 8
DEFAULT_MAX_ASPECT = 25.0  # longer side / shorter side
# Kept images whose shape is far from the data set's own (aspect ratio more than this factor
# from the median image's, or area more than its square) are listed in metadata.json.
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
# A review queue's labels.csv (components/review_queue.py) withholds the rows a person has
# not answered, or could not read: listed with these reasons, never trained on.
NOT_REVIEWED = "not_reviewed"
MARKED_UNREADABLE = "marked_unreadable"

log = logging.getLogger(__name__)

# This component's folder under the pipeline root (pipeline/runner.py).
PIPELINE_FOLDER = "ExampleGen"


@dataclass(frozen=True)
class IngestConfig:
    labels_csv: str | None = setting(
        None,
        "CSV with header filename,label (names relative to the CSV's folder)",
        flag="--labels",
        metavar="CSV",
        shown_default="labels from the file names",
    )
    label_pattern: str = setting(
        DEFAULT_LABEL_PATTERN,
        "regex on the file name stem; its group `label` (or the whole "
        "match) is the label: 226md.png -> 226md, ab12_17.png -> ab12",
    )
    alphabet: str | None = setting(
        None, "allowed characters; labels with others are rejected", shown_default="any"
    )
    vocab_path: str | None = setting(
        None,
        "use this vocab.txt (retraining): characters outside it are rejected",
        flag="--vocab",
        metavar="VOCAB_TXT",
    )
    max_label_length: int | None = setting(None, "reject longer labels", shown_default="no limit")
    eval_percent: int = setting(
        examples.DEFAULT_EVAL_PERCENT, "share of images (by SHA-256) in the eval split"
    )
    num_shards: int = setting(DEFAULT_NUM_SHARDS, "TFRecord shards per split")
    span: int = setting(0, "ingestion batch number (0 first, then 1, 2, ... per retraining)")
    # ExampleGen outputs of earlier spans: an image already there is a duplicate.
    earlier_spans: tuple[str, ...] = ()
    overwrite: bool = setting(False, "replace an existing output")
    max_pixels: int = setting(
        preprocessing.DEFAULT_MAX_PIXELS,
        "larger images (decoded pixels, by their header) are rejected as too_large; the "
        "serving signature's limit",
    )
    max_file_bytes: int = setting(
        preprocessing.DEFAULT_MAX_FILE_BYTES, "larger files are rejected as too_large"
    )
    min_side: int = setting(
        DEFAULT_MIN_SIDE, "images with fewer rows or columns are rejected as implausible_size"
    )
    max_aspect: float = setting(
        DEFAULT_MAX_ASPECT,
        "images whose longer side / shorter side is larger are rejected as implausible_size",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.eval_percent <= 100:
            raise ValueError(f"eval_percent must be in 0..100, got {self.eval_percent}")
        if self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")
        if self.max_label_length is not None and self.max_label_length < 1:
            raise ValueError(f"max_label_length must be >= 1, got {self.max_label_length}")
        if min(self.max_pixels, self.max_file_bytes, self.min_side) < 1 or self.max_aspect < 1:
            raise ValueError(
                "max_pixels, max_file_bytes and min_side must be >= 1 and max_aspect >= 1, got "
                f"{self.max_pixels}, {self.max_file_bytes}, {self.min_side}, {self.max_aspect}"
            )
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
    withheld: dict[str, tuple[str, str]] = field(default_factory=dict)  # source: (reason, detail)
    vocab: list[str] | None = None  # fixed vocabulary (retraining); None: built by the job
    skipped_hidden: int = 0


class EarlierCopy(NamedTuple):
    """Where an image's bytes already are: the first copy in the earlier spans."""

    span: int
    source: str
    label: str


def earlier_copy(record: bytes) -> tuple[str, EarlierCopy]:
    """A serialized Contract 1 example -> (its sha256, where it is)."""
    feature = tf.train.Example.FromString(record).features.feature

    def text(name: str) -> str:
        return feature[name].bytes_list.value[0].decode("utf-8")

    return text("sha256"), EarlierCopy(
        feature["span"].int64_list.value[0], text("source"), text("label")
    )


def _rejection(source: str, reason: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"source": source, "reason": reason, "detail": detail, **extra}


def _op_message(error: tf.errors.OpError) -> str:
    """An eager op error in the op's own words, without TF's node and op decorations."""
    return re.sub(r"\{\{.*?\}\}\s*", "", error.message).split(" [Op:")[0].strip()


def _channels(image) -> int:
    """Channels TensorFlow's decoder returns: palette images decode to RGB or RGBA."""
    if image.mode == "P":
        return 4 if "transparency" in image.info else 3
    return len(image.getbands())


class _Candidate(NamedTuple):
    """A file that passed the checks on its header and label, waiting for the decoder's."""

    source: str
    label: str
    data: bytes
    sha256: str
    image_format: str
    channels: int


class InspectImage(beam.DoFn):
    """Checks a batch of files: each is within the limits, of a plausible shape, decodes with
    the decoder training and serving use and has a usable label; else a reason.

    Everything but the decoding reads headers only (PIL's `Image.open` is lazy), so a bomb
    costs nothing; the batch's survivors are then decoded in one call of a traced TensorFlow
    function (`preprocessing.size_check`), and only the few that fail it are decoded again
    one by one, for the decoder's message.
    """

    REJECTED = "rejected"

    def __init__(
        self,
        plan_labels: dict[str, str] | None,
        config: IngestConfig,
        vocab: list[str] | None,
        withheld: dict[str, tuple[str, str]],
    ) -> None:
        self._labels = plan_labels
        self._withheld = withheld
        self._config = config
        self._allowed = set(config.alphabet) if config.alphabet is not None else None
        self._vocab = set(vocab) if vocab is not None else None

    def setup(self) -> None:
        self._regex = re.compile(self._config.label_pattern)
        self._size_check = preprocessing.size_check(
            self._config.max_pixels, self._config.max_file_bytes
        )

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
            where = (
                "no row in the labels CSV"
                if self._labels is not None
                else f"file name does not match label pattern {self._config.label_pattern!r}"
            )
            return EMPTY_LABEL, where
        if self._allowed is not None and (bad := sorted(set(label) - self._allowed)):
            return BAD_CHARACTER, f"characters {''.join(bad)!r} are not in the alphabet"
        if self._vocab is not None and (bad := sorted(set(label) - self._vocab)):
            return BAD_CHARACTER, f"characters {''.join(bad)!r} are not in the vocabulary"
        if max_length is not None and len(label) > max_length:
            return LABEL_TOO_LONG, f"{len(label)} characters > maximum {max_length}"
        return None

    def _size_problem(self, width: int, height: int) -> tuple[str, str] | None:
        """Too many pixels to decode, or a shape no captcha has (from the header)."""
        config = self._config
        if width * height > config.max_pixels:
            return TOO_LARGE, (
                f"{width}x{height}: {width * height:,} pixels > the limit {config.max_pixels:,}"
            )
        if min(width, height) < config.min_side:
            return IMPLAUSIBLE_SIZE, (
                f"{width}x{height}: a side under {config.min_side} pixels cannot hold a glyph"
            )
        aspect = max(width, height) / min(width, height)
        if aspect > config.max_aspect:
            return IMPLAUSIBLE_SIZE, (
                f"{width}x{height}: aspect ratio {aspect:.0f}:1 beyond {config.max_aspect:g}:1"
            )
        return None

    def _decode_problem(self, data: bytes) -> tuple[str, str]:
        """Why an image failed the batch's decoding: the shared decoder's own message."""
        try:
            preprocessing.decode_rgb(data)
        except tf.errors.OpError as e:
            return UNDECODABLE, _op_message(e)
        return TOO_LARGE, "over the limits by the header the shared decoder reads"

    def _identify(self, source: str) -> _Candidate | dict[str, Any]:
        """Reads one file and checks its header and label: a candidate, or a rejection."""
        from PIL import Image, UnidentifiedImageError

        label = self._label(source)
        if source in self._withheld:
            reason, detail = self._withheld[source]
            return _rejection(source, reason, detail)
        limit = self._config.max_file_bytes
        try:
            with FileSystems.open(source, compression_type="uncompressed") as f:
                data = f.read(limit + 1)  # never more than the limit into memory
        except Exception as e:
            return _rejection(source, UNREADABLE, f"{type(e).__name__}: {e}", label=label)
        if not data:
            return _rejection(source, EMPTY_FILE, "0 bytes", label=label)
        if len(data) > limit:
            return _rejection(source, TOO_LARGE, f"over the limit of {limit:,} bytes", label=label)
        sha256 = examples.sha256_hex(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))  # the header only
        except UnidentifiedImageError:
            detail = "not a format PIL can identify"
            return _rejection(source, NOT_AN_IMAGE, detail, label=label, sha256=sha256)
        except Image.DecompressionBombError as e:
            return _rejection(source, TOO_LARGE, str(e), label=label, sha256=sha256)
        except Exception as e:  # a header PIL cannot parse
            detail = f"{type(e).__name__}: {e}"
            return _rejection(source, UNDECODABLE, detail, label=label, sha256=sha256)
        image_format = SUPPORTED_FORMATS.get(image.format or "")
        if image_format is None:
            detail = f"{image.format}: only PNG and JPEG are ingested"
            return _rejection(source, UNSUPPORTED_FORMAT, detail, label=label, sha256=sha256)
        problem = self._size_problem(*image.size) or self._label_problem(label)
        if problem is not None:
            return _rejection(source, *problem, label=label, sha256=sha256)
        return _Candidate(source, label, data, sha256, image_format, _channels(image))

    def process(self, sources: list[str]) -> Iterator[Any]:
        candidates = []
        for source in sources:
            identified = self._identify(source)
            if isinstance(identified, dict):
                yield beam.pvalue.TaggedOutput(self.REJECTED, identified)
            else:
                candidates.append(identified)
        if not candidates:
            return
        sizes, valid = self._size_check([c.data for c in candidates])
        for c, (height, width), ok in zip(candidates, sizes.tolist(), valid, strict=True):
            if not ok:
                reason, detail = self._decode_problem(c.data)
                yield beam.pvalue.TaggedOutput(
                    self.REJECTED,
                    _rejection(c.source, reason, detail, label=c.label, sha256=c.sha256),
                )
                continue
            yield Inspected(
                c.sha256, c.source, c.label, c.data, c.image_format, height, width, c.channels
            )


def resolve_duplicates(
    records: Iterable[Inspected],
    earlier: EarlierCopy | None = None,
) -> tuple[Inspected | None, list[dict[str, Any]]]:
    """Records of one SHA-256 (and its earlier span's copy) -> (the one to write or None, rejected).

    Already in an earlier span: reject all, naming it. Same bytes and label: keep the smallest
    source path. Same bytes, other labels: reject all. A pure function of its inputs, so the
    job's two steps that see a group decide alike.
    """
    records = sorted(records, key=lambda r: r.source)
    if earlier is not None:
        return None, [_earlier_rejection(r, earlier) for r in records]
    labels = sorted({r.label for r in records})
    if len(labels) > 1:
        detail = "same image bytes with labels " + ", ".join(
            f"{r.label!r} ({r.source})" for r in records
        )
        return None, [
            _rejection(r.source, CONFLICTING_LABELS, detail, label=r.label, sha256=r.sha256)
            for r in records
        ]
    keep, *duplicates = records
    return keep, [
        _rejection(
            r.source, DUPLICATE, f"duplicate of {keep.source}", label=r.label, sha256=r.sha256
        )
        for r in duplicates
    ]


def _earlier_rejection(r: Inspected, earlier: EarlierCopy) -> dict[str, Any]:
    detail = f"already in span {earlier.span} as {earlier.source}"
    if r.label == earlier.label:
        return _rejection(
            r.source, DUPLICATE, detail, label=r.label, sha256=r.sha256, earlier_span=earlier.span
        )
    return _rejection(
        r.source,
        CONFLICTING_LABELS,
        f"{detail}, labelled {earlier.label!r}",
        label=r.label,
        sha256=r.sha256,
        earlier_span=earlier.span,
    )


class ResolveDuplicates(beam.DoFn):
    """(sha256, records without image bytes) -> the kept record, and the rejected ones."""

    REJECTED = "rejected"

    def process(
        self, element: tuple[str, Iterable[Inspected]], earlier: dict[str, EarlierCopy]
    ) -> Iterator[Any]:
        keep, rejected = resolve_duplicates(element[1], earlier.get(element[0]))
        if keep is not None:
            yield keep
        for rejection in rejected:
            yield beam.pvalue.TaggedOutput(self.REJECTED, rejection)


class ExampleStats(beam.CombineFn):
    """Character counts, label lengths, image sizes and split counts in one pass."""

    def __init__(self, eval_percent: int) -> None:
        self._eval_percent = eval_percent

    def create_accumulator(self) -> dict[str, Any]:
        return {
            "chars": collections.Counter(),
            "lengths": collections.Counter(),
            "splits": collections.Counter(),
            "formats": collections.Counter(),
            "channels": collections.Counter(),
            "heights": [],
            "widths": [],
            "aspects": [],
            "sizes": {},
        }

    def add_input(self, acc: dict[str, Any], r: Inspected) -> dict[str, Any]:
        _add_size(acc["sizes"], f"{r.width}x{r.height}", 1, [r.source])
        acc["chars"].update(r.label)
        acc["lengths"][len(r.label)] += 1
        acc["splits"][examples.split_for(r.sha256, self._eval_percent)] += 1
        acc["formats"][r.image_format] += 1
        acc["channels"][r.channels] += 1
        acc["heights"] = _min_max(acc["heights"], [r.height])
        acc["widths"] = _min_max(acc["widths"], [r.width])
        acc["aspects"] = _min_max(acc["aspects"], [round(r.width / r.height, 4)])
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, Any]]) -> dict[str, Any]:
        merged = self.create_accumulator()
        for acc in accs:
            for key in ("chars", "lengths", "splits", "formats", "channels"):
                merged[key].update(acc[key])
            merged["heights"] = _min_max(merged["heights"], acc["heights"])
            merged["widths"] = _min_max(merged["widths"], acc["widths"])
            merged["aspects"] = _min_max(merged["aspects"], acc["aspects"])
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
            "aspect_ratio_range": acc["aspects"],
            "sizes": dict(sorted(acc["sizes"].items())),
        }


def _add_size(sizes: dict[str, list], size: str, count: int, sources: list[str]) -> None:
    """{"WxH": [count, the first OUTLIER_EXAMPLES sources]}, updated in place."""
    total, sources_so_far = sizes.get(size, (0, []))
    sizes[size] = [total + count, sorted(sources_so_far + sources)[:OUTLIER_EXAMPLES]]


def _median(values: list[tuple[float, int]]) -> float:
    """The median of values given as (value, count) pairs."""
    values = sorted(values)
    middle, seen = sum(count for _, count in values) / 2, 0
    for value, count in values:
        seen += count
        if seen >= middle:
            return value
    return values[-1][0]


def size_outliers(sizes: dict[str, list]) -> dict[str, Any]:
    """Kept images whose shape is far from the data set's: listed, not silently trained on.

    Far: an aspect ratio more than OUTLIER_FACTOR times above or below the median image's,
    or an area more than OUTLIER_FACTOR squared times. Medians over images, not sizes.
    """
    parsed = [
        (tuple(map(int, size.split("x"))), count, sources)
        for size, (count, sources) in sizes.items()
    ]
    if not parsed:
        return {"count": 0, "sizes": []}
    aspect = _median([(w / h, count) for (w, h), count, _ in parsed])
    area = _median([(w * h, count) for (w, h), count, _ in parsed])
    far = [
        {"width": w, "height": h, "count": count, "examples": sources}
        for (w, h), count, sources in sorted(parsed, key=lambda p: -p[1])
        if max(w / h / aspect, aspect * h / w) > OUTLIER_FACTOR
        or max(w * h / area, area / (w * h)) > OUTLIER_FACTOR**2
    ]
    return {
        "count": sum(o["count"] for o in far),
        "median_aspect": round(aspect, 3),
        "median_area": area,
        "rule": f"aspect ratio over {OUTLIER_FACTOR:g}x, or area over {OUTLIER_FACTOR**2:g}x, "
        "from the median image's",
        "sizes": far[:OUTLIER_SIZES],
    }


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
    """GZIP TFRecord file (deterministic bytes: zlib's gzip header carries no time).

    Beam's TFRecord framing (what its TFRecord sink writes; TensorFlow reads it), on Beam's
    FileSystems, which parent folders need not exist for.
    """
    count = 0
    with FileSystems.create(path, compression_type=CompressionTypes.GZIP) as f:
        for record in records:
            _TFRecordUtil.write_record(f, record)
            count += 1
    return count


def _read_text(path: str) -> str:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read().decode("utf-8")


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(text.encode("utf-8"))


def _files_under(folder: str) -> list[str]:
    return [m.path for m in FileSystems.match([folder.rstrip("/") + "/**"])[0].metadata_list]


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

    def process(
        self,
        element: tuple[tuple[str, int], Iterable[Inspected]],
        vocab: list[str],
        earlier: dict[str, EarlierCopy],
    ) -> Iterator[tuple[str, int]]:
        (split, shard), records = element
        by_sha256: dict[str, list[Inspected]] = collections.defaultdict(list)
        for r in records:
            by_sha256[r.sha256].append(r)
        path = shard_path(self._output_dir, split, shard, self._num_shards)
        kept = (
            resolve_duplicates(by_sha256[sha256], earlier.get(sha256))[0]
            for sha256 in sorted(by_sha256)
        )
        yield split, write_shard(path, (self._encode(r, vocab) for r in kept if r is not None))

    def _encode(self, r: Inspected, vocab: list[str]) -> bytes:
        return examples.make_example(
            image=r.image,
            image_format=r.image_format,
            height=r.height,
            width=r.width,
            channels=r.channels,
            label=r.label,
            label_ids=examples.encode_label(r.label, vocab),
            sha256=r.sha256,
            source=r.source,
            span=self._span,
        ).SerializeToString()


def _write_summary(
    stats: dict[str, Any],
    output_dir: str,
    vocab: list[str],
    written: dict[str, int],
    rejected: list[dict[str, Any]],
) -> None:
    """The job's last step: rejected.jsonl and the counts the driver checks."""
    rejected = sorted(rejected, key=lambda r: (r["source"], r["reason"]))
    _write_text(
        posixpath.join(output_dir, examples.REJECTED_FILE),
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejected),
    )
    summary = {
        **stats,
        "vocab": vocab,
        "written": dict(sorted(written.items())),
        "rejected_reasons": dict(
            sorted(collections.Counter(r["reason"] for r in rejected).items())
        ),
        "num_rejected": len(rejected),
    }
    _write_text(posixpath.join(output_dir, SUMMARY_FILE), json.dumps(summary))


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def build_pipeline(pipeline: beam.Pipeline, plan: IngestPlan) -> None:
    """Adds the ExampleGen transforms to `pipeline` (separate from run, so it can be inspected)."""
    config = plan.config
    inspected = (
        pipeline
        | "ListInputs"
        >> beam.Create(_batches(plan.inputs, INPUTS_PER_BATCH))  # spread out by Create
        | "Inspect"
        >> beam.ParDo(
            InspectImage(plan.labels_by_source, config, plan.vocab, plan.withheld)
        ).with_outputs(InspectImage.REJECTED, main="ok")
    )
    earlier = beam.pvalue.AsDict(
        pipeline
        | "EarlierShards"
        >> beam.Create(
            [
                examples.shard_pattern(folder, split)
                for folder in config.earlier_spans
                for split in examples.SPLITS
            ]
        )
        | "ReadEarlier" >> beam.io.ReadAllFromTFRecord()
        | "EarlierCopies" >> beam.Map(earlier_copy)
        | "FirstCopy" >> beam.CombinePerKey(min)
    )
    kept = (
        inspected.ok
        | "KeyBySha256" >> beam.Map(lambda r: (r.sha256, r._replace(image=b"")))
        | "GroupBySha256" >> beam.GroupByKey()
        | "ResolveDuplicates"
        >> beam.ParDo(ResolveDuplicates(), earlier).with_outputs(
            ResolveDuplicates.REJECTED, main="kept"
        )
    )
    stats = kept.kept | "Stats" >> beam.CombineGlobally(ExampleStats(config.eval_percent))
    vocab = stats | "Vocab" >> beam.Map(_choose_vocab, plan.vocab)
    written = (
        inspected.ok
        | "KeyByShard"
        >> beam.Map(lambda r: (shard_key(r.sha256, config.eval_percent, config.num_shards), r))
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards"
        >> beam.ParDo(
            WriteShard(plan.output_dir, config.num_shards, config.span),
            beam.pvalue.AsSingleton(vocab),
            earlier,
        )
        | "CountWritten" >> beam.CombinePerKey(sum)
    )
    rejected = (
        (inspected[InspectImage.REJECTED], kept[ResolveDuplicates.REJECTED])
        | "AllRejected" >> beam.Flatten()
        | "CollectRejected" >> beam.combiners.ToList()
    )
    _ = stats | "WriteSummary" >> beam.Map(
        _write_summary,
        plan.output_dir,
        beam.pvalue.AsSingleton(vocab),
        beam.pvalue.AsDict(written),
        beam.pvalue.AsSingleton(rejected),
    )


def _is_local(path: str) -> bool:
    return "://" not in path


def list_inputs(images: str) -> tuple[list[str], int]:
    """Files of a folder (not recursive) or of a glob pattern, sorted; hidden files skipped."""
    pattern = images
    if not any(c in images for c in "*?["):
        # An object store has prefixes, not folders: a path that is no object is one.
        is_folder = os.path.isdir(images) if _is_local(images) else not FileSystems.exists(images)
        if is_folder:
            pattern = images.rstrip("/") + "/*"
    paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    if _is_local(images):
        paths = [os.path.abspath(p) for p in paths if not os.path.isdir(p)]
    visible = sorted(p for p in paths if not posixpath.basename(p).startswith("."))
    return visible, len(paths) - len(visible)


def _source(folder: str, filename: str) -> str:
    """A CSV row's file as an input path: relative to the CSV's folder, absolute locally."""
    source = posixpath.join(folder, filename.strip())
    return os.path.abspath(source) if _is_local(source) else source


def read_labels_csv(path: str) -> dict[str, str]:
    """`filename,label` rows (file names relative to the CSV's folder) -> {source: label}."""
    reader = csv.DictReader(io.StringIO(_read_text(path)))
    rows = list(reader)
    if not {"filename", "label"} <= set(reader.fieldnames or ()):
        raise ValueError(f"{path}: the header must be `filename,label`, got {reader.fieldnames}")
    folder = posixpath.dirname(path)
    labels: dict[str, str] = {}
    for row in rows:
        source = _source(folder, row["filename"])
        label = (row["label"] or "").strip()
        if labels.get(source, label) != label:
            raise ValueError(
                f"{path}: {row['filename']!r} has two labels, {labels[source]!r} and {label!r}"
            )
        labels[source] = label
    return labels


def _is_review_csv(path: str) -> bool:
    """A header naming any column only a review queue has: read it as one, strictly."""
    header = next(csv.reader([_read_text(path).partition("\n")[0]]), [])
    return bool(set(header) & (set(review_queue.HEADER) - {"filename", "label"}))


def read_review_csv(path: str) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """A review queue's labels.csv -> ({source: label} of answered rows, {source: withheld}).

    Its extra columns are not ignored as a plain labels CSV's are: a row is trained on only
    when a person labelled it; the others are withheld with a reason for rejected.jsonl. A
    wrong header or a row naming a file that is not there refuses the whole file.
    """
    rows = review_queue.read_rows(path)
    review_queue.check_files(path, rows)
    folder = posixpath.dirname(path)
    labels, withheld = {}, {}
    for row in rows:
        source = _source(folder, row.filename)
        if row.status == review_queue.LABELLED:
            labels[source] = row.label
        elif row.status == review_queue.UNREADABLE:
            withheld[source] = (MARKED_UNREADABLE, f"marked unreadable in {path}")
        else:
            withheld[source] = (
                NOT_REVIEWED,
                f"status {row.status} in {path}: not answered yet (captcha-ocr review {folder})",
            )
    return labels, withheld


def read_labels(path: str) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Any labels CSV -> ({source: label}, {source: (reason, detail)} of rows not to train on)."""
    if _is_review_csv(path):
        return read_review_csv(path)
    return read_labels_csv(path), {}


def plan_ingest(images: str, output_dir: str, config: IngestConfig) -> IngestPlan:
    inputs, skipped_hidden = list_inputs(images)
    labels, withheld = None, {}
    if config.labels_csv:
        labels, withheld = read_labels(config.labels_csv)
        csv_path = (
            os.path.abspath(config.labels_csv)
            if _is_local(config.labels_csv)
            else config.labels_csv
        )
        inputs = sorted((set(inputs) | set(labels) | set(withheld)) - {csv_path})
    if not inputs:
        raise FileNotFoundError(f"no input files match {images!r}")
    vocab = examples.parse_vocab(_read_text(config.vocab_path)) if config.vocab_path else None
    return IngestPlan(
        inputs=inputs,
        output_dir=output_dir,
        config=config,
        labels_by_source=labels,
        withheld=withheld,
        vocab=vocab,
        skipped_hidden=skipped_hidden,
    )


def _check_output(output: str, overwrite: bool) -> None:
    if _files_under(output) and not overwrite:
        complete = FileSystems.exists(posixpath.join(output, examples.METADATA_FILE))
        state = "a complete ExampleGen output" if complete else "not empty"
        raise FileExistsError(f"{output} is {state}; choose another folder or overwrite")


def _prepare_work_dir(output: str) -> str:
    """The folder the job writes into: a fresh temporary sibling locally, else `output`."""
    if _is_local(output):
        parent, name = os.path.split(os.path.abspath(output))
        os.makedirs(parent, exist_ok=True)
        return os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    if stale := _files_under(output):
        FileSystems.delete(stale)  # only reached with overwrite (see _check_output)
    return output


def _publish(work_dir: str, output: str) -> None:
    if work_dir == output:
        return
    if os.path.exists(output):
        trash = f"{work_dir}.old"
        os.rename(output, trash)
        os.rename(work_dir, output)
        shutil.rmtree(trash)
    else:
        os.rename(work_dir, output)


def _ensure_all_shards(work_dir: str, num_shards: int) -> None:
    """A split with fewer examples than shards still gets every shard file (empty ones)."""
    for split in examples.SPLITS:
        for shard in range(num_shards):
            path = shard_path(work_dir, split, shard, num_shards)
            if not FileSystems.exists(path):
                write_shard(path, [])


def _metadata(
    images: str, plan: IngestPlan, summary: dict[str, Any], beam_options: dict[str, Any]
) -> dict[str, Any]:
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
        "aspect_ratio_range": summary["aspect_ratio_range"],  # width / height
        "size_outliers": size_outliers(summary["sizes"]),
        "format_counts": summary["format_counts"],
        "channel_counts": summary["channel_counts"],
        "eval_percent": config.eval_percent,
        "num_shards": config.num_shards,
        "config": asdict(config),
        "beam_options": beam_options,
    }


def run_ingest(
    images: str, output: str, config: IngestConfig, beam_args: Sequence[str] = ()
) -> dict:
    """Runs the ExampleGen job; returns the content of `<output>/metadata.json`."""
    _check_output(output, config.overwrite)
    plan = plan_ingest(images, output, config)
    work_dir = _prepare_work_dir(output)
    plan.output_dir = work_dir
    options = PipelineOptions(list(beam_args))
    # As given: running the pipeline drops `runner` from the options and adds experiments.
    beam_options = options.get_all_options(drop_default=True, retain_unknown_options=True)
    log.info("ingesting %d files from %s into %s", len(plan.inputs), images, output)
    try:
        with beam.Pipeline(options=options) as pipeline:
            build_pipeline(pipeline, plan)
        summary_path = posixpath.join(work_dir, SUMMARY_FILE)
        summary = json.loads(_read_text(summary_path))
        num_written = sum(summary["written"].values())
        if num_written + summary["num_rejected"] != len(plan.inputs):
            hint = ""
            if beam_options.get("direct_num_workers", 1) != 1:
                hint = (
                    " (Beam 2.61's DirectRunner with several workers, multi_threading or "
                    "multi_processing, has dropped elements of large jobs here; use the "
                    "default in_memory mode)"
                )
            raise RuntimeError(
                f"lost inputs: {len(plan.inputs)} in, {num_written} written, "
                f"{summary['num_rejected']} rejected; nothing was kept{hint}"
            )
        if num_written == 0:
            raise ValueError(
                f"no usable images in {images}: rejected {summary['rejected_reasons']}"
            )
        _ensure_all_shards(work_dir, config.num_shards)
        _write_text(
            posixpath.join(work_dir, examples.VOCAB_FILE), examples.vocab_text(summary["vocab"])
        )
        text = json.dumps(_metadata(images, plan, summary, beam_options), indent=2, sort_keys=True)
        metadata = json.loads(text)  # what the file holds (tuples as lists)
        FileSystems.delete([summary_path])
        _write_text(posixpath.join(work_dir, examples.METADATA_FILE), text)
    except BaseException:
        if work_dir != output and os.path.exists(work_dir):
            shutil.rmtree(work_dir)
        raise
    _publish(work_dir, output)
    if outliers := metadata["size_outliers"]["count"]:
        shapes = ", ".join(
            f"{o['width']}x{o['height']} ({o['count']})"
            for o in metadata["size_outliers"]["sizes"][:5]
        )
        log.warning(
            "%d images are far from the data set's shape (metadata.json, size_outliers): %s",
            outliers,
            shapes,
        )
    log.info("wrote %s: %s, %d rejected", output, metadata["counts"], metadata["num_rejected"])
    return metadata

"""StatisticsGen: TFDV statistics for every split of an ExampleGen output, in one Beam job.

The Contract 1 integer features with few distinct values (`label_ids`, `label_length` and the
image size) are computed as categorical, so the statistics hold every value with its count:
that is what lets TFDV measure drift of the character distribution (L-infinity) and lets the
messages say exactly which values were seen and how often. `image` is marked as an image, so
its bytes only get presence and size statistics, not a top-k over the raw files.
"""

from __future__ import annotations

import collections
import logging
import posixpath
import time
from collections.abc import Iterable, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow_data_validation as tfdv
from apache_beam.options.pipeline_options import PipelineOptions
from google.protobuf import message
from tensorflow_data_validation.statistics.generators import stats_generator
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2
from tfx_bsl.arrow import array_util
from tfx_bsl.tfxio import tf_example_record

from components import artifact_io, examples

STATISTICS_FILE = "FeatureStats.pb"  # the TFX StatisticsGen name, one per Split-<split>/
CATEGORICAL_INT_FEATURES = ("label_ids", "label_length", "height", "width", "channels")
EXAMPLES_OUTSIDE_DOMAIN = "examples_outside_int_domain"
EXAMPLES_BAD_VALUE_COUNT = "examples_with_bad_value_count"
NUM_TOP_VALUES = 50

log = logging.getLogger(__name__)


def statistics_path(output_dir: str, split: str) -> str:
    return posixpath.join(examples.split_dir(output_dir, split), STATISTICS_FILE)


def statistics_schema(schema: schema_pb2.Schema | None = None) -> schema_pb2.Schema:
    """The schema handed to the statistics job: Contract 1's types, plus any given domains."""
    result = schema_pb2.Schema()
    if schema is not None:
        result.CopyFrom(schema)
    features = {f.name: f for f in result.feature}
    for name in CATEGORICAL_INT_FEATURES:
        feature = features.get(name) or result.feature.add(name=name)
        feature.type = schema_pb2.INT
        feature.int_domain.is_categorical = True
    image = features.get("image") or result.feature.add(name="image")
    image.type = schema_pb2.BYTES
    image.image_domain.SetInParent()
    return result


class ExampleCountsOutsideSchema(stats_generator.CombinerStatsGenerator):
    """Counts examples (not values) that break an int domain or a value count of the schema.

    TFDV's own statistics count values; a person fixing data wants to know how many images
    are affected, so this adds `examples_outside_int_domain` and `examples_with_bad_value_count`
    custom statistics to each constrained feature.
    """

    def __init__(self, schema: schema_pb2.Schema) -> None:
        super().__init__(type(self).__name__, schema)
        self._domains = {
            f.name: (
                f.int_domain.min if f.int_domain.HasField("min") else None,
                f.int_domain.max if f.int_domain.HasField("max") else None,
            )
            for f in schema.feature
            if f.HasField("int_domain")
            and (f.int_domain.HasField("min") or f.int_domain.HasField("max"))
        }
        self._value_counts = {
            f.name: (f.value_count.min, f.value_count.max if f.value_count.max else None)
            for f in schema.feature
            if f.HasField("value_count")
        }

    def create_accumulator(self) -> collections.Counter:
        return collections.Counter()

    def add_input(
        self, accumulator: collections.Counter, examples_batch: pa.RecordBatch
    ) -> collections.Counter:
        for name in set(self._domains) | set(self._value_counts):
            index = examples_batch.schema.get_field_index(name)
            if index < 0:
                continue
            column = examples_batch.column(index)
            present = ~np.asarray(column.is_null(), dtype=bool)
            if name in self._value_counts:
                low, high = self._value_counts[name]
                lengths = np.asarray(array_util.ListLengthsFromListArray(column))
                bad = (lengths < low) | (lengths > (high if high is not None else np.inf))
                accumulator[(name, EXAMPLES_BAD_VALUE_COUNT)] += int(np.sum(bad & present))
            if name in self._domains:
                low, high = self._domains[name]
                values = np.asarray(column.flatten())
                parents = np.asarray(array_util.GetFlattenedArrayParentIndices(column))
                bad = np.zeros(values.shape, dtype=bool)
                if low is not None:
                    bad |= values < low
                if high is not None:
                    bad |= values > high
                accumulator[(name, EXAMPLES_OUTSIDE_DOMAIN)] += len(np.unique(parents[bad]))
        return accumulator

    def merge_accumulators(
        self, accumulators: Iterable[collections.Counter]
    ) -> collections.Counter:
        merged = collections.Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(
        self, accumulator: collections.Counter
    ) -> statistics_pb2.DatasetFeatureStatistics:
        result = statistics_pb2.DatasetFeatureStatistics()
        by_feature: dict[str, statistics_pb2.FeatureNameStatistics] = {}
        for (name, stat), count in sorted(accumulator.items()):
            if name not in by_feature:
                by_feature[name] = result.features.add()
                by_feature[name].path.step.append(name)
            by_feature[name].custom_stats.add(name=stat, num=count)
        return result


def stats_options(schema: schema_pb2.Schema | None = None) -> tfdv.StatsOptions:
    """Categorical Contract 1 ints; with a schema, also count the examples breaking it."""
    return tfdv.StatsOptions(
        schema=statistics_schema(schema),
        num_top_values=NUM_TOP_VALUES,
        generators=[ExampleCountsOutsideSchema(schema)] if schema is not None else None,
    )


def generate_statistics(
    examples_dir: str,
    output_dir: str,
    schema: schema_pb2.Schema | None = None,
    beam_args: Sequence[str] = (),
) -> dict[str, str]:
    """One Beam job computing `<output_dir>/Split-<split>/FeatureStats.pb` for every split.

    With a schema, the job also counts the examples that break its domains (see
    ExampleCountsOutsideSchema). Returns {split: statistics path}.
    """
    patterns = {split: examples.shard_pattern(examples_dir, split) for split in examples.SPLITS}
    splits = [split for split, pattern in patterns.items() if artifact_io.glob(pattern)]
    if not splits:
        raise FileNotFoundError(
            f"no examples under {examples_dir}: expected GZIP shards like "
            f"{patterns[examples.TRAIN]} (run `captcha-ocr ingest` first)"
        )
    options = stats_options(schema)
    paths = {split: statistics_path(output_dir, split) for split in splits}
    for path in paths.values():
        artifact_io.makedirs(posixpath.dirname(path))
    started = time.time()
    log.info("computing statistics of %s (splits %s) with Beam", examples_dir, ", ".join(splits))
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as pipeline:
        for split in splits:
            _ = (
                pipeline
                | f"Read[{split}]"
                >> tf_example_record.TFExampleRecord(
                    file_pattern=patterns[split],
                    telemetry_descriptors=["captcha-ocr", "StatisticsGen"],
                ).BeamSource()
                | f"GenerateStatistics[{split}]" >> tfdv.GenerateStatistics(options)
                | f"WriteStatistics[{split}]" >> tfdv.WriteStatisticsToBinaryFile(paths[split])
            )
    log.info("statistics written in %.1f s", time.time() - started)
    return paths


def load_statistics(path: str) -> statistics_pb2.DatasetFeatureStatisticsList:
    """A FeatureStats.pb (binary, read through artifact_io: gs:// too), or a TFDV TFRecord /
    text statistics file."""
    if not artifact_io.exists(path):
        raise FileNotFoundError(f"no statistics at {path}")
    try:
        return statistics_pb2.DatasetFeatureStatisticsList.FromString(artifact_io.read_bytes(path))
    except message.DecodeError:
        return tfdv.load_statistics(path)


def feature_statistics(
    statistics: statistics_pb2.DatasetFeatureStatisticsList, name: str
) -> statistics_pb2.FeatureNameStatistics | None:
    for feature in statistics.datasets[0].features:
        if list(feature.path.step) == [name] or feature.name == name:
            return feature
    return None


def value_counts(feature: statistics_pb2.FeatureNameStatistics) -> Mapping[str, float]:
    """{value: how often it occurs} from a categorical feature's rank histogram."""
    string_stats = feature.string_stats
    if string_stats.rank_histogram.buckets:
        return {b.label: b.sample_count for b in string_stats.rank_histogram.buckets}
    return {v.value: v.frequency for v in string_stats.top_values}


def custom_statistic(feature: statistics_pb2.FeatureNameStatistics, name: str) -> int | None:
    for stat in feature.custom_stats:
        if stat.name == name:
            return int(stat.num)
    return None


def common_statistics(feature: statistics_pb2.FeatureNameStatistics):
    kind = feature.WhichOneof("stats")
    return getattr(feature, kind).common_stats if kind else statistics_pb2.CommonStatistics()

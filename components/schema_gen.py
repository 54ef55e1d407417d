"""SchemaGen: infer a schema from the first batch's statistics, then curate it for Contract 1.

TFDV's inference alone would make `label` a categorical domain of the labels it happened to
see and would leave the character ids unbounded; the curated schema says what a valid
captcha example is instead: free-text labels, character ids inside the vocabulary, label
lengths and image sizes as observed, every feature in every example.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from components import artifact_io, statistics_gen

SCHEMA_FILE = "schema.pbtxt"
IMAGE_FORMATS = ("jpeg", "png")  # Contract 1's `image_format` values
OBSERVED_RANGE_FEATURES = ("label_length", "height", "width", "channels")


def observed_int_range(
    statistics: Sequence[statistics_pb2.DatasetFeatureStatisticsList], name: str
) -> tuple[int, int]:
    """(min, max) of a categorical int feature over all the given statistics."""
    values = [
        int(value)
        for stats in statistics
        if (feature := statistics_gen.feature_statistics(stats, name)) is not None
        for value in statistics_gen.value_counts(feature)
    ]
    if not values:
        raise ValueError(f"the statistics hold no values of '{name}': is this Contract 1 data?")
    return min(values), max(values)


def set_drift_thresholds(
    schema: schema_pb2.Schema, thresholds: dict[str, float | None]
) -> schema_pb2.Schema:
    """Set (or clear, for None) the L-infinity drift threshold of the named features."""
    for feature in schema.feature:
        if feature.name in thresholds:
            threshold = thresholds[feature.name]
            if threshold is None:
                feature.ClearField("drift_comparator")
            else:
                feature.drift_comparator.infinity_norm.threshold = threshold
    return schema


def infer_curated_schema(
    statistics: Sequence[statistics_pb2.DatasetFeatureStatisticsList],
    vocab_size: int,
    drift_thresholds: dict[str, float | None],
) -> schema_pb2.Schema:
    """Infer from the first statistics (train), take observed ranges over all of them."""
    if vocab_size < 1:
        raise ValueError("the vocabulary is empty: cannot bound `label_ids`")
    schema = tfdv.infer_schema(statistics[0], infer_feature_shape=True)
    del schema.string_domain[:]  # re-made below for image_format only
    features = {feature.name: feature for feature in schema.feature}
    missing = {"label", "label_ids", "label_length", "image", "image_format"} - set(features)
    if missing:
        raise ValueError(f"the statistics lack Contract 1 features {sorted(missing)}")
    for feature in schema.feature:
        feature.ClearField("domain_info")
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1

    for name in OBSERVED_RANGE_FEATURES:
        if name in features:
            low, high = observed_int_range(statistics, name)
            features[name].int_domain.min = low
            features[name].int_domain.max = high
            features[name].int_domain.is_categorical = True

    label_ids = features["label_ids"]
    label_ids.ClearField("shape")  # labels may vary in length: a value count, not a shape
    label_ids.value_count.min, label_ids.value_count.max = observed_int_range(
        statistics, "label_length"
    )
    label_ids.int_domain.min = 0
    label_ids.int_domain.max = vocab_size - 1
    label_ids.int_domain.is_categorical = True

    features["image"].image_domain.SetInParent()
    formats = schema.string_domain.add(name="image_format", value=IMAGE_FORMATS)
    features["image_format"].domain = formats.name
    return set_drift_thresholds(schema, drift_thresholds)


def load_schema(path: str) -> schema_pb2.Schema:
    """A text Schema, read through artifact_io (gs:// too)."""
    return text_format.Parse(artifact_io.read_text(path), schema_pb2.Schema())

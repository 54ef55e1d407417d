"""ExampleValidator: check a batch's statistics against the schema and the previous batch.

TFDV's anomaly descriptions ("Unexpectedly large value: 20.") say neither what was expected
nor how many images are affected. Each anomaly is turned into one plain sentence here, with
the expected range or values from the schema and the counts from the statistics, e.g.
"feature 'label_ids': expected values in [0, 18] ...; saw 19 ('q') in 12 examples".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from components import statistics_gen as sg

Anomaly = anomalies_pb2.AnomalyInfo


def validate(
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
    previous_statistics: statistics_pb2.DatasetFeatureStatisticsList | None = None,
) -> anomalies_pb2.Anomalies:
    return tfdv.validate_statistics(statistics, schema, previous_statistics=previous_statistics)


def _schema_feature(schema: schema_pb2.Schema, name: str) -> schema_pb2.Feature | None:
    return next((f for f in schema.feature if f.name == name), None)


def _examples(n: float) -> str:
    n = int(n)
    return f"{n} example" if n == 1 else f"{n} examples"


def _value_with_char(feature: str, value: str, vocab: Sequence[str]) -> str:
    """`label_ids` values are easier to read as the characters they stand for."""
    if feature == "label_ids" and value.lstrip("-").isdigit() and 0 <= int(value) < len(vocab):
        return f"{value} ({vocab[int(value)]!r})"
    return value


def _join_values(values: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _out_of_domain(
    name: str,
    feature: statistics_pb2.FeatureNameStatistics,
    schema_feature: schema_pb2.Feature,
    vocab: Sequence[str],
) -> str:
    domain = schema_feature.int_domain
    low = domain.min if domain.HasField("min") else None
    high = domain.max if domain.HasField("max") else None
    expected = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    if name == "label_ids" and low == 0 and high is not None:
        expected += f" (the {high + 1} characters of the schema's vocabulary)"
    counts = sg.value_counts(feature)
    outside = sorted(
        (int(v), count)
        for v, count in counts.items()
        if v.lstrip("-").isdigit()
        and ((low is not None and int(v) < low) or (high is not None and int(v) > high))
    )
    if outside:
        seen = _join_values([_value_with_char(name, str(v), vocab) for v, _ in outside])
        occurrences = int(sum(count for _, count in outside))
    else:  # a numeric (non-categorical) feature: only the extremes are known
        stats = feature.num_stats
        seen, occurrences = f"values from {stats.min:g} to {stats.max:g}", None
    affected = sg.custom_statistic(feature, sg.EXAMPLES_OUTSIDE_DOMAIN)
    if affected is None and sg.common_statistics(feature).max_num_values == 1:
        affected = occurrences  # one value per example: occurrences are examples
    where = f"in {_examples(affected)}" if affected is not None else ""
    if occurrences is not None and (affected is None or occurrences != affected):
        where = f"{occurrences} times {where}".strip()
    return f"feature '{name}': expected values in {expected}; saw {seen} {where}".strip()


def _bad_value_count(
    name: str, feature: statistics_pb2.FeatureNameStatistics, schema_feature: schema_pb2.Feature
) -> str:
    common = sg.common_statistics(feature)
    fixed_size = math.prod(d.size for d in schema_feature.shape.dim)
    if (
        schema_feature.HasField("shape")
        and common.num_missing
        and common.min_num_values == common.max_num_values == fixed_size
    ):  # a fixed shape needs the feature in every example: the present values are fine
        return _missing(name, feature, int(common.num_non_missing + common.num_missing))
    if schema_feature.HasField("value_count"):
        bounds = schema_feature.value_count
        expected = f"{bounds.min} to {bounds.max}" if bounds.max else f"at least {bounds.min}"
    else:
        expected = " x ".join(str(d.size) for d in schema_feature.shape.dim) or "?"
    affected = sg.custom_statistic(feature, sg.EXAMPLES_BAD_VALUE_COUNT)
    where = f" in {_examples(affected)}" if affected else ""
    return (
        f"feature '{name}': expected {expected} values per example; saw "
        f"{common.min_num_values} to {common.max_num_values}{where}"
    )


def _unexpected_strings(
    name: str, feature: statistics_pb2.FeatureNameStatistics, schema: schema_pb2.Schema
) -> str:
    schema_feature = _schema_feature(schema, name)
    domain = next((d for d in schema.string_domain if d.name == schema_feature.domain), None)
    if domain is None:
        domain = schema_feature.string_domain
    allowed = set(domain.value)
    unexpected = {v: n for v, n in sg.value_counts(feature).items() if v not in allowed}
    seen = _join_values([f"{v!r} ({_examples(n)})" for v, n in unexpected.items()])
    return f"feature '{name}': expected one of {', '.join(sorted(allowed))}; saw {seen}"


def _missing(name: str, feature: statistics_pb2.FeatureNameStatistics | None, total: int) -> str:
    missing = int(sg.common_statistics(feature).num_missing) if feature is not None else total
    return (
        f"feature '{name}': required in every example; missing in {missing} of {_examples(total)}"
    )


def _drift(
    name: str,
    feature: statistics_pb2.FeatureNameStatistics,
    previous: statistics_pb2.DatasetFeatureStatisticsList | None,
    drift: anomalies_pb2.DriftSkewInfo | None,
    vocab: Sequence[str],
) -> str:
    measurement = drift.drift_measurements[0] if drift and drift.drift_measurements else None
    text = f"feature '{name}': distribution drifted from the previous batch"
    if measurement is not None:
        text += (
            f": L-infinity distance {measurement.value:.3f}, "
            f"above the threshold {measurement.threshold:g}"
        )
    previous_feature = sg.feature_statistics(previous, name) if previous is not None else None
    if previous_feature is None:
        return text
    now, before = sg.value_counts(feature), sg.value_counts(previous_feature)
    now_total, before_total = sum(now.values()) or 1, sum(before.values()) or 1
    value = max(
        set(now) | set(before),
        key=lambda v: abs(now.get(v, 0) / now_total - before.get(v, 0) / before_total),
    )
    return (
        f"{text}; largest change: {_value_with_char(name, value, vocab)} was "
        f"{before.get(value, 0) / before_total:.1%} of the values, now "
        f"{now.get(value, 0) / now_total:.1%}"
    )


def describe_anomalies(
    anomalies: anomalies_pb2.Anomalies,
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
    previous_statistics: statistics_pb2.DatasetFeatureStatisticsList | None = None,
    vocab: Sequence[str] = (),
) -> list[str]:
    """One plain sentence per anomaly reason: feature, what was expected, what was seen, how many.

    `vocab` is the batch's own vocab.txt, to name the characters behind `label_ids` values.
    """
    total = int(statistics.datasets[0].num_examples)
    drifts = {".".join(d.path.step): d for d in anomalies.drift_skew_info}
    messages = []
    for key, info in sorted(anomalies.anomaly_info.items()):
        name = ".".join(info.path.step) or key
        feature = sg.feature_statistics(statistics, name)
        schema_feature = _schema_feature(schema, name)
        if not info.reason:
            messages.append(f"feature '{name}': {info.short_description}: {info.description}")
        for reason in info.reason:
            kind = Anomaly.Type.Name(reason.type)
            if kind in ("INT_TYPE_BIG_INT", "INT_TYPE_SMALL_INT") and feature and schema_feature:
                messages.append(_out_of_domain(name, feature, schema_feature, vocab))
            elif (
                kind
                in (
                    "FEATURE_TYPE_HIGH_NUMBER_VALUES",
                    "FEATURE_TYPE_LOW_NUMBER_VALUES",
                    "INVALID_FEATURE_SHAPE",
                )
                and feature
                and schema_feature
            ):
                messages.append(_bad_value_count(name, feature, schema_feature))
            elif kind == "ENUM_TYPE_UNEXPECTED_STRING_VALUES" and feature and schema_feature:
                messages.append(_unexpected_strings(name, feature, schema))
            elif kind in (
                "SCHEMA_MISSING_COLUMN",
                "FEATURE_TYPE_LOW_FRACTION_PRESENT",
                "FEATURE_TYPE_LOW_NUMBER_PRESENT",
                "FEATURE_TYPE_NOT_PRESENT",
            ):
                messages.append(_missing(name, feature, total))
            elif kind == "SCHEMA_NEW_COLUMN" and feature:
                present = total - int(sg.common_statistics(feature).num_missing)
                messages.append(
                    f"feature '{name}': not in the schema; present in {_examples(present)}"
                )
            elif kind.startswith("COMPARATOR_") and kind.endswith("_HIGH") and feature:
                messages.append(_drift(name, feature, previous_statistics, drifts.get(name), vocab))
            else:
                messages.append(
                    f"feature '{name}': {reason.short_description}: {reason.description}"
                )
    for reason in anomalies.dataset_anomaly_info.reason:
        messages.append(f"dataset: {reason.short_description}: {reason.description}")
    return list(dict.fromkeys(messages))  # a missing feature breaks presence and shape alike

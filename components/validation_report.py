"""A self-contained HTML statistics report: tables and embedded PNG charts, no network needed.

TFDV's own `get_statistics_html` loads Facets from the internet and shows nothing offline, so
the report is written here: per split, one row per feature (count, missing, range or top
values), the character distribution, label lengths and image sizes as pictures, and the
anomalies in plain words.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from components import artifact_io
from components import statistics_gen as sg

REPORT_FILE = "report.html"
_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.ok { color: #176617; } .bad { color: #a31515; }
img { max-width: 100%; margin: 0.5em 1em 0.5em 0; }
"""


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _int_counts(
    statistics: statistics_pb2.DatasetFeatureStatisticsList, name: str
) -> dict[int, float]:
    """{value: count} of a categorical int feature."""
    feature = sg.feature_statistics(statistics, name)
    if feature is None:
        return {}
    return {int(v): n for v, n in sg.value_counts(feature).items() if v.lstrip("-").isdigit()}


def _outside(schema: schema_pb2.Schema | None, name: str) -> Callable[[int], bool]:
    """Whether a value breaks the schema's int domain of `name` (charted in red)."""
    feature = next((f for f in schema.feature if f.name == name), None) if schema else None
    if feature is None or not feature.HasField("int_domain"):
        return lambda value: False
    domain = feature.int_domain
    low = domain.min if domain.HasField("min") else -math.inf
    high = domain.max if domain.HasField("max") else math.inf
    return lambda value: not low <= value <= high


def _share_chart(
    counts: Mapping[int, float],
    previous: Mapping[int, float],
    title: str,
    outside: Callable[[int], bool],
    labels: Sequence[str] = (),
) -> str:
    """Bars: % of this batch's values; black ticks: the previous batch; red: outside the schema."""
    keys = sorted(set(counts) | set(previous))
    positions = range(len(keys))
    total = sum(counts.values()) or 1
    figure, axes = plt.subplots(figsize=(max(3.5, 0.3 * len(keys) + 1.5), 2.8))
    axes.bar(
        positions,
        [100 * counts.get(k, 0) / total for k in keys],
        color=["#c44e52" if outside(k) else "#4c72b0" for k in keys],
        label="this batch",
    )
    if previous:
        previous_total = sum(previous.values()) or 1
        axes.plot(
            positions,
            [100 * previous.get(k, 0) / previous_total for k in keys],
            "k_",
            markersize=12,
            markeredgewidth=2,
            label="previous batch",
        )
        axes.legend(fontsize=7)
    axes.set_xticks(positions)
    axes.set_xticklabels([labels[k] if 0 <= k < len(labels) else str(k) for k in keys], fontsize=8)
    axes.set_title(title)
    axes.set_ylabel("% of values")
    return _png(figure)


CHARTS = (
    ("label_ids", "characters"),
    ("label_length", "label length"),
    ("width", "image width (pixels)"),
    ("height", "image height (pixels)"),
)


def _charts(
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
    previous: statistics_pb2.DatasetFeatureStatisticsList | None,
    schema: schema_pb2.Schema | None,
    vocab: Sequence[str],
) -> list[tuple[str, str]]:
    charts = []
    for name, title in CHARTS:
        counts = _int_counts(statistics, name)
        if counts:
            before = _int_counts(previous, name) if previous is not None else {}
            labels = vocab if name == "label_ids" else ()
            charts.append(
                (title, _share_chart(counts, before, title, _outside(schema, name), labels))
            )
    return charts


def _summary(feature: statistics_pb2.FeatureNameStatistics, vocab: Sequence[str]) -> str:
    name = ".".join(feature.path.step) or feature.name
    kind = feature.WhichOneof("stats")
    if kind == "num_stats":
        s = feature.num_stats
        return f"min {s.min:g}, max {s.max:g}, mean {s.mean:.3g}, std {s.std_dev:.3g}"
    if kind == "bytes_stats":
        s = feature.bytes_stats
        return (
            f"bytes per value: min {s.min_num_bytes:g}, mean {s.avg_num_bytes:.0f}, "
            f"max {s.max_num_bytes:g}"
        )
    if kind == "string_stats":
        top = list(sg.value_counts(feature).items())[:8]
        if name == "label_ids":
            top = [
                (f"{v} ({vocab[int(v)]})" if v.isdigit() and int(v) < len(vocab) else v, n)
                for v, n in top
            ]
        shown = ", ".join(f"{v[:24]} ×{n:g}" for v, n in top)
        return f"{feature.string_stats.unique} unique; top: {shown}"
    return ""


def _feature_table(
    statistics: statistics_pb2.DatasetFeatureStatisticsList, vocab: Sequence[str]
) -> str:
    rows = []
    for feature in sorted(statistics.datasets[0].features, key=lambda f: list(f.path.step)):
        common = sg.common_statistics(feature)
        rows.append(
            "<tr>"
            f"<td>{html.escape('.'.join(feature.path.step) or feature.name)}</td>"
            f"<td>{statistics_pb2.FeatureNameStatistics.Type.Name(feature.type)}</td>"
            f"<td>{common.num_non_missing}</td><td>{common.num_missing}</td>"
            f"<td>{common.min_num_values}–{common.max_num_values}</td>"
            f"<td>{html.escape(_summary(feature, vocab))}</td>"
            "</tr>"
        )
    return (
        "<table><tr><th>feature</th><th>type</th><th>count</th><th>missing</th>"
        "<th>values per example</th><th>summary</th></tr>" + "".join(rows) + "</table>"
    )


def write_report(
    path: str,
    statistics: Mapping[str, statistics_pb2.DatasetFeatureStatisticsList],
    anomalies: Mapping[str, Sequence[str]],
    vocab: Sequence[str],
    title: str,
    schema: schema_pb2.Schema | None = None,
    previous: Mapping[str, statistics_pb2.DatasetFeatureStatisticsList | None] | None = None,
) -> str:
    """Write the report (atomically) and return its path."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for split, stats in statistics.items():
        messages = anomalies.get(split, [])
        parts.append(
            f"<h2>Split {html.escape(split)}: {stats.datasets[0].num_examples} examples</h2>"
        )
        if messages:
            noun = "anomaly" if len(messages) == 1 else "anomalies"
            parts.append(f"<h3 class='bad'>{len(messages)} {noun}</h3><ul>")
            parts.extend(f"<li class='bad'>{html.escape(m)}</li>" for m in messages)
            parts.append("</ul>")
        else:
            parts.append("<p class='ok'>No anomalies.</p>")
        parts.append(_feature_table(stats, vocab))
        before = (previous or {}).get(split)
        for alt, data in _charts(stats, before, schema, vocab):
            parts.append(
                f"<img alt='{html.escape(split)}: {alt}' src='data:image/png;base64,{data}'>"
            )
    parts.append("</body></html>")
    artifact_io.write_file(path, "\n".join(parts))
    return path

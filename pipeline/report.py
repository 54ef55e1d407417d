"""`report.html`: one self-contained page per run (pictures embedded), for people to look at."""

from __future__ import annotations

import base64
import csv
import html
import io
import posixpath
from collections.abc import Sequence
from typing import Any

from components import artifact_io
from components.evaluator import (
    CURVES_FILE,
    ERRORS_FILE,
    PREDICTIONS_GRID_FILE,
    RELIABILITY_FILE,
    TRAIN_GRID_FILE,
)
from components.tuner import TRIALS_CSV, TRIALS_PNG

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #eee; }
.bad { color: #b00; } .good { color: #070; }
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(path: str, alt: str) -> str:
    if not artifact_io.exists(path):
        return ""
    data = base64.b64encode(artifact_io.read_bytes(path)).decode()
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _csv_table(path: str, max_rows: int = 30) -> str:
    if not artifact_io.exists(path):
        return ""
    rows = list(csv.reader(io.StringIO(artifact_io.read_text(path))))
    return _table(rows[0], rows[1 : max_rows + 1]) if rows else ""


def _section(title: str, *parts: str) -> str:
    body = "".join(p for p in parts if p)
    return f"<h2>{html.escape(title)}</h2>{body}" if body else ""


def _confidence_section(metrics: dict[str, Any], out: str) -> str:
    """How far a confidence can be trusted: the reliability diagram and the review threshold."""
    calibration = metrics.get("calibration")
    if not calibration:
        return ""
    above = calibration.get("accuracy_above_0.9")
    return _section(
        "Confidence",
        _table(
            ["calibrated", "answers above 0.9", "right among them", "review below", "ECE"],
            [
                (
                    "yes (validation holdout)" if calibration["calibrated"] else "no",
                    f"{calibration['share_above_0.9']:.1%}",
                    "-" if above is None else f"{above:.2%}",
                    f"{calibration['review_below']:.3f}",
                    f"{calibration['expected_calibration_error']:.3f}",
                )
            ],
        ),
        _image(posixpath.join(out, RELIABILITY_FILE), "reliability diagram"),
    )


def _ingestion(metadata: dict[str, Any]) -> str:
    """Rejections by reason and the kept images far from the data set's shape."""
    outliers = metadata.get("size_outliers") or {}
    shapes = [
        (f"{o['width']}x{o['height']}", o["count"], ", ".join(o["examples"]))
        for o in outliers.get("sizes", [])
    ]
    return _section(
        "Ingestion",
        _table(
            ["inputs", "written", "rejected"],
            [(metadata["num_inputs"], metadata["num_written"], metadata["num_rejected"])],
        ),
        _table(["rejected as", "files"], list(metadata["rejected_reasons"].items())),
        f'<p class="bad">{outliers["count"]} kept images far from the data set\'s shape '
        f"({html.escape(outliers['rule'])}):</p>" + _table(["size", "images", "examples"], shapes)
        if shapes
        else "",
    )


def _training_start(summary: dict[str, Any]) -> str:
    """Where training started: the shipped (or an earlier) model, or scratch, and why."""
    start = summary.get("start")
    if not start:
        return ""
    return _section(
        "Training start",
        _table(
            ["start", "from", "input height", "why", "characters mapped", "fresh rows"],
            [
                (
                    start["start"],
                    start.get("from") or "-",
                    start.get("input_height") or "-",
                    start["reason"],
                    start.get("characters_mapped", "-"),
                    start.get("characters_fresh") or "-",
                )
            ],
        ),
    )


def write_report(path: str, records: Sequence[Any]) -> str:
    """Render the run's components (StepRecords) into `path`; returns `path`."""
    steps = {r.name: r for r in records}
    parts = [
        "<h1>captcha-ocr run report</h1>",
        _table(
            ["component", "status", "seconds", "output"],
            [(r.name, r.status, f"{r.seconds:.1f}", r.output) for r in records],
        ),
    ]
    if "ExampleGen" in steps:
        parts.append(_ingestion(steps["ExampleGen"].result))
    if "Trainer" in steps:
        parts.append(_training_start(steps["Trainer"].result))
    if "Evaluator" in steps:
        evaluator = steps["Evaluator"]
        metrics = evaluator.result
        parts.append(
            _section(
                "Metrics",
                _table(
                    ["whole-captcha accuracy", "character error rate", "eval captchas"],
                    [
                        (
                            f"{metrics['accuracy']:.2%}",
                            f"{metrics['cer']:.2%}",
                            metrics["num_examples"],
                        )
                    ],
                ),
            )
        )
        parts.append(
            _section("Data", _image(posixpath.join(evaluator.output, TRAIN_GRID_FILE), "data grid"))
        )
    if "Validation" in steps:
        validation = steps["Validation"].result
        anomalies = validation.get("anomalies") or []
        summary = (
            '<p class="good">no anomalies</p>'
            if not anomalies
            else "<ul>"
            + "".join(f'<li class="bad">{html.escape(a)}</li>' for a in anomalies)
            + "</ul>"
        )
        link = html.escape(validation.get("report_path", ""))
        parts.append(
            _section(
                "Validation", summary, f'<p>statistics report: <a href="{link}">{link}</a></p>'
            )
        )
    if "Tuner" in steps:
        tuner = steps["Tuner"]
        parts.append(
            _section(
                "Tuner",
                _csv_table(posixpath.join(tuner.output, TRIALS_CSV)),
                _image(posixpath.join(tuner.output, TRIALS_PNG), "trials"),
            )
        )
    if "Evaluator" in steps:
        out = steps["Evaluator"].output
        parts.append(
            _section("Training curves", _image(posixpath.join(out, CURVES_FILE), "curves"))
        )
        parts.append(
            _section(
                "Predictions (errors in red)",
                _image(posixpath.join(out, PREDICTIONS_GRID_FILE), "predictions"),
                _csv_table(posixpath.join(out, ERRORS_FILE)),
            )
        )
        parts.append(_confidence_section(steps["Evaluator"].result, out))
    if "Pusher" in steps:
        push = steps["Pusher"].result
        parts.append(
            _section(
                "Export",
                _table(
                    ["pushed", "version", "reason"],
                    [(push.get("pushed"), push.get("version"), push.get("reason"))],
                ),
            )
        )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>captcha-ocr report</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    artifact_io.write_file(path, page)
    return path

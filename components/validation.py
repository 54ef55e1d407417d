"""The data gate: StatisticsGen, SchemaGen and ExampleValidator run as one step.

`run_validate` computes statistics for every split of an ExampleGen output (a Beam job),
infers and curates a schema when none is given, checks each split against the schema and
against the previous batch's statistics (drift of the character distribution), and writes:

    <output_dir>/Split-<split>/FeatureStats.pb    TFDV statistics (binary proto)
    <output_dir>/Split-<split>/anomalies.pbtxt    TFDV anomalies (text proto)
    <output_dir>/schema.pbtxt                     only when the schema was inferred here
    <output_dir>/report.html                      self-contained statistics report
    <output_dir>/validation.json                  the summary, written last: its presence
                                                  means the output is complete
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from components import artifact_io, examples
from components.settings import setting

if TYPE_CHECKING:
    from tensorflow_metadata.proto.v0 import schema_pb2

DEFAULT_DRIFT_THRESHOLD = 0.1
DEFAULT_OUTPUT_SUBDIR = "validation"
RESULT_FILE = "validation.json"
ANOMALIES_FILE = "anomalies.pbtxt"
CHARACTER_FEATURE = "label_ids"
LENGTH_FEATURE = "label_length"

log = logging.getLogger(__name__)

# This component's folder under the pipeline root (pipeline/runner.py).
PIPELINE_FOLDER = "Validation"


@dataclass(frozen=True)
class ValidateConfig:
    schema_path: str | None = setting(
        None,
        "a curated schema.pbtxt",
        flag="--schema",
        metavar="SCHEMA",
        shown_default="infer one from this data and write it",
    )
    previous_statistics: str | None = setting(
        None,
        "the previous batch's validation folder (or one FeatureStats.pb): check drift "
        "of the character distribution against it",
        metavar="PATH",
    )
    drift_threshold: float | None = setting(
        None,
        "L-infinity threshold on the character distribution",
        metavar="X",
        shown_default=f"the schema's, else {DEFAULT_DRIFT_THRESHOLD}",
    )
    length_drift_threshold: float | None = setting(
        None,
        "L-infinity threshold on the label length distribution",
        metavar="X",
        shown_default="off",
    )
    allow_anomalies: bool = setting(False, "report anomalies but go on (exit 0)")

    def __post_init__(self) -> None:
        for name in ("drift_threshold", "length_drift_threshold"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"{name} is an L-infinity distance in (0, 1], got {value}")


@dataclass
class ValidationResult:
    statistics: dict[str, str]  # split -> FeatureStats.pb
    schema_path: str
    schema_inferred: bool
    anomalies: list[str]  # plain sentences, each starting with "[<split>] feature '...'"
    anomalies_paths: dict[str, str]  # split -> anomalies.pbtxt
    report_path: str
    result_path: str

    @property
    def ok(self) -> bool:
        return not self.anomalies


def default_output_dir(examples_dir: str) -> str:
    return posixpath.join(examples_dir, DEFAULT_OUTPUT_SUBDIR)


def _previous_statistics(previous: str | None, split: str):
    from components import statistics_gen

    """A validation output folder gives the same split's statistics; a file is used as is.

    A folder without this split (say, an earlier batch ingested with no eval split) means no
    drift check for the split, with a warning; a path that does not exist at all is an error.
    """
    if previous is None:
        return None
    if not artifact_io.isdir(previous):
        return statistics_gen.load_statistics(previous)
    path = statistics_gen.statistics_path(previous, split)
    if not artifact_io.exists(path):
        log.warning("no previous statistics for split %s at %s: drift not checked", split, path)
        return None
    return statistics_gen.load_statistics(path)


def _drift_thresholds(config: ValidateConfig, schema: schema_pb2.Schema | None) -> dict:
    thresholds: dict[str, float | None] = {}
    existing = (
        next((f for f in schema.feature if f.name == CHARACTER_FEATURE), None) if schema else None
    )
    if config.drift_threshold is not None:
        thresholds[CHARACTER_FEATURE] = config.drift_threshold
    elif existing is None or not existing.HasField("drift_comparator"):
        thresholds[CHARACTER_FEATURE] = DEFAULT_DRIFT_THRESHOLD
    if config.length_drift_threshold is not None:
        thresholds[LENGTH_FEATURE] = config.length_drift_threshold
    return thresholds


def run_validate(
    examples_dir: str,
    output_dir: str,
    config: ValidateConfig,
    beam_args: Sequence[str] = (),
) -> ValidationResult:
    """Statistics, schema (given or inferred) and anomalies of one ExampleGen output."""
    # TFDV (through these components) is imported here, not with the module: it prints a
    # notice on import, and the command line reads ValidateConfig for every subcommand.
    from google.protobuf import text_format

    from components import example_validator, schema_gen, statistics_gen
    from components.validation_report import REPORT_FILE, write_report

    vocab_path = posixpath.join(examples_dir, examples.VOCAB_FILE)
    if not artifact_io.exists(vocab_path):
        raise FileNotFoundError(f"no {examples.VOCAB_FILE} in {examples_dir}: not an ingest output")
    vocab = examples.read_vocab(vocab_path)
    if config.previous_statistics and not artifact_io.exists(config.previous_statistics):
        raise FileNotFoundError(f"no previous statistics at {config.previous_statistics}")
    artifact_io.makedirs(output_dir)
    result_path = posixpath.join(output_dir, RESULT_FILE)
    artifact_io.remove(result_path)  # from now on the folder is incomplete until rewritten

    given_schema = schema_gen.load_schema(config.schema_path) if config.schema_path else None
    statistics_paths = statistics_gen.generate_statistics(
        examples_dir, output_dir, given_schema, beam_args
    )
    statistics = {s: statistics_gen.load_statistics(p) for s, p in statistics_paths.items()}

    if given_schema is None:
        schema = schema_gen.infer_curated_schema(
            list(statistics.values()), len(vocab), _drift_thresholds(config, None)
        )
        schema_path = posixpath.join(output_dir, schema_gen.SCHEMA_FILE)
        artifact_io.write_file(schema_path, text_format.MessageToString(schema))
        log.info("inferred and curated a schema: %s", schema_path)
    else:
        schema = schema_gen.set_drift_thresholds(
            given_schema, _drift_thresholds(config, given_schema)
        )
        schema_path = config.schema_path

    messages: dict[str, list[str]] = {}
    anomalies_paths: dict[str, str] = {}
    previous = {s: _previous_statistics(config.previous_statistics, s) for s in statistics}
    for split, stats in statistics.items():
        anomalies = example_validator.validate(stats, schema, previous[split])
        anomalies_paths[split] = posixpath.join(
            examples.split_dir(output_dir, split), ANOMALIES_FILE
        )
        artifact_io.write_file(anomalies_paths[split], text_format.MessageToString(anomalies))
        messages[split] = example_validator.describe_anomalies(
            anomalies, stats, schema, previous[split], vocab
        )
        log.info("split %s: %d anomalies", split, len(messages[split]))

    report_path = write_report(
        posixpath.join(output_dir, REPORT_FILE),
        statistics,
        messages,
        vocab,
        title=f"captcha-ocr data validation: {examples_dir}",
        schema=schema,
        previous=previous,
    )
    result = ValidationResult(
        statistics=statistics_paths,
        schema_path=schema_path,
        schema_inferred=given_schema is None,
        anomalies=[f"[{split}] {m}" for split, ms in messages.items() for m in ms],
        anomalies_paths=anomalies_paths,
        report_path=report_path,
        result_path=result_path,
    )
    artifact_io.write_json(result_path, {**dataclasses.asdict(result), "ok": result.ok})
    return result

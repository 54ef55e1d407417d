"""The pipeline: wires the components into `run` and `retrain`, as TFX's LocalDagRunner would.

Each component writes into its own folder under the pipeline root (local or gs://). A folder
is finished when it holds `_COMPLETE.json`, written last, with the fingerprint of the
component's configuration and of its upstream outputs. A later call skips every component
whose fingerprint matches, so a crashed run resumes where it stopped and a re-run with the
same inputs and configuration does nothing but report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

COMPLETE_MARKER = "_COMPLETE.json"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.html"
SPAN_DIR = re.compile(r"^span-(\d+)$")


@dataclasses.dataclass
class RunConfig:
    """Everything `captcha-ocr run` / `retrain` needs; the CLI fills it from flags."""

    workdir: str = "runs/captcha-ocr"
    export_dir: str = "export"
    images: str | None = None
    labels_csv: str | None = None
    profile: str = "quick"
    tune: bool | None = None
    allow_anomalies: bool = False
    model_name: str | None = None
    force_push: bool = False
    min_accuracy: float = 0.0  # blessing: eval accuracy the model must reach to be pushed
    hyperparameters: str | None = None  # a ModelConfig JSON replacing the profile's model
    epochs: int | None = None  # overrides the profile's
    max_train_minutes: float | None = None  # overrides the profile's
    beam_args: Sequence[str] = ()

    @property
    def tune_enabled(self) -> bool:
        return self.profile == "full" if self.tune is None else self.tune

    def train_config(self, warm_start: str | None = None) -> Any:
        """The profile's TrainConfig with this run's overrides."""
        from components import trainer

        changes: dict[str, Any] = {"warm_start": warm_start}
        if self.epochs is not None:
            changes["epochs"] = self.epochs
        if self.max_train_minutes is not None:
            changes["max_minutes"] = self.max_train_minutes
        return trainer.PROFILES[self.profile].train.replace(**changes)

    def model_config(self) -> Any:
        """The profile's ModelConfig, or the one in `hyperparameters`."""
        from components import trainer
        from components.model import ModelConfig

        if self.hyperparameters:
            return ModelConfig.from_json(self.hyperparameters)
        return trainer.PROFILES[self.profile].model


@dataclasses.dataclass
class StepRecord:
    name: str
    status: str  # "ran" or "skipped"
    seconds: float
    output: str
    fingerprint: str
    result: dict[str, Any]


class PipelineStopped(RuntimeError):
    """A gate (validation, new characters, blessing) stopped the run; the message says why."""


def fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    """Configs are dataclasses; anything else JSON cannot hold is fingerprinted by its repr."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def files_fingerprint(pattern_or_dir: str) -> str:
    """Names, sizes and modification times of the input files: cheap, and gs:// works."""
    from apache_beam.io.filesystems import FileSystems

    pattern = pattern_or_dir
    if not any(ch in pattern for ch in "*?["):
        pattern = posixpath.join(pattern_or_dir.rstrip("/"), "**")
    metadata = FileSystems.match([pattern])[0].metadata_list
    listing = sorted((m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in metadata)
    return fingerprint(listing)


def read_json(path: str) -> Any:
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def write_json(path: str, value: Any) -> None:
    """Write to a temporary name, then rename, so a reader never sees half a file."""
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True, default=_jsonable)
    tf.io.gfile.rename(tmp, path, overwrite=True)


class Orchestrator:
    """Runs steps in order, skipping complete ones, and records each for the manifest."""

    def __init__(self, root: str, total_steps: int, echo: Callable[[str], None] = print) -> None:
        self.root = root
        self.total_steps = total_steps
        self.echo = echo
        self.records: list[StepRecord] = []
        tf.io.gfile.makedirs(root)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def step(
        self,
        name: str,
        output: str,
        fingerprint_parts: Sequence[Any],
        work: Callable[[str], dict[str, Any]],
        still_valid: Callable[[dict[str, Any]], bool] = lambda result: True,
    ) -> StepRecord:
        """Run `work(output)` unless `output` is complete with the same fingerprint.

        `still_valid(result)` can veto the skip when the outputs live elsewhere too.
        """
        number = len(self.records) + 1
        key = fingerprint(name, *fingerprint_parts)
        marker = posixpath.join(output, COMPLETE_MARKER)
        label = f"[{number}/{self.total_steps}] {name}"
        if tf.io.gfile.exists(marker):
            done = read_json(marker)
            if done.get("fingerprint") == key and still_valid(done["result"]):
                record = StepRecord(name, "skipped", 0.0, output, key, done["result"])
                self.records.append(record)
                self.echo(f"{label}: skipped, outputs complete in {output}")
                return record
        if tf.io.gfile.exists(output):
            tf.io.gfile.rmtree(output)
        self.echo(f"{label} ...")
        start = time.monotonic()
        result = work(output)
        seconds = time.monotonic() - start
        tf.io.gfile.makedirs(output)
        write_json(marker, {"fingerprint": key, "result": result, "seconds": seconds})
        record = StepRecord(name, "ran", seconds, output, key, result)
        self.records.append(record)
        self.echo(f"{label}: done in {seconds:.1f} s -> {output}")
        return record


def _accepted_spans(root: str) -> dict[int, str]:
    """ExampleGen outputs of the spans that passed validation and were trained on, by number."""
    base = posixpath.join(root, "ExampleGen")
    if not tf.io.gfile.isdir(base):
        return {}
    spans = {}
    for name in tf.io.gfile.listdir(base):
        match = SPAN_DIR.match(name.rstrip("/"))
        if not match:
            continue
        span_name = match.group(0)
        done = [
            posixpath.join(root, component, span_name, COMPLETE_MARKER)
            for component in ("ExampleGen", "Validation", "Trainer")
        ]
        if all(tf.io.gfile.exists(marker) for marker in done):
            spans[int(match.group(1))] = posixpath.join(base, span_name)
    return spans


def _rejected(examples_dir: str, reason: str) -> list[dict[str, Any]]:
    from components import examples

    with tf.io.gfile.GFile(posixpath.join(examples_dir, examples.REJECTED_FILE)) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [row for row in rows if row.get("reason") == reason]


def _ingest_step(
    orch: Orchestrator,
    images: str,
    images_fingerprint: str,
    span: int,
    config: RunConfig,
    vocab_path: str | None = None,
    earlier_spans: tuple[str, ...] = (),
) -> StepRecord:
    from components import example_gen

    ingest_config = example_gen.IngestConfig(
        labels_csv=config.labels_csv, vocab_path=vocab_path, span=span,
        earlier_spans=earlier_spans,
    )
    output = orch.path("ExampleGen", f"span-{span}")
    return orch.step(
        "ExampleGen",
        output,
        [images, images_fingerprint, ingest_config],
        lambda out: example_gen.run_ingest(images, out, ingest_config, config.beam_args),
    )


def _validate_step(
    orch: Orchestrator,
    ingest: StepRecord,
    span: int,
    config: RunConfig,
    schema_path: str | None = None,
    previous_statistics: str | None = None,
) -> StepRecord:
    from components import validation

    validate_config = validation.ValidateConfig(
        schema_path=schema_path,
        previous_statistics=previous_statistics,
        allow_anomalies=config.allow_anomalies,
    )

    def work(out: str) -> dict[str, Any]:
        result = validation.run_validate(ingest.output, out, validate_config, config.beam_args)
        if result.anomalies and not config.allow_anomalies:
            raise PipelineStopped(
                "validation found anomalies (run again with --allow-anomalies to go on):\n  "
                + "\n  ".join(result.anomalies)
                + f"\nreport: {result.report_path}"
            )
        return dataclasses.asdict(result)

    return orch.step(
        "Validation",
        orch.path("Validation", f"span-{span}"),
        [ingest.fingerprint, validate_config],
        work,
    )


def _evaluate_step(
    orch: Orchestrator, train: StepRecord, span_dirs: list[str], span: int
) -> StepRecord:
    from components import evaluator

    return orch.step(
        "Evaluator",
        orch.path("Evaluator", f"span-{span}"),
        [train.fingerprint],
        lambda out: evaluator.run_evaluate(train.output, span_dirs, out),
    )


def _push_step(
    orch: Orchestrator, train: StepRecord, evaluation: StepRecord, span_dirs: list[str],
    span: int, config: RunConfig,
) -> StepRecord:
    from components import evaluator, pusher

    push_config = pusher.PushConfig(
        min_accuracy=config.min_accuracy,
        force=config.force_push,
        model_name=config.model_name,
        metrics_path=posixpath.join(evaluation.output, evaluator.METRICS_FILE),
    )

    def work(out: str) -> dict[str, Any]:
        result = pusher.run_push(train.output, span_dirs, config.export_dir, push_config)
        return dataclasses.asdict(result)

    def still_served(result: dict[str, Any]) -> bool:
        return bool(result.get("version_dir")) and tf.io.gfile.exists(result["version_dir"])

    return orch.step(
        "Pusher",
        orch.path("Pusher", f"span-{span}"),
        [evaluation.fingerprint, config.export_dir, push_config],
        work,
        still_valid=still_served,
    )


def _finish(orch: Orchestrator, config: RunConfig, command: str) -> dict[str, Any]:
    """Write the manifest and the report; print the closing summary."""
    from pipeline import report

    steps = {r.name: r for r in orch.records}
    metrics = steps["Evaluator"].result if "Evaluator" in steps else {}
    push = steps["Pusher"].result if "Pusher" in steps else {}
    manifest = {
        "command": command,
        "config": config,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "components": [dataclasses.asdict(r) for r in orch.records],
        "metrics": {k: metrics.get(k) for k in ("accuracy", "cer", "num_examples")},
        "exported": push,
    }
    write_json(orch.path(MANIFEST_FILE), manifest)
    report_path = report.write_report(orch.path(REPORT_FILE), orch.records)
    total = sum(r.seconds for r in orch.records)
    orch.echo("")
    orch.echo(f"captcha-ocr {command}: {len(orch.records)} components in {total:.0f} s")
    if metrics:
        orch.echo(
            f"  eval accuracy {metrics['accuracy']:.2%}, character error rate "
            f"{metrics['cer']:.2%} on {metrics['num_examples']} held-out captchas"
        )
    if push:
        orch.echo(f"  {'pushed' if push['pushed'] else 'not pushed'}: {push['reason']}")
        if push.get("version_dir"):
            base = posixpath.dirname(push["version_dir"].rstrip("/"))
            if "://" not in base:
                base = os.path.abspath(base)  # docker mounts need absolute paths
            name = config.model_name or "captcha"
            orch.echo(f"  model: {push['version_dir']}")
            orch.echo(
                f"  serve: docker run -p 8501:8501 -v {base}:/models/{name} "
                f"-e MODEL_NAME={name} tensorflow/serving:2.16.1"
            )
    orch.echo(f"  manifest: {orch.path(MANIFEST_FILE)}")
    orch.echo(f"  report:   {report_path}")
    return manifest


def run(config: RunConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """ExampleGen -> Validation -> (Tuner) -> Trainer -> Evaluator -> Pusher on span 0."""
    from components import synth, trainer, tuner
    from components.model import ModelConfig

    total = 5 + int(config.images is None) + int(config.tune_enabled)
    orch = Orchestrator(config.workdir, total, echo)

    if config.images is None:
        synthetic = orch.step(
            "SyntheticGen",
            orch.path("SyntheticGen"),
            [trainer.DEMO_SYNTH],
            lambda out: {"count": len(synth.generate(out, trainer.DEMO_SYNTH))},
        )
        images, images_fingerprint = synthetic.output, synthetic.fingerprint
    else:
        images = config.images
        images_fingerprint = files_fingerprint(images)
        if config.labels_csv:
            images_fingerprint = fingerprint(images_fingerprint, files_fingerprint(config.labels_csv))

    ingest = _ingest_step(orch, images, images_fingerprint, 0, config)
    validation_step = _validate_step(orch, ingest, 0, config)

    model_config, upstream = config.model_config(), validation_step.fingerprint
    if config.tune_enabled:
        tune_config = tuner.TuneConfig(**TUNE_BUDGETS[config.profile])
        base_config = model_config
        tuned = orch.step(
            "Tuner",
            orch.path("Tuner"),
            [validation_step.fingerprint, tune_config, base_config],
            lambda out: tuner.run_tune(ingest.output, out, tune_config, base_config),
        )
        model_config = ModelConfig.from_json(
            posixpath.join(tuned.output, tuner.BEST_HYPERPARAMETERS_FILE)
        )
        upstream = tuned.fingerprint

    train_config = config.train_config()
    train = orch.step(
        "Trainer",
        orch.path("Trainer", "span-0"),
        [upstream, model_config, train_config],
        lambda out: trainer.run_train(ingest.output, out, model_config, train_config),
    )
    evaluation = _evaluate_step(orch, train, [ingest.output], 0)
    _push_step(orch, train, evaluation, [ingest.output], 0, config)
    return _finish(orch, config, "run")


def retrain(config: RunConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Ingest new captchas as the next span, validate, warm-start training on all spans, push if not worse."""
    from components import example_gen, examples, trainer
    from components.model import ModelConfig

    spans = _accepted_spans(config.workdir)
    if not spans:
        raise PipelineStopped(f"no trained span under {config.workdir}: run `captcha-ocr run` first")
    if config.images is None:
        raise PipelineStopped("retrain needs --images: the folder of new captchas")
    last = max(spans)
    current_model = posixpath.join(config.workdir, "Trainer", f"span-{last}")
    span = last + 1
    orch = Orchestrator(config.workdir, 5, echo)

    images_fingerprint = files_fingerprint(config.images)
    ingest = _ingest_step(
        orch, config.images, images_fingerprint, span, config,
        vocab_path=posixpath.join(spans[last], examples.VOCAB_FILE),
        earlier_spans=tuple(spans[s] for s in sorted(spans)),
    )
    unknown = _rejected(ingest.output, example_gen.BAD_CHARACTER)
    if unknown and not config.allow_anomalies:
        lines = "\n  ".join(f"{r['source']}: {r['detail']}" for r in unknown)
        raise PipelineStopped(
            f"{len(unknown)} new captchas hold characters outside the vocabulary; nothing was "
            f"trained or pushed (--allow-anomalies trains on the others):\n  {lines}"
        )
    schema = posixpath.join(config.workdir, "Validation", "span-0", "schema.pbtxt")
    _validate_step(
        orch, ingest, span, config, schema_path=schema,
        previous_statistics=posixpath.join(config.workdir, "Validation", f"span-{last}"),
    )
    model_config = ModelConfig.from_json(posixpath.join(current_model, trainer.MODEL_CONFIG_FILE))
    train_config = config.train_config(warm_start=current_model)
    span_dirs = [spans[s] for s in sorted(spans)] + [ingest.output]
    train = orch.step(
        "Trainer",
        orch.path("Trainer", f"span-{span}"),
        [ingest.fingerprint, model_config, train_config],
        lambda out: trainer.run_train(span_dirs, out, model_config, train_config),
    )
    evaluation = _evaluate_step(orch, train, span_dirs, span)
    _push_step(orch, train, evaluation, span_dirs, span, config)
    return _finish(orch, config, "retrain")


# Search budgets per profile; the real budgets for a best model live in benchmarks/tune.py.
TUNE_BUDGETS: dict[str, dict[str, Any]] = {
    "quick": {"algorithm": "random", "max_trials": 3, "max_epochs": 5, "time_budget_minutes": 5},
    "full": {"algorithm": "hyperband", "max_epochs": 30, "time_budget_minutes": 60},
}

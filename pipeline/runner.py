"""The pipeline: wires the components into `run` and `retrain`, as TFX's LocalDagRunner would.

Each component writes into its own folder under the pipeline root (local or gs://; the
folder names are the components' `PIPELINE_FOLDER`). A folder is finished when it holds
`_COMPLETE.json`, written last, with the fingerprint of the component's configuration and of
its upstream outputs. A later call skips every component whose fingerprint matches, so a
crashed run resumes where it stopped and a re-run with the same inputs and configuration does
nothing but report. The recipes the steps use live in `pipeline/configs.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from components import artifact_io
from components.predict import SAVED_MODEL_FILE
from components.pusher import PushConfig
from components.settings import setting
from components.staging import Mirror
from pipeline import configs

COMPLETE_MARKER = "_COMPLETE.json"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.html"
SPAN_DIR = re.compile(r"^span-(\d+)$")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything `captcha-ocr run` / `retrain` needs; the command line fills it from flags."""

    workdir: str = setting("runs/captcha-ocr", "pipeline root, local or gs://")
    export_dir: str = setting("export", "TF Serving base path, local or gs://")
    images: str | None = None  # None: `run` generates configs.DEMO_SYNTH
    labels_csv: str | None = None  # IngestConfig.labels_csv
    profile: str = configs.DEFAULT_PROFILE
    hyperparameters: str | None = None  # a ModelConfig JSON replacing the profile's model
    tune: bool | None = setting(
        None,
        "run the Keras Tuner search before training",
        shown_default=f"only with --profile {' or '.join(configs.TUNED_BY_DEFAULT)}",
    )
    allow_anomalies: bool = setting(
        False, "go on when validation finds anomalies or new captchas hold new characters"
    )
    push: PushConfig = PushConfig()  # its metrics_path is set by the pipeline
    train_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # TrainConfig
    beam_args: Sequence[str] = ()

    @property
    def tune_enabled(self) -> bool:
        return self.profile in configs.TUNED_BY_DEFAULT if self.tune is None else self.tune

    def recipe(self, **train_changes: Any) -> configs.Profile:
        """The profile's model and training with this run's overrides."""
        return configs.resolve_recipe(
            self.profile, self.hyperparameters, **{**self.train_overrides, **train_changes}
        )


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


def write_json(path: str, value: Any) -> None:
    artifact_io.write_json(path, value, default=_jsonable, sort_keys=True)


class Orchestrator:
    """Runs steps in order, skipping complete ones, and records each for the manifest.

    Steps whose files only TensorFlow's own file system writes (SyntheticGen, Tuner, Trainer,
    Evaluator) are `staged`: on an object store they read local copies of their inputs
    (`local`), write into a local folder, and that folder is published with `_COMPLETE.json`
    last. The Pusher exports into a local copy of the export base and publishes the new
    version with `saved_model.pb` last.
    """

    def __init__(self, root: str, total_steps: int, echo: Callable[[str], None] = print) -> None:
        self.root = root
        self.total_steps = total_steps
        self.echo = echo
        self.records: list[StepRecord] = []
        self.mirror = Mirror()
        artifact_io.makedirs(root)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def local(self, path: str) -> str:
        return self.mirror.local(path)

    def step(
        self,
        name: str,
        output: str,
        fingerprint_parts: Sequence[Any],
        work: Callable[[str], dict[str, Any]],
        still_valid: Callable[[dict[str, Any]], bool] = lambda result: True,
        staged: bool = False,
    ) -> StepRecord:
        """Run `work(output)` unless `output` is complete with the same fingerprint.

        `still_valid(result)` can veto the skip when the outputs live elsewhere too. A
        `staged` step's `work` gets a local folder when `output` is on an object store.
        """
        number = len(self.records) + 1
        key = fingerprint(name, *fingerprint_parts)
        marker = posixpath.join(output, COMPLETE_MARKER)
        label = f"[{number}/{self.total_steps}] {name}"
        if artifact_io.exists(marker):
            done = artifact_io.read_json(marker)
            if done.get("fingerprint") == key and still_valid(done["result"]):
                record = StepRecord(name, "skipped", 0.0, output, key, done["result"])
                self.records.append(record)
                self.echo(f"{label}: skipped, outputs complete in {output}")
                return record
        artifact_io.remove(output)
        self.echo(f"{label} ...")
        start = time.monotonic()
        written = self.mirror.output(output) if staged else output
        result = self.mirror.urls(work(written))
        seconds = time.monotonic() - start
        artifact_io.makedirs(written)
        done = {"fingerprint": key, "result": result, "seconds": seconds}
        write_json(posixpath.join(written, COMPLETE_MARKER), done)
        self.mirror.publish(written, COMPLETE_MARKER)
        record = StepRecord(name, "ran", seconds, output, key, result)
        self.records.append(record)
        self.echo(f"{label}: done in {seconds:.1f} s -> {output}")
        return record


def _span_folder(span: int) -> str:
    return f"span-{span}"


def _accepted_spans(root: str) -> dict[int, str]:
    """ExampleGen outputs of the spans that passed validation and were trained on, by number."""
    from components import example_gen, trainer, validation

    base = posixpath.join(root, example_gen.PIPELINE_FOLDER)
    if not artifact_io.isdir(base):
        return {}
    spans = {}
    for name in artifact_io.listdir(base):
        match = SPAN_DIR.match(name)
        if not match:
            continue
        done = [
            posixpath.join(root, component, match.group(0), COMPLETE_MARKER)
            for component in (
                example_gen.PIPELINE_FOLDER,
                validation.PIPELINE_FOLDER,
                trainer.PIPELINE_FOLDER,
            )
        ]
        if all(artifact_io.exists(marker) for marker in done):
            spans[int(match.group(1))] = posixpath.join(base, match.group(0))
    return spans


def _rejected(examples_dir: str, reason: str) -> list[dict[str, Any]]:
    from components import examples

    text = artifact_io.read_text(posixpath.join(examples_dir, examples.REJECTED_FILE))
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [row for row in rows if row.get("reason") == reason]


def _synth_step(orch: Orchestrator) -> StepRecord:
    from components import synth

    return orch.step(
        "SyntheticGen",
        orch.path(synth.PIPELINE_FOLDER),
        [configs.DEMO_SYNTH],
        lambda out: {"count": len(synth.generate(out, configs.DEMO_SYNTH))},
        staged=True,
    )


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
        labels_csv=config.labels_csv,
        vocab_path=vocab_path,
        span=span,
        earlier_spans=earlier_spans,
    )
    return orch.step(
        "ExampleGen",
        orch.path(example_gen.PIPELINE_FOLDER, _span_folder(span)),
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
        orch.path(validation.PIPELINE_FOLDER, _span_folder(span)),
        [ingest.fingerprint, validate_config],
        work,
    )


def _tune_step(
    orch: Orchestrator, ingest: StepRecord, validated: StepRecord, config: RunConfig
) -> tuple[StepRecord, Any]:
    """The Tuner's search around the profile's model: the step and the best ModelConfig."""
    from components import head_start, tuner
    from components.model import ModelConfig

    tune_config = tuner.TuneConfig(**configs.TUNE_BUDGETS[config.profile])
    recipe = config.recipe()
    tuned = orch.step(
        "Tuner",
        orch.path(tuner.PIPELINE_FOLDER),
        [
            validated.fingerprint,
            tune_config,
            recipe.model,
            recipe.train,
            head_start.shipped_provenance(),  # trial 0 may start from it
        ],
        lambda out: tuner.run_tune(
            orch.local(ingest.output), out, tune_config, recipe.model, recipe.train
        ),
        staged=True,
    )
    best = ModelConfig.from_json(posixpath.join(tuned.output, tuner.BEST_HYPERPARAMETERS_FILE))
    return tuned, best


def _train_step(
    orch: Orchestrator,
    upstream: StepRecord,
    span_dirs: list[str],
    span: int,
    model_config: Any,
    train_config: Any,
) -> StepRecord:
    from components import head_start, trainer

    def work(out: str) -> dict[str, Any]:
        warm = train_config.warm_start
        local_config = train_config.replace(warm_start=warm and orch.local(warm))
        return trainer.run_train(_local_all(orch, span_dirs), out, model_config, local_config)

    return orch.step(
        "Trainer",
        orch.path(trainer.PIPELINE_FOLDER, _span_folder(span)),
        [upstream.fingerprint, model_config, train_config, head_start.shipped_provenance()],
        work,
        staged=True,
    )


def _local_all(orch: Orchestrator, paths: list[str]) -> list[str]:
    return [orch.local(path) for path in paths]


def _evaluate_step(
    orch: Orchestrator, train: StepRecord, span_dirs: list[str], span: int
) -> StepRecord:
    from components import evaluator

    return orch.step(
        "Evaluator",
        orch.path(evaluator.PIPELINE_FOLDER, _span_folder(span)),
        [train.fingerprint],
        lambda out: evaluator.run_evaluate(
            orch.local(train.output), _local_all(orch, span_dirs), out
        ),
        staged=True,
    )


def _push_step(
    orch: Orchestrator,
    train: StepRecord,
    evaluation: StepRecord,
    span_dirs: list[str],
    span: int,
    config: RunConfig,
) -> StepRecord:
    from components import evaluator, pusher

    push_config = dataclasses.replace(
        config.push, metrics_path=posixpath.join(evaluation.output, evaluator.METRICS_FILE)
    )

    def work(out: str) -> dict[str, Any]:
        local_config = dataclasses.replace(
            push_config, metrics_path=orch.local(push_config.metrics_path)
        )
        result = pusher.run_push(
            orch.local(train.output),
            _local_all(orch, span_dirs),
            orch.local(config.export_dir),
            local_config,
        )
        if result.pushed:  # a new version in the mirror of a gs:// export: publish it
            orch.mirror.publish(result.version_dir, SAVED_MODEL_FILE)
        return dataclasses.asdict(result)

    def still_served(result: dict[str, Any]) -> bool:
        return bool(result.get("version_dir")) and artifact_io.exists(result["version_dir"])

    return orch.step(
        "Pusher",
        orch.path(pusher.PIPELINE_FOLDER, _span_folder(span)),
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
        "start": steps["Trainer"].result.get("start") if "Trainer" in steps else None,
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
            name = config.push.model_name or "captcha"
            orch.echo(f"  model: {push['version_dir']}")
            orch.echo(
                f"  serve: docker run -p 8501:8501 -v {base}:/models/{name} "
                f"-e MODEL_NAME={name} tensorflow/serving:2.16.1"
            )
    orch.echo(f"  manifest: {orch.path(MANIFEST_FILE)}")
    orch.echo(f"  report:   {report_path}")
    if push and not push["pushed"] and push.get("version") is None:
        raise PipelineStopped(_nothing_served(push, steps["Trainer"].result, report_path))
    return manifest


def _nothing_served(push: dict[str, Any], training: dict[str, Any], report_path: str) -> str:
    """Why the first version was not pushed, and what to try: a model that did not learn
    must not look like a result."""
    stuck = (
        ""
        if training.get("learned", True)
        else (
            " It never left the CTC blank plateau (it reads nothing on its validation captchas"
            f" after {training['epochs_run']} epochs,"
            f" {len(training.get('attempts', []))} attempts)."
        )
    )
    return (
        f"nothing was pushed: {push['reason']}.{stuck}\n"
        "  Try: more labelled captchas; --profile full; a longer --max-minutes; check the\n"
        "  labels and images in the report's data grid; --min-accuracy sets the floor and\n"
        f"  --force-push pushes anyway.\n  report: {report_path}"
    )


def run(config: RunConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """(SyntheticGen) -> ExampleGen -> Validation -> (Tuner) -> Trainer -> Evaluator -> Pusher."""
    total = 5 + int(config.images is None) + int(config.tune_enabled)
    orch = Orchestrator(config.workdir, total, echo)

    if config.images is None:
        synthetic = _synth_step(orch)
        images, images_fingerprint = synthetic.output, synthetic.fingerprint
    else:
        images, images_fingerprint = config.images, files_fingerprint(config.images)
        if config.labels_csv:
            images_fingerprint = fingerprint(
                images_fingerprint, files_fingerprint(config.labels_csv)
            )

    ingest = _ingest_step(orch, images, images_fingerprint, 0, config)
    validated = _validate_step(orch, ingest, 0, config)
    recipe = config.recipe()
    upstream, model_config = validated, recipe.model
    if config.tune_enabled:
        upstream, model_config = _tune_step(orch, ingest, validated, config)
    train = _train_step(orch, upstream, [ingest.output], 0, model_config, recipe.train)
    evaluation = _evaluate_step(orch, train, [ingest.output], 0)
    _push_step(orch, train, evaluation, [ingest.output], 0, config)
    return _finish(orch, config, "run")


def retrain(config: RunConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """New captchas as the next span: ingest, validate, warm-start on every span, push."""
    from components import example_gen, examples, schema_gen, trainer, validation
    from components.model import ModelConfig

    if config.labels_csv:
        example_gen.read_labels(config.labels_csv)  # a broken CSV is refused before any step
    spans = _accepted_spans(config.workdir)
    if not spans:
        raise PipelineStopped(
            f"no trained span under {config.workdir}: run `captcha-ocr run` first"
        )
    if config.images is None:
        raise PipelineStopped("retrain needs --images: the folder of new captchas")
    last = max(spans)
    span = last + 1
    orch = Orchestrator(config.workdir, 5, echo)
    current_model = orch.path(trainer.PIPELINE_FOLDER, _span_folder(last))

    ingest = _ingest_step(
        orch,
        config.images,
        files_fingerprint(config.images),
        span,
        config,
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
    validated = _validate_step(
        orch,
        ingest,
        span,
        config,
        schema_path=orch.path(validation.PIPELINE_FOLDER, _span_folder(0), schema_gen.SCHEMA_FILE),
        previous_statistics=orch.path(validation.PIPELINE_FOLDER, _span_folder(last)),
    )
    model_config = ModelConfig.from_json(posixpath.join(current_model, trainer.MODEL_CONFIG_FILE))
    train_config = config.recipe(warm_start=current_model).train
    span_dirs = [spans[s] for s in sorted(spans)] + [ingest.output]
    train = _train_step(orch, validated, span_dirs, span, model_config, train_config)
    evaluation = _evaluate_step(orch, train, span_dirs, span)
    _push_step(orch, train, evaluation, span_dirs, span, config)
    return _finish(orch, config, "retrain")

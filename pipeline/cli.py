"""The `captcha-ocr` command line (Contract 3 of DESIGN.md).

Each subcommand parses its own flags and calls one component function. Arguments that no
subcommand knows are Apache Beam pipeline options and pass through unchanged to the Beam
jobs (ExampleGen, TFDV statistics), so `--runner=DataflowRunner ...` works as on any Beam job.
"""

from __future__ import annotations

import os
import warnings

# Before TensorFlow and the Google client libraries load (the option classes below import
# them): their C++ start-up chatter and Python-version notices say nothing about this run.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")

import argparse
import dataclasses
import logging
import sys
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from components import settings
from components.augmentation import AugmentConfig
from components.example_gen import IngestConfig
from components.pretrain import PROFILE as PRETRAIN_PROFILE
from components.pretrain import PretrainConfig
from components.pusher import PushConfig
from components.review import ReviewConfig
from components.synth import SynthConfig
from components.trainer import TrainConfig
from components.tuner import TuneConfig
from components.validation import ValidateConfig
from pipeline.configs import DEFAULT_PROFILE, PROFILES, resolve_recipe
from pipeline.runner import RunConfig

if TYPE_CHECKING:
    from components.predict import ExportedModel

BEAM_VERBS = {"ingest", "validate", "run", "retrain", "pretrain"}


def _value_type(hint: Any) -> Any:
    """`int | None` -> int, `tuple[str, ...]` -> tuple, anything else as it is."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple
    if args and origin is not tuple:
        return _value_type(args[0])
    return hint


def _describe(value: Any) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, AugmentConfig):
        return "augmented" if value.enabled else "not augmented"
    return str(value)


def add_settings(
    parser: argparse.ArgumentParser,
    config_class: type,
    *,
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    default_of: Callable[[dataclasses.Field], str] | None = None,
) -> None:
    """An option for each `setting` field of `config_class` (components/settings.py).

    Every option defaults to None, "not given", so the config's own default (or the
    profile's) applies; `--help` shows that default, through `default_of` where it depends
    on more than the field.
    """
    hints = typing.get_type_hints(config_class)
    for field in settings.documented_fields(config_class):
        if field.name in skip or (only is not None and field.name not in only):
            continue
        meta = field.metadata
        shown = meta["shown_default"] or (
            default_of(field) if default_of else _describe(field.default)
        )
        kwargs: dict[str, Any] = {
            "dest": field.name,
            "default": None,
            "help": f"{meta['help']} (default: {shown})",
        }
        kind = _value_type(hints[field.name])
        if meta["const"] is not dataclasses.MISSING:
            kwargs.update(action="store_const", const=meta["const"])
        elif kind is bool:
            kwargs["action"] = (
                argparse.BooleanOptionalAction if field.default is None else "store_true"
            )
        elif kind is tuple:
            kwargs.update(action="append", metavar=meta["metavar"])
        else:
            kwargs.update(type=kind, metavar=meta["metavar"], choices=meta["choices"])
        parser.add_argument(settings.flag_name(field), **kwargs)


def given_settings(config_class: type, args: argparse.Namespace) -> dict[str, Any]:
    """The `setting` fields of `config_class` given on the command line, by field name."""
    given = {}
    for field in settings.documented_fields(config_class):
        value = getattr(args, field.name, None)
        if value is not None:
            given[field.name] = tuple(value) if isinstance(value, list) else value
    return given


def _profile_default(field: dataclasses.Field) -> str:
    """A TrainConfig default comes from the chosen profile: list them when they differ."""
    values = {name: _describe(getattr(p.train, field.name)) for name, p in PROFILES.items()}
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return "the profile's: " + ", ".join(f"{name} {value}" for name, value in values.items())


def _add_recipe_flags(p: argparse.ArgumentParser, default_profile: str = DEFAULT_PROFILE) -> None:
    """--profile and --hyperparameters: what `resolve_recipe` combines with TrainConfig flags."""
    p.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default=default_profile,
        help=f"model and training recipe, see pipeline/configs.py (default: {default_profile})",
    )
    p.add_argument(
        "--hyperparameters",
        default=None,
        metavar="JSON",
        help="a ModelConfig JSON (e.g. the tuner's best_hyperparameters.json) "
        "instead of the profile's model",
    )


def _add_training_flags(p: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    add_settings(p, TrainConfig, skip=skip, default_of=_profile_default)


def _add_examples_flag(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--examples",
        required=required,
        nargs="+",
        metavar="DIR",
        help="ExampleGen output folder(s), one per span",
    )


def _recipe(args: argparse.Namespace, **train_changes: Any):
    return resolve_recipe(
        args.profile, args.hyperparameters, **given_settings(TrainConfig, args), **train_changes
    )


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="make seeded synthetic captchas (the captcha package, or a style of the zoo)"
    )
    p.add_argument("--out", required=True, help="folder for the PNGs (local or gs://)")
    p.add_argument(
        "--length",
        default=None,
        help=f"label length or range, e.g. 5 or 4-6 (default: "
        f"{SynthConfig.min_length}-{SynthConfig.max_length})",
    )
    add_settings(p, SynthConfig)
    p.add_argument("--workers", type=int, default=1, help="render in N processes (same files)")
    p.set_defaults(handler=_run_synth)


def _run_synth(args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.synth import LABELS_CSV, generate, parse_length_range

    chosen = given_settings(SynthConfig, args)
    try:
        if args.length:
            chosen["min_length"], chosen["max_length"] = parse_length_range(args.length)
        config = SynthConfig(**chosen)
    except ValueError as error:
        print(f"captcha-ocr synth: error: {error}", file=sys.stderr)
        return 2
    written = generate(args.out, config, workers=args.workers)
    print(f"wrote {len(written)} captchas to {args.out}")
    if config.writes_labels_csv:
        print(
            f"labels in {args.out}/{LABELS_CSV}: pass --labels {args.out}/{LABELS_CSV} "
            "to ingest or run"
        )
    return 0


def _add_download(sub: argparse._SubParsersAction) -> None:
    from components.download import DownloadConfig

    p = sub.add_parser("download", help="fetch the Keras example's captcha data set")
    add_settings(p, DownloadConfig)
    p.set_defaults(handler=_run_download)


def _run_download(args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.download import DownloadConfig, download, manifest_path

    result = download(DownloadConfig(**given_settings(DownloadConfig, args)))
    state = "downloaded" if result.downloaded else "already there, nothing to do"
    print(f"{result.dest}: {result.num_images} images ({state})")
    print(
        f"zip SHA-256 {result.sha256} ({result.zip_bytes} bytes), kept in "
        f"{manifest_path(result.dest)}"
    )
    return 0


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="ExampleGen: images + labels -> GZIP TFRecords (Beam)",
        epilog="Any other --flag is an Apache Beam pipeline option, e.g. --runner=DataflowRunner "
        "--project=P --region=R --temp_location=gs://B/tmp --setup_file=./setup.py, or "
        "--direct_running_mode=multi_processing --direct_num_workers=2.",
    )
    p.add_argument(
        "--images", required=True, help="folder, glob pattern or gs:// prefix of PNG/JPEG files"
    )
    p.add_argument("--output", required=True, help="output folder (local or gs://)")
    add_settings(p, IngestConfig)
    p.set_defaults(handler=_run_ingest)


def _run_ingest(args: argparse.Namespace, beam_args: list[str]) -> int:
    from rich.console import Console

    from components.example_gen import run_ingest

    config = IngestConfig(**given_settings(IngestConfig, args))
    with Console(stderr=True).status(f"ingesting {args.images} (Apache Beam) ..."):
        metadata = run_ingest(args.images, args.output, config, beam_args)
    reasons = ", ".join(f"{n} {reason}" for reason, n in metadata["rejected_reasons"].items())
    print(
        f"{metadata['num_inputs']} in, {metadata['num_written']} written {metadata['counts']}, "
        f"{metadata['num_rejected']} rejected{f' ({reasons})' if reasons else ''}; "
        f"vocabulary of {metadata['vocab_size']} characters -> {args.output}"
    )
    if outliers := metadata["size_outliers"]["count"]:
        print(
            f"warning: {outliers} images far from the data set's shape, listed in "
            "metadata.json (size_outliers)"
        )
    return 0


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="TFDV statistics, schema and anomalies",
        description="Statistics of every split (a Beam job), a schema (given, or inferred and "
        "curated from this data) and the anomalies against it and against the "
        "previous batch. Exits 1 when there are anomalies, unless --allow-anomalies.",
        epilog="Any other --flag is an Apache Beam pipeline option, e.g. --runner=DataflowRunner.",
    )
    p.add_argument("--examples", required=True, metavar="OUT", help="an `ingest` output folder")
    p.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="where statistics, anomalies and report.html go (default: OUT/validation)",
    )
    add_settings(p, ValidateConfig)
    p.set_defaults(handler=_run_validate)


def _run_validate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.validation import default_output_dir, run_validate

    config = ValidateConfig(**given_settings(ValidateConfig, args))
    output = args.output or default_output_dir(args.examples)
    print(f"validating {args.examples} -> {output} (statistics: a Beam job)", flush=True)
    try:
        result = run_validate(args.examples, output, config, beam_args)
    except (FileNotFoundError, ValueError) as error:
        print(f"captcha-ocr validate: error: {error}", file=sys.stderr)
        return 2
    schema_note = "inferred and written" if result.schema_inferred else "given"
    print(f"statistics: {', '.join(f'{s}: {p}' for s, p in result.statistics.items())}")
    print(f"schema ({schema_note}): {result.schema_path}")
    print(f"report: {result.report_path}")
    if result.ok:
        print("no anomalies")
        return 0
    print(f"{len(result.anomalies)} anomalies:")
    for message in result.anomalies:
        print(f"  {message}")
    return 0 if config.allow_anomalies else 1


def _add_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="Keras Tuner search over the model's hyperparameters",
        epilog="Run it again with the same --output to resume. Distributed: set "
        "KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT and KERASTUNER_TUNER_ID (chief, "
        "worker0, worker1, ...) and start the same command on every machine.",
    )
    _add_examples_flag(p)
    p.add_argument(
        "--output",
        default=None,
        help="search state and results (default: tuner/ next to the first --examples)",
    )
    _add_recipe_flags(p, default_profile="full")
    # How each trial trains: the recipe's TrainConfig, its budget being --trial-minutes, from
    # scratch (components/tuner.py).
    add_settings(p, TrainConfig, skip=("max_minutes", "start"), default_of=_profile_default)
    add_settings(p, TuneConfig)
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    p.set_defaults(handler=_run_tune)


def _run_tune(args: argparse.Namespace, beam_args: list[str]) -> int:
    import json
    import posixpath

    from components.tuner import run_tune

    config = TuneConfig(**given_settings(TuneConfig, args), verbose=0 if args.quiet else 2)
    recipe = _recipe(args)
    output = args.output or posixpath.join(
        posixpath.dirname(args.examples[0].rstrip("/")) or ".", "tuner"
    )
    summary = run_tune(args.examples, output, config, recipe.model, recipe.train)
    print(json.dumps(summary, indent=2))
    if summary["role"] != "worker" and summary.get("best_hyperparameters_path") is None:
        print("no trial completed: no best_hyperparameters.json", file=sys.stderr)
        return 1
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the CNN + BiLSTM + CTC model")
    _add_examples_flag(p)
    p.add_argument("--output", required=True, metavar="MODEL_DIR", help="trained-model folder")
    _add_recipe_flags(p)
    _add_training_flags(p)
    p.add_argument(
        "--warm-start",
        default=None,
        metavar="MODEL_DIR",
        help="start from an earlier model of the same network (its output rows mapped by "
        "character) instead of the shipped one",
    )
    p.add_argument("--quiet", action="store_true", help="no Keras progress output")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace, beam_args: list[str]) -> int:
    import json

    from components.head_start import StartRefused
    from components.trainer import run_train

    quiet = {"verbose": 0} if args.quiet else {}
    recipe = _recipe(args, warm_start=args.warm_start, **quiet)
    try:
        summary = run_train(args.examples, args.output, recipe.model, recipe.train)
    except StartRefused as error:
        print(f"captcha-ocr train: error: {error}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("model_dir", "epochs_run", "best_epoch", "best", "train_seconds")
            },
            indent=2,
        )
    )
    return 0


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="train the head start: a general model on a seeded mix of the style zoo",
        description="Draw --images-per-style captchas of every style of the zoo (seeded), "
        "ingest them (ExampleGen), train the profile's network on them from scratch at the "
        "shipped input height, and write the model, its vocab, config, decoding and "
        "provenance.json to OUT. Copy OUT into components/pretrained/ to ship it.",
        epilog="Any other --flag is an Apache Beam pipeline option (the ExampleGen job).",
    )
    p.add_argument("--out", required=True, metavar="OUT", help="folder for the model to ship")
    add_settings(p, PretrainConfig)
    _add_recipe_flags(p, default_profile=PRETRAIN_PROFILE)
    p.add_argument("--quiet", action="store_true", help="no Keras progress output")
    p.set_defaults(handler=_run_pretrain)


def _run_pretrain(args: argparse.Namespace, beam_args: list[str]) -> int:
    import json

    from components.pretrain import run_pretrain

    quiet = {"verbose": 0} if args.quiet else {}
    recipe = resolve_recipe(args.profile, args.hyperparameters, **quiet)
    config = PretrainConfig(**given_settings(PretrainConfig, args))
    provenance = run_pretrain(args.out, config, recipe.model, recipe.train, args.profile, beam_args)
    shown = ("data_mix", "counts", "train_minutes", "validation_accuracy", "model_bytes")
    print(json.dumps({k: provenance[k] for k in shown}, indent=2))
    print(f"written to {args.out} (provenance.json)")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, CER, confusions, error list and pictures")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="a `train` output folder")
    p.add_argument(
        "--examples", required=True, nargs="+", metavar="DIR", help="`ingest` output folder(s)"
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="folder for metrics.json, errors.csv, confusions.csv and PNGs",
    )
    p.add_argument("--split", choices=("eval", "train"), default="eval")
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.evaluator import run_evaluate

    metrics = run_evaluate(args.model, args.examples, args.output, split=args.split)
    print(
        f"{metrics['num_examples']} {args.split} captchas: accuracy {metrics['accuracy']:.4f}, "
        f"CER {metrics['cer']:.4f}, {metrics['num_errors']} errors (see {args.output})"
    )
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="Pusher: SavedModel with decoding, TF Serving layout",
        description="Export a trained model as EXPORT[/NAME]/<version>/ (the next version) if "
        "it is blessed: its serving signature reaches --min-accuracy on the eval "
        "split of --examples and is not worse than the newest version already "
        "there (evaluated the same way) by more than --tolerance.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="TRAINED",
        help="trained model folder (the output of `captcha-ocr train`)",
    )
    p.add_argument(
        "--export-dir",
        required=True,
        metavar="EXPORT",
        help="TF Serving base path (local or gs://)",
    )
    p.add_argument(
        "--examples",
        nargs="+",
        metavar="EXAMPLES",
        help="ExampleGen output folder(s) whose eval split judges the model; "
        "without it only --force-push exports",
    )
    p.add_argument(
        "--metrics",
        default=None,
        metavar="METRICS_JSON",
        help="the evaluator's metrics.json, kept in the export's assets.extra/",
    )
    add_settings(p, PushConfig)
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.pusher import export_model, run_push

    config = PushConfig(**given_settings(PushConfig, args), metrics_path=args.metrics)
    if not args.examples:
        if not config.force:
            print(
                "export: give --examples (the eval split that blesses the model) or --force-push",
                file=sys.stderr,
            )
            return 2
        version_dir = export_model(
            args.model,
            args.export_dir,
            model_name=config.model_name,
            metrics_path=config.metrics_path,
        )
        print(f"exported without evaluation (--force-push) -> {version_dir}")
        return 0
    result = run_push(args.model, args.examples, args.export_dir, config)
    if result.pushed:
        print(f"pushed version {result.version} -> {result.version_dir}: {result.reason}")
    else:
        kept = f"version {result.version} stays served" if result.version else "nothing exported"
        print(f"not pushed ({kept}): {result.reason}")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="read captchas with an exported model",
        description="Text and confidence per image file through the export's serving_default "
        "signature (what TF Serving runs). Exit status 1 if any file got no answer.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="EXPORT[/VERSION]",
        help="a version folder, or a base path (its newest version is used), or `pretrained`: "
        "the model shipped with the package alone",
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="image files (local or gs://); a folder stands for its images",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument(
        "--review-dir",
        default=None,
        metavar="DIR",
        help="copy the captchas read below --review-below, and those that failed to "
        "decode, into DIR with a labels.csv to correct (captcha-ocr review DIR)",
    )
    p.add_argument(
        "--review-below",
        type=float,
        default=None,
        metavar="C",
        help="confidence threshold of --review-dir (default: the export's "
        "calibration, else decoding.DEFAULT_REVIEW_BELOW)",
    )
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace, beam_args: list[str]) -> int:
    import tempfile

    from components.head_start import PRETRAINED, export_shipped
    from components.predict import ExportedModel

    with tempfile.TemporaryDirectory() as scratch:  # the shipped model's export, if asked for
        try:
            model = ExportedModel(
                export_shipped(scratch) if args.model == PRETRAINED else args.model
            )
        except FileNotFoundError as error:
            print(f"captcha-ocr predict: error: {error}", file=sys.stderr)
            return 2
        return _print_predictions(model, args)


def _print_predictions(model: ExportedModel, args: argparse.Namespace) -> int:
    """Answers as a table or JSON lines; queued for review when asked. 1 if any failed."""
    import json

    from rich.console import Console
    from rich.table import Table

    from components.predict import expand_inputs, predict_files

    files = expand_inputs(args.files)
    failures = 0
    table = Table("file", "text", "confidence", "error", title=f"model {model.path}")
    predictions = []
    for prediction in predict_files(model, files, args.batch_size):
        predictions.append(prediction)
        failures += prediction.error is not None
        if args.format == "jsonl":
            print(json.dumps(prediction.to_dict(), ensure_ascii=False), flush=True)
        else:
            no_text = prediction.valid and not prediction.has_text
            table.add_row(
                prediction.source,
                "(no text)" if no_text else prediction.text,
                f"{prediction.confidence:.3f}",
                prediction.error or "",
            )
    if args.format == "table":
        Console(width=160).print(table)
    if args.review_dir:
        from components.review_queue import queue_predictions

        print(
            queue_predictions(args.review_dir, predictions, model.path, args.review_below),
            file=sys.stderr,
        )
    if failures:
        print(f"{failures} of {len(files)} files got no answer", file=sys.stderr)
    return 1 if failures else 0


def _add_review(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review",
        help="label a review queue in the browser (a page on 127.0.0.1)",
        description="Serve a page that shows the queue's captchas one at a time with the "
        "model's guess to correct: Enter saves, Esc marks unreadable, arrows move. "
        "Each answer is written to DIR/labels.csv at once.",
    )
    p.add_argument("review_dir", metavar="DIR", help="a `predict --review-dir` folder")
    add_settings(p, ReviewConfig)
    p.set_defaults(handler=_run_review)


def _run_review(args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.review import serve_review

    config = ReviewConfig(args.review_dir, **given_settings(ReviewConfig, args))
    try:
        serve_review(config)
    except (ValueError, OSError) as error:  # no queue, a broken labels.csv, a busy port
        print(f"captcha-ocr review: error: {error}", file=sys.stderr)
        return 2
    return 0


def _add_pipeline_flags(p: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """Flags shared by `run` and `retrain`: the pipeline's, the Pusher's, the recipe's.

    `skip`: RunConfig or TrainConfig fields the command does not offer.
    """
    add_settings(p, RunConfig, skip=skip)
    add_settings(p, IngestConfig, only=("labels_csv",))
    add_settings(p, PushConfig, only=("min_accuracy", "tolerance", "force", "model_name"))
    _add_recipe_flags(p)
    _add_training_flags(p, skip=skip)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="the whole pipeline, ingestion to export",
        description="ExampleGen -> statistics, schema, validation -> Tuner -> Trainer -> "
        "Evaluator -> Pusher. Without --images it generates synthetic captchas. Components whose "
        "outputs are complete (same inputs and config) are skipped, so a crashed run resumes.",
    )
    p.add_argument(
        "--images", help="folder or file pattern of labelled images (default: synthetic)"
    )
    _add_pipeline_flags(p)
    p.set_defaults(handler=_run_run)


def _pipeline_config(args: argparse.Namespace, beam_args: list[str]) -> RunConfig:
    return RunConfig(
        **given_settings(RunConfig, args),
        images=args.images,
        labels_csv=args.labels_csv,
        profile=args.profile,
        hyperparameters=args.hyperparameters,
        push=PushConfig(**given_settings(PushConfig, args)),
        train_overrides=given_settings(TrainConfig, args),
        beam_args=tuple(beam_args),
    )


def _run_pipeline(flow_name: str, args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.head_start import StartRefused
    from components.review_queue import ReviewCsvError
    from pipeline import runner

    try:
        getattr(runner, flow_name)(_pipeline_config(args, beam_args))
    except runner.PipelineStopped as stopped:
        print(f"captcha-ocr {flow_name} stopped: {stopped}", file=sys.stderr)
        return 1
    except (ReviewCsvError, StartRefused) as error:  # a labels.csv to fix, a start refused
        print(f"captcha-ocr {flow_name}: error: {error}", file=sys.stderr)
        return 2
    return 0


def _run_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    return _run_pipeline("run", args, beam_args)


def _add_retrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrain",
        help="add a batch of new captchas as the next span",
        description="Ingest new captchas as the next span with the existing vocabulary, validate "
        "them against the schema and the previous span, train on all spans warm-started from the "
        "current model, and push a new version only if it is not worse.",
    )
    p.add_argument("--images", required=True, help="folder or file pattern of the new captchas")
    _add_pipeline_flags(p, skip=("tune", "start"))  # it starts from the current model
    p.set_defaults(handler=_run_retrain)


def _run_retrain(args: argparse.Namespace, beam_args: list[str]) -> int:
    return _run_pipeline("retrain", args, beam_args)


_PARSER_BUILDERS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_synth,
    _add_download,
    _add_ingest,
    _add_validate,
    _add_tune,
    _add_train,
    _add_pretrain,
    _add_evaluate,
    _add_export,
    _add_predict,
    _add_review,
    _add_run,
    _add_retrain,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captcha-ocr",
        description="Train, validate, tune and export OCR models that read text captchas.",
        epilog="Unknown --flags of ingest/validate/run/retrain are Apache Beam pipeline options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _PARSER_BUILDERS:
        add(sub)
    return parser


def _quiet_libraries() -> None:
    """Our loggers at INFO, the libraries' at WARNING: the output a person follows."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for ours in ("components", "pipeline"):
        logging.getLogger(ours).setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and args.command not in BEAM_VERBS:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    return args.handler(args, beam_args) or 0


if __name__ == "__main__":
    sys.exit(main())

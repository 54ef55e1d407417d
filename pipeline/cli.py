"""The `captcha-ocr` command line (Contract 3 of DESIGN.md).

Each subcommand parses its own flags and calls one component function. Arguments that no
subcommand knows are Apache Beam pipeline options and pass through unchanged to the Beam
jobs (ExampleGen, TFDV statistics), so `--runner=DataflowRunner ...` works as on any Beam job.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence

BEAM_VERBS = {"ingest", "validate", "run", "retrain"}


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="make seeded synthetic captchas (the captcha package)")
    p.add_argument("--out", required=True, help="folder for the PNGs (local or gs://)")
    p.add_argument("--count", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="same seed, byte-identical images")
    p.add_argument("--alphabet", default=None,
                   help="characters labels are drawn from (default 0-9a-z)")
    p.add_argument("--length", default="4-6", help="label length or range, e.g. 5 or 4-6")
    p.add_argument("--width", type=int, default=200)
    p.add_argument("--height", type=int, default=50)
    p.add_argument("--font", action="append", default=[], metavar="TTF",
                   help="a TrueType font file; repeat for several (default: DroidSansMono)")
    p.add_argument("--labels-csv", action="store_true",
                   help="name files 000000.png ... and write labels.csv instead of "
                        "putting labels in file names")
    p.add_argument("--workers", type=int, default=1, help="render in N processes (same files)")
    p.set_defaults(handler=_run_synth)


def _run_synth(args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.synth import DEFAULT_ALPHABET, SynthConfig, generate, parse_length_range

    min_length, max_length = parse_length_range(args.length)
    config = SynthConfig(
        count=args.count, seed=args.seed, alphabet=args.alphabet or DEFAULT_ALPHABET,
        min_length=min_length, max_length=max_length, width=args.width, height=args.height,
        fonts=tuple(args.font), labels_csv=args.labels_csv,
    )
    written = generate(args.out, config, workers=args.workers)
    print(f"wrote {len(written)} captchas to {args.out}")
    return 0


def _add_download(sub: argparse._SubParsersAction) -> None:
    from components.download import DEFAULT_DEST, DEFAULT_URL, EXPECTED_COUNT, LABEL_LENGTH

    p = sub.add_parser("download", help="fetch the Keras example's captcha data set")
    p.add_argument("--url", default=DEFAULT_URL, help="the zip's URL (a mirror works too)")
    p.add_argument("--dest", default=DEFAULT_DEST, help=f"folder for the PNGs ({DEFAULT_DEST})")
    p.add_argument("--expected-count", type=int, default=EXPECTED_COUNT,
                   help=f"number of PNGs the zip must hold ({EXPECTED_COUNT})")
    p.add_argument("--label-length", type=int, default=LABEL_LENGTH,
                   help=f"characters in each file name's label ({LABEL_LENGTH})")
    p.add_argument("--sha256", default=None, help="refuse a zip with another SHA-256")
    p.set_defaults(handler=_run_download)


def _run_download(args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.download import DownloadConfig, download, manifest_path

    result = download(DownloadConfig(
        url=args.url, dest=args.dest, expected_count=args.expected_count,
        label_length=args.label_length, expected_sha256=args.sha256,
    ))
    state = "downloaded" if result.downloaded else "already there, nothing to do"
    print(f"{result.dest}: {result.num_images} images ({state})")
    print(f"zip SHA-256 {result.sha256} ({result.zip_bytes} bytes), kept in "
          f"{manifest_path(result.dest)}")
    return 0


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest", help="ExampleGen: images + labels -> GZIP TFRecords (Beam)",
        epilog="Any other --flag is an Apache Beam pipeline option, e.g. --runner=DataflowRunner "
               "--project=P --region=R --temp_location=gs://B/tmp --setup_file=./setup.py, or "
               "--direct_running_mode=multi_processing --direct_num_workers=2.",
    )
    p.add_argument("--images", required=True,
                   help="folder, glob pattern or gs:// prefix of PNG/JPEG files")
    p.add_argument("--output", required=True, help="output folder (local or gs://)")
    p.add_argument("--labels", dest="labels_csv", default=None, metavar="CSV",
                   help="CSV with header filename,label (names relative to the CSV's folder); "
                        "default: labels from file names")
    p.add_argument("--label-pattern", default=None,
                   help="regex on the file name stem; the group `label` (or the whole match) "
                        "is the label (default ^(?P<label>[^_]+): 226md.png, ab12_17.png)")
    p.add_argument("--alphabet", default=None,
                   help="allowed characters; labels with others are rejected (default: any)")
    p.add_argument("--vocab", dest="vocab_path", default=None, metavar="VOCAB_TXT",
                   help="use this vocab.txt (retraining): unknown characters are rejected")
    p.add_argument("--max-label-length", type=int, default=None)
    p.add_argument("--eval-percent", type=int, default=None, help="default 20")
    p.add_argument("--num-shards", type=int, default=None, help="shards per split (default 4)")
    p.add_argument("--span", type=int, default=0, help="ingestion batch number")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="larger images (by their header) are rejected as too_large "
                        "(default 4,000,000; the serving signature's limit)")
    p.add_argument("--max-file-bytes", type=int, default=None,
                   help="larger files are rejected as too_large (default 2 MiB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(handler=_run_ingest)


def _run_ingest(args: argparse.Namespace, beam_args: list[str]) -> int:
    import dataclasses

    from rich.console import Console

    from components.example_gen import IngestConfig, run_ingest

    chosen = {f.name: getattr(args, f.name) for f in dataclasses.fields(IngestConfig)
              if getattr(args, f.name, None) is not None}
    with Console(stderr=True).status(f"ingesting {args.images} (Apache Beam) ..."):
        metadata = run_ingest(args.images, args.output, IngestConfig(**chosen), beam_args)
    reasons = ", ".join(f"{n} {reason}" for reason, n in metadata["rejected_reasons"].items())
    print(f"{metadata['num_inputs']} in, {metadata['num_written']} written {metadata['counts']}, "
          f"{metadata['num_rejected']} rejected{f' ({reasons})' if reasons else ''}; "
          f"vocabulary of {metadata['vocab_size']} characters -> {args.output}")
    if metadata["size_outliers"]["count"]:
        print(f"warning: {metadata['size_outliers']['count']} images far from the data set's "
              "shape, listed in metadata.json (size_outliers)")
    return 0


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="TFDV statistics, schema and anomalies",
        description="Statistics of every split (a Beam job), a schema (given, or inferred and "
                    "curated from this data) and the anomalies against it and against the "
                    "previous batch. Exits 1 when there are anomalies, unless --allow-anomalies.",
        epilog="Any other --flag is an Apache Beam pipeline option, e.g. --runner=DataflowRunner.",
    )
    p.add_argument("--examples", required=True, metavar="OUT", help="an `ingest` output folder")
    p.add_argument("--schema", dest="schema_path", default=None, metavar="SCHEMA",
                   help="a curated schema.pbtxt; default: infer one and write it to --output")
    p.add_argument("--previous-statistics", default=None, metavar="PATH",
                   help="the previous batch's validation folder (or one FeatureStats.pb): "
                        "check drift of the character distribution against it")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="where statistics, anomalies and report.html go (default: OUT/validation)")
    p.add_argument("--drift-threshold", type=float, default=None, metavar="X",
                   help="L-infinity threshold on the character distribution (default: the "
                        "schema's, else 0.1)")
    p.add_argument("--length-drift-threshold", type=float, default=None, metavar="X",
                   help="L-infinity threshold on the label length distribution (default: off)")
    p.add_argument("--allow-anomalies", action="store_true",
                   help="report anomalies but exit 0")
    p.set_defaults(handler=_run_validate)


def _run_validate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.validation import ValidateConfig, default_output_dir, run_validate

    config = ValidateConfig(
        schema_path=args.schema_path,
        previous_statistics=args.previous_statistics,
        drift_threshold=args.drift_threshold,
        length_drift_threshold=args.length_drift_threshold,
        allow_anomalies=args.allow_anomalies,
    )
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
        "tune", help="Keras Tuner search over the model's hyperparameters",
        epilog="Run it again with the same --output to resume. Distributed: set "
               "KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT and KERASTUNER_TUNER_ID (chief, "
               "worker0, worker1, ...) and start the same command on every machine.",
    )
    p.add_argument("--examples", required=True, nargs="+", metavar="DIR",
                   help="ExampleGen output folder(s), one per span")
    p.add_argument("--output", default=None,
                   help="search state and results (default: tuner/ next to the first --examples)")
    p.add_argument("--algorithm", choices=("hyperband", "bayesian", "random"), default=None,
                   help="default hyperband")
    p.add_argument("--max-trials", type=int, default=None,
                   help="stop after N trials (default 20 for bayesian/random; hyperband: its "
                        "own schedule)")
    p.add_argument("--max-epochs", type=int, default=None, help="epochs per trial (default 30)")
    p.add_argument("--time-budget", dest="time_budget_minutes", type=float, default=None,
                   metavar="MINUTES", help="stop starting trials and epochs after this long")
    p.add_argument("--objective", choices=("val_score", "val_sequence_accuracy", "val_loss"),
                   default=None, help="default val_score: whole-captcha accuracy on the "
                   "trainer's validation holdout, CTC loss as tie-break")
    p.add_argument("--batch-size", type=int, default=None, help="default 16")
    p.add_argument("--patience", type=int, default=None,
                   help="early stopping inside each trial, in epochs (default 8)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--base-hyperparameters", default=None, metavar="JSON",
                   help="ModelConfig JSON the search starts from: image size and kernel stay, "
                        "widths are searched at half/same/double (default: the full profile)")
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    p.set_defaults(handler=_run_tune)


def _run_tune(args: argparse.Namespace, beam_args: list[str]) -> int:
    import dataclasses
    import json
    import posixpath

    from components.model import ModelConfig
    from components.trainer import PROFILES
    from components.tuner import TuneConfig, run_tune

    chosen = {f.name: getattr(args, f.name) for f in dataclasses.fields(TuneConfig)
              if getattr(args, f.name, None) is not None}
    config = TuneConfig(**chosen, verbose=0 if args.quiet else 2)
    base = (ModelConfig.from_json(args.base_hyperparameters) if args.base_hyperparameters
            else PROFILES["full"].model)
    output = args.output or posixpath.join(
        posixpath.dirname(args.examples[0].rstrip("/")) or ".", "tuner")
    summary = run_tune(args.examples, output, config, base)
    print(json.dumps(summary, indent=2))
    if summary["role"] != "worker" and summary.get("best_hyperparameters_path") is None:
        print("no trial completed: no best_hyperparameters.json", file=sys.stderr)
        return 1
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the CNN + BiLSTM + CTC model")
    p.add_argument("--examples", required=True, nargs="+", metavar="DIR",
                   help="`ingest` output folder(s), one per span")
    p.add_argument("--output", required=True, metavar="MODEL_DIR", help="trained-model folder")
    p.add_argument("--profile", choices=("quick", "full", "keras-example"), default="quick",
                   help="training recipe and model (default quick)")
    p.add_argument("--hyperparameters", default=None, metavar="JSON",
                   help="a ModelConfig JSON (e.g. the tuner's best_hyperparameters.json) "
                        "instead of the profile's model")
    p.add_argument("--epochs", type=int, default=None, help="at most this many epochs")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="training time budget")
    p.add_argument("--no-augment", action="store_true",
                   help="train without the profile's augmentation (for tens of thousands of "
                        "captchas, where it holds the model back more than it helps)")
    p.add_argument("--warm-start", default=None, metavar="MODEL_DIR",
                   help="start from an earlier model whose vocab is a prefix of this one's")
    p.add_argument("--quiet", action="store_true", help="no Keras progress output")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace, beam_args: list[str]) -> int:
    import json

    from components.augmentation import NO_AUGMENTATION
    from components.model import ModelConfig
    from components.trainer import PROFILES, run_train

    profile = PROFILES[args.profile]
    model_config = ModelConfig.from_json(args.hyperparameters) if args.hyperparameters else profile.model
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
        "max_minutes": args.max_minutes, "warm_start": args.warm_start,
        "verbose": 0 if args.quiet else None,
        "augment": NO_AUGMENTATION if args.no_augment else None,
    }
    train_config = profile.train.replace(**{k: v for k, v in overrides.items() if v is not None})
    summary = run_train(args.examples, args.output, model_config, train_config)
    print(json.dumps({k: summary[k] for k in ("model_dir", "epochs_run", "best_epoch", "best",
                                              "train_seconds")}, indent=2))
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, CER, confusions, error list and pictures")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="a `train` output folder")
    p.add_argument("--examples", required=True, nargs="+", metavar="DIR",
                   help="`ingest` output folder(s)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for metrics.json, errors.csv, confusions.csv and PNGs")
    p.add_argument("--split", choices=("eval", "train"), default="eval")
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.evaluator import run_evaluate

    metrics = run_evaluate(args.model, args.examples, args.output, split=args.split)
    print(f"{metrics['num_examples']} {args.split} captchas: accuracy {metrics['accuracy']:.4f}, "
          f"CER {metrics['cer']:.4f}, {metrics['num_errors']} errors (see {args.output})")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="Pusher: SavedModel with decoding, TF Serving layout",
        description="Export a trained model as EXPORT[/NAME]/<version>/ (the next version) if "
                    "it is blessed: its serving signature reaches --min-accuracy on the eval "
                    "split of --examples and is not worse than the newest version already "
                    "there (evaluated the same way) by more than --tolerance.",
    )
    p.add_argument("--model", required=True, metavar="TRAINED",
                   help="trained model folder (the output of `captcha-ocr train`)")
    p.add_argument("--export-dir", required=True, metavar="EXPORT",
                   help="TF Serving base path (local or gs://)")
    p.add_argument("--examples", nargs="+", metavar="EXAMPLES",
                   help="ExampleGen output folder(s) whose eval split judges the model; "
                        "without it only --force exports")
    p.add_argument("--min-accuracy", type=float, default=0.0,
                   help="sequence accuracy the model must reach (default 0)")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="how far below the served version's accuracy is still accepted")
    p.add_argument("--force", action="store_true", help="export whatever the evaluation says")
    p.add_argument("--model-name", default=None,
                   help="lay out EXPORT/NAME/<version>/ for a multi-model server")
    p.add_argument("--metrics", default=None, metavar="METRICS_JSON",
                   help="the evaluator's metrics.json, kept in the export's assets.extra/")
    p.add_argument("--batch-size", type=int, default=64, help="for the evaluations")
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace, beam_args: list[str]) -> int:
    from components.pusher import PushConfig, export_model, run_push

    if not args.examples:
        if not args.force:
            print("export: give --examples (the eval split that blesses the model) or --force",
                  file=sys.stderr)
            return 2
        version_dir = export_model(args.model, args.export_dir, model_name=args.model_name,
                                   metrics_path=args.metrics)
        print(f"exported without evaluation (--force) -> {version_dir}")
        return 0
    config = PushConfig(min_accuracy=args.min_accuracy, tolerance=args.tolerance,
                        force=args.force, model_name=args.model_name,
                        batch_size=args.batch_size, metrics_path=args.metrics)
    result = run_push(args.model, args.examples, args.export_dir, config)
    if result.pushed:
        print(f"pushed version {result.version} -> {result.version_dir}: {result.reason}")
    else:
        kept = f"version {result.version} stays served" if result.version else "nothing exported"
        print(f"not pushed ({kept}): {result.reason}")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="read captchas with an exported model",
        description="Text and confidence per image file through the export's serving_default "
                    "signature (what TF Serving runs). Exit status 1 if any file got no answer.",
    )
    p.add_argument("--model", required=True, metavar="EXPORT[/VERSION]",
                   help="a version folder, or a base path (its newest version is used)")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="image files (local or gs://); a folder stands for its images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace, beam_args: list[str]) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from components.predict import ExportedModel, expand_inputs, predict_files

    model = ExportedModel(args.model)
    files = expand_inputs(args.files)
    failures = 0
    table = Table("file", "text", "confidence", "error", title=f"model {model.path}")
    for prediction in predict_files(model, files, args.batch_size):
        failures += prediction.error is not None
        if args.format == "jsonl":
            print(json.dumps(prediction.to_dict(), ensure_ascii=False), flush=True)
        else:
            table.add_row(prediction.source, prediction.text, f"{prediction.confidence:.3f}",
                          prediction.error or "")
    if args.format == "table":
        Console(width=160).print(table)
    if failures:
        print(f"{failures} of {len(files)} files got no answer", file=sys.stderr)
    return 1 if failures else 0


def _add_pipeline_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by `run` and `retrain`."""
    p.add_argument("--labels", dest="labels_csv", help="CSV 'filename,label' instead of file names")
    p.add_argument("--export-dir", default="export", help="TF Serving base path (default: export)")
    p.add_argument("--workdir", default="runs/captcha-ocr",
                   help="pipeline root, local or gs:// (default: runs/captcha-ocr)")
    p.add_argument("--profile", choices=("quick", "full", "keras-example"), default="quick")
    p.add_argument("--model-name", help="export to EXPORT/<name>/<version>/ for a multi-model server")
    p.add_argument("--allow-anomalies", action="store_true",
                   help="go on when validation finds anomalies or new characters")
    p.add_argument("--force-push", action="store_true", help="push even if the model is worse")
    p.add_argument("--min-accuracy", type=float, default=0.0,
                   help="push only a model reading at least this share of eval captchas")
    p.add_argument("--hyperparameters", help="a best_hyperparameters.json (ModelConfig) to use "
                   "instead of the profile's model")
    p.add_argument("--epochs", type=int, help="at most this many epochs (default: the profile's)")
    p.add_argument("--train-minutes", type=float, dest="max_train_minutes",
                   help="training time budget in minutes (default: the profile's)")


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="the whole pipeline, ingestion to export",
        description="ExampleGen -> statistics, schema, validation -> Tuner -> Trainer -> "
        "Evaluator -> Pusher. Without --images it generates synthetic captchas. Components whose "
        "outputs are complete (same inputs and config) are skipped, so a crashed run resumes.",
    )
    p.add_argument("--images", help="folder or file pattern of labelled images (default: synthetic)")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=None,
                   help="run the Keras Tuner search first (default: only with --profile full)")
    _add_pipeline_flags(p)
    p.set_defaults(handler=_run_run)


def _pipeline_config(args: argparse.Namespace, beam_args: list[str]):
    from pipeline.runner import RunConfig

    return RunConfig(
        workdir=args.workdir, export_dir=args.export_dir, images=args.images,
        labels_csv=args.labels_csv, profile=args.profile, tune=getattr(args, "tune", False),
        allow_anomalies=args.allow_anomalies, model_name=args.model_name,
        force_push=args.force_push, min_accuracy=args.min_accuracy,
        hyperparameters=args.hyperparameters, epochs=args.epochs,
        max_train_minutes=args.max_train_minutes, beam_args=beam_args,
    )


def _run_pipeline(flow_name: str, args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline import runner

    try:
        getattr(runner, flow_name)(_pipeline_config(args, beam_args))
    except runner.PipelineStopped as stopped:
        print(f"captcha-ocr {flow_name} stopped: {stopped}", file=sys.stderr)
        return 1
    return 0


def _run_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    return _run_pipeline("run", args, beam_args)


def _add_retrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrain", help="add a batch of new captchas as the next span",
        description="Ingest new captchas as the next span with the existing vocabulary, validate "
        "them against the schema and the previous span, train on all spans warm-started from the "
        "current model, and push a new version only if it is not worse.",
    )
    p.add_argument("--images", required=True, help="folder or file pattern of the new captchas")
    _add_pipeline_flags(p)
    p.set_defaults(handler=_run_retrain, tune=False)


def _run_retrain(args: argparse.Namespace, beam_args: list[str]) -> int:
    return _run_pipeline("retrain", args, beam_args)


_PARSER_BUILDERS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_synth,
    _add_download,
    _add_ingest,
    _add_validate,
    _add_tune,
    _add_train,
    _add_evaluate,
    _add_export,
    _add_predict,
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
    """Keep the output to what a person follows: TF's C++ start-up chatter and the Google
    client libraries' Python-version notices say nothing about this run."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
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

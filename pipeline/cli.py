"""The `captcha-ocr` command line (Contract 3 of DESIGN.md).

Each subcommand parses its own flags and calls one component function. Arguments that no
subcommand knows are Apache Beam pipeline options and pass through unchanged to the Beam
jobs (ExampleGen, TFDV statistics), so `--runner=DataflowRunner ...` works as on any Beam job.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

BEAM_VERBS = {"ingest", "validate", "run", "retrain"}


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="make seeded synthetic captchas (the captcha package)")
    p.set_defaults(handler=_run_synth)


def _run_synth(args: argparse.Namespace, beam_args: list[str]) -> int:
    raise NotImplementedError


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch the Keras example's captcha data set")
    p.set_defaults(handler=_run_download)


def _run_download(args: argparse.Namespace, beam_args: list[str]) -> int:
    raise NotImplementedError


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="ExampleGen: images + labels -> GZIP TFRecords (Beam)")
    p.set_defaults(handler=_run_ingest)


def _run_ingest(args: argparse.Namespace, beam_args: list[str]) -> int:
    raise NotImplementedError


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="TFDV statistics, schema and anomalies")
    p.set_defaults(handler=_run_validate)


def _run_validate(args: argparse.Namespace, beam_args: list[str]) -> int:
    raise NotImplementedError


def _add_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="Keras Tuner search over the model's hyperparameters")
    p.set_defaults(handler=_run_tune)


def _run_tune(args: argparse.Namespace, beam_args: list[str]) -> int:
    raise NotImplementedError


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the CNN + BiLSTM + CTC model")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace, beam_args: list[str]) -> int:
    raise NotImplementedError


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, CER, confusions, error list and pictures")
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace, beam_args: list[str]) -> int:
    raise NotImplementedError


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="Pusher: SavedModel with decoding, TF Serving layout")
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace, beam_args: list[str]) -> int:
    raise NotImplementedError


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="read captchas with an exported model")
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace, beam_args: list[str]) -> int:
    raise NotImplementedError


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the whole pipeline, ingestion to export")
    p.set_defaults(handler=_run_run)


def _run_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    raise NotImplementedError


def _add_retrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="add a batch of new captchas as the next span")
    p.set_defaults(handler=_run_retrain)


def _run_retrain(args: argparse.Namespace, beam_args: list[str]) -> int:
    raise NotImplementedError


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and args.command not in BEAM_VERBS:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    return args.handler(args, beam_args) or 0


if __name__ == "__main__":
    sys.exit(main())

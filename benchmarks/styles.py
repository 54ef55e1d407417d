"""Every style of the zoo and every real set, trained by the same command, read on held-out images.

Issue 13's generality table. Each row is one data set and one seed:

- a **style** (components/styles.py): `--train-count` captchas (default 3,000) generated with
  the row's seed to train on and `--held-out-count` (default 500) with another seed
  (`HELD_OUT_SEED + seed`), so no held-out image was seen in training;
- a **real set** in ../shared/data/: a fixed 20 % held out, every fifth file in sorted order
  (`accuracy.split_files`, fold 4: the Keras set's split), labels from the file names or
  the set's labels.csv (cryptowin_math).

Each row trains through the user's command, in a fresh folder, with no other flag than the
data (`--labels` where the labels are in a CSV):

    captcha-ocr run --images DIR [--labels CSV] --profile full --no-tune

then reads the held-out images with the exported model (the serving signature, as
`captcha-ocr predict` does; a run that pushed nothing has its Trainer's model exported beside
the run and read, marked "not pushed") and records whole-captcha accuracy, CER, training
minutes (the Trainer component's wall time), the run's own eval accuracy, and the epoch at
which reading began: the first epoch (counted from 1) of the trainer's history.csv with
val_sequence_accuracy > 0.05, and the start the run chose (`pretrained` or `scratch`, from its
manifest). Every row is appended to `benchmarks/results/styles.jsonl` (`--results`) as it
finishes, committed with the README's tables so the record outlives the machine; `--report`
prints the table of every row recorded there.

    flock /tmp/captcha-bench.lock .venv/bin/python benchmarks/styles.py --styles tiny,wide \\
        --real none --seeds 0
    .venv/bin/python benchmarks/styles.py --sheet benchmarks/styles.png  # the contact sheet

Seeds: a style's seed draws its data; a seed other than 0 is also passed to `run --seed`,
so a real set's seeds differ by their training's randomness (its split stays fixed).

`--flag` appends one changed setting to every row's command, for a comparison beside the
plain rows, e.g. the tuner on (`--flag=--tune`); the table names the flags with the data.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from accuracy import link_folder, split_files  # noqa: E402

from components import styles  # noqa: E402
from components.decoding import calibration_metrics  # noqa: E402
from components.evaluator import reading_metrics  # noqa: E402
from components.head_start import PRETRAINED_ENV  # noqa: E402
from components.synth import LABELS_CSV, SynthConfig, generate  # noqa: E402

DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data"
REAL_SETS = ("captcha_images_v2", "cryptowin_math", "lzu_digits")
HELD_OUT_SEED = 1000  # held-out images of a style are drawn with seed HELD_OUT_SEED + seed
TRAIN_COUNT, HELD_OUT_COUNT = 3000, 500  # a style's images drawn to train on and held out
READING_STARTED = 0.05  # val_sequence_accuracy above this: the model has left the plateau
RESULTS = pathlib.Path(__file__).parent / "results" / "styles.jsonl"
PIPELINE_ROOT = pathlib.Path("runs") / "captcha-ocr"  # `run`'s default --workdir
EXPORT_DIR = "export"  # `run`'s default --export-dir


def read_labels(folder: pathlib.Path, files: list[pathlib.Path]) -> dict[pathlib.Path, str]:
    """Labels of `files`: the folder's labels.csv if it has one, else the file names' stems."""
    csv_path = folder / LABELS_CSV
    if not csv_path.exists():
        return {path: path.stem for path in files}
    with open(csv_path, newline="") as f:
        by_name = {row["filename"]: row["label"] for row in csv.DictReader(f)}
    return {path: by_name[path.name] for path in files}


def write_labels_csv(path: pathlib.Path, labels: dict[pathlib.Path, str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["filename", "label"])
        writer.writerows((file.name, label) for file, label in sorted(labels.items()))


def prepare_style(
    name: str, seed: int, train_count: int, held_out_count: int, row_dir: pathlib.Path
) -> tuple[pathlib.Path, dict[pathlib.Path, str]]:
    """(training images folder, {held-out file: label}) of a style, freshly generated."""
    train_dir, held_out_dir = row_dir / "train", row_dir / "held-out"
    generate(
        str(train_dir), SynthConfig(count=train_count, seed=seed, style=name), show_progress=False
    )
    held_out = generate(
        str(held_out_dir),
        SynthConfig(count=held_out_count, seed=HELD_OUT_SEED + seed, style=name),
        show_progress=False,
    )
    return train_dir, {pathlib.Path(path): label for path, label in held_out}


def prepare_real(
    data: pathlib.Path, row_dir: pathlib.Path, limit: int | None = None, seed: int = 0
) -> tuple[pathlib.Path, dict[pathlib.Path, str]]:
    """(training images folder, {held-out file: label}): 80 % linked to train on (`limit` of
    them drawn with `seed`, when given), 20 % held out. Drawn, not the first in sorted order:
    file names are often the labels, and the first 300 would all begin with the same digit."""
    train_files, held_out_files = split_files(data)
    if limit is not None and limit < len(train_files):
        train_files = sorted(random.Random(seed).sample(train_files, limit))
    train_dir = link_folder(row_dir / "train", train_files)
    if (data / LABELS_CSV).exists():
        write_labels_csv(train_dir / LABELS_CSV, read_labels(data, train_files))
    return train_dir, read_labels(data, held_out_files)


def run_accepts_seed() -> bool:
    from pipeline import cli

    run_parser = cli.build_parser()._subparsers._group_actions[0].choices["run"]
    return any("--seed" in action.option_strings for action in run_parser._actions)


def train_command(
    train_dir: pathlib.Path, seed: int | None, flags: Sequence[str] = ()
) -> list[str]:
    """The user's command; `seed` is passed only when given (not 0, and `run` has --seed),
    `flags` (a benchmark's one changed setting) last."""
    command = [
        str(pathlib.Path(sys.executable).parent / "captcha-ocr"),
        "run",
        "--images",
        str(train_dir),
    ]
    if (train_dir / LABELS_CSV).exists():
        command += ["--labels", str(train_dir / LABELS_CSV)]
    command += ["--profile", "full", "--no-tune"]
    if seed is not None:
        command += ["--seed", str(seed)]
    return command + list(flags)


def reading_began(history_csv: pathlib.Path) -> int | None:
    """The first epoch (from 1) whose validation accuracy exceeds READING_STARTED."""
    with open(history_csv, newline="") as f:
        for row in csv.DictReader(f):
            if float(row["val_sequence_accuracy"]) > READING_STARTED:
                return int(row["epoch"]) + 1
    return None


def read_held_out(export_dir: pathlib.Path, held_out: dict[pathlib.Path, str]) -> dict:
    """Accuracy and CER of the exported model's serving signature on the held-out files."""
    from components.predict import ExportedModel, predict_files

    files = sorted(held_out)
    answers = list(predict_files(ExportedModel(str(export_dir)), [str(p) for p in files]))
    truth = [held_out[p] for p in files]
    metrics = reading_metrics(truth, [a.text for a in answers])
    metrics["num_invalid"] = sum(not a.valid for a in answers)
    calibration = calibration_metrics(
        [a.confidence for a in answers], [a.text == t for a, t in zip(answers, truth, strict=True)]
    )
    metrics["share_above_0.9"] = calibration["share_above_0.9"]
    metrics["accuracy_above_0.9"] = calibration["accuracy_above_0.9"]
    return metrics


def run_row(
    kind: str,
    name: str,
    seed: int,
    args: argparse.Namespace,
    flags: Sequence[str] = (),
    train_count: int | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    """One row: fresh data, the user's command (plus `flags`), the held-out images read.

    `train_count` limits the images to train on (a style draws that many, a real set keeps
    the first of its training files); `env` adds environment variables to the command's.
    """
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout.strip()  # data drawn by it
    suffix = "".join(f"-{flag.lstrip('-')}" for flag in flags)
    suffix += f"-n{train_count}" if train_count else ""
    row_dir = args.work / f"{kind}-{name}-seed{seed}{suffix}"
    if row_dir.exists():
        shutil.rmtree(row_dir)  # a fresh folder per row
    row_dir.mkdir(parents=True)
    if kind == "style":
        count = train_count or args.train_count
        train_dir, held_out = prepare_style(name, seed, count, args.held_out_count, row_dir)
    else:
        train_dir, held_out = prepare_real(args.data / name, row_dir, train_count, seed)
    run_dir = row_dir / "run"
    run_dir.mkdir()
    command = train_command(train_dir, seed if seed and args.run_has_seed else None, flags)
    started, load_before = time.gmtime(), os.getloadavg()
    print(
        f"[{time.strftime('%H:%M:%S', started)} UTC] {kind} {name} seed {seed}: "
        f"{' '.join(command[1:])} (load {load_before[0]:.1f})",
        flush=True,
    )
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(PROJECT_ROOT)}
    with open(row_dir / "run.log", "w") as log:
        code = subprocess.call(command, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, env=env)
    root = run_dir / PIPELINE_ROOT
    result = {
        "kind": kind,
        "name": name,
        "seed": seed,
        "command": command[1:],
        "flags": list(flags),
        "exit_code": code,
        "row_dir": str(row_dir),
        "commit": commit,
        "train_images": len(list(p for p in train_dir.iterdir() if p.name != LABELS_CSV)),
        "held_out_images": len(held_out),
        "started_utc": time.strftime("%Y-%m-%d %H:%M", started),
        "finished_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        steps = {c["name"]: c for c in manifest["components"]}
        summary = json.loads((root / "Trainer" / "span-0" / "train_summary.json").read_text())
        result.update(
            train_minutes=round(steps["Trainer"]["seconds"] / 60, 2),
            run_minutes=round(sum(c["seconds"] for c in manifest["components"]) / 60, 2),
            epochs_run=summary["epochs_run"],
            best_epoch=summary["best_epoch"],
            stopped_by_time_budget=summary.get("stopped_by_time_budget"),
            reading_began=reading_began(root / "Trainer" / "span-0" / "history.csv"),
            eval_accuracy=manifest["metrics"]["accuracy"],
            start=(manifest.get("start") or {}).get("start"),
            start_from=os.environ.get(PRETRAINED_ENV),  # another model than the shipped one
            pushed=bool(manifest["exported"].get("pushed")),
        )
    from components.predict import saved_model_versions

    export = run_dir / EXPORT_DIR
    trained = root / "Trainer" / "span-0"
    if not saved_model_versions(str(export)):
        # A run that missed --min-accuracy pushes nothing: its model is read all the same
        # (exported outside the serving folder), so the table says how far it got.
        export = row_dir / "not-pushed"
        if (trained / "_COMPLETE.json").exists():
            from components.pusher import export_model

            export_model(str(trained), str(export))
    if saved_model_versions(str(export)):
        metrics = read_held_out(export, held_out)
        result.update(
            accuracy=metrics["accuracy"],
            cer=metrics["cer"],
            num_correct=metrics["num_correct"],
            num_invalid=metrics["num_invalid"],
            share_above_confident=metrics["share_above_0.9"],
            accuracy_above_confident=metrics["accuracy_above_0.9"],
        )
    return result


def read_rows(path: pathlib.Path, parser: argparse.ArgumentParser) -> list[dict]:
    """Every row recorded in a JSON-lines record; a plain error when there is none yet."""
    if not path.exists():
        parser.error(f"no rows recorded in {path} yet")
    return [json.loads(line) for line in path.read_text().splitlines()]


def record_row(path: pathlib.Path, result: dict) -> None:
    """Appends one finished row to the record (kept in the repository) and prints it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)


def row_data(r: dict) -> str:
    """The row's data set, the flags its command added, and the model it started from when
    it was not the shipped one ($CAPTCHA_OCR_PRETRAINED)."""
    start = f" from `{r['start_from']}`" if r.get("start_from") else ""
    flags = "".join(f" `{f}`" for f in r.get("flags", []))
    return f"{r['kind']} `{r['name']}`{flags}{start}"


def table(results: list[dict]) -> str:
    lines = [
        "| data | seed | commit | start | train / held out | held-out accuracy | CER | "
        "reading began (epoch) | epochs (best) | train min | run min | run's eval acc. | "
        "answers above 0.9: share, right | load before-after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        accuracy = (
            f"{r['accuracy']:.2%} ({r['num_correct']}/{r['held_out_images']})"
            + ("" if r.get("pushed", True) else ", not pushed")
            if "accuracy" in r
            else f"no export (exit {r['exit_code']})"
        )
        cer = f"{r['cer']:.4f}" if "cer" in r else ""
        began = r.get("reading_began") or "never"
        epochs = f"{r.get('epochs_run', '')} ({r.get('best_epoch', '')})"
        eval_accuracy = f"{r['eval_accuracy']:.2%}" if r.get("eval_accuracy") is not None else ""
        load = f"{r['load_average_before'][0]:.1f}-{r['load_average_after'][0]:.1f}"
        confident = (
            f"{r['share_above_confident']:.1%}, {r['accuracy_above_confident']:.2%}"
            if r.get("accuracy_above_confident") is not None
            else ""
        )
        lines.append(
            f"| {row_data(r)} | {r['seed']} | `{r['commit']}` | "
            f"{r.get('start') or ''} | {r['train_images']} / {r['held_out_images']} | "
            f"{accuracy} | {cer} | {began} | {epochs} | "
            f"{r.get('train_minutes', '')} | {r.get('run_minutes', '')} | {eval_accuracy} | "
            f"{confident} | {load} |"
        )
    groups: dict[str, dict[int, float]] = {}
    for r in results:  # a seed measured again (a later commit) counts once: its latest row
        groups.setdefault(row_data(r), {})[r["seed"]] = r.get("accuracy", 0.0)
    for group, by_seed in groups.items():
        accuracies = list(by_seed.values())
        if len(accuracies) > 1:
            lines.append(
                f"| **{group} mean** ({len(accuracies)} seeds) | | | | | "
                f"**{statistics.mean(accuracies):.2%}** (min {min(accuracies):.2%}) "
                "| | | | | | | | |"
            )
    return "\n".join(lines)


def names(text: str, known: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    chosen = [] if text == "none" else list(known) if text == "all" else text.split(",")
    unknown = set(chosen) - set(known)
    if unknown:
        parser.error(f"unknown {sorted(unknown)}; choose from {', '.join(known)}, all or none")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--styles", default="all", help="comma-separated styles, all or none")
    parser.add_argument(
        "--real",
        default="all",
        help=f"comma-separated real sets ({', '.join(REAL_SETS)}), all or none",
    )
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument(
        "--flag",
        action="append",
        default=[],
        help="a setting appended to every row's command, e.g. --flag=--tune (repeatable)",
    )
    parser.add_argument("--train-count", type=int, default=TRAIN_COUNT)
    parser.add_argument("--held-out-count", type=int, default=HELD_OUT_COUNT)
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/captcha-styles"))
    parser.add_argument(
        "--results",
        type=pathlib.Path,
        default=RESULTS,
        help="the JSON-lines record every row is appended to",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="print the table of every row in --results and stop",
    )
    parser.add_argument(
        "--sheet",
        type=pathlib.Path,
        help="write the contact sheet of every style to this PNG and stop",
    )
    args = parser.parse_args()
    if args.sheet:
        styles.contact_sheet().quantize(256).save(args.sheet, optimize=True)
        print(f"wrote {args.sheet} ({args.sheet.stat().st_size / 1024:.0f} KB)")
        return 0
    if args.report:
        print(table(read_rows(args.results, parser)))
        return 0
    rows = [("style", name) for name in names(args.styles, tuple(styles.STYLES), parser)]
    real = names(args.real, REAL_SETS, parser)
    missing = [name for name in real if not (args.data / name).is_dir()]
    if missing:
        parser.error(f"real sets not found under {args.data}: {missing}")
    rows += [("real", name) for name in real]
    seeds = [int(s) for s in args.seeds.split(",")]
    args.run_has_seed = run_accepts_seed()
    if real and any(seeds) and not args.run_has_seed:
        parser.error(
            "`captcha-ocr run` has no --seed flag yet: a real set's seeds other than "
            "0 would repeat seed 0"
        )
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for kind, name in rows:
        for seed in seeds:
            result = run_row(kind, name, seed, args, flags=args.flag)
            results.append(result)
            record_row(args.results, result)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

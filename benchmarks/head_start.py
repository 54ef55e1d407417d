"""Fine-tuned from the shipped model against trained from scratch (issue 19's table).

Each row is a `benchmarks/styles.py` row (fresh data, the user's command, the held-out images
read through the export) with one more flag, `--start scratch` or `--start pretrained`, and
a number of labelled images to train on (`--counts`: the label-scarcity curve; `all` is the
style's `--train-count` or the real set's whole training part). Both starts get the same
command and the same budget (the `full` profile's). Besides the final accuracy, a row records
the training minutes until the validation holdout first read 95 % (`minutes_to_95`, from
the trainer's history.csv and seconds per epoch; earlier restarted attempts and the start-up
count too), so "reaches 95 % in a third of the time" can be read off the table.

`--zero-shot` reads, with the shipped model alone (`captcha-ocr predict --model
pretrained`) and, when its venv exists, with ddddocr untrained (see `serving.py` for that
venv), `--zero-shot-count` fresh captchas of each style (seed 11, never drawn in pretraining)
and each real set's held-out images: the baseline beside ddddocr.

    flock /tmp/captcha-bench.lock .venv/bin/python benchmarks/head_start.py \\
        --styles wide --real none --counts 300,all
    CAPTCHA_OCR_PRETRAINED=/tmp/pretrained .venv/bin/python benchmarks/head_start.py --zero-shot
    .venv/bin/python benchmarks/head_start.py --report --plot benchmarks/head_start.png

The shipped model is the package's (`components/pretrained/`) or `$CAPTCHA_OCR_PRETRAINED`.
Every row is appended to `benchmarks/results/head_start.jsonl` (`--results`), committed with
the table it feeds, so `--report --plot` redraws the curve from every row ever measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import styles as bench
from matplotlib.figure import Figure
from serving import DEFAULT_DDDD_PYTHON

# `styles` put the project on sys.path.
from components import head_start
from components import styles as zoo
from components.evaluator import reading_metrics
from components.predict import ExportedModel, predict_files
from components.synth import SynthConfig, generate

STARTS = ("scratch", "pretrained")
# In the repository, not in --work: the table and the picture outlive a cleared /tmp.
RESULTS = pathlib.Path(__file__).parent / "results" / "head_start.jsonl"
TARGET = 0.95
UNSEEN_SEED = 11  # `pretrain` draws seed 7 and the benchmarks 0-2
DDDD_READ = r"""
import json, sys
import ddddocr
ocr = ddddocr.DdddOcr(show_ad=False)
print(json.dumps([ocr.classification(open(f, "rb").read()) for f in json.load(sys.stdin)]))
"""


def minutes_to(row_dir: pathlib.Path, target: float = TARGET) -> float | None:
    """Training minutes until validation accuracy first reached `target` (None: never).

    The last attempt's epochs are timed one by one; whatever the Trainer spent before them
    (set-up, earlier attempts that were restarted) is counted in full.
    """
    trainer = row_dir / "run" / bench.PIPELINE_ROOT / "Trainer" / "span-0"
    manifest = row_dir / "run" / bench.PIPELINE_ROOT / "manifest.json"
    if not (trainer / "history.csv").exists() or not manifest.exists():
        return None
    seconds = json.loads((trainer / "train_summary.json").read_text())["seconds_per_epoch"]
    steps = {c["name"]: c for c in json.loads(manifest.read_text())["components"]}
    before = steps["Trainer"]["seconds"] - sum(seconds)
    with open(trainer / "history.csv", newline="") as f:
        for row in csv.DictReader(f):
            epoch = int(row["epoch"])
            if float(row["val_sequence_accuracy"]) >= target:
                return round((before + sum(seconds[: epoch + 1])) / 60, 2)
    return None


def zero_shot(name: str, labels: dict[pathlib.Path, str], dddd_python: str) -> dict:
    """The shipped model alone, and ddddocr untrained, on labelled files it never saw."""
    files = sorted(labels)
    truth = [labels[f] for f in files]
    with tempfile.TemporaryDirectory() as export_dir:
        version = head_start.export_shipped(export_dir)
        answers = predict_files(ExportedModel(version), [str(f) for f in files])
        ours = [a.text for a in answers]
    result = {"name": name, "held_out_images": len(files), **accuracies("pretrained", truth, ours)}
    result["pretrained_cer"] = reading_metrics(truth, ours)["cer"]
    if os.path.exists(dddd_python):
        done = subprocess.run(
            [dddd_python, "-c", DDDD_READ],
            input=json.dumps([str(f) for f in files]),
            capture_output=True,
            text=True,
            check=True,
        )
        texts = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(accuracies("ddddocr", truth, texts))
    return result


def accuracies(reader: str, truth: list[str], texts: list[str]) -> dict[str, float]:
    """A reader's accuracy as it answered, and with its answers in the labels' case."""
    cased = [in_labels_case(text, truth) for text in texts]
    return {
        reader: reading_metrics(truth, texts)["accuracy"],
        f"{reader}_in_labels_case": reading_metrics(truth, cased)["accuracy"],
    }


def in_labels_case(text: str, labels: list[str]) -> str:
    """`text` in the one case the labels write letters in, if they use one.

    ddddocr and the shipped model read letters in either case (`tiny`'s capitals may come
    back lower case); a user who knows the site's captchas are all capitals folds the
    answers so. Labels in both cases (`case`) are compared as they are.
    """
    letters = "".join(labels)
    if not any(c.islower() for c in letters):
        return text.upper()
    if not any(c.isupper() for c in letters):
        return text.lower()
    return text


def real_held_out(data: pathlib.Path, name: str) -> dict[pathlib.Path, str]:
    """A real set's fixed held-out fifth, {file: label}."""
    _, held_out_files = bench.split_files(data / name)
    return bench.read_labels(data / name, held_out_files)


def fresh_style(name: str, count: int, folder: pathlib.Path) -> dict[pathlib.Path, str]:
    """`count` captchas of a style drawn with UNSEEN_SEED, which pretraining never draws."""
    config = SynthConfig(count=count, seed=UNSEEN_SEED, style=name)
    drawn = generate(str(folder), config, show_progress=False)
    return {pathlib.Path(path): label for path, label in drawn}


def table(results: list[dict]) -> str:
    """Accuracy and minutes to 95 % per data set and count, scratch beside pretrained."""
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for r in results:
        key = (f"{r['kind']} `{r['name']}` seed {r['seed']}", str(r["train_images"]))
        rows.setdefault(key, {})[r["start"]] = r
    lines = [
        "| data | labelled images | scratch: accuracy, min to 95 % | pretrained: accuracy, "
        "min to 95 % | train min (scratch, pretrained) |",
        "|---|---:|---|---|---|",
    ]

    def cell(r: dict | None) -> str:
        if r is None:
            return ""
        accuracy = (
            f"{r['accuracy']:.2%}" + ("" if r.get("pushed", True) else " not pushed")
            if "accuracy" in r
            else f"no export (exit {r['exit_code']})"
        )
        reached = r.get("minutes_to_95")
        return f"{accuracy}, {reached if reached is not None else 'never'}"

    for (data, count), starts in rows.items():
        minutes = ", ".join(str(starts.get(s, {}).get("train_minutes", "")) for s in STARTS)
        lines.append(
            f"| {data} | {count} | {cell(starts.get('scratch'))} | "
            f"{cell(starts.get('pretrained'))} | {minutes} |"
        )
    return "\n".join(lines)


def scarcity_plot(results: list[dict], path: pathlib.Path) -> None:
    """The label-scarcity curve: held-out accuracy against labelled images, per data set.

    One panel per data set, a line per start (the mean over seeds; a later row of the same
    seed, count and start replaces an earlier one, as in the table), the 95 % target dotted.
    """
    latest = {
        (r["name"], r["start"], r["train_images"], r["seed"]): r["accuracy"]
        for r in results
        if "accuracy" in r
    }
    curves: dict[str, dict[str, dict[int, list[float]]]] = {}
    for (name, start, count, _), accuracy in latest.items():
        curves.setdefault(name, {}).setdefault(start, {}).setdefault(count, []).append(accuracy)
    columns = 4
    rows = -(-len(curves) // columns)
    fig = Figure(figsize=(3.2 * columns, 2.6 * rows), layout="constrained")
    axes = list(fig.subplots(rows, columns, squeeze=False, sharex=True, sharey=True).flat)
    counts_seen = sorted({count for (_, _, count, _) in latest})
    # The curve's nominal counts: a real set's `all` (832, 4,000...) is drawn where it lies.
    nominal = [t for t in (100, 300, 1000, 3000, 10000) if counts_seen[0] <= t <= counts_seen[-1]]
    ticks = nominal or counts_seen
    looks = {"scratch": ("gray", "o"), "pretrained": ("tab:blue", "s")}
    for ax, (name, starts) in zip(axes, sorted(curves.items()), strict=False):
        for start in STARTS:
            points = sorted((n, sum(a) / len(a)) for n, a in starts.get(start, {}).items())
            if points:
                counts, accuracies = zip(*points, strict=True)
                color, marker = looks[start]
                ax.plot(counts, accuracies, label=start, color=color, marker=marker)
        ax.axhline(TARGET, color="green", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks], minor=False)
        ax.minorticks_off()
        ax.set_xlim(counts_seen[0] / 1.5, counts_seen[-1] * 1.5)
        ax.set_ylim(0, 1.02)
        ax.set_title(name)
    for ax in axes[len(curves) :]:
        ax.axis("off")
    fig.supxlabel("labelled images (log scale)")
    fig.supylabel("held-out accuracy")
    axes[0].legend(loc="lower right")
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--styles", default="all", help="comma-separated styles, all or none")
    parser.add_argument("--real", default="all", help="comma-separated real sets, all or none")
    parser.add_argument("--counts", default="100,300,1000,all", help="labelled images per row")
    parser.add_argument("--starts", default=",".join(STARTS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument(
        "--train-count", type=int, default=bench.TRAIN_COUNT, help="a style's `all`"
    )
    parser.add_argument("--held-out-count", type=int, default=bench.HELD_OUT_COUNT)
    parser.add_argument("--data", type=pathlib.Path, default=bench.DEFAULT_DATA)
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/head-start"))
    parser.add_argument(
        "--zero-shot", action="store_true", help="the styles and real sets read untrained"
    )
    parser.add_argument(
        "--zero-shot-count", type=int, default=100, help="fresh captchas per style, --zero-shot"
    )
    parser.add_argument("--ddddocr-python", default=DEFAULT_DDDD_PYTHON)
    parser.add_argument("--report", action="store_true", help="print the recorded table")
    parser.add_argument("--plot", type=pathlib.Path, help="with --report: draw the curves here")
    parser.add_argument(
        "--results",
        type=pathlib.Path,
        default=RESULTS,
        help="the record every row is appended to and --report reads (kept in the repository)",
    )
    args = parser.parse_args()
    if args.report:
        results = bench.read_rows(args.results, parser)
        print(table(results))
        if args.plot:
            scarcity_plot(results, args.plot)
        return 0
    real = bench.names(args.real, bench.REAL_SETS, parser)
    if args.zero_shot:
        for name in bench.names(args.styles, tuple(zoo.STYLES), parser):
            with tempfile.TemporaryDirectory() as folder:
                drawn = fresh_style(name, args.zero_shot_count, pathlib.Path(folder))
                print(json.dumps(zero_shot(name, drawn, args.ddddocr_python)), flush=True)
        for name in real:
            held_out = real_held_out(args.data, name)
            print(json.dumps(zero_shot(name, held_out, args.ddddocr_python)), flush=True)
        return 0
    rows = [("style", n) for n in bench.names(args.styles, tuple(zoo.STYLES), parser)]
    rows += [("real", n) for n in real]
    counts = [None if c == "all" else int(c) for c in args.counts.split(",")]
    starts = bench.names(args.starts, STARTS, parser)
    args.run_has_seed = True
    args.work.mkdir(parents=True, exist_ok=True)
    for kind, name in rows:
        for seed in (int(s) for s in args.seeds.split(",")):
            for count in counts:
                for start in starts:
                    result = bench.run_row(
                        kind, name, seed, args, flags=["--start", start], train_count=count
                    )
                    result["start"] = start
                    result["minutes_to_95"] = minutes_to(pathlib.Path(result["row_dir"]))
                    bench.record_row(args.results, result)
    print(table(bench.read_rows(args.results, parser)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

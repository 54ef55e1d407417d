"""Tuner benchmark on the real captchas: a time-boxed search, then its best config vs `full`.

Same data and split as benchmarks/accuracy.py (every fifth file in sorted order, 208 images,
is held out; the other 832 are the train split, whose 10 % validation holdout scores the
trials). The search runs `captcha-ocr tune` logic around the `full` profile's model for
`--minutes` (trial 0 is that model; every trial trains with the `full` recipe within
`--trial-minutes`); then the best trial's ModelConfig and the `full` defaults are each
trained with the `full` profile's training recipe for every seed of `--seeds` and read the
208 held-out images (whole-captcha accuracy and CER from the model's own metrics, as
`model.evaluate`). When the search kept the defaults, the tuned rows are the defaults' rows.

    flock /tmp/captcha-bench.lock .venv/bin/python benchmarks/tune.py --minutes 60
    flock /tmp/captcha-bench.lock .venv/bin/python benchmarks/tune.py --style wide \\
        --work /tmp/captcha-tune-wide --examples-work /tmp/captcha-tune-wide

`--style NAME` searches on a zoo style instead (styles.py's seed-0 rows: 3,000 drawn to
train on, 500 held out), for the issue's "also on the style where the defaults are weakest".

The search state lives in `<work>/tuner`, so running again resumes it (pass --overwrite to
start again); results are written to `<work>/tune_results.json`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import pathlib
import sys
import time

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import accuracy  # noqa: E402  (benchmarks/accuracy.py: the split and its ingestion)
import styles  # noqa: E402  (benchmarks/styles.py: a zoo style's drawn data)

from components import examples  # noqa: E402
from components.dataset import make_dataset  # noqa: E402
from components.model import ModelConfig  # noqa: E402
from components.styles import STYLES  # noqa: E402
from components.trainer import TrainConfig, load_trained, run_train  # noqa: E402
from components.tuner import ALGORITHMS, DEFAULT_MAX_TRIALS, TuneConfig, run_tune  # noqa: E402
from pipeline.configs import PROFILES, TUNE_BUDGETS  # noqa: E402


def prepare_style(name: str, work: pathlib.Path) -> tuple[str, str]:
    """A zoo style's data as styles.py draws it for seed 0 (3,000 to train on, 500 held
    out), ingested as all train and all eval; reused when already there."""
    row = work / f"style-{name}"
    if not (row / "held-out").exists():
        styles.prepare_style(name, 0, styles.TRAIN_COUNT, styles.HELD_OUT_COUNT, row)
    return accuracy.ingest_train_and_held_out(row / "train", row / "held-out", row)


def train_and_evaluate(
    name: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_dir: str,
    held_out_dir: str,
    work: pathlib.Path,
    seed: int,
) -> dict:
    """Train with the trainer, then read the held-out captchas with the model's own metrics."""
    model_dir = work / "models" / f"{name}-seed{seed}"
    start = time.perf_counter()
    summary = run_train(train_dir, str(model_dir), model_config, train_config)
    train_minutes = (time.perf_counter() - start) / 60
    model, _, trained_config = load_trained(str(model_dir))
    held_out = make_dataset(
        held_out_dir,
        examples.EVAL,
        geometry=trained_config.geometry,
        max_label_length=summary["max_label_length"],
        batch_size=64,
    )
    metrics = model.evaluate(held_out, return_dict=True, verbose=0)
    return {
        "recipe": name,
        "seed": seed,
        "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        "accuracy": metrics["sequence_accuracy"],
        "cer": metrics["cer"],
        "num_examples": sum(1 for _ in held_out.unbatch()),
        "train_minutes": round(train_minutes, 2),
        "stopped_by_time_budget": summary["stopped_by_time_budget"],
        "model_config": model_config.to_dict(),
    }


def table(results: list[dict]) -> str:
    lines = [
        "| model | seed | conv filters | BN | dense | LSTM units | dropout | LR | epochs (best) "
        "| held-out accuracy | CER | train wall min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["model_config"]
        lines.append(
            f"| {r['recipe']} | {r['seed']} | {tuple(m['conv_filters'])} | {m['batch_norm']} | "
            f"{m['dense_units']} | {tuple(m['lstm_units'])} | {m['dropout']} | "
            f"{m['learning_rate']:.2g} | {r['epochs_run']} ({r['best_epoch']}) | "
            f"{r['accuracy']:.2%} | {r['cer']:.4f} | {r['train_minutes']:.1f} |"
        )
    for recipe in dict.fromkeys(r["recipe"] for r in results):
        accuracies = [r["accuracy"] for r in results if r["recipe"] == recipe]
        lines.append(
            f"| **{recipe} mean** | {len(accuracies)} seeds | | | | | | | | "
            f"**{sum(accuracies) / len(accuracies):.2%}** | | |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=accuracy.DEFAULT_DATA)
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/captcha-tune"))
    parser.add_argument(
        "--examples-work",
        type=pathlib.Path,
        default=pathlib.Path("/tmp/captcha-accuracy"),
        help="where benchmarks/accuracy.py ingests the split (reused if there)",
    )
    parser.add_argument(
        "--style",
        choices=tuple(STYLES),
        help="search on a zoo style (styles.py's seed-0 data) instead of the Keras captchas",
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="search time budget")
    parser.add_argument(
        "--search-until",
        default=None,
        metavar="HH:MM",
        help="end the search by this UTC time at the latest (shared machines: "
        "a budget that still fits once the benchmark lock is free)",
    )
    parser.add_argument("--algorithm", default="bayesian", choices=ALGORITHMS)
    parser.add_argument("--max-trials", type=int, default=DEFAULT_MAX_TRIALS)
    parser.add_argument(
        "--trial-minutes",
        type=float,
        default=TUNE_BUDGETS["full"]["trial_minutes"],
        help="each trial's training budget (default: what `run --profile full` uses)",
    )
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=PROFILES["full"].train.max_minutes,
        help="time cap of each final training (default: the full profile's)",
    )
    parser.add_argument(
        "--train-epochs",
        type=int,
        default=None,
        help="max epochs of each final training (default: the full profile's); "
        "its cosine schedule spans them",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the search's trials")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the final trainings")
    parser.add_argument("--overwrite", action="store_true", help="start the search again")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.style:
        train_dir, held_out_dir = prepare_style(args.style, args.examples_work)
    elif args.data.is_dir():
        train_dir, held_out_dir = accuracy.prepare(args.data, args.examples_work)
    else:
        parser.error(f"no data at {args.data}")

    minutes = args.minutes
    if args.search_until:
        now = datetime.datetime.now(datetime.timezone.utc)
        hour, minute = (int(part) for part in args.search_until.split(":"))
        until = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        minutes = min(minutes, (until - now).total_seconds() / 60)
        if minutes <= 1:
            parser.error(f"--search-until {args.search_until} leaves no time to search")
    full = PROFILES["full"]
    config = TuneConfig(
        algorithm=args.algorithm,
        max_trials=args.max_trials,
        trial_minutes=args.trial_minutes,
        time_budget_minutes=minutes,
        overwrite=args.overwrite,
        verbose=2,
    )
    start = time.perf_counter()
    search = run_tune(
        train_dir, str(args.work / "tuner"), config, full.model, full.train.replace(seed=args.seed)
    )
    search_minutes = (time.perf_counter() - start) / 60
    if search.get("best_hyperparameters") is None:
        raise RuntimeError(f"no trial completed within {minutes:.1f} minutes")
    best = ModelConfig.from_dict(search["best_hyperparameters"])
    recipe = full.train.replace(
        max_minutes=args.train_minutes,
        verbose=2,
        **({"epochs": args.train_epochs} if args.train_epochs else {}),
    )
    kept_defaults = search.get("best_trial_id") == search.get("defaults_trial_id")
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        defaults = train_and_evaluate(
            "full-defaults",
            full.model,
            recipe.replace(seed=seed),
            train_dir,
            held_out_dir,
            args.work,
            seed,
        )
        tuned = (
            {**defaults, "recipe": "tuned (= defaults)"}
            if kept_defaults
            else train_and_evaluate(
                "tuned", best, recipe.replace(seed=seed), train_dir, held_out_dir, args.work, seed
            )
        )
        results += [tuned, defaults]
    report = {
        "search": {
            k: search[k]
            for k in (
                "num_trials",
                "trial_statuses",
                "best_trial_id",
                "best_score",
                "best_metrics",
                "defaults_score",
                "best_beat_defaults_by",
                "top_trial_id",
                "top_beat_defaults_by",
                "stopped_by_time_budget",
            )
        },
        "search_settings": {**vars(args), "tune_config": config.to_dict()},
        "search_budget_minutes": round(minutes, 1),
        "search_minutes": round(search_minutes, 1),
        "train_config": recipe.to_dict(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "results": results,
    }
    (args.work / "tune_results.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report["search"], indent=2))
    print(
        f"search: {search['num_trials']} trials in {search_minutes:.1f} min "
        f"({args.algorithm}, {args.trial_minutes:g} min per trial)"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

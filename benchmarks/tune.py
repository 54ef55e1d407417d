"""Tuner benchmark on the real captchas: a time-boxed search, then its best config vs `full`.

Same data and split as benchmarks/accuracy.py (every fifth file in sorted order, 208 images,
is held out; the other 832 are the train split, whose 10 % validation holdout scores the
trials). The search runs `captcha-ocr tune` logic around the `full` profile's model for
`--minutes`; then the best trial's ModelConfig and the `full` defaults are each trained with
the `full` profile's training recipe (same seed, same time cap) and read the 208 held-out
images (whole-captcha accuracy and CER from the model's own metrics, as `model.evaluate`).

    flock /tmp/captcha-bench.lock .venv/bin/python benchmarks/tune.py --minutes 60

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

from components import examples  # noqa: E402
from components.dataset import make_dataset  # noqa: E402
from components.model import ModelConfig  # noqa: E402
from components.trainer import TrainConfig, load_trained, run_train  # noqa: E402
from components.tuner import TuneConfig, run_tune  # noqa: E402
from pipeline.configs import PROFILES  # noqa: E402


def train_and_evaluate(
    name: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_dir: str,
    held_out_dir: str,
    work: pathlib.Path,
) -> dict:
    """Train with the trainer, then read the held-out captchas with the model's own metrics."""
    model_dir = work / "models" / name
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
        "| model | conv filters | BN | dense | LSTM units | dropout | LR | epochs (best) "
        "| held-out accuracy | CER | train wall min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["model_config"]
        lines.append(
            f"| {r['recipe']} | {tuple(m['conv_filters'])} | {m['batch_norm']} | "
            f"{m['dense_units']} | {tuple(m['lstm_units'])} | {m['dropout']} | "
            f"{m['learning_rate']:.2g} | {r['epochs_run']} ({r['best_epoch']}) | "
            f"{r['accuracy']:.2%} | {r['cer']:.4f} | {r['train_minutes']:.1f} |"
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
    parser.add_argument("--minutes", type=float, default=60.0, help="search time budget")
    parser.add_argument(
        "--search-until",
        default=None,
        metavar="HH:MM",
        help="end the search by this UTC time at the latest (shared machines: "
        "a budget that still fits once the benchmark lock is free)",
    )
    parser.add_argument(
        "--algorithm", default="bayesian", choices=("hyperband", "bayesian", "random")
    )
    parser.add_argument("--max-trials", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=25, help="per trial")
    parser.add_argument("--patience", type=int, default=6, help="early stopping inside a trial")
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="start the search again")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not args.data.is_dir():
        parser.error(f"no data at {args.data}")
    args.work.mkdir(parents=True, exist_ok=True)
    train_dir, held_out_dir = accuracy.prepare(args.data, args.examples_work)

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
        max_epochs=args.max_epochs,
        time_budget_minutes=minutes,
        patience=args.patience,
        seed=args.seed,
        overwrite=args.overwrite,
        batch_size=full.train.batch_size,
        verbose=2,
    )
    start = time.perf_counter()
    search = run_tune(train_dir, str(args.work / "tuner"), config, full.model)
    search_minutes = (time.perf_counter() - start) / 60
    if search.get("best_hyperparameters") is None:
        raise RuntimeError(f"no trial completed within {minutes:.1f} minutes")
    best = ModelConfig.from_dict(search["best_hyperparameters"])
    recipe = full.train.replace(
        max_minutes=args.train_minutes,
        seed=args.seed,
        verbose=2,
        **({"epochs": args.train_epochs} if args.train_epochs else {}),
    )
    results = [
        train_and_evaluate(name, model_config, recipe, train_dir, held_out_dir, args.work)
        for name, model_config in (("tuned", best), ("full-defaults", full.model))
    ]
    report = {
        "search": {
            k: search[k]
            for k in (
                "num_trials",
                "trial_statuses",
                "best_trial_id",
                "best_score",
                "best_metrics",
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
        f"({args.algorithm}, max {args.max_epochs} epochs per trial)"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

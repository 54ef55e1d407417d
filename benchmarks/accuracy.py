"""Accuracy benchmark on the Keras example's real captchas (captcha_images_v2).

A fixed 80/20 split: every fifth file in sorted order (208 images) is held out and only read
by the evaluator; the other 832 are ingested as the train split (the trainer picks its best
epoch on 10 % of those). Each recipe trains once per seed; the table gives whole-captcha
accuracy and CER on the 208 held-out images and the wall time of each training.

    flock /tmp/captcha-bench.lock .venv/bin/python benchmarks/accuracy.py \\
        --configs full,keras-example-es,keras-example-100 --seeds 0,1,2

That split is fold 4 of five (held out: files 4, 9, 14, ... counting from 0). `--folds 0,1,2,3,4`
cross-validates: fold k holds out files k, k + 5, ..., so every image is read once by a model
that never saw it.

Recipes: `full` (PROFILES["full"]), `keras-example-es` (the example's architecture and
recipe: early stopping with patience 10 on val_loss, best weights restored) and
`keras-example-100` (the same architecture for a fixed 100 epochs, last weights kept).
Results are appended to `<work>/results.jsonl` as each run finishes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import statistics
import sys
import time

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from components import examples  # noqa: E402
from components.evaluator import run_evaluate  # noqa: E402
from components.example_gen import IngestConfig, run_ingest  # noqa: E402
from components.synth import LABELS_CSV  # noqa: E402
from components.trainer import run_train  # noqa: E402
from pipeline.configs import PROFILES, Profile  # noqa: E402

DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "captcha_images_v2"
HELD_OUT_EVERY = 5
ACCEPTANCE_FOLD = HELD_OUT_EVERY - 1  # the split: every fifth file in sorted order
RECIPES: dict[str, Profile] = {
    "full": PROFILES["full"],
    "keras-example-es": PROFILES["keras-example"],
    "keras-example-100": Profile(
        PROFILES["keras-example"].model,
        PROFILES["keras-example"].train.replace(epochs=100, patience=1000, restore_best=False),
    ),
}


def split_files(
    data: pathlib.Path, fold: int = ACCEPTANCE_FOLD
) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """(train files, held-out files): files fold, fold + 5, ... in sorted order are held out."""
    files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    held_out = files[fold::HELD_OUT_EVERY]
    train = [p for i, p in enumerate(files) if i % HELD_OUT_EVERY != fold]
    return train, held_out


def fold_work(work: pathlib.Path, fold: int) -> pathlib.Path:
    """The acceptance fold keeps the top-level folders (tune.py shares its ingested examples)."""
    return work if fold == ACCEPTANCE_FOLD else work / f"fold{fold}"


def link_folder(folder: pathlib.Path, files: list[pathlib.Path]) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path)
    return folder


def ingest_train_and_held_out(
    train_images: pathlib.Path, held_out_images: pathlib.Path, work: pathlib.Path
) -> tuple[str, str]:
    """Ingest one folder as all train and the other as all eval, with the train vocabulary.

    A folder's labels come from its LABELS_CSV when it has one (as `synth` writes for
    case-sensitive styles), else from the file names.
    """
    train_dir, held_out_dir = work / "examples-train", work / "examples-heldout"

    def labels_csv(folder: pathlib.Path) -> str | None:
        return str(folder / LABELS_CSV) if (folder / LABELS_CSV).exists() else None

    def image_count(folder: pathlib.Path) -> int:
        return sum(1 for p in folder.iterdir() if p.name != LABELS_CSV)

    if not (train_dir / examples.METADATA_FILE).exists():
        config = IngestConfig(eval_percent=0, num_shards=1, labels_csv=labels_csv(train_images))
        run_ingest(str(train_images), str(train_dir), config)
    if not (held_out_dir / examples.METADATA_FILE).exists():
        run_ingest(
            str(held_out_images),
            str(held_out_dir),
            IngestConfig(
                eval_percent=100,
                num_shards=1,
                vocab_path=str(train_dir / examples.VOCAB_FILE),
                labels_csv=labels_csv(held_out_images),
            ),
        )
    counts = (
        json.loads((train_dir / examples.METADATA_FILE).read_text())["counts"],
        json.loads((held_out_dir / examples.METADATA_FILE).read_text())["counts"],
    )
    expected = (image_count(train_images), image_count(held_out_images))
    if (counts[0].get("train"), counts[1].get("eval")) != expected:
        raise RuntimeError(
            f"expected {expected[0]} train / {expected[1]} held-out examples, ingested {counts}"
        )
    return str(train_dir), str(held_out_dir)


def prepare(data: pathlib.Path, work: pathlib.Path, fold: int = ACCEPTANCE_FOLD) -> tuple[str, str]:
    """Ingest the fold's 832 training files (all train) and 208 held-out files (all eval)."""
    work = fold_work(work, fold)
    train_files, held_out_files = split_files(data, fold)
    return ingest_train_and_held_out(
        link_folder(work / "images-train", train_files),
        link_folder(work / "images-heldout", held_out_files),
        work,
    )


def run_one(
    recipe: str,
    seed: int,
    fold: int,
    epochs: int | None,
    max_minutes: float | None,
    train_dir: str,
    held_out_dir: str,
    work: pathlib.Path,
) -> dict:
    profile = RECIPES[recipe]
    changes = {"seed": seed, "verbose": 2}
    if epochs:
        changes["epochs"] = epochs
    if max_minutes is not None:
        changes["max_minutes"] = max_minutes or None
    train_config = profile.train.replace(**changes)
    fold_dir = fold_work(work, fold)
    model_dir = fold_dir / "models" / f"{recipe}-seed{seed}"
    start = time.perf_counter()
    cpu_start = time.process_time()
    summary = run_train(train_dir, str(model_dir), profile.model, train_config)
    train_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    metrics = run_evaluate(
        str(model_dir), held_out_dir, str(fold_dir / "evaluations" / model_dir.name)
    )
    return {
        "recipe": recipe,
        "seed": seed,
        "fold": fold,
        "max_epochs": train_config.epochs,
        "max_minutes": train_config.max_minutes,
        "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        "accuracy": metrics["accuracy"],
        "cer": metrics["cer"],
        "num_examples": metrics["num_examples"],
        "train_minutes": round(train_seconds / 60, 2),
        "train_cpu_minutes": round(cpu_seconds / 60, 2),
        "stopped_by_time_budget": summary["stopped_by_time_budget"],
        "input_pipeline": summary.get("input_pipeline"),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "model_config": dataclasses.asdict(profile.model),
    }


def table(results: list[dict]) -> str:
    lines = [
        "| recipe | fold | seed | epochs (best) | held-out accuracy | CER | train wall min |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['recipe']} | {r['fold']} | {r['seed']} | "
            f"{r['epochs_run']} ({r['best_epoch']}) | "
            f"{r['accuracy']:.2%} | {r['cer']:.4f} | {r['train_minutes']:.1f} |"
        )
    for recipe in dict.fromkeys(r["recipe"] for r in results):
        accuracies = [r["accuracy"] for r in results if r["recipe"] == recipe]
        lines.append(
            f"| **{recipe} mean** ({len(accuracies)} runs) | | | | "
            f"**{statistics.mean(accuracies):.2%}** (min {min(accuracies):.2%}) | | |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/captcha-accuracy"))
    parser.add_argument(
        "--configs",
        default=",".join(RECIPES),
        help=f"comma-separated recipes among {', '.join(RECIPES)}",
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument(
        "--folds",
        default=str(ACCEPTANCE_FOLD),
        help="comma-separated folds among 0-4 (fold k holds out files k, k + 5, "
        f"...); default {ACCEPTANCE_FOLD}, the issue's split",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' max epochs")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="override the recipes' training time budget; 0: none (measure "
        "the wall time instead of capping it)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    recipes = args.configs.split(",")
    unknown = set(recipes) - set(RECIPES)
    if unknown:
        parser.error(f"unknown recipes {sorted(unknown)}; choose from {list(RECIPES)}")
    if not args.data.is_dir():
        parser.error(f"no data at {args.data}")
    seeds = [int(s) for s in args.seeds.split(",")]
    folds = [int(k) for k in args.folds.split(",")]
    if not set(folds) <= set(range(HELD_OUT_EVERY)):
        parser.error(f"folds are among 0-{HELD_OUT_EVERY - 1}, got {folds}")
    results = []
    for fold in folds:
        train_dir, held_out_dir = prepare(args.data, args.work, fold)
        for recipe in recipes:
            for seed in seeds:
                result = run_one(
                    recipe,
                    seed,
                    fold,
                    args.epochs,
                    args.max_minutes,
                    train_dir,
                    held_out_dir,
                    args.work,
                )
                results.append(result)
                with open(args.work / "results.jsonl", "a") as f:
                    f.write(json.dumps(result) + "\n")
                print(
                    json.dumps({k: v for k, v in result.items() if k != "model_config"}), flush=True
                )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How good the confidence can be: the trainer's calibration against others, on the eval split.

Issue 13 asks that answers with confidence above 0.9 be right at least 99 % of the time on
the eval split. The trainer fits Platt scaling on its validation holdout (10 % of the train
split: about 240 captchas for 3,000 images) and sets `review_below` there
(`components/decoding.py`). This reads one trained run (a `styles.py` row folder, or any
`captcha-ocr run` folder), scores that holdout and the eval split with the trained model
(raw best-path or beam probability, and rightness), and prints, on the eval split, what
each calibration gives:

- the raw probability; Platt fitted on the holdout with the trainer's weak prior (what the
  run shipped) and with stronger ones;
- Platt fitted on the eval split itself: in-sample, the best any Platt scaling can do there.

Columns: expected calibration error, the share of answers above 0.9 and how many of them are
right, and the share of answers at or above the `review_below` chosen on the holdout (the
rest go to review) and how many of those are right; then the share a cut chosen on the eval
split itself would keep at the same precision.

    .venv/bin/python benchmarks/calibration.py /tmp/captcha-styles/style-jpeg-seed0
"""

from __future__ import annotations

import argparse
import pathlib
import sys

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from components import artifact_io, dataset, examples, trainer  # noqa: E402
from components.decoding import (  # noqa: E402
    TARGET_PRECISION,
    Decoding,
    answer_scores,
    calibration_metrics,
    fit_platt,
    threshold_for_precision,
)

RUN = "runs/captcha-ocr"
HIGH = 0.9
PRIOR_WEIGHTS = (1.0, 10.0, 100.0)  # 1: the trainer's (decoding.fit_platt's default)


def run_folder(path: pathlib.Path) -> pathlib.Path:
    """The `captcha-ocr run` folder: `path` itself or its `run/` (a styles.py row)."""
    return path / "run" if (path / "run" / RUN).is_dir() else path


def scores(model_dir: str, examples_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(raw log-probabilities, rightness) on the trainer's validation holdout and on eval."""
    model, _, model_config = trainer.load_trained(model_dir)
    train_config = trainer.TrainConfig.from_dict(
        artifact_io.read_json(f"{model_dir}/{trainer.TRAIN_CONFIG_FILE}")
    )
    dirs = [examples_dir]
    lengths = examples.label_lengths(dirs)
    shape = {
        "geometry": model_config.geometry,
        "max_label_length": examples.max_label_length(dirs),
        "batch_size": 64,
    }
    _, validation, _ = dataset.fit_and_validation(
        dirs, validation_percent=train_config.validation_percent, **shape
    )
    evaluation = dataset.make_dataset(dirs, examples.EVAL, **shape)
    return {
        "validation": answer_scores(model, validation, lengths),
        "eval": answer_scores(model, evaluation, lengths),
    }


def row(name: str, weights: tuple[float, float], found: dict) -> str:
    """One calibration's line: fitted weights, then how it reads on the eval split."""

    def confidence(log_p: np.ndarray) -> np.ndarray:
        return Decoding(platt=weights).confidence(tf.constant(log_p, tf.float32)).numpy()

    holdout_log_p, holdout_right = found["validation"]
    log_p, right = found["eval"]
    eval_confidence = confidence(log_p)
    metrics = calibration_metrics(eval_confidence, right, HIGH)
    review_below = threshold_for_precision(
        confidence(holdout_log_p), holdout_right, TARGET_PRECISION
    )
    kept = eval_confidence >= review_below
    kept_right = f"{right[kept].mean():.2%}" if kept.any() else "-"
    return (
        f"| {name} | {weights[0]:.2f}, {weights[1]:.2f} "
        f"| {metrics['expected_calibration_error']:.4f} "
        f"| {metrics[f'share_above_{HIGH}']:.1%} | {metrics[f'accuracy_above_{HIGH}']:.2%} "
        f"| {review_below:.3f} | {kept.mean():.1%} | {kept_right} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=pathlib.Path, help="a styles.py row or `run` folder")
    args = parser.parse_args()
    folder = run_folder(args.run) / RUN
    found = scores(str(folder / "Trainer/span-0"), str(folder / "ExampleGen/span-0"))
    for split, (_, right) in found.items():
        print(f"{split}: {len(right)} captchas, {int((~right).sum())} misread")
    holdout, evaluation = found["validation"], found["eval"]
    print(
        "\n| calibration | slope, intercept | ECE (eval) | above 0.9 | right | review_below "
        "(holdout) | eval kept | right |\n|---|---|---:|---:|---:|---:|---:|---:|"
    )
    print(row("raw probability", (1.0, 0.0), found))
    for weight in PRIOR_WEIGHTS:
        name = f"Platt on the holdout, prior {weight:g}" + (" (shipped)" if weight == 1 else "")
        print(row(name, fit_platt(*holdout, prior_weight=weight), found))
    print(row("Platt on eval itself (in-sample)", fit_platt(*evaluation), found))
    cut = threshold_for_precision(evaluation[0], evaluation[1], TARGET_PRECISION)
    print(
        f"\nA cut chosen on eval itself keeps {np.mean(evaluation[0] >= cut):.1%} of its answers "
        f"at {TARGET_PRECISION:.0%} precision (the holdout's cut keeps the share above)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tuner: a Keras Tuner search over the model's hyperparameters, resumable and time-boxed.

The search space is `components.model.search_space` (next to the model builder); trials
train `build_model` on the same tf.data input as the trainer, and are scored on the same
holdout of the train split with the same `val_score` (whole-captcha accuracy, CTC loss as
tie-break), so the eval split stays untouched for the evaluator.

Output folder:

- `search/`: Keras Tuner's own state (`oracle.json`, `trial_*/trial.json`, checkpoints).
  Running the command again resumes it (a killed search loses at most its trials in flight);
  `overwrite` starts again.
- `tune_config.json`: the settings the search started with; a resume must use the same.
- `best_hyperparameters.json`: the best trial as `ModelConfig.to_json`, for
  `captcha-ocr train --hyperparameters`.
- `trials.csv`, `trials.png`: every trial's hyperparameters, metrics, objective and status.
- `tune_summary.json`: what `run_tune` returns.

The reports are rewritten (each file atomically) after every trial. Distributed search is Keras
Tuner's chief/worker mode: with `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT` and
`KERASTUNER_TUNER_ID` set, the process whose id contains `chief` serves the oracle (and
writes the reports), the others run trials.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import posixpath
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import keras_tuner as kt
import tensorflow as tf
from matplotlib.figure import Figure

from components import artifact_io, examples
from components.augmentation import NO_AUGMENTATION, AugmentConfig, make_augment
from components.dataset import fit_and_validation
from components.model import ModelConfig, build_model, search_space
from components.progress import keras_verbose
from components.schedule import StopAtDeadline
from components.settings import setting
from components.trainer import (
    MONITOR_MODES,
    SELECTION_SCORE,
    SelectionScore,
    TrainConfig,
)

log = logging.getLogger(__name__)

# This component's folder under the pipeline root (pipeline/runner.py).
PIPELINE_FOLDER = "Tuner"

ALGORITHMS = ("hyperband", "bayesian", "random")
DEFAULT_MAX_TRIALS = 20  # for random and bayesian; Hyperband's schedule sets its own count
SEARCH_DIR = "search"
TUNE_CONFIG_FILE = "tune_config.json"
BEST_HYPERPARAMETERS_FILE = "best_hyperparameters.json"
TRIALS_CSV = "trials.csv"
TRIALS_PNG = "trials.png"
SUMMARY_FILE = "tune_summary.json"
REPORT_METRICS = ("val_sequence_accuracy", "val_cer", "val_loss")
# Settings a resumed search may change: how long it runs and how much it prints.
RESUMABLE_CHANGES = ("max_trials", "time_budget_minutes", "overwrite", "verbose")


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """How to search (what is searched is `components.model.search_space`)."""

    algorithm: str = setting("hyperband", "search algorithm", choices=ALGORITHMS)
    max_trials: int | None = setting(
        None,
        "stop after N trials",
        shown_default=f"{DEFAULT_MAX_TRIALS} for bayesian and "
        "random, Hyperband's own schedule for hyperband",
    )
    max_epochs: int = setting(30, "epochs per trial (Hyperband's largest bracket)")
    time_budget_minutes: float | None = setting(
        None, "start no trial and no epoch after this long", flag="--time-budget", metavar="MINUTES"
    )
    overwrite: bool = setting(False, "start again instead of resuming")
    seed: int = setting(0, "random seed of the search and of every trial's weights")
    batch_size: int = setting(16, "images per training step")
    objective: str = setting(
        SELECTION_SCORE,
        "what ranks trials: val_score is whole-captcha accuracy on the "
        "trainer's validation holdout, CTC loss as tie-break",
        choices=tuple(MONITOR_MODES),
    )
    patience: int = setting(8, "early stopping inside each trial, in epochs")
    validation_percent: int = TrainConfig.validation_percent  # the trainer's holdout
    hyperband_factor: int = 3
    augment: AugmentConfig = NO_AUGMENTATION
    verbose: int | str = "auto"  # Keras progress output and the tuner's trial tables

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm is one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.objective not in MONITOR_MODES:
            raise ValueError(f"objective is one of {sorted(MONITOR_MODES)}, got {self.objective!r}")
        if self.max_trials is not None and self.max_trials < 1:
            raise ValueError(f"max_trials must be at least 1, got {self.max_trials}")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be at least 1, got {self.max_epochs}")
        if self.time_budget_minutes is not None and self.time_budget_minutes <= 0:
            raise ValueError(
                f"time_budget_minutes must be positive, got {self.time_budget_minutes}"
            )
        if not 0 < self.validation_percent < 100:
            raise ValueError(f"validation_percent must be in 1..99, got {self.validation_percent}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def process_role() -> str:
    """`standalone`, or `chief` / `worker` of a distributed search (Keras Tuner's env vars)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "standalone"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


class _BudgetedOracle:
    """Mixed into a Keras Tuner oracle: no new trial after the deadline, reports after each trial.

    The oracle is the one place every trial passes through, in a distributed search too (it
    lives in the chief), so the budget and the reports hold for the whole search.
    """

    deadline: float | None = None  # time.time() after which no trial starts
    after_trial: Callable[[kt.Oracle], None] | None = None

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if self.deadline is not None and time.time() >= self.deadline:
            log.info("time budget reached: no new trials")
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        return super().populate_space(trial_id)

    @kt.synchronized
    def end_trial(self, trial: kt.engine.trial.Trial) -> None:
        super().end_trial(trial)
        if self.after_trial is not None:
            self.after_trial(self)


class _HyperbandOracle(_BudgetedOracle, kt.oracles.HyperbandOracle):
    pass


class _BayesianOracle(_BudgetedOracle, kt.oracles.BayesianOptimizationOracle):
    pass


class _RandomOracle(_BudgetedOracle, kt.oracles.RandomSearchOracle):
    pass


def _make_oracle(config: TuneConfig) -> kt.Oracle:
    objective = kt.Objective(config.objective, MONITOR_MODES[config.objective])
    seed = config.seed + 1  # Keras Tuner takes a seed of 0 as "pick one at random"
    if config.algorithm == "hyperband":
        oracle = _HyperbandOracle(
            objective, max_epochs=config.max_epochs, factor=config.hyperband_factor, seed=seed
        )
        oracle.max_trials = config.max_trials  # the base Oracle stops there; None = no cap
        return oracle
    max_trials = config.max_trials or DEFAULT_MAX_TRIALS
    if config.algorithm == "bayesian":
        return _BayesianOracle(objective, max_trials=max_trials, seed=seed)
    return _RandomOracle(objective, max_trials=max_trials, seed=seed)


class _CaptchaHyperModel(kt.HyperModel):
    """`build_model(search_space(hp, base))`, seeded so trials differ by hyperparameters only."""

    def __init__(self, base: ModelConfig, vocab_size: int, seed: int) -> None:
        super().__init__(name="captcha_ocr")
        self.base = base
        self.vocab_size = vocab_size
        self.seed = seed

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        keras.utils.set_random_seed(self.seed)
        return build_model(search_space(hp, self.base), self.vocab_size)


class _Tuner(kt.Hyperband):
    """Keras Tuner's Hyperband tuner driving any of our oracles.

    Hyperband's tuner only adds the bookkeeping for the Hyperband oracle's `tuner/epochs`
    values (train a promoted trial on from its previous round's checkpoint); with the other
    oracles it is the plain `kt.Tuner`. Its own `__init__` would make a fresh oracle, so the
    base `Tuner.__init__` is called with ours.
    """

    def __init__(self, oracle: kt.Oracle, **kwargs: Any) -> None:
        kt.Tuner.__init__(self, oracle=oracle, **kwargs)
        self.trials_run_here: list[str] = []

    def on_trial_begin(self, trial: kt.engine.trial.Trial) -> None:
        self.trials_run_here.append(trial.trial_id)
        super().on_trial_begin(trial)


def _prepare_output(output_dir: str, config: TuneConfig, settings: dict[str, Any]) -> None:
    """Start again (`overwrite`), or check that a resumed search keeps its settings."""
    tf.io.gfile.makedirs(output_dir)
    settings = json.loads(json.dumps(settings))  # tuples become lists, as when read back
    config_path = posixpath.join(output_dir, TUNE_CONFIG_FILE)
    if config.overwrite:
        for name in (SEARCH_DIR, BEST_HYPERPARAMETERS_FILE, TRIALS_CSV, TRIALS_PNG, SUMMARY_FILE):
            artifact_io.remove(posixpath.join(output_dir, name))
    elif tf.io.gfile.exists(config_path):
        previous = artifact_io.read_json(config_path)
        changed = sorted(
            k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k)
        )
        if changed:
            raise ValueError(
                f"{output_dir} holds a search started with other settings ({', '.join(changed)}): "
                f"resume it with the same ones, pass overwrite (--overwrite) to start again, "
                f"or use another output folder"
            )
    artifact_io.write_file(config_path, json.dumps(settings, indent=2, sort_keys=True))


def _trial_rows(
    trials: Sequence[kt.engine.trial.Trial], objective: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per trial (ordered by id) and the hyperparameter names in search-space order."""
    names: list[str] = []
    rows = []
    for trial in sorted(trials, key=lambda t: int(t.trial_id)):
        # The search space's names, then Hyperband's bookkeeping (tuner/epochs, tuner/trial_id, ...)
        for name in [hp.name for hp in trial.hyperparameters.space] + list(
            trial.hyperparameters.values
        ):
            if name not in names:
                names.append(name)
        metrics = {
            name: trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None
            for name in (objective, *REPORT_METRICS)
        }
        first_epoch = trial.hyperparameters.values.get("tuner/initial_epoch", 0)
        row = {
            "trial_id": trial.trial_id,
            "status": trial.status,
            **metrics,
            "objective": trial.score,
            "best_epoch": None if trial.score is None else first_epoch + trial.best_step + 1,
            **trial.hyperparameters.values,
        }
        rows.append(row)
    return rows, names


def _plot_trials(rows: list[dict[str, Any]], names: list[str], objective: str, path: str) -> None:
    """One panel per hyperparameter: its value against the objective, best trial in red."""
    scored = [row for row in rows if row["objective"] is not None]
    names = [name for name in names if not name.startswith("tuner/")] or ["trial_id"]
    sign = 1 if MONITOR_MODES[objective] == "max" else -1
    best = max(scored, key=lambda row: sign * row["objective"], default=None)
    columns = min(4, len(names))
    rows_of_panels = -(-len(names) // columns)
    fig = Figure(figsize=(3.4 * columns, 2.8 * rows_of_panels), layout="constrained")
    axes = list(fig.subplots(rows_of_panels, columns, squeeze=False).flat)
    for ax, name in zip(axes, names, strict=False):
        points = [
            (row[name], row["objective"], row is best)
            for row in scored
            if row.get(name) is not None
        ]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _, _ in points)
        if not numeric:  # choices and booleans: one column per value, in sorted order
            categories = sorted({str(x) for x, _, _ in points})
            points = [(categories.index(str(x)), y, is_best) for x, y, is_best in points]
            ax.set_xticks(range(len(categories)), categories)
        ax.scatter(
            [x for x, _, _ in points], [y for _, y, _ in points], color="tab:blue", alpha=0.7
        )
        ax.scatter(
            [x for x, _, b in points if b],
            [y for _, y, b in points if b],
            color="red",
            marker="*",
            s=150,
            zorder=3,
        )
        if not points:
            ax.text(0.5, 0.5, "in no scored trial", ha="center", transform=ax.transAxes)
        elif name == "learning_rate":
            ax.set_xscale("log")
            ax.tick_params(axis="x", which="minor", labelbottom=False)
        ax.set_xlabel(name)
        ax.set_ylabel(objective)
    for ax in axes[len(names) :]:
        ax.axis("off")
    fig.suptitle(
        f"{len(scored)} scored trials of {len(rows)}; best (red star): "
        f"trial {best['trial_id'] if best else '-'}"
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    artifact_io.write_file(path, buffer.getvalue())


def _write_reports(
    oracle: kt.Oracle, output_dir: str, base: ModelConfig, objective: str
) -> dict[str, Any]:
    """trials.csv, trials.png and best_hyperparameters.json from the oracle's trials."""
    trials = list(oracle.trials.values())
    rows, names = _trial_rows(trials, objective)
    metrics = [objective, *(m for m in REPORT_METRICS if m != objective)]
    columns = ["trial_id", "status", *metrics, "best_epoch", *names]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:  # the objective column is the trial's score: its objective at best_epoch
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    artifact_io.write_file(posixpath.join(output_dir, TRIALS_CSV), buffer.getvalue())
    _plot_trials(rows, names, objective, posixpath.join(output_dir, TRIALS_PNG))

    completed = [t for t in oracle.get_best_trials(len(trials)) if t.status == "COMPLETED"]
    statuses: dict[str, int] = {}
    for trial in trials:
        statuses[trial.status] = statuses.get(trial.status, 0) + 1
    report: dict[str, Any] = {"num_trials": len(trials), "trial_statuses": statuses}
    if completed:
        best = completed[0]
        best_config = search_space(best.hyperparameters.copy(), base)
        best_config.to_json(posixpath.join(output_dir, BEST_HYPERPARAMETERS_FILE))
        report.update(
            best_trial_id=best.trial_id,
            best_score=best.score,
            best_metrics={
                m: best.metrics.get_last_value(m) for m in REPORT_METRICS if best.metrics.exists(m)
            },
            best_hyperparameters=best_config.to_dict(),
        )
    return report


def run_tune(
    examples_dirs: str | list[str],
    output_dir: str,
    config: TuneConfig,
    base_model_config: ModelConfig,
) -> dict[str, Any]:
    """Search (or resume searching) until max trials, Hyperband's schedule or the time budget.

    `base_model_config` fixes what is not searched (image size, kernel size) and centres the
    widths searched. Returns `tune_summary.json` (on a worker: the trials it ran).
    """
    start = time.time()
    deadline = start + 60 * config.time_budget_minutes if config.time_budget_minutes else None
    dirs = examples.as_list(examples_dirs)
    vocab = examples.combined_vocab(dirs)
    max_label_length = examples.max_label_length(dirs)
    base_model_config = base_model_config.with_data_geometry(
        [examples.read_metadata(d) for d in dirs]
    )
    base_model_config.check_label_length(max_label_length)
    role = process_role()

    if role != "worker":
        settings = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
        settings.update(
            base_model_config=base_model_config.to_dict(),
            vocab_size=len(vocab),
            max_label_length=max_label_length,
        )
        _prepare_output(output_dir, config, settings)

    oracle = _make_oracle(config)
    oracle.deadline = deadline
    if role != "worker":
        oracle.after_trial = lambda o: _write_reports(
            o, output_dir, base_model_config, config.objective
        )
    tuner = _Tuner(
        oracle,
        hypermodel=_CaptchaHyperModel(base_model_config, len(vocab), config.seed),
        directory=output_dir,
        project_name=SEARCH_DIR,
        # Only the chief owns the shared state; a worker starting again must not erase it.
        overwrite=config.overwrite and role != "worker",
    )
    verbose = keras_verbose(config.verbose)
    if role == "chief":
        log.info(
            "chief: serving the oracle on %s:%s",
            os.environ["KERASTUNER_ORACLE_IP"],
            os.environ["KERASTUNER_ORACLE_PORT"],
        )
        tuner.search(verbose=verbose)
    else:
        fit_ds, validation_ds, counts = fit_and_validation(
            dirs,
            geometry=base_model_config.geometry,
            max_label_length=max_label_length,
            batch_size=config.batch_size,
            validation_percent=config.validation_percent,
            augment=make_augment(config.augment),
            seed=config.seed,
        )
        log.info(
            "trials train on %d examples and are scored on %d", counts["fit"], counts["validation"]
        )
        callbacks: list[keras.callbacks.Callback] = [
            SelectionScore(),
            keras.callbacks.EarlyStopping(
                monitor=config.objective,
                mode=MONITOR_MODES[config.objective],
                patience=config.patience,
            ),
        ]
        if deadline is not None:
            callbacks.append(StopAtDeadline(deadline))
        tuner.search(
            fit_ds,
            validation_data=validation_ds,
            epochs=config.max_epochs,
            callbacks=callbacks,
            verbose=verbose,
        )

    summary: dict[str, Any] = {
        "role": role,
        "output_dir": output_dir,
        "trials_run_here": tuner.trials_run_here,
        "elapsed_seconds": round(time.time() - start, 1),
        "stopped_by_time_budget": deadline is not None and time.time() >= deadline,
    }
    if role == "worker":
        return summary
    summary.update(_write_reports(oracle, output_dir, base_model_config, config.objective))
    summary["objective"] = {"name": config.objective, "direction": MONITOR_MODES[config.objective]}
    summary["best_hyperparameters_path"] = (
        posixpath.join(output_dir, BEST_HYPERPARAMETERS_FILE)
        if "best_trial_id" in summary
        else None
    )
    artifact_io.write_file(posixpath.join(output_dir, SUMMARY_FILE), json.dumps(summary, indent=2))
    log.info(
        "%d trials, best %s -> %s", summary["num_trials"], summary.get("best_score"), output_dir
    )
    return summary

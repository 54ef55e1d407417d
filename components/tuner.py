"""Tuner: a Keras Tuner search over the model's hyperparameters, resumable and time-boxed.

The search space is `components.model.search_space` (next to the model builder). A trial
trains the way the Trainer trains, through the same `trainer.fit_model` (the recipe's
schedule with its plateau hold, augmentation, batch size) on the same `prepare_training`
input, within `trial_minutes`, and is scored on the Trainer's validation holdout with its
`val_score` (whole-captcha accuracy, CTC loss as tie-break), so a trial's score predicts the
trained model's and the eval split stays untouched for the evaluator. Trial 0 is the
profile's own model (the search space's defaults), started where the Trainer would start it
without a search: from the shipped model when it fits (`head_start.resolve_start`, which
then pins every trial's input height at the shipped model's). So the best trial is never
worse on validation than not searching, and the summary says by how much it beat the
defaults; a winning trial 0 is trained on from the shipped model by the Trainer too. A
trial still reading nothing at its plateau limit (trainer.MAX_HOLD_FRACTION of its budget)
is stopped there: it cannot win. The search is Bayesian optimisation (or random) with a
time budget per trial; Hyperband's budget is epochs, and its first rungs end inside the CTC
plateau, where every trial scores the same.

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
from components.head_start import resolve_start
from components.model import ModelConfig, build_model, search_space
from components.progress import keras_verbose
from components.settings import setting
from components.trainer import (
    MONITOR_MODES,
    SELECTION_SCORE,
    Fitted,
    TrainConfig,
    TrainingData,
    data_model_config,
    fit_model,
    prepare_training,
)

log = logging.getLogger(__name__)

# This component's folder under the pipeline root (pipeline/runner.py).
PIPELINE_FOLDER = "Tuner"

ALGORITHMS = ("bayesian", "random")
DEFAULT_MAX_TRIALS = 20
SEARCH_DIR = "search"
TUNE_CONFIG_FILE = "tune_config.json"
BEST_HYPERPARAMETERS_FILE = "best_hyperparameters.json"
TRIALS_CSV = "trials.csv"
TRIALS_PNG = "trials.png"
SUMMARY_FILE = "tune_summary.json"
REPORT_METRICS = ("val_sequence_accuracy", "val_cer", "val_loss")
# How much a trial must beat trial 0 (the profile's model) by to replace it. val_score's CTC-loss
# tie-break adds at most 0.01: a trial must read more validation captchas, not only have a lower
# loss (on a saturated holdout every trial reads them all and the loss alone would pick noise).
MIN_WIN = {SELECTION_SCORE: 0.01, "val_sequence_accuracy": 0.0, "val_loss": 0.0}
# Settings a resumed search may change: how long it runs and how much it prints.
RESUMABLE_CHANGES = ("max_trials", "time_budget_minutes", "overwrite", "verbose")


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """How to search (what is searched is `components.model.search_space`; how each trial
    trains is the recipe's TrainConfig, passed beside this)."""

    algorithm: str = setting("bayesian", "search algorithm", choices=ALGORITHMS)
    max_trials: int = setting(
        DEFAULT_MAX_TRIALS, "stop after N trials (trial 0 is the profile's own model)"
    )
    trial_minutes: float | None = setting(
        None,
        "each trial's training budget in minutes",
        metavar="MINUTES",
        shown_default="the recipe's max_minutes",
    )
    time_budget_minutes: float | None = setting(
        None,
        "start no trial that would end after this long (trial 0 always runs)",
        flag="--time-budget",
        metavar="MINUTES",
    )
    overwrite: bool = setting(False, "start again instead of resuming")
    objective: str = setting(
        SELECTION_SCORE,
        "what ranks trials: val_score is whole-captcha accuracy on the "
        "trainer's validation holdout, CTC loss as tie-break",
        choices=tuple(MONITOR_MODES),
    )
    verbose: int | str = "auto"  # Keras progress output and the tuner's trial tables

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm is one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.objective not in MONITOR_MODES:
            raise ValueError(f"objective is one of {sorted(MONITOR_MODES)}, got {self.objective!r}")
        if self.max_trials < 1:
            raise ValueError(f"max_trials must be at least 1, got {self.max_trials}")
        for name in ("trial_minutes", "time_budget_minutes"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def process_role() -> str:
    """`standalone`, or `chief` / `worker` of a distributed search (Keras Tuner's env vars)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "standalone"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


class _BudgetedOracle:
    """Mixed into a Keras Tuner oracle: trial 0 holds the defaults, trials fit the time budget,
    reports after each trial.

    The oracle is the one place every trial passes through, in a distributed search too (it
    lives in the chief), so trial 0, the budget and the reports hold for the whole search.
    """

    deadline: float | None = None  # time.time() after which no trial may still be training
    trial_seconds: float | None = None
    after_trial: Callable[[kt.Oracle], None] | None = None

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if not self.trials:  # trial 0 (a resumed search has it already, and keeps it)
            space = self.hyperparameters.copy()
            defaults = {hp.name: hp.default for hp in space.space if space.is_active(hp)}
            return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": defaults}
        left = None if self.deadline is None else self.deadline - time.time()
        if left is not None and left < (self.trial_seconds or 0.0):
            log.info("%.1f min left, less than a trial's budget: no new trials", left / 60)
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        return super().populate_space(trial_id)

    @kt.synchronized
    def end_trial(self, trial: kt.engine.trial.Trial) -> None:
        super().end_trial(trial)
        if self.after_trial is not None:
            self.after_trial(self)


class _BayesianOracle(_BudgetedOracle, kt.oracles.BayesianOptimizationOracle):
    pass


class _RandomOracle(_BudgetedOracle, kt.oracles.RandomSearchOracle):
    pass


def _make_oracle(config: TuneConfig, seed: int) -> kt.Oracle:
    objective = kt.Objective(config.objective, MONITOR_MODES[config.objective])
    oracle_class = _BayesianOracle if config.algorithm == "bayesian" else _RandomOracle
    # Keras Tuner takes a seed of 0 as "pick one at random".
    return oracle_class(objective, max_trials=config.max_trials, seed=seed + 1)


class _CaptchaHyperModel(kt.HyperModel):
    """`build_model(search_space(hp, base))`: how Keras Tuner learns the search space."""

    def __init__(self, base: ModelConfig, vocab_size: int) -> None:
        super().__init__(name="captcha_ocr")
        self.base = base
        self.vocab_size = vocab_size

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        return build_model(search_space(hp, self.base), self.vocab_size)


class _Tuner(kt.Tuner):
    """Keras Tuner's loop (oracle, resume, chief/worker) around the Trainer's own fit."""

    def __init__(
        self,
        oracle: kt.Oracle,
        data: TrainingData | None,
        trial_config: TrainConfig,
        first_trial_config: TrainConfig,
        deadline: float | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(oracle=oracle, **kwargs)
        self.data = data
        self.trial_config = trial_config
        self.first_trial_config = first_trial_config  # trial 0's start: where the Trainer's is
        self.deadline = deadline  # the search's: a worker's oracle is a client without it
        self.trials_run_here: list[str] = []

    def run_trial(self, trial: kt.engine.trial.Trial, *args: Any, **kwargs: Any):
        """One trial: the recipe's fit of the trial's model; Keras Tuner scores its History."""
        self.trials_run_here.append(trial.trial_id)
        start = time.time()
        deadline = start + 60 * self.trial_config.max_minutes
        if self.deadline is not None:  # trial 0 gets a minute at least
            deadline = min(deadline, max(self.deadline, start + 60))
        data = self.data
        model_config = search_space(trial.hyperparameters, data.model_config)
        trial_config = self.trial_config
        if int(trial.trial_id) == 0:  # the profile's model, started as the Trainer would
            first = resolve_start(model_config, self.first_trial_config)
            model_config, trial_config = first.model_config, first.train_config
        fitted = fit_model(
            model_config,
            data.vocab,
            data.fit_ds,
            data.validation_ds,
            data.steps_per_epoch,
            trial_config,
            deadline,
            stop_when_stalled=True,
        )
        self._log_trial(trial.trial_id, fitted, time.time() - start)
        return fitted.history

    def _log_trial(self, trial_id: str, fitted: Fitted, seconds: float) -> None:
        """One line a trial: its score, the best so far, the search's time left."""
        objective = self.oracle.objective
        scores = fitted.history.history.get(objective.name, [])
        score = scores[fitted.best_epoch] if scores else float("nan")
        earlier = [t.score for t in self.oracle.get_best_trials(1) if t.score is not None]
        best = max([score, *earlier]) if objective.direction == "max" else min([score, *earlier])
        left = (
            "" if self.deadline is None else f", {(self.deadline - time.time()) / 60:.0f} min left"
        )
        log.info(
            "trial %s: %s %.4f in %.1f min (%d epochs%s); best so far %.4f%s",
            trial_id,
            objective.name,
            score,
            seconds / 60,
            len(fitted.history.epoch),
            ", stopped reading nothing" if fitted.attempts[-1]["stalled"] else "",
            best,
            left,
        )


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
        for name in [hp.name for hp in trial.hyperparameters.space]:
            if name not in names:
                names.append(name)
        metrics = {
            name: trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None
            for name in (objective, *REPORT_METRICS)
        }
        row = {
            "trial_id": trial.trial_id,
            "status": trial.status,
            **metrics,
            "objective": trial.score,
            "best_epoch": None if trial.score is None else trial.best_step + 1,
            **trial.hyperparameters.values,
        }
        rows.append(row)
    return rows, names


def _plot_trials(
    rows: list[dict[str, Any]],
    names: list[str],
    objective: str,
    chosen: kt.engine.trial.Trial | None,
    path: str,
) -> None:
    """One panel per hyperparameter: its value against the objective, the chosen trial in red."""
    scored = [row for row in rows if row["objective"] is not None]
    names = names or ["trial_id"]
    best = next((row for row in scored if chosen and row["trial_id"] == chosen.trial_id), None)
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
    best = _chosen_trial(oracle, objective)
    _plot_trials(rows, names, objective, best, posixpath.join(output_dir, TRIALS_PNG))

    statuses: dict[str, int] = {}
    for trial in trials:
        statuses[trial.status] = statuses.get(trial.status, 0) + 1
    report: dict[str, Any] = {"num_trials": len(trials), "trial_statuses": statuses}
    if best is not None:
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


def _defaults_trial(oracle: kt.Oracle) -> kt.engine.trial.Trial | None:
    """Trial 0, the profile's model, if it completed."""
    first = min(oracle.trials.values(), key=lambda trial: int(trial.trial_id), default=None)
    return first if first is not None and first.score is not None else None


def _gain(trial: kt.engine.trial.Trial, over: kt.engine.trial.Trial, objective: str) -> float:
    sign = 1 if MONITOR_MODES[objective] == "max" else -1
    return sign * (trial.score - over.score)


def _top_trial(oracle: kt.Oracle) -> kt.engine.trial.Trial | None:
    """The completed trial of the best score."""
    completed = [t for t in oracle.get_best_trials(len(oracle.trials)) if t.status == "COMPLETED"]
    return completed[0] if completed else None


def _chosen_trial(oracle: kt.Oracle, objective: str) -> kt.engine.trial.Trial | None:
    """The top trial, unless it beats trial 0 by no more than MIN_WIN: then trial 0."""
    top, defaults = _top_trial(oracle), _defaults_trial(oracle)
    if (
        top is not None
        and defaults is not None
        and _gain(top, defaults, objective) <= MIN_WIN[objective]
    ):
        return defaults
    return top


def _compare_with_defaults(oracle: kt.Oracle, objective: str) -> dict[str, Any]:
    """Trial 0's score (the profile's model), how much the chosen trial beat it, and by how
    much the top trial did (when that is within MIN_WIN, the chosen trial is trial 0)."""
    defaults, best, top = (
        _defaults_trial(oracle),
        _chosen_trial(oracle, objective),
        _top_trial(oracle),
    )
    if defaults is None or best is None or top is None:
        return {}
    return {
        "defaults_trial_id": defaults.trial_id,
        "defaults_score": defaults.score,
        "best_beat_defaults_by": _gain(best, defaults, objective),
        "top_trial_id": top.trial_id,
        "top_beat_defaults_by": _gain(top, defaults, objective),
        "min_win": MIN_WIN[objective],
    }


def run_tune(
    examples_dirs: str | list[str],
    output_dir: str,
    config: TuneConfig,
    base_model_config: ModelConfig,
    train_config: TrainConfig,
) -> dict[str, Any]:
    """Search (or resume searching) until max trials or the time budget.

    `base_model_config` is trial 0 and centres the space (its input geometry comes from the
    data); `train_config` is how every trial trains (its max_minutes replaced by
    `config.trial_minutes` when given; no restarts: a stalled trial just ends). Returns
    `tune_summary.json` (on a worker: the trials it ran).
    """
    start = time.time()
    deadline = start + 60 * config.time_budget_minutes if config.time_budget_minutes else None
    trial_config = train_config.replace(
        max_minutes=config.trial_minutes or train_config.max_minutes,
        max_restarts=0,
        measure_input_pipeline=False,
        start="scratch",  # trials compare networks, most of which no shipped model fits
        warm_start=None,
        verbose=config.verbose,
    )
    if not trial_config.max_minutes:
        raise ValueError("trials need a time budget: set trial_minutes or the recipe's max_minutes")
    first_start = resolve_start(base_model_config, train_config)
    if first_start.train_config.start == "pretrained":
        # Trial 0 starts where the Trainer would without a search; every trial reads the
        # starting model's height, so a winning trial 0 is trained on from it too.
        height = first_start.model_config.image_height
        base_model_config = dataclasses.replace(base_model_config, image_height=height)
        log.info(
            "trial 0, the profile's model, starts from %s", first_start.train_config.warm_start
        )
    first_trial_config = trial_config.replace(
        start=first_start.train_config.start, warm_start=first_start.train_config.warm_start
    )
    dirs = examples.as_list(examples_dirs)
    vocab = examples.combined_vocab(dirs)
    base_model_config, max_label_length = data_model_config(dirs, base_model_config)
    role = process_role()

    if role != "worker":
        settings = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
        settings.update(
            base_model_config=base_model_config.to_dict(),
            trial_config=trial_config.replace(verbose=0).to_dict(),
            vocab_size=len(vocab),
            max_label_length=max_label_length,
        )
        _prepare_output(output_dir, config, settings)

    oracle = _make_oracle(config, train_config.seed)
    oracle.deadline = deadline
    oracle.trial_seconds = 60 * trial_config.max_minutes
    if role != "worker":
        oracle.after_trial = lambda o: _write_reports(
            o, output_dir, base_model_config, config.objective
        )
    # The chief only serves the oracle: it reads no data.
    data = None if role == "chief" else prepare_training(dirs, base_model_config, trial_config)
    if data is not None:
        log.info(
            "trials train on %d examples for up to %.1f min each and are scored on %d",
            data.counts["fit"],
            trial_config.max_minutes,
            data.counts["validation"],
        )
    tuner = _Tuner(
        oracle,
        data,
        trial_config,
        first_trial_config,
        deadline,
        hypermodel=_CaptchaHyperModel(base_model_config, len(vocab)),
        directory=output_dir,
        project_name=SEARCH_DIR,
        # Only the chief owns the shared state; a worker starting again must not erase it.
        overwrite=config.overwrite and role != "worker",
    )
    if role == "chief":
        log.info(
            "chief: serving the oracle on %s:%s",
            os.environ["KERASTUNER_ORACLE_IP"],
            os.environ["KERASTUNER_ORACLE_PORT"],
        )
    tuner.search(verbose=keras_verbose(config.verbose))

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
    summary.update(_compare_with_defaults(oracle, config.objective))
    summary["defaults_start"] = first_start.to_dict()
    summary["objective"] = {"name": config.objective, "direction": MONITOR_MODES[config.objective]}
    summary["best_hyperparameters_path"] = (
        posixpath.join(output_dir, BEST_HYPERPARAMETERS_FILE)
        if "best_trial_id" in summary
        else None
    )
    artifact_io.write_file(posixpath.join(output_dir, SUMMARY_FILE), json.dumps(summary, indent=2))
    log.info(
        "%d trials; chosen trial %s (%s), the profile's model %s; the top trial %s beat it by %s",
        summary["num_trials"],
        summary.get("best_trial_id"),
        summary.get("best_score"),
        summary.get("defaults_score"),
        summary.get("top_trial_id"),
        summary.get("top_beat_defaults_by"),
    )
    return summary

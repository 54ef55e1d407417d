"""Tuner: a real Keras Tuner search on the synthetic examples, with tiny models and budgets."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import keras_tuner as kt
import pytest
from helpers import PROJECT_ROOT, tiny_model, tiny_training

from components import tuner as tuner_module
from components.model import ModelConfig, search_space
from components.trainer import load_trained
from components.tuner import TuneConfig, run_tune
from pipeline.cli import main

TINY = tiny_model()
# Four random-search trials of one epoch each, trained the way the trainer trains (the quick
# recipe cut short by tiny_training); trial 0 is TINY itself.
QUICK = TuneConfig(algorithm="random", max_trials=4, trial_minutes=1.0, verbose=0)
TRIAL = tiny_training(epochs=1, batch_size=32)


def _trials_csv(output_dir) -> list[dict[str, str]]:
    with open(os.path.join(output_dir, "trials.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _trial_files(output_dir) -> dict[str, str]:
    """trial_<id> -> its trial.json text, as Keras Tuner saved it."""
    search = pathlib.Path(output_dir, "search")
    return {
        path.parent.name: path.read_text() for path in sorted(search.glob("trial_*/trial.json"))
    }


@pytest.fixture(scope="module")
def tuned(synthetic_examples, tmp_path_factory):
    output = tmp_path_factory.mktemp("tune") / "tuner"
    summary = run_tune(str(synthetic_examples), str(output), QUICK, TINY, TRIAL)
    return output, summary


def test_search_writes_best_hyperparameters_table_and_plot(tuned):
    output, summary = tuned
    rows = _trials_csv(output)
    assert [row["trial_id"] for row in rows] == ["0", "1", "2", "3"]
    assert {row["status"] for row in rows} == {"COMPLETED"}
    # Trial 0 is the profile's model: the search space's defaults, centred on the base. The
    # top trial replaces it only when it reads more captchas (beats it by more than MIN_WIN).
    defaults = rows[0]
    top = max(rows, key=lambda row: float(row["val_score"]))
    margin = float(top["val_score"]) - float(defaults["val_score"])
    best_row = top if margin > tuner_module.MIN_WIN["val_score"] else defaults
    assert summary["best_trial_id"] == best_row["trial_id"]
    assert int(defaults["conv_layers"]) == len(TINY.conv_filters)
    assert int(defaults["conv1_filters"]) == TINY.conv_filters[0]
    assert int(defaults["lstm1_units"]) == TINY.lstm_units[0]
    assert float(defaults["learning_rate"]) == pytest.approx(TINY.learning_rate)
    assert summary["defaults_score"] == pytest.approx(float(defaults["val_score"]), abs=1e-6)
    assert summary["best_beat_defaults_by"] == pytest.approx(
        float(best_row["val_score"]) - float(defaults["val_score"]), abs=1e-6
    )
    assert summary["best_beat_defaults_by"] >= 0
    # The objective is whole-captcha accuracy with the CTC loss as a tie-break below it.
    for row in rows:
        accuracy, loss = float(row["val_sequence_accuracy"]), float(row["val_loss"])
        assert float(row["val_score"]) == pytest.approx(
            accuracy - 1e-4 * min(loss, 100.0), abs=1e-6
        )

    best = ModelConfig.from_json(str(output / "best_hyperparameters.json"))
    assert best.to_dict() == summary["best_hyperparameters"]
    # The searched values of the best trial are the ones written, the rest come from the base.
    assert len(best.conv_filters) == int(best_row["conv_layers"])
    assert best.conv_filters[0] == int(best_row["conv1_filters"])
    assert len(best.lstm_units) == int(best_row["lstm_layers"])
    assert best.learning_rate == pytest.approx(float(best_row["learning_rate"]), rel=1e-5)
    assert (best.image_height, best.image_width, best.kernel_size) == (32, 96, 3)
    assert (output / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_uses_best_hyperparameters(tuned, synthetic_examples, tmp_path):
    output, _ = tuned
    best_path = output / "best_hyperparameters.json"
    model_dir = tmp_path / "model"
    assert (
        main(
            [
                "train",
                "--examples",
                str(synthetic_examples),
                "--output",
                str(model_dir),
                "--hyperparameters",
                str(best_path),
                "--epochs",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    model, _, config = load_trained(str(model_dir))
    best = ModelConfig.from_json(str(best_path))
    assert config == best
    conv_filters = [model.get_layer(f"conv{i + 1}").filters for i in range(len(best.conv_filters))]
    assert tuple(conv_filters) == best.conv_filters
    assert model.get_layer("bilstm1").forward_layer.units == best.lstm_units[0]


def test_second_call_resumes_and_overwrite_starts_again(tuned, synthetic_examples, tmp_path):
    output = tmp_path / "tuner"
    shutil.copytree(tuned[0], output)
    before = _trial_files(output)
    again = run_tune(str(synthetic_examples), str(output), QUICK, TINY, TRIAL)
    assert again["trials_run_here"] == [] and again["num_trials"] == 4
    assert _trial_files(output) == before

    more = run_tune(
        str(synthetic_examples), str(output), dataclasses.replace(QUICK, max_trials=5), TINY, TRIAL
    )
    assert more["trials_run_here"] == ["4"]
    after = _trial_files(output)
    assert {k: after[k] for k in before} == before  # completed trials were not re-run
    assert [row["trial_id"] for row in _trials_csv(output)] == ["0", "1", "2", "3", "4"]

    with pytest.raises(ValueError, match="algorithm"):
        run_tune(
            str(synthetic_examples),
            str(output),
            dataclasses.replace(QUICK, algorithm="bayesian"),
            TINY,
            TRIAL,
        )
    fresh = run_tune(
        str(synthetic_examples),
        str(output),
        dataclasses.replace(QUICK, algorithm="bayesian", max_trials=1, overwrite=True),
        TINY,
        TRIAL,
    )
    assert fresh["trials_run_here"] == ["0"] and fresh["num_trials"] == 1
    assert [row["trial_id"] for row in _trials_csv(output)] == ["0"]


def test_time_budget_starts_no_trial_it_cannot_finish(synthetic_examples, tmp_path):
    budget_seconds, trial_seconds = 20, 6
    # Without the budgets this would train 50 trials of 10 000 epochs each.
    config = TuneConfig(
        algorithm="random",
        max_trials=50,
        trial_minutes=trial_seconds / 60,
        time_budget_minutes=budget_seconds / 60,
        verbose=0,
    )
    start = time.time()
    summary = run_tune(
        str(synthetic_examples), str(tmp_path), config, TINY, TRIAL.replace(epochs=10_000)
    )
    elapsed = time.time() - start
    assert summary["stopped_by_time_budget"] or elapsed >= budget_seconds - trial_seconds
    assert elapsed < budget_seconds + 45  # at most one epoch past a trial's budget
    assert 2 <= summary["num_trials"] <= budget_seconds // trial_seconds + 1
    assert summary["trial_statuses"] == {"COMPLETED": summary["num_trials"]}
    best = ModelConfig.from_json(str(tmp_path / "best_hyperparameters.json"))
    assert best.to_dict() == summary["best_hyperparameters"]


def _ended_trial(oracle, score: float) -> str:
    """A trial created by the real oracle, ended with `score` as if trained."""
    trial = oracle.create_trial("tuner0")
    oracle.update_trial(trial.trial_id, {"val_score": score, "val_loss": 1.0}, step=0)
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    return trial.trial_id


@pytest.mark.parametrize("others", [(0.3, 0.5, 0.1), (0.5, 0.5), (0.505, 0.2)])
def test_a_search_whose_trials_are_all_worse_returns_the_defaults(tmp_path, others):
    """Keras Tuner's own oracle: trial 0 holds the defaults; losses, ties and wins within
    MIN_WIN (a lower CTC loss alone, no more captchas read) keep them."""
    config = TuneConfig(algorithm="random", max_trials=10)
    oracle = tuner_module._make_oracle(config, seed=0)
    oracle._set_project_dir(str(tmp_path), "search")
    space = kt.HyperParameters()
    search_space(space, TINY)
    oracle.update_space(space)

    first = _ended_trial(oracle, 0.5)
    assert search_space(oracle.get_trial(first).hyperparameters.copy(), TINY) == TINY
    ids = [_ended_trial(oracle, score) for score in others]
    assert any(search_space(oracle.get_trial(i).hyperparameters.copy(), TINY) != TINY for i in ids)

    report = tuner_module._write_reports(oracle, str(tmp_path), TINY, "val_score")
    assert report["best_trial_id"] == first
    assert ModelConfig.from_json(str(tmp_path / "best_hyperparameters.json")) == TINY
    comparison = tuner_module._compare_with_defaults(oracle, "val_score")
    top = comparison.pop("top_trial_id")
    assert comparison.pop("top_beat_defaults_by") == pytest.approx(max(0.0, max(others) - 0.5))
    assert oracle.get_trial(top).score == max(0.5, *others)
    assert comparison == {
        "defaults_trial_id": first,
        "defaults_score": 0.5,
        "best_beat_defaults_by": 0.0,
        "min_win": 0.01,
    }
    better = _ended_trial(oracle, 0.75)
    assert (
        tuner_module._write_reports(oracle, str(tmp_path), TINY, "val_score")["best_trial_id"]
        == better
    )
    assert tuner_module._compare_with_defaults(oracle, "val_score")[
        "best_beat_defaults_by"
    ] == pytest.approx(0.25)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_two_workers_on_loopback(synthetic_examples, tmp_path):
    base_path = tmp_path / "tiny.json"
    TINY.to_json(str(base_path))
    output = tmp_path / "tuner"
    port = str(_free_port())
    command = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "tune",
        "--examples",
        str(synthetic_examples),
        "--output",
        str(output),
        "--algorithm",
        "random",
        "--max-trials",
        "4",
        "--profile",
        "quick",
        "--epochs",
        "1",
        "--trial-minutes",
        "1",
        "--batch-size",
        "32",
        "--hyperparameters",
        str(base_path),
        "--quiet",
    ]
    processes = {}
    try:
        for tuner_id in ("chief", "worker0", "worker1"):
            env = {
                **os.environ,
                "KERASTUNER_TUNER_ID": tuner_id,
                "KERASTUNER_ORACLE_IP": "127.0.0.1",
                "KERASTUNER_ORACLE_PORT": port,
                "TF_CPP_MIN_LOG_LEVEL": "3",
            }
            processes[tuner_id] = subprocess.Popen(
                command,
                env=env,
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        results = {}
        for tuner_id, process in processes.items():
            stdout, stderr = process.communicate(timeout=420)
            assert process.returncode == 0, f"{tuner_id} failed:\n{stderr[-3000:]}"
            results[tuner_id] = json.loads(stdout[stdout.index("{\n") :])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()

    assert results["chief"]["role"] == "chief" and results["chief"]["trials_run_here"] == []
    assert results["chief"]["trial_statuses"] == {"COMPLETED": 4}
    ran = {tuner_id: results[tuner_id]["trials_run_here"] for tuner_id in ("worker0", "worker1")}
    assert all(ran.values()), f"each worker runs trials: {ran}"
    # Every trial a worker ran reached the chief's oracle, and the oracle has no others.
    run_by_workers = sorted(ran["worker0"] + ran["worker1"])
    assert run_by_workers == ["0", "1", "2", "3"]
    assert sorted(_trial_files(output)) == [f"trial_{t}" for t in run_by_workers]
    with open(output / "search" / "oracle.json") as f:
        assert sorted(json.load(f)["end_order"]) == run_by_workers
    assert [row["status"] for row in _trials_csv(output)] == ["COMPLETED"] * 4
    assert os.path.exists(output / "best_hyperparameters.json")

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

import pytest
from helpers import PROJECT_ROOT, tiny_model

from components.model import ModelConfig
from components.trainer import load_trained
from components.tuner import TuneConfig, run_tune
from pipeline.cli import main

TINY = tiny_model()
# Hyperband (the default) with 3 epochs: three 1-epoch trials, then the best of them trained on
# to epoch 3 from its checkpoint; the fourth trial is that promotion.
QUICK = TuneConfig(algorithm="hyperband", max_trials=4, max_epochs=3, batch_size=32, verbose=0)


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
    summary = run_tune(str(synthetic_examples), str(output), QUICK, TINY)
    return output, summary


def test_search_writes_best_hyperparameters_table_and_plot(tuned):
    output, summary = tuned
    rows = _trials_csv(output)
    assert [row["trial_id"] for row in rows] == ["0", "1", "2", "3"]
    assert {row["status"] for row in rows} == {"COMPLETED"}
    best_row = max(rows, key=lambda row: float(row["val_score"]))
    assert summary["best_trial_id"] == best_row["trial_id"]
    # Hyperband promoted the first round's best trial by the objective and trained it on.
    first_round_best = max(rows[:3], key=lambda row: float(row["val_score"]))
    promoted = rows[3]
    assert promoted["tuner/trial_id"] == first_round_best["trial_id"]
    assert (promoted["tuner/initial_epoch"], promoted["tuner/epochs"]) == ("1", "3")
    assert promoted["conv1_filters"] == first_round_best["conv1_filters"]
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
    again = run_tune(str(synthetic_examples), str(output), QUICK, TINY)
    assert again["trials_run_here"] == [] and again["num_trials"] == 4
    assert _trial_files(output) == before

    more = run_tune(
        str(synthetic_examples), str(output), dataclasses.replace(QUICK, max_trials=5), TINY
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
        )
    fresh = run_tune(
        str(synthetic_examples),
        str(output),
        dataclasses.replace(
            QUICK, algorithm="bayesian", max_trials=1, max_epochs=1, overwrite=True
        ),
        TINY,
    )
    assert fresh["trials_run_here"] == ["0"] and fresh["num_trials"] == 1
    assert [row["trial_id"] for row in _trials_csv(output)] == ["0"]


def test_time_budget_stops_the_search_keeping_the_best(synthetic_examples, tmp_path):
    budget_seconds = 15
    # Without the budget this would train 50 trials of 10 000 epochs each.
    config = TuneConfig(
        algorithm="random",
        max_trials=50,
        max_epochs=10_000,
        patience=10_000,
        batch_size=32,
        time_budget_minutes=budget_seconds / 60,
        verbose=0,
    )
    start = time.time()
    summary = run_tune(str(synthetic_examples), str(tmp_path), config, TINY)
    elapsed = time.time() - start
    assert summary["stopped_by_time_budget"]
    assert budget_seconds <= elapsed < budget_seconds + 45  # at most one epoch past the budget
    assert 1 <= summary["num_trials"] < 50
    assert summary["trial_statuses"] == {"COMPLETED": summary["num_trials"]}
    best = ModelConfig.from_json(str(tmp_path / "best_hyperparameters.json"))
    assert best.to_dict() == summary["best_hyperparameters"]


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
        "--max-epochs",
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

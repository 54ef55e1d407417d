"""Trainer: learns, selects, writes its folder atomically, warm-starts, reads configs."""

from __future__ import annotations

import csv
import dataclasses
import json
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    CLEAN_HEIGHT,
    CLEAN_WIDTH,
    clean_captcha,
    tiny_model,
    tiny_training,
    write_examples_dir,
)

from components import examples
from components.augmentation import NO_AUGMENTATION
from components.evaluator import run_evaluate
from components.trainer import TrainConfig, in_memory, load_trained, plateau_epochs, run_train
from pipeline.configs import PROFILES

CLEAN_MODEL = tiny_model(
    image_height=CLEAN_HEIGHT,
    image_width=CLEAN_WIDTH,
    conv_filters=(16, 32),
    dense_units=32,
    lstm_units=(32,),
    learning_rate=5e-3,
)
# The tiny network at the clean captchas' size.
CLEAN_TINY = tiny_model(image_height=CLEAN_HEIGHT, image_width=CLEAN_WIDTH, learning_rate=5e-3)
CLEAN_TRAINING = TrainConfig(
    epochs=12,
    batch_size=16,
    patience=12,
    lr_schedule="cosine",
    warmup_epochs=1,
    verbose=0,
    measure_input_pipeline=False,
)


@pytest.fixture(scope="module")
def clean_model_dir(clean_examples, tmp_path_factory):
    output = tmp_path_factory.mktemp("clean_model") / "model"
    summary = run_train(str(clean_examples), str(output), CLEAN_MODEL, CLEAN_TRAINING)
    return output, summary


def test_learns_a_tiny_clean_set_within_a_few_epochs(clean_model_dir, clean_examples, tmp_path):
    model_dir, summary = clean_model_dir
    metrics = run_evaluate(str(model_dir), str(clean_examples), str(tmp_path / "eval"))
    assert metrics["num_examples"] == 60
    assert metrics["accuracy"] >= 0.95, metrics
    assert metrics["cer"] <= 0.03, metrics
    assert summary["epochs_run"] <= CLEAN_TRAINING.epochs


def test_model_folder_is_complete_and_written_atomically(trained_model_dir):
    names = {p.name for p in trained_model_dir.iterdir()}
    assert {
        "model.keras",
        "vocab.txt",
        "model_config.json",
        "train_config.json",
        "history.csv",
        "logs",
        "checkpoints",
        "train_summary.json",
    } <= names
    assert {p.name for p in (trained_model_dir / "checkpoints").iterdir()} == {
        "best.weights.h5",
        "last.weights.h5",
    }
    assert list((trained_model_dir / "logs").rglob("events.out.tfevents.*"))
    assert not list(trained_model_dir.parent.glob("*.tmp-*"))
    summary = json.loads((trained_model_dir / "train_summary.json").read_text())
    with open(trained_model_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert len(history) == summary["epochs_run"] == 2
    assert {
        "loss",
        "val_loss",
        "val_sequence_accuracy",
        "val_cer",
        "val_score",
        "learning_rate",
    } <= set(history[0])
    model, vocab, config = load_trained(str(trained_model_dir))
    assert vocab == examples.read_vocab(str(trained_model_dir / "vocab.txt"))
    images = np.zeros((1, config.image_height, config.image_width, 1), np.float32)
    assert model(images).shape == (1, config.time_steps, len(vocab) + 1)
    assert (
        TrainConfig.from_dict(json.loads((trained_model_dir / "train_config.json").read_text()))
        == tiny_training(start="scratch")  # the start used: no shipped model fits a tiny one
    )


def test_a_failed_training_leaves_no_model_folder(clean_examples, tmp_path):
    too_narrow = dataclasses.replace(CLEAN_MODEL, image_width=24)  # 6 time steps, labels of 4
    with pytest.raises(ValueError, match="time steps"):
        run_train(str(clean_examples), str(tmp_path / "model"), too_narrow, CLEAN_TRAINING)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def small_vocab_model(tmp_path_factory):
    """A one-epoch tiny model on a vocab of "01", a prefix of the clean set's "0123"."""
    import random

    rng = random.Random(5)
    labels = ["".join(rng.choice("01") for _ in range(3)) for _ in range(96)]
    items = [(clean_captcha(label, rng), label) for label in labels]
    examples_dir = write_examples_dir(
        tmp_path_factory.mktemp("small_vocab") / "examples",
        {"train": items[:80], "eval": items[80:]},
        ["0", "1"],
    )
    output = tmp_path_factory.mktemp("small_vocab_model") / "model"
    tiny = CLEAN_TINY
    run_train(str(examples_dir), str(output), tiny, CLEAN_TRAINING.replace(epochs=1))
    return output, tiny


def test_warm_start_from_a_smaller_vocab(small_vocab_model, clean_examples, tmp_path):
    from components.model import LOGITS_LAYER, build_model
    from components.trainer import warm_start

    old_dir, tiny = small_vocab_model
    old_model, old_vocab, _ = load_trained(str(old_dir))
    model = build_model(tiny, vocab_size=4)
    mapped = warm_start(model, list("0123"), str(old_dir))
    assert mapped["characters_mapped"] == 2 and mapped["characters_fresh"] == "23"
    for layer in model.layers:
        old_weights = old_model.get_layer(layer.name).get_weights()
        for new, old in zip(layer.get_weights(), old_weights, strict=False):
            if layer.name == LOGITS_LAYER:  # blank + "0" + "1" copied, "2" and "3" fresh
                np.testing.assert_array_equal(new[..., :3], old)
                assert new.shape[-1] == 5
            else:
                np.testing.assert_array_equal(new, old)
    with pytest.raises(ValueError, match="cannot warm-start: layer"):
        warm_start(
            build_model(dataclasses.replace(tiny, dense_units=8), 4), list("0123"), str(old_dir)
        )

    summary = run_train(
        str(clean_examples),
        str(tmp_path / "model"),
        tiny,
        CLEAN_TRAINING.replace(epochs=1, warm_start=str(old_dir)),
    )
    assert summary["vocab_size"] == 4
    assert summary["start"]["start"] == "pretrained"
    assert summary["start"]["characters_fresh"] == "23"
    assert tf.io.gfile.exists(str(tmp_path / "model" / "model.keras"))


def test_warm_start_maps_output_rows_by_character(small_vocab_model):
    """Another order and a character the earlier model never saw: rows follow the character."""
    from components.model import BLANK, LOGITS_LAYER, build_model
    from components.trainer import class_rows, warm_start

    old_dir, tiny = small_vocab_model
    old_model, old_vocab, _ = load_trained(str(old_dir))
    assert old_vocab == ["0", "1"]
    assert class_rows(old_vocab, list("1x0")) == [BLANK, 2, None, 1]
    model = build_model(tiny, vocab_size=3)
    fresh_kernel, fresh_bias = model.get_layer(LOGITS_LAYER).get_weights()
    mapped = warm_start(model, list("1x0"), str(old_dir))
    assert mapped == {"from": str(old_dir), "characters_mapped": 2, "characters_fresh": "x"}
    old_kernel, old_bias = old_model.get_layer(LOGITS_LAYER).get_weights()
    kernel, bias = model.get_layer(LOGITS_LAYER).get_weights()
    for new_row, old_row in ((0, 0), (1, 2), (3, 1)):  # blank, "1", "0"
        np.testing.assert_array_equal(kernel[:, new_row], old_kernel[:, old_row])
        assert bias[new_row] == old_bias[old_row]
    np.testing.assert_array_equal(kernel[:, 2], fresh_kernel[:, 2])  # "x": its fresh row
    assert bias[2] == fresh_bias[2]


def test_cli_train_reads_a_hyperparameters_json_and_turns_augmentation_off(
    clean_examples, tmp_path
):
    from pipeline.cli import main

    config = CLEAN_TINY
    config.to_json(str(tmp_path / "best_hyperparameters.json"))
    output = tmp_path / "model"
    assert PROFILES["full"].train.augment.enabled
    assert (
        main(
            [
                "train",
                "--examples",
                str(clean_examples),
                "--output",
                str(output),
                "--profile",
                "full",
                "--no-augment",
                "--hyperparameters",
                str(tmp_path / "best_hyperparameters.json"),
                "--epochs",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    _, vocab, loaded = load_trained(str(output))
    assert loaded == config and vocab == list("0123")
    train_config = json.loads((output / "train_config.json").read_text())
    assert train_config["epochs"] == 1
    assert train_config["augment"] == NO_AUGMENTATION.to_dict()


def test_hold_then_cosine_holds_through_the_plateau_then_decays_by_steps_or_time():
    from components.schedule import HoldThenCosine

    now = time.time()
    by_steps = HoldThenCosine(
        peak=1e-3,
        floor=1e-5,
        warmup_steps=10,
        decay_steps=100,
        deadline=now + 1000,
        plateau_epochs=None,
        plateau_seconds=None,
        last_attempt=True,
    )
    by_steps.step = 0
    assert by_steps.learning_rate(now) == pytest.approx(1e-4)  # warmup starts at a tenth
    by_steps.step = 500
    assert by_steps.learning_rate(now) == pytest.approx(1e-3)  # still reading nothing: hold
    by_steps.decay_from = (500, now)  # the model reads from step 500 on
    by_steps.step = 550
    assert by_steps.learning_rate(now) == pytest.approx((1e-3 + 1e-5) / 2)
    by_steps.step = 600
    assert by_steps.learning_rate(now) == pytest.approx(1e-5)
    by_time = HoldThenCosine(
        peak=1e-3,
        floor=1e-5,
        warmup_steps=0,
        decay_steps=None,
        deadline=now + 100,
        plateau_epochs=None,
        plateau_seconds=None,
        last_attempt=True,
    )
    by_time.step, by_time.decay_from = 7, (0, now)
    assert by_time.learning_rate(now + 50) == pytest.approx((1e-3 + 1e-5) / 2)
    assert by_time.learning_rate(now + 100) == pytest.approx(1e-5)


@pytest.mark.parametrize(
    ("val_cers", "stalled"),
    [((1.0, 1.0), True), ((1.08, 1.0), True), ((1.0, 0.9), False), ((0.8, 0.7), False)],
)
def test_a_model_leaving_the_plateau_is_kept_not_restarted(val_cers, stalled):
    """At the plateau limit only a model whose CER never fell is restarted."""
    from components.schedule import HoldThenCosine

    schedule = HoldThenCosine(
        peak=1e-3,
        floor=1e-5,
        warmup_steps=0,
        decay_steps=100,
        deadline=None,
        plateau_epochs=len(val_cers),
        plateau_seconds=None,
        last_attempt=False,
    )
    schedule.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    schedule.on_train_begin()
    for epoch, cer in enumerate(val_cers):
        schedule.on_epoch_end(epoch, {"val_sequence_accuracy": 0.0, "val_cer": cer})
    assert schedule.stalled is stalled
    assert (schedule.decay_from is None) is stalled  # kept: the decay began instead


def test_a_run_stuck_in_the_plateau_restarts_and_says_it_did_not_learn(
    clean_examples, tmp_path, caplog
):
    frozen = dataclasses.replace(CLEAN_TINY, learning_rate=0.0)  # it cannot leave the plateau
    config = CLEAN_TRAINING.replace(
        lr_schedule="hold-cosine",
        epochs=5,
        warmup_epochs=0,
        decay_epochs=1,
        plateau_epochs=1,
        max_restarts=1,
    )
    with caplog.at_level("INFO"):
        summary = run_train(str(clean_examples), str(tmp_path / "model"), frozen, config)
    assert [a["stalled"] for a in summary["attempts"]] == [True, False]
    assert [a["seed"] for a in summary["attempts"]] == [config.seed, config.seed + 1]
    assert summary["attempts"][1]["learning_rate"] == 0.0
    assert not summary["learned"]
    assert (
        "read nothing after 1 epochs" in caplog.text and "Starting again with seed" in caplog.text
    )
    assert "no restart left" in caplog.text  # the last attempt decays anyway


@pytest.mark.parametrize(("steps_per_epoch", "epochs"), [(150, 40), (15, 200), (16, 188)])
def test_the_plateau_limit_is_counted_in_steps_on_a_small_data_set(steps_per_epoch, epochs):
    """40 epochs of 3,000 captchas are 6,000 steps, of 300 captchas only 600."""
    full = PROFILES["full"].train
    assert plateau_epochs(full, steps_per_epoch) == epochs
    assert plateau_epochs(full.replace(plateau_epochs=None), steps_per_epoch) is None


def test_validation_held_in_memory_gives_the_same_batches():
    """`in_memory` replaces the validation pipeline (map, cache, prefetch) by tensors: the
    batches, the short last one included, must be the very same."""
    images = tf.random.stateless_uniform([10, 4, 6, 1], seed=[3, 4])
    labels = tf.reshape(tf.range(30), [10, 3])
    pipeline = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .map(lambda x, y: (x * 2.0, y + 1), num_parallel_calls=tf.data.AUTOTUNE)
        .cache()
        .batch(4)
        .prefetch(tf.data.AUTOTUNE)
    )
    expected, held = list(pipeline), list(in_memory(pipeline))
    assert [int(x.shape[0]) for x, _ in held] == [4, 4, 2]
    for (x, y), (x_held, y_held) in zip(expected, held, strict=True):
        np.testing.assert_array_equal(x.numpy(), x_held.numpy())
        np.testing.assert_array_equal(y.numpy(), y_held.numpy())

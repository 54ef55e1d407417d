"""Decoding within the seen label lengths and the calibrated confidence: hand-built logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from components.decoding import (
    DECODING_FILE,
    Decoding,
    calibrate,
    calibration_metrics,
    decode,
    fit_platt,
    load_decoding,
    raw_logit,
    reliability,
    threshold_for_precision,
)
from components.predict import ExportedModel
from components.preprocessing import preprocess_image
from components.trainer import load_trained

VOCAB = ["a", "b", "c"]


def logits_for(paths: list[list[int]], scale: float = 10.0) -> np.ndarray:
    """Logits whose best path is the given class per frame (0 = blank, i + 1 = VOCAB[i])."""
    return np.eye(len(VOCAB) + 1, dtype="float32")[np.array(paths)] * scale


def texts(tensor: tf.Tensor) -> list[str]:
    return [t.decode() for t in tensor.numpy()]


@pytest.fixture
def logits() -> np.ndarray:
    paths = [
        [1, 0, 2, 0, 3, 0, 1, 0],  # "abca", its last "a" made weak below: 3 is the seen length
        [1, 0, 2, 0, 3, 0, 0, 0],  # "abc": already a seen length
        [0, 0, 0, 0, 0, 0, 0, 0],  # nothing read
    ]
    values = logits_for(paths)
    values[0, 6] = [2.2, 2.0, 0.0, 0.0]  # frame 6: blank barely above "a"
    values[0, 0] = [0.0, 10.0, 0.0, 0.0]
    return values


def test_greedy_answers_any_length_without_a_decoding(logits):
    text, confidence = decode(tf.constant(logits), VOCAB)
    assert texts(text) == ["abc", "abc", ""]
    values = logits.copy()
    values[0, 6] = [2.0, 2.2, 0.0, 0.0]  # now "a" barely wins: greedy reads 4 characters
    text, _ = decode(tf.constant(values), VOCAB)
    assert texts(text) == ["abca", "abc", ""]


@pytest.mark.parametrize("in_graph", [False, True])
def test_an_unseen_length_is_decoded_again_within_the_seen_ones(logits, in_graph):
    values = logits.copy()
    values[0, 6] = [2.0, 2.2, 0.0, 0.0]
    decoding = Decoding(label_lengths=(3,))

    def run(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return decode(x, VOCAB, decoding)

    text, confidence = (tf.function(run) if in_graph else run)(tf.constant(values))
    assert texts(text) == ["abc", "abc", ""]
    unconstrained_text, unconstrained = decode(tf.constant(values), VOCAB)
    # Rows of a seen length keep the greedy answer and its score; the searched row scores the
    # beam's 3-character labelling; an empty answer where no label is empty scores 0.
    assert confidence.numpy()[1] == pytest.approx(unconstrained.numpy()[1])
    assert 0.0 < confidence.numpy()[0] < 1.0
    assert confidence.numpy()[2] == 0.0


def test_a_length_no_top_path_has_keeps_the_greedy_answer(logits):
    text, _ = decode(tf.constant(logits), VOCAB, Decoding(label_lengths=(7,)))
    assert texts(text) == ["abc", "abc", ""]


def test_platt_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    log_p = rng.uniform(-6.0, -0.001, 20_000)
    correct = rng.random(log_p.size) < 1 / (1 + np.exp(-(1.5 * raw_logit(log_p) + 3.0)))
    slope, intercept = fit_platt(log_p, correct)
    assert slope == pytest.approx(1.5, abs=0.1)
    assert intercept == pytest.approx(3.0, abs=0.15)


def test_a_holdout_with_no_error_is_not_pushed_to_certainty():
    decoding = calibrate(np.array([-0.01, -0.02, -0.2, -0.05]), np.ones(4, bool), (4,))
    confidence = decoding.confidence(tf.constant([-0.01, -5.0])).numpy()
    assert confidence[0] < 1.0 and confidence[1] < confidence[0]
    assert decoding.fitted_on == {"examples": 4, "right": 4}


def test_threshold_for_precision_hand_computed():
    confidence = np.array([0.95, 0.9, 0.8, 0.8, 0.7])
    # Ranked: right, right, (right, wrong) tied at 0.8, right.
    correct = np.array([True, True, True, False, True])
    assert threshold_for_precision(confidence, correct, 0.99) == 0.9
    # 3 of the first 3 are right, but the third ties with a wrong one: 0.8 holds 3 of 4.
    assert threshold_for_precision(confidence, correct, 0.85) == 0.9
    assert threshold_for_precision(confidence, correct, 0.8) == 0.7  # 4 of 5
    assert threshold_for_precision(np.array([0.9]), np.array([False]), 0.5) == 1.0


def test_reliability_and_calibration_metrics_hand_computed():
    confidence = [0.95, 0.95, 0.92, 0.5, 0.05]
    correct = [True, True, False, True, False]
    table = reliability(confidence, correct)
    assert [row["count"] for row in table] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 3]
    assert table[9]["accuracy"] == pytest.approx(2 / 3)
    assert table[9]["mean_confidence"] == pytest.approx(0.94)
    metrics = calibration_metrics(confidence, correct)
    assert metrics["share_above_0.9"] == pytest.approx(0.6)
    assert metrics["accuracy_above_0.9"] == pytest.approx(2 / 3)
    expected = (1 * 0.05 + 1 * 0.5 + 3 * abs(2 / 3 - 0.94)) / 5
    assert metrics["expected_calibration_error"] == pytest.approx(expected)


def test_the_trainer_fits_and_the_export_serves_the_decoding(
    trained_model_dir, exported_model_base, synthetic_images
):
    """The trained folder's decoding.json is the export's, and the signature applies it."""
    fitted = load_decoding(str(trained_model_dir))
    assert fitted.label_lengths and fitted.platt is not None
    assert fitted.fitted_on["examples"] > 0
    summary = json.loads((trained_model_dir / "train_summary.json").read_text())
    assert Decoding.from_dict(summary["decoding"]) == fitted
    extra = exported_model_base / "1" / "assets.extra"
    assert Decoding.from_dict(json.loads((extra / DECODING_FILE).read_text())) == fitted
    files = sorted(synthetic_images.iterdir())[:16]
    answers = ExportedModel(str(exported_model_base / "1")).predict_bytes(
        [p.read_bytes() for p in files], [str(p) for p in files]
    )
    model, vocab, config = load_trained(str(trained_model_dir))
    images = tf.stack([preprocess_image(p.read_bytes(), config.geometry) for p in files])
    text, confidence = decode(model(images, training=False), vocab, fitted)
    assert [a.text for a in answers] == texts(text)
    np.testing.assert_allclose([a.confidence for a in answers], confidence.numpy(), atol=1e-4)

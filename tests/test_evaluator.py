"""Evaluator: metrics against hand-computed values, and the files it writes."""

from __future__ import annotations

import csv
import json

import pytest

from components.evaluator import (
    CONFUSIONS_FILE,
    CURVES_FILE,
    ERRORS_FILE,
    GAP,
    METRICS_FILE,
    PREDICTIONS_GRID_FILE,
    RELIABILITY_FILE,
    TRAIN_GRID_FILE,
    align,
    confusions,
    edit_distance,
    predict_split,
    reading_metrics,
    run_evaluate,
)


@pytest.mark.parametrize(
    "truth, prediction, distance",
    [
        ("", "", 0),
        ("abc", "abc", 0),
        ("abc", "", 3),
        ("", "ab", 2),
        ("kitten", "sitting", 3),  # k->s, e->i, +g
        ("abcde", "abde", 1),  # one deletion
        ("abcde", "abxcde", 1),  # one insertion
        ("abcde", "edcba", 4),  # a<->e, b<->d swapped: 4 substitutions
        ("aab", "ab", 1),  # a CTC-style collapsed repeat
        ("flaw", "lawn", 2),  # -f, +n
    ],
)
def test_edit_distance_hand_computed(truth, prediction, distance):
    assert edit_distance(truth, prediction) == distance
    assert edit_distance(prediction, truth) == distance


def test_alignment_pairs_explain_the_distance():
    assert align("kitten", "sitting") == [
        ("k", "s"),
        ("i", "i"),
        ("t", "t"),
        ("t", "t"),
        ("e", "i"),
        ("n", "n"),
        (GAP, "g"),
    ]
    assert align("abcde", "abde") == [("a", "a"), ("b", "b"), ("c", GAP), ("d", "d"), ("e", "e")]
    for truth, prediction in [("flaw", "lawn"), ("226md", "22md"), ("xy", "yxy")]:
        pairs = align(truth, prediction)
        assert "".join(t for t, _ in pairs) == truth
        assert "".join(p for _, p in pairs) == prediction
        assert sum(t != p for t, p in pairs) == edit_distance(truth, prediction)


def test_reading_metrics_hand_computed():
    labels = ["abcde", "abcde", "xyz", "q"]
    predictions = ["abcde", "abde", "xya", ""]
    metrics = reading_metrics(labels, predictions)
    # 1 of 4 read exactly; distances 0 + 1 + 1 + 1 = 3 over 5 + 5 + 3 + 1 = 14 characters.
    assert metrics["accuracy"] == pytest.approx(0.25)
    assert metrics["cer"] == pytest.approx(3 / 14)
    assert metrics["num_errors"] == 3 and metrics["num_characters"] == 14
    assert confusions(labels, predictions) == {("c", GAP): 1, ("z", "a"): 1, ("q", GAP): 1}
    with pytest.raises(ValueError, match="no examples"):
        reading_metrics([], [])


def test_run_evaluate_writes_metrics_csvs_and_pictures(
    trained_model_dir, synthetic_examples, tmp_path
):
    output = tmp_path / "evaluation"
    metrics = run_evaluate(str(trained_model_dir), str(synthetic_examples), str(output))
    readings = predict_split(str(trained_model_dir), str(synthetic_examples), "eval")
    labels, predictions = readings["labels"], readings["predictions"]
    expected = reading_metrics(labels, predictions)

    on_disk = json.loads((output / METRICS_FILE).read_text())
    assert on_disk["accuracy"] == pytest.approx(expected["accuracy"])
    assert on_disk["cer"] == pytest.approx(expected["cer"])
    assert on_disk["num_examples"] == metrics["num_examples"] == len(labels) > 0

    with open(output / ERRORS_FILE) as f:
        errors = list(csv.DictReader(f))
    wrong = {
        (s, t, p)
        for s, t, p in zip(readings["sources"], labels, predictions, strict=False)
        if t != p
    }
    assert {(r["source"], r["label"], r["prediction"]) for r in errors} == wrong
    assert len(errors) == metrics["num_errors"]
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in errors)
    assert all(
        int(r["edit_distance"]) == edit_distance(r["label"], r["prediction"]) for r in errors
    )

    with open(output / CONFUSIONS_FILE) as f:
        confusion_rows = list(csv.DictReader(f))
    counts = confusions(labels, predictions)
    assert {(r["true"], r["predicted"]): int(r["count"]) for r in confusion_rows} == dict(counts)

    calibration = on_disk["calibration"]
    assert sum(row["count"] for row in calibration["reliability"]) == len(labels)
    assert calibration["calibrated"] and calibration["label_lengths"]
    confident = [c > 0.9 for c in readings["confidences"]]
    assert calibration["share_above_0.9"] == pytest.approx(sum(confident) / len(labels))

    for picture in (TRAIN_GRID_FILE, PREDICTIONS_GRID_FILE, CURVES_FILE, RELIABILITY_FILE):
        data = (output / picture).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5_000, picture
    assert not list(tmp_path.glob(".evaluation.tmp-*"))


def test_run_evaluate_needs_a_trained_model(synthetic_examples, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a trained model"):
        run_evaluate(str(tmp_path), str(synthetic_examples), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()

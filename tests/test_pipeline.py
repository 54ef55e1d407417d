"""`run` and `retrain` end to end on small real data: Beam, TFDV, Keras and SavedModels for real."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import headless_chromium
import pytest
from helpers import (
    CLEAN_ALPHABET,
    CLEAN_HEIGHT,
    CLEAN_WIDTH,
    PROJECT_ROOT,
    tiny_model,
    write_clean_images,
)

from components.pusher import PushConfig
from pipeline import runner

TINY_MODEL = tiny_model(image_height=CLEAN_HEIGHT, image_width=CLEAN_WIDTH, lstm_units=(24,))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    hyperparameters = root / "tiny.json"
    TINY_MODEL.to_json(str(hyperparameters))
    return {
        "root": root,
        "images": write_clean_images(root / "images", 500, seed=1),
        "hyperparameters": str(hyperparameters),
    }


def config_for(project, **changes) -> runner.RunConfig:
    values = dict(
        workdir=str(project["root"] / "work"),
        export_dir=str(project["root"] / "export"),
        images=str(project["images"]),
        hyperparameters=project["hyperparameters"],
        train_overrides={"epochs": 25, "max_minutes": 2.0},
    )
    values.update(changes)
    return runner.RunConfig(**values)


def statuses(manifest) -> dict[str, str]:
    return {c["name"]: c["status"] for c in manifest["components"]}


def versions(export_dir: pathlib.Path) -> list[str]:
    return sorted(p.name for p in export_dir.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def first_run(project):
    return runner.run(config_for(project))


def test_run_trains_and_exports_a_servable_model(project, first_run):
    assert list(statuses(first_run)) == [
        "ExampleGen",
        "Validation",
        "Trainer",
        "Evaluator",
        "Pusher",
    ]
    assert set(statuses(first_run).values()) == {"ran"}
    assert first_run["metrics"]["accuracy"] >= 0.9, first_run["metrics"]
    assert first_run["exported"]["pushed"] and first_run["exported"]["version"] == 1
    export = project["root"] / "export"
    assert versions(export) == ["1"]
    assert (export / "1" / "saved_model.pb").is_file()

    manifest = json.loads((project["root"] / "work" / runner.MANIFEST_FILE).read_text())
    for component in manifest["components"]:
        assert component["output"].startswith(str(project["root"] / "work"))
        assert (pathlib.Path(component["output"]) / runner.COMPLETE_MARKER).is_file()
        assert component["seconds"] > 0
    # The tiny network is not the shipped one (if any is shipped): it trained from scratch.
    assert manifest["start"]["start"] == "scratch" and manifest["start"]["reason"]
    report = (project["root"] / "work" / runner.REPORT_FILE).read_text()
    sections = ("Metrics", "Data", "Validation", "Training curves", "Predictions", "Confidence")
    for section in (*sections, "Training start", "Export"):
        assert f"<h2>{section}" in report
    assert report.count("data:image/png;base64,") >= 3

    # What TF Serving would load reads the held-out images in a fresh process.
    sample = sorted(project["images"].iterdir())[:8]
    script = (
        "import sys, json, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "out = m(image_bytes=tf.constant([open(p, 'rb').read() for p in sys.argv[2:]]))\n"
        "print(json.dumps([t.decode() for t in out['text'].numpy()]))\n"
    )
    texts = json.loads(
        subprocess.run(
            [sys.executable, "-c", script, str(export / "1"), *map(str, sample)],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    labels = [p.name.split("_")[0] for p in sample]
    assert sum(t == label for t, label in zip(texts, labels, strict=True)) >= 6, (texts, labels)


def test_report_renders_offline_in_headless_chromium(project, first_run):
    browser = headless_chromium.browser_or_skip()
    report = headless_chromium.assert_renders_offline(
        browser,
        str(project["root"] / "work" / runner.REPORT_FILE),
        ("Metrics", "Training curves", "Export"),
    )
    assert len(report.images) >= 3


def test_second_run_skips_every_component(project, first_run):
    manifest = runner.run(config_for(project))
    assert set(statuses(manifest).values()) == {"skipped"}
    assert versions(project["root"] / "export") == ["1"]


def test_run_killed_during_training_resumes_without_reingesting(project, tmp_path):
    work = tmp_path / "work"
    command = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "run",
        "--images",
        str(project["images"]),
        "--workdir",
        str(work),
        "--export-dir",
        str(tmp_path / "export"),
        "--hyperparameters",
        project["hyperparameters"],
        "--epochs",
        "3",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 240
    for line in process.stdout:
        if "Trainer ..." in line:
            time.sleep(3)
            process.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "training never started"
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (work / "Trainer" / "span-0" / runner.COMPLETE_MARKER).exists()

    # 3 epochs are too few to read: this test is about resuming, so the floor is off.
    manifest = runner.run(
        config_for(
            project,
            workdir=str(work),
            export_dir=str(tmp_path / "export"),
            train_overrides={"epochs": 3, "max_minutes": 2.0},
            push=PushConfig(min_accuracy=0.0),
        )
    )
    assert statuses(manifest) == {
        "ExampleGen": "skipped",
        "Validation": "skipped",
        "Trainer": "ran",
        "Evaluator": "ran",
        "Pusher": "ran",
    }
    assert versions(tmp_path / "export") == ["1"]


def test_retrain_pushes_a_clean_batch_and_refuses_unknown_characters(project, first_run):
    new_batch = write_clean_images(project["root"] / "batch1", 200, seed=2)
    seen = sorted(project["images"].iterdir())[0]  # already in span 0
    shutil.copy(seen, new_batch / f"{seen.name.split('_')[0]}_again.png")
    # A tiny model trained for two minutes reads the eval split within a point of its last
    # version; the test is that a clean batch is taken and pushed, not that it always gains.
    push = PushConfig(tolerance=0.02)
    manifest = runner.retrain(config_for(project, images=str(new_batch), push=push))
    (duplicate,) = [
        json.loads(line)
        for line in (project["root"] / "work" / "ExampleGen" / "span-1" / "rejected.jsonl")
        .read_text()
        .splitlines()
    ]
    assert duplicate["reason"] == "duplicate" and duplicate["earlier_span"] == 0
    assert duplicate["detail"] == f"already in span 0 as {seen}"
    assert set(statuses(manifest).values()) == {"ran"}
    assert manifest["exported"]["pushed"], manifest["exported"]
    assert versions(project["root"] / "export") == ["1", "2"]
    trained_on = json.loads(
        (project["root"] / "work" / "Trainer" / "span-1" / "train_summary.json").read_text()
    )["examples_dirs"]
    assert [pathlib.Path(d).name for d in trained_on] == ["span-0", "span-1"]

    bad_batch = write_clean_images(
        project["root"] / "batch2", 30, seed=3, alphabet=CLEAN_ALPHABET + "9"
    )
    with pytest.raises(runner.PipelineStopped, match="outside the vocabulary") as stopped:
        runner.retrain(config_for(project, images=str(bad_batch)))
    assert "9" in str(stopped.value)
    assert versions(project["root"] / "export") == ["1", "2"]


def test_a_model_that_reads_nothing_is_not_pushed_and_the_run_fails(project, tmp_path, capsys):
    from pipeline import cli

    frozen = tmp_path / "frozen.json"  # a learning rate of 0: the model cannot learn
    dataclasses.replace(TINY_MODEL, learning_rate=0.0).to_json(str(frozen))
    status = cli.main(
        [
            "run",
            "--images",
            str(project["images"]),
            "--workdir",
            str(tmp_path / "work"),
            "--export-dir",
            str(tmp_path / "export"),
            "--hyperparameters",
            str(frozen),
            "--epochs",
            "2",
        ]
    )
    assert status == 1
    error = capsys.readouterr().err
    assert "nothing was pushed" in error and "below the threshold 0.5000" in error
    assert "Try: more labelled captchas" in error and "--force-push" in error
    assert not (tmp_path / "export").exists() or versions(tmp_path / "export") == []
    assert (tmp_path / "work" / runner.REPORT_FILE).is_file()

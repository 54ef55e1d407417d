"""Logs a person can read: a progress bar on a terminal, one line per epoch in a log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from helpers import CLEAN_HEIGHT, CLEAN_WIDTH, PROJECT_ROOT, tiny_model

from components.progress import LINE_PER_EPOCH, PROGRESS_BAR, keras_verbose

EPOCHS = 12
EPOCH_LINE = re.compile(r"^\d+/\d+ - \d+s - .*loss: ", re.MULTILINE)  # Keras' verbose=2 line


def test_auto_is_a_bar_on_a_terminal_only(tmp_path):
    controller, terminal = os.openpty()
    with os.fdopen(terminal, "w") as tty, open(tmp_path / "log", "w") as log:
        assert keras_verbose("auto", tty) == PROGRESS_BAR
        assert keras_verbose("auto", log) == LINE_PER_EPOCH
        assert keras_verbose(0, tty) == 0 and keras_verbose(1, log) == 1
    os.close(controller)


def test_training_logged_to_a_file_has_one_line_per_epoch(clean_examples, tmp_path):
    hyperparameters = tmp_path / "tiny.json"
    tiny_model(image_height=CLEAN_HEIGHT, image_width=CLEAN_WIDTH).to_json(str(hyperparameters))
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "train",
                "--examples",
                str(clean_examples),
                "--output",
                str(tmp_path / "model"),
                "--hyperparameters",
                str(hyperparameters),
                "--epochs",
                str(EPOCHS),
            ],
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    text = log.read_text()
    assert "\r" not in text and "\b" not in text
    assert len(EPOCH_LINE.findall(text)) == EPOCHS, text
    assert len(re.findall(r"^Epoch \d+/", text, re.MULTILINE)) == EPOCHS
    assert len(text.splitlines()) < 4 * EPOCHS + 40, text  # the rest: a few lines per epoch at most

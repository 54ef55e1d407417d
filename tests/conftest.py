"""Shared fixtures: real data on disk, small and fast; nothing downloads."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the helpers load TensorFlow

import pathlib

import pytest
from helpers import (
    CLEAN_ALPHABET,
    REAL_CAPTCHAS,
    clean_captcha,
    tiny_model,
    tiny_training,
    write_examples_dir,
)


@pytest.fixture(scope="session")
def real_captchas() -> pathlib.Path:
    if not REAL_CAPTCHAS.is_dir():
        pytest.skip(f"real captchas not found at {REAL_CAPTCHAS} (../shared/data is absent)")
    return REAL_CAPTCHAS


SYNTHETIC_COUNT = 150


@pytest.fixture(scope="session")
def synthetic_images(tmp_path_factory) -> pathlib.Path:
    """A folder of SYNTHETIC_COUNT seeded 200x50 captcha PNGs named `<label>_<n>.png`."""
    from components.synth import SynthConfig, generate

    folder = tmp_path_factory.mktemp("synthetic_images")
    generate(str(folder), SynthConfig(count=SYNTHETIC_COUNT, seed=0), show_progress=False)
    return folder


@pytest.fixture(scope="session")
def real_captcha_examples(real_captchas, tmp_path_factory) -> pathlib.Path:
    """The real captchas ingested by run_ingest with default options."""
    from components.example_gen import IngestConfig, run_ingest

    output = tmp_path_factory.mktemp("real_captcha_examples") / "examples"
    run_ingest(str(real_captchas), str(output), IngestConfig())
    return output


@pytest.fixture(scope="session")
def synthetic_examples(synthetic_images, tmp_path_factory) -> pathlib.Path:
    """`synthetic_images` ingested by run_ingest with default options (Split-*/, vocab.txt, ...)."""
    from components.example_gen import IngestConfig, run_ingest

    output = tmp_path_factory.mktemp("synthetic_examples") / "examples"
    run_ingest(str(synthetic_images), str(output), IngestConfig())
    return output


@pytest.fixture(scope="session")
def clean_examples(tmp_path_factory) -> pathlib.Path:
    """Examples that any working CTC model learns in a few epochs: 2-4 of 4 characters, 64x24."""
    import random

    rng = random.Random(0)

    def items(count: int) -> list:
        labels = [
            "".join(rng.choice(CLEAN_ALPHABET) for _ in range(rng.randint(2, 4)))
            for _ in range(count)
        ]
        return [(clean_captcha(label, rng), label) for label in labels]

    output = tmp_path_factory.mktemp("clean_examples") / "examples"
    return write_examples_dir(
        output, {"train": items(480), "eval": items(60)}, list(CLEAN_ALPHABET)
    )


@pytest.fixture(scope="session")
def trained_model_dir(synthetic_examples, tmp_path_factory) -> pathlib.Path:
    """A tiny model trained by run_train for 2 epochs on `synthetic_examples` (reads little)."""
    from components.trainer import run_train

    model_config = tiny_model(image_width=128, dropout=0.1, lstm_dropout=0.1)
    output = tmp_path_factory.mktemp("trained_model") / "model"
    run_train(str(synthetic_examples), str(output), model_config, tiny_training())
    return output


@pytest.fixture(scope="session")
def exported_model_base(trained_model_dir, tmp_path_factory) -> pathlib.Path:
    """`trained_model_dir` exported by the Pusher (no blessing): a TF Serving base with `1/`."""
    from components.pusher import export_model

    base = tmp_path_factory.mktemp("exported_model") / "captcha"
    export_model(str(trained_model_dir), str(base))
    return base

"""Where training starts: the model shipped with the package, an earlier model, or scratch.

The shipped model (package data in `components/pretrained/`, written by `captcha-ocr
pretrain`) fixes what its weights depend on: the network (conv filters, kernel, batch norm,
dense and LSTM units), the input height and one input channel. The width, hence the number
of CTC frames, stays free, since no weight depends on it; the character set is mapped row by
row (`trainer.warm_start`). A first training with `start="auto"` starts from it when the
recipe's network is the shipped one and the recipe leaves the height free or pins the same;
otherwise it trains from scratch and says why in one log line. `start="pretrained"` makes
either mismatch an error, as does an explicit `warm_start` (retraining's earlier model).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
from typing import Any

import tensorflow as tf

from components import artifact_io
from components.model import ModelConfig
from components.trainer import MODEL_CONFIG_FILE, MODEL_FILE, TrainConfig

log = logging.getLogger(__name__)

# The package's copy; the environment variable points elsewhere (tests, a newer pretraining).
PACKAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
PRETRAINED_ENV = "CAPTCHA_OCR_PRETRAINED"
PROVENANCE_FILE = "provenance.json"
PRETRAINED = "pretrained"  # `predict --model pretrained`: the shipped model alone


def shipped_dir() -> str:
    """Where the shipped model is looked for: $CAPTCHA_OCR_PRETRAINED, else the package's."""
    return os.environ.get(PRETRAINED_ENV) or PACKAGE_DIR


def shipped_model() -> str | None:
    """The shipped model's folder, or None when no weights are shipped (yet)."""
    folder = shipped_dir()
    return folder if tf.io.gfile.exists(posixpath.join(folder, MODEL_FILE)) else None


class StartRefused(ValueError):
    """A start that was asked for (--start pretrained, a warm start) cannot be used."""


def shipped_provenance() -> dict[str, Any] | None:
    """The shipped model's provenance.json: part of the Trainer's fingerprint in a pipeline,
    so that new shipped weights train again rather than skip."""
    source = shipped_model()
    path = posixpath.join(source, PROVENANCE_FILE) if source else None
    return artifact_io.read_json(path) if path and tf.io.gfile.exists(path) else None


def network(config: ModelConfig) -> str:
    """What the weights' shapes depend on besides the height, in words."""
    norm = " with batch norm" if config.batch_norm else ""
    return (
        f"conv {'-'.join(map(str, config.conv_filters))}{norm} (kernel {config.kernel_size}), "
        f"dense {config.dense_units}, BiLSTM {'-'.join(map(str, config.lstm_units))}"
    )


def mismatch(source: str, model_config: ModelConfig) -> str | None:
    """Why a model in `source` cannot start this recipe's training, or None when it can."""
    trained = ModelConfig.from_json(posixpath.join(source, MODEL_CONFIG_FILE))
    if network(trained) != network(model_config):
        return (
            f"the model in {source} is {network(trained)}; this recipe's is {network(model_config)}"
        )
    if model_config.image_height not in (None, trained.image_height):
        return (
            f"this recipe pins the input height at {model_config.image_height}; "
            f"the model reads {trained.image_height}"
        )
    return None


@dataclasses.dataclass(frozen=True)
class Start:
    """The start a training uses: the recipe it trains with, and why (for the summary)."""

    model_config: ModelConfig
    train_config: TrainConfig
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.train_config.start,
            "from": self.train_config.warm_start,
            "input_height": self.model_config.image_height,
            "reason": self.reason,
        }


def _fine_tune(model_config: ModelConfig, train_config: TrainConfig, source: str) -> Start:
    """The recipe for starting from the model in `source`: its height and the fine-tuning
    rate (TrainConfig.fine_tune_rate_scale)."""
    height = ModelConfig.from_json(posixpath.join(source, MODEL_CONFIG_FILE)).image_height
    rate = model_config.learning_rate * train_config.fine_tune_rate_scale
    model_config = dataclasses.replace(model_config, image_height=height, learning_rate=rate)
    log.info(
        "starting from the model in %s (input height %d), fine-tuning at peak rate %.2g",
        source,
        height,
        rate,
    )
    whose = "the earlier model given" if train_config.warm_start else "the shipped model"
    train_config = train_config.replace(start="pretrained", warm_start=source)
    return Start(model_config, train_config, f"{whose} fits the recipe")


def resolve_start(model_config: ModelConfig, train_config: TrainConfig) -> Start:
    """The recipe with its start decided: `start` pretrained (from `warm_start`) or scratch.

    Starting from a model pins the input height at that model's and fine-tunes it at a lower
    peak rate. Any character set fits: `trainer.warm_start` maps the rows it shares and
    gives the others fresh ones.
    """
    if train_config.start == "scratch":
        return Start(model_config, train_config, "asked for (--start scratch)")
    source = train_config.warm_start or shipped_model()
    if source is None:
        problem = f"no model is shipped with the package (none in {shipped_dir()})"
    else:
        problem = mismatch(source, model_config)
    if problem is None:
        return _fine_tune(model_config, train_config, source)
    if train_config.start == "pretrained" or train_config.warm_start:
        raise StartRefused(f"cannot start from a pretrained model: {problem}")
    log.info("training from scratch: %s", problem)
    return Start(model_config, train_config.replace(start="scratch"), problem)


def export_shipped(export_dir: str) -> str:
    """The shipped model as a SavedModel version under `export_dir`: the zero-shot reader."""
    from components.pusher import export_model

    source = shipped_model()
    if source is None:
        raise FileNotFoundError(
            f"no model is shipped with the package (none in {shipped_dir()}): "
            f"`captcha-ocr pretrain --out DIR` trains one, {PRETRAINED_ENV}=DIR uses it"
        )
    return export_model(source, export_dir)

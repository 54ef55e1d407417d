"""The recipes in one place, as TFX templates keep `configs.py`: profiles, demo data, tuner budgets.

Components take plain config dataclasses; this module says which values the pipeline uses.
`resolve_recipe` is the one way a profile, a hyperparameters file and command-line overrides
combine, for `train`, `tune`, `run` and `retrain` alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from components.augmentation import AugmentConfig
from components.model import KERAS_EXAMPLE, ModelConfig
from components.synth import SynthConfig
from components.trainer import TrainConfig


@dataclasses.dataclass(frozen=True)
class Profile:
    """A network (ModelConfig) and how to train it (TrainConfig)."""

    model: ModelConfig
    train: TrainConfig


# The Keras example's recipe: its architecture, batch 16, Adam 1e-3, early stopping with
# patience 10 on val_loss (which can stop inside the CTC plateau and read nothing).
KERAS_EXAMPLE_TRAINING = TrainConfig(
    epochs=100, batch_size=16, monitor="val_loss", patience=10, lr_schedule="constant"
)

PROFILES: dict[str, Profile] = {
    # The demo: `captcha-ocr run` on DEMO_SYNTH, 5 minutes of training on 2 cores. Images 32
    # high (128 wide for 200x50 captchas) cost 2.5x less than at 200x50; 12 epochs on 7,219 of
    # them read 95.8 % of 1,000 fresh synthetic captchas (benchmarks/README.md). The rate is
    # held through the CTC plateau, then annealed to the end of the 5 minutes.
    "quick": Profile(
        model=ModelConfig(
            image_height=32,
            conv_filters=(16, 32, 64),
            batch_norm=True,
            dense_units=64,
            lstm_units=(96,),
            dropout=0.1,
            lstm_dropout=0.1,
            learning_rate=3e-3,
        ),
        train=TrainConfig(
            epochs=10_000,
            batch_size=32,
            lr_schedule="hold-cosine",
            warmup_epochs=1,
            max_minutes=5.0,
            max_restarts=1,
        ),
    ),
    # The best model: batch norm, a third conv block, augmentation; the input size from the
    # data. Thin early convs (16, 32 filters) where the activations are largest and one
    # BiLSTM read the real captchas as well as conv 32-64-64 + BiLSTM 128-64 did, at 2.5x its
    # serving speed and twice its training speed (benchmarks/README.md). The rate is held
    # until the model reads, then decays over 40 epochs but at least 3,000 steps (a small
    # data set needs steps, not epochs), within 14 minutes; an attempt reading nothing after
    # 40 epochs and at least 3,000 steps, or after 40 % of the budget, starts again with
    # another seed (twice at most). Started from a model that
    # already reads (the shipped one, an earlier version), it fine-tunes at a quarter of
    # the peak rate (benchmarks/README.md, head_start.py). Training batches are grouped by
    # width in 8 buckets: `wide` trained in 8.1 minutes instead of 11.4 on the same host and
    # read 74.4 % against 71.0 % (one seed; benchmarks/README.md, "width buckets").
    "full": Profile(
        model=ModelConfig(
            conv_filters=(16, 32, 64),
            batch_norm=True,
            dense_units=128,
            lstm_units=(128,),
            dropout=0.2,
            lstm_dropout=0.25,
            learning_rate=2e-3,
        ),
        train=TrainConfig(
            epochs=10_000,
            batch_size=16,
            lr_schedule="hold-cosine",
            warmup_epochs=2,
            decay_epochs=40,
            min_decay_steps=3000,
            fine_tune_rate_scale=0.25,
            plateau_epochs=40,
            min_plateau_steps=3000,
            max_restarts=2,
            augment=AugmentConfig(),
            max_minutes=14.0,
            width_buckets=8,
        ),
    ),
    # The Keras example "OCR model for reading Captchas", kept as the baseline to beat.
    "keras-example": Profile(model=KERAS_EXAMPLE, train=KERAS_EXAMPLE_TRAINING),
}
DEFAULT_PROFILE = "quick"

# The synthetic captchas `captcha-ocr run` makes when given no images: 4-6 characters at
# 200x50 like the synth defaults, from the 31 symbols left when the look-alikes 0/o and
# 1/l/i are dropped (as real captcha sets do; they were the quick model's most frequent
# confusions). 8,000 images: 6,400 to train on (80 %), 1,600 to evaluate; generating and
# ingesting them takes about 1 minute each on 2 cores.
DEMO_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
DEMO_SYNTH = SynthConfig(count=8000, seed=0, alphabet=DEMO_ALPHABET, min_length=4, max_length=6)

# The Tuner's search budget inside `run`, per profile (TuneConfig fields); the real budgets
# for a best model are measured in benchmarks/tune.py. A profile without one is not tuned.
TUNE_BUDGETS: dict[str, dict[str, Any]] = {
    # Trials train with the profile's recipe in a shorter budget: `full`'s 60 minutes hold the
    # profile's own model (trial 0) and up to 7 others, each ending before the budget does.
    "quick": {
        "algorithm": "random",
        "max_trials": 3,
        "trial_minutes": 1.5,
        "time_budget_minutes": 5,
    },
    "full": {"algorithm": "bayesian", "trial_minutes": 7.0, "time_budget_minutes": 60},
}
# `run` tunes first with this profile unless told otherwise (--tune / --no-tune).
TUNED_BY_DEFAULT = ("full",)


def resolve_recipe(
    profile: str, hyperparameters: str | None = None, **train_overrides: Any
) -> Profile:
    """The profile's recipe; its model replaced by a ModelConfig JSON, its training by overrides.

    `train_overrides` are TrainConfig fields; None values mean "not given" and are ignored,
    so command-line flags pass straight through.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: one of {', '.join(PROFILES)}")
    recipe = PROFILES[profile]
    model = ModelConfig.from_json(hyperparameters) if hyperparameters else recipe.model
    changes = {k: v for k, v in train_overrides.items() if v is not None}
    return Profile(model=model, train=recipe.train.replace(**changes))

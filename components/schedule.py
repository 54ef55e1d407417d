"""Learning-rate schedules that respect the CTC blank plateau and the time budget.

A CTC model first reads nothing for a while (the blank plateau), and how long varies with
the data set and the seed: a schedule that decays meanwhile can end a run that never read.
`HoldThenCosine` warms up, holds the peak rate until the model reads (validation
whole-captcha accuracy above LEARNING_STARTED), then decays along a cosine for its decay
steps or until the deadline, whichever comes first, and ends training there: the decay is
measured in steps (at least `min_decay_steps`, so a small data set gets enough of them) and
in time, never in a fixed count of epochs. A model that still reads nothing after
`plateau_epochs` epochs (the trainer makes them at least `min_plateau_steps` steps) or
`plateau_seconds` is flagged `stalled` and stopped, for the trainer to restart
(`components/trainer.py`), unless its validation CER shows that it is leaving the plateau
(restarting it would throw that away); on the last attempt, and for a model that is leaving
the plateau, the decay starts instead.
"""

from __future__ import annotations

import logging
import math
import time

import keras

log = logging.getLogger(__name__)

LEARNING_STARTED = 0.05  # validation whole-captcha accuracy that ends the plateau
READING = "val_sequence_accuracy"
# A model in the plateau answers blanks: validation CER 1.0 (or more, with garbage). One whose
# CER fell this far below that (or below its first epoch's) is leaving it: not restarted.
LEAVING_PLATEAU_CER_DROP = 0.05


class StopAtDeadline(keras.callbacks.Callback):
    """Ends training before an epoch that would end past `deadline` (a `time.time()`).

    The first epoch always runs; afterwards an epoch is assumed to take as long as the last.
    """

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline
        self.stopped = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = time.time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.time()
        if now + (now - self.epoch_start) > self.deadline:
            self.stopped = True
            self.model.stop_training = True


class HoldThenCosine(keras.callbacks.Callback):
    """Warmup, the peak held while the model reads nothing, then a cosine to `floor`.

    `decay_steps` None: the decay ends at the deadline. Sets the optimizer's learning rate
    before every step; ends training when the decay is over or the deadline is reached.
    """

    def __init__(
        self,
        *,
        peak: float,
        floor: float,
        warmup_steps: int,
        decay_steps: int | None,
        deadline: float | None,
        plateau_epochs: int | None,
        plateau_seconds: float | None,
        last_attempt: bool,
    ) -> None:
        super().__init__()
        if decay_steps is None and deadline is None:
            raise ValueError("the decay needs a length: decay steps or a deadline")
        self.peak, self.floor, self.warmup_steps = peak, floor, warmup_steps
        self.decay_steps, self.deadline = decay_steps, deadline
        self.plateau_epochs, self.plateau_seconds = plateau_epochs, plateau_seconds
        self.last_attempt = last_attempt
        self.stalled = False
        self.reading_began_epoch: int | None = None  # 1-based
        self.first_cer: float | None = None  # validation CER after the first epoch
        self.best_cer = math.inf
        self.decay_from: tuple[int, float] | None = None  # (step, time) where the decay began

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.time()
        self.step = 0

    def progress(self, now: float) -> float:
        """Share of the decay done: by steps or by time, whichever is further."""
        step0, time0 = self.decay_from
        shares = []
        if self.decay_steps is not None:
            shares.append((self.step - step0) / max(1, self.decay_steps))
        if self.deadline is not None:
            shares.append((now - time0) / max(1e-9, self.deadline - time0))
        return min(1.0, max(shares))

    def learning_rate(self, now: float) -> float:
        if self.step < self.warmup_steps:
            return self.peak * (0.1 + 0.9 * self.step / self.warmup_steps)
        if self.decay_from is None:
            return self.peak
        cosine = 0.5 * (1.0 + math.cos(math.pi * self.progress(now)))
        return self.floor + (self.peak - self.floor) * cosine

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        now = time.time()
        over = self.deadline is not None and now >= self.deadline
        if over or (self.decay_from is not None and self.progress(now) >= 1.0):
            self.model.stop_training = True
        self.model.optimizer.learning_rate.assign(self.learning_rate(now))
        self.step += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.decay_from is not None:
            return
        logs = logs or {}
        reading = logs.get(READING, 0.0)
        self._track_cer(logs.get("val_cer"))
        if reading > LEARNING_STARTED:
            self.reading_began_epoch = epoch + 1
            self._start_decay(
                f"the model reads {reading:.0%} of the validation captchas after {epoch + 1} epochs"
            )
            return
        waited = time.time() - self.start
        too_long = (self.plateau_epochs is not None and epoch + 1 >= self.plateau_epochs) or (
            self.plateau_seconds is not None and waited >= self.plateau_seconds
        )
        if not too_long:
            return
        if self.leaving_plateau:
            self._start_decay(
                f"no whole captcha read after {epoch + 1} epochs ({waited / 60:.1f} min), but "
                f"the validation CER fell to {self.best_cer:.2f}: the model is leaving the "
                "plateau, so it is kept rather than restarted"
            )
        elif self.last_attempt:
            self._start_decay(
                f"still reading nothing after {epoch + 1} epochs "
                f"({waited / 60:.1f} min), no restart left"
            )
        else:
            self.stalled = True
            self.model.stop_training = True

    def _track_cer(self, cer: float | None) -> None:
        if cer is None:
            return
        if self.first_cer is None:
            self.first_cer = cer
        self.best_cer = min(self.best_cer, cer)

    @property
    def leaving_plateau(self) -> bool:
        """Whether the validation CER fell clearly below the plateau's (blank answers: 1.0)."""
        if self.first_cer is None:
            return False
        return self.best_cer < min(1.0, self.first_cer) - LEAVING_PLATEAU_CER_DROP

    def _start_decay(self, why: str) -> None:
        self.decay_from = (self.step, time.time())
        length = [f"{self.decay_steps} steps"] if self.decay_steps is not None else []
        if self.deadline is not None:
            length.append(f"the time budget ({(self.deadline - time.time()) / 60:.1f} min left)")
        log.info(
            "%s: decaying the learning rate from %.2g over %s", why, self.peak, " or ".join(length)
        )

"""Learning-rate and λ schedules.

Both are pure functions of counters kept in the training state, so a run resumed from a
checkpoint continues with exactly the values of an uninterrupted run.
"""

from __future__ import annotations

import math
from typing import Any

from trainable.config import LambdaScheduleConfig


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float,
                  min_lr_ratio: float) -> float:
    """Return the learning rate of optimiser step ``step`` (0-based).

    Linear warmup from ``base_lr / warmup_steps`` to ``base_lr`` over ``warmup_steps`` steps,
    then a half cosine from ``base_lr`` down to ``base_lr * min_lr_ratio`` at the last step.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps - 1, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    floor = base_lr * min_lr_ratio
    return floor + (base_lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class LambdaSchedule:
    """The distillation weight λ over the training epochs (1-based; epoch 0 uses the initial λ).

    Call :meth:`value` for the λ of an epoch's training, and :meth:`observe` with each epoch's
    ``val_score``, which only the plateau schedule uses.
    """

    def __init__(self, settings: LambdaScheduleConfig, initial: float, epochs: int):
        self.settings = settings
        self.initial = initial
        self.epochs = epochs
        # Plateau state: the current λ, the best score so far and the epochs since it.
        self.current = initial
        self.best_score = -math.inf
        self.epochs_without_improvement = 0

    def value(self, epoch: int) -> float:
        """Return λ for training epoch ``epoch``."""
        kind = self.settings.type
        if epoch <= 0 or kind == "constant":
            return self.initial if kind != "plateau" else self.current
        if kind == "plateau":
            return self.current
        if kind == "step":
            return self.initial * self.settings.gamma ** ((epoch - 1) // self.settings.step_size)
        if kind == "cosine":
            if self.epochs <= 1:
                return self.initial
            progress = (epoch - 1) / (self.epochs - 1)
            fraction = self.settings.final_fraction
            return self.initial * (fraction + (1 - fraction) * 0.5 * (1 + math.cos(math.pi * progress)))
        if kind == "staged":
            in_first_stage = epoch <= self.settings.stage_epochs
            return self.initial if in_first_stage != self.settings.reverse else 0.0
        raise ValueError(f"unknown λ schedule type {kind!r}")

    def observe(self, score: float) -> None:
        """Record an epoch's ``val_score``; a plateau of ``patience`` epochs scales λ by ``factor``."""
        if self.settings.type != "plateau":
            return
        if score > self.best_score + self.settings.threshold:
            self.best_score = score
            self.epochs_without_improvement = 0
            return
        self.epochs_without_improvement += 1
        if self.epochs_without_improvement >= self.settings.patience:
            reduced = self.current * self.settings.factor
            self.current = min(max(reduced, self.settings.min_lambda), self.settings.max_lambda)
            self.epochs_without_improvement = 0

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current, "best_score": self.best_score,
                "epochs_without_improvement": self.epochs_without_improvement}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = state["current"]
        self.best_score = state["best_score"]
        self.epochs_without_improvement = state["epochs_without_improvement"]

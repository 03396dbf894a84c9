"""Each λ schedule against values worked out by hand."""

import math

import pytest

from trainable.config import LambdaScheduleConfig
from trainable.schedules import LambdaSchedule


def values(settings, initial, epochs):
    schedule = LambdaSchedule(settings, initial, epochs)
    return [schedule.value(epoch) for epoch in range(epochs + 1)]


def test_constant():
    assert values(LambdaScheduleConfig(type="constant"), 2.0, 3) == [2.0, 2.0, 2.0, 2.0]


def test_step_halves_every_two_epochs():
    settings = LambdaScheduleConfig(type="step", step_size=2, gamma=0.5)
    assert values(settings, 1.0, 5) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]


def test_cosine_reaches_final_fraction_at_last_epoch():
    settings = LambdaScheduleConfig(type="cosine", final_fraction=0.2)
    result = values(settings, 1.0, 5)
    # Epoch e of 5 is at progress (e - 1) / 4; λ = 0.2 + 0.8 * (1 + cos(pi * progress)) / 2.
    expected = [1.0, 1.0, 0.2 + 0.4 * (1 + math.cos(math.pi / 4)), 0.6,
                0.2 + 0.4 * (1 + math.cos(3 * math.pi / 4)), 0.2]
    assert result == pytest.approx(expected)


def test_staged_on_then_off_and_reverse():
    assert values(LambdaScheduleConfig(type="staged", stage_epochs=2), 1.5, 4) == [
        1.5, 1.5, 1.5, 0.0, 0.0]
    assert values(LambdaScheduleConfig(type="staged", stage_epochs=2, reverse=True), 1.5, 4) == [
        1.5, 0.0, 0.0, 1.5, 1.5]


def test_plateau_scales_after_patience_and_respects_floor():
    settings = LambdaScheduleConfig(type="plateau", factor=0.5, patience=2, threshold=0.0,
                                    min_lambda=0.3)
    schedule = LambdaSchedule(settings, 1.0, 10)
    lambdas = []
    # Epoch 0 sets the best score; epoch 1 improves; then five epochs without improvement.
    for score in (0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6):
        schedule.observe(score)
        lambdas.append(schedule.value(1))
    # Two epochs without improvement halve λ (after epoch 3), two more would give 0.25,
    # which the floor of 0.3 raises (after epoch 5).
    assert lambdas == [1.0, 1.0, 1.0, 0.5, 0.5, 0.3, 0.3]


def test_plateau_state_round_trip():
    settings = LambdaScheduleConfig(type="plateau", factor=0.5, patience=1)
    first = LambdaSchedule(settings, 1.0, 5)
    for score in (0.5, 0.4):
        first.observe(score)
    second = LambdaSchedule(settings, 1.0, 5)
    second.load_state_dict(first.state_dict())
    second.observe(0.4)
    first.observe(0.4)
    assert second.value(3) == first.value(3) == 0.25

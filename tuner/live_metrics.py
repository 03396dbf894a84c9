"""Live trial progress as Ray metrics, for the Metrics view of the Ray dashboard.

After every epoch a trial sets four Ray gauges (epoch, val_dice, val_iou and λ) tagged with its
trial id and trial name. The metrics agent of the node that runs the trial exports them to
Prometheus with Ray's ``ray_`` prefix, so in Grafana the query
``ray_mobilesam_trial_val_dice`` draws one line per trial. A gauge keeps its last value, so
the series of a finished trial stays at its final epoch until the search's driver exits. Then
the node stops exporting the gauges of that Ray job.
"""

from __future__ import annotations

import functools

from ray.util.metrics import Gauge

from trainable.run import EpochResult, TrainingRun

METRIC_PREFIX = "mobilesam_trial_"
TAG_KEYS = ("trial_id", "trial_name")
DESCRIPTIONS = {
    "epoch": "Last finished epoch of the trial; 0 is the validation before training.",
    "val_dice": "Validation Dice of the trial's last finished epoch.",
    "val_iou": "Validation IoU of the trial's last finished epoch.",
    "lambda": "Distillation weight lambda of the trial's last finished epoch.",
}


@functools.cache
def trial_gauges() -> dict[str, Gauge]:
    """Return the gauges by field name, created once per worker process."""
    return {field: Gauge(METRIC_PREFIX + field, description, tag_keys=TAG_KEYS)
            for field, description in DESCRIPTIONS.items()}


class LiveMetrics:
    """Epoch observer that sets the trial's gauges to the epoch just finished."""

    def __init__(self, trial_id: str, trial_name: str):
        self.tags = {"trial_id": trial_id, "trial_name": trial_name}

    def __call__(self, result: EpochResult, run: TrainingRun) -> None:
        values = {
            "epoch": result.epoch,
            "val_dice": result.metrics["val_dice"],
            "val_iou": result.metrics["val_iou"],
            "lambda": result.lambda_coef,
        }
        for field, gauge in trial_gauges().items():
            gauge.set(float(values[field]), tags=self.tags)

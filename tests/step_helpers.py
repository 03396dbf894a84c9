"""Helpers for the tests of the train step: step settings, and gradients read and compared."""

from __future__ import annotations

import torch

from trainable.step import StepSettings

# The default loss weights of the training config.
WEIGHTS = {"bce": 1.0, "focal": 20.0, "dice": 1.0, "iou": 1.0, "cls": 1.0}
# The chunked schedules of ``train_image``.
SCHEDULES = ("two_pass", "matched_redecode")


def step_settings(chunk_size: int, threshold: float = 0.0,
                  schedule: str = "auto") -> StepSettings:
    """Return step settings with the default weights. Threshold 0 makes every Hungarian pair
    foreground, so that every loss term carries gradient."""
    return StepSettings(loss_weights=WEIGHTS, match_iou_threshold=threshold, focal_alpha=0.25,
                        focal_gamma=2.0, chunk_size=chunk_size, schedule=schedule)


def gradients(sam: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Return a copy of every parameter gradient of ``sam`` by parameter name."""
    return {name: p.grad.clone() for name, p in sam.named_parameters() if p.grad is not None}


def assert_gradients_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                           schedule: str = "two_pass") -> None:
    """Assert that every gradient of ``expected`` equals its ``actual`` one up to float32
    summation order."""
    for name, grad in expected.items():
        atol = 1e-7
        if schedule == "matched_redecode":
            # A foreground candidate's classification gradient arrives in two parts of opposite
            # sign, 1/(1-p) from the first pass and -1/p - 1/(1-p) from the re-decode, so its
            # rounding error scales with the tensor's largest gradient, not with each element.
            atol += 1e-6 * float(grad.abs().max())
        torch.testing.assert_close(actual[name], grad, rtol=1e-4, atol=atol,
                                   msg=f"gradient of {name}")

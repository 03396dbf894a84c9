"""The task losses of segment-everything training.

Every function returns the SUM over the candidates or pairs it is given, not the mean, so that a
grid decoded in chunks adds up to exactly the loss of the whole grid; :class:`LossNormaliser`
divides by the counts of the whole image at the end.

- Mask terms (BCE, focal, Dice) on foreground pairs, each pair's pixel terms averaged over the
  256x256 logit frame.
- IoU term: squared error between the IoU head's output and the pair's actual IoU.
- Classification term: every candidate is foreground (1) or background (0); SAM's IoU head
  output is the confidence, so it enters BCE as a probability (clamped), not as a logit, and an
  exported model keeps the meaning that SAM's ``pred_iou_thresh`` relies on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TASK_TERMS = ("bce", "focal", "dice", "iou", "cls")

# The IoU head is not bounded to [0, 1], so it is clamped before BCE to keep log() finite.
PROBABILITY_EPS = 1e-6
# Added to the Dice numerator and denominator so that two empty masks give a loss of 0.
DICE_SMOOTH = 1.0


def bce_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over pairs of the per-pixel mean binary cross-entropy. Shapes (P, H, W)."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return per_pixel.flatten(1).mean(1).sum()


def focal_sum(logits: torch.Tensor, targets: torch.Tensor, alpha: float,
              gamma: float) -> torch.Tensor:
    """Sum over pairs of the per-pixel mean sigmoid focal loss (Lin et al., 2017)."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    per_pixel = alpha_t * (1 - p_t) ** gamma * ce
    return per_pixel.flatten(1).mean(1).sum()


def dice_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over pairs of the soft Dice loss 1 - (2|p*g| + s) / (|p| + |g| + s)."""
    prob = torch.sigmoid(logits).flatten(1)
    gt = targets.flatten(1)
    numerator = 2 * (prob * gt).sum(1) + DICE_SMOOTH
    denominator = prob.sum(1) + gt.sum(1) + DICE_SMOOTH
    return (1 - numerator / denominator).sum()


def iou_sum(predicted_iou: torch.Tensor, actual_iou: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors between the IoU head's output and the actual IoU."""
    return ((predicted_iou - actual_iou) ** 2).sum()


def cls_sum(predicted_iou: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of BCE between the IoU head's output, read as a probability, and 0/1 labels."""
    # Written out rather than F.binary_cross_entropy, which raises on NaN input instead of
    # returning NaN for the caller's finiteness check.
    prob = predicted_iou.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return -(labels * torch.log(prob) + (1 - labels) * torch.log1p(-prob)).sum()


class LossNormaliser:
    """Turns summed terms into the image's loss: mask and IoU terms over its foreground pairs,
    the classification term over all its candidates."""

    def __init__(self, num_foreground: int, num_candidates: int):
        self.num_foreground = num_foreground
        self.num_candidates = num_candidates

    def __call__(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # With no foreground pair the mask and IoU sums are 0, and so are their means.
        foreground = max(self.num_foreground, 1)
        candidates = max(self.num_candidates, 1)
        return {name: value / (candidates if name == "cls" else foreground)
                for name, value in sums.items()}


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Return sum of weights[name] * terms[name] over the task terms."""
    return sum(weights[name] * terms[name] for name in TASK_TERMS)

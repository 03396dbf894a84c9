"""One image's training step: predict over the grid, match, compute the losses, backpropagate.

When the grid fits in one decoder chunk the step is the plain computation. Otherwise it runs in
two passes so that memory is set by the chunk size:

1. Without gradients, decode every chunk and keep only the candidates' IoU against the ground
   truth; match on the full (3K, G) matrix.
2. Decode each chunk again with gradients, compute its share of the loss (sums divided by the
   image's counts, which are known after matching) and backpropagate it into a detached copy of
   the image embedding; finally backpropagate the accumulated embedding gradient through the
   encoder once.

The loss is a sum over candidates with fixed divisors, so the gradients equal those of the
unchunked computation up to floating-point summation order.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch

from trainable.data import ImageRecord
from trainable.model import Sam
from trainable.losses import (LossNormaliser, bce_sum, cls_sum, dice_sum, focal_sum, iou_sum,
                              weighted_total)
from trainable.matching import Matching, hungarian_match, iou_matrix
from trainable.prediction import (CANDIDATES_PER_PROMPT, decode_prompts, encode_image,
                                  grid_iou_matrix, prompt_chunks)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; training cannot continue from such a step."""


@dataclass
class StepSettings:
    """What one image's step needs from the training config."""

    loss_weights: dict[str, float]
    match_iou_threshold: float
    focal_alpha: float
    focal_gamma: float
    chunk_size: int


@dataclass
class ImageStepResult:
    """Loss terms of one image (already divided by its counts) and its matching counts."""

    terms: dict[str, float]
    total: float
    num_candidates: int
    num_foreground: int


def candidate_loss_sums(logits: torch.Tensor, predicted_iou: torch.Tensor, offset: int,
                        matching: Matching, gt_low_res: torch.Tensor,
                        settings: StepSettings) -> dict[str, torch.Tensor]:
    """Return the summed task terms of the candidates ``offset .. offset + 3k`` of an image.

    Args:
        logits: (k, 3, 256, 256) decoder logits of k prompts.
        predicted_iou: (k, 3) IoU head outputs of the same prompts.
        offset: flat index of this chunk's first candidate in the image's candidate order.
        matching: the image's Hungarian pairs over all its candidates.
    """
    flat_logits = logits.flatten(0, 1).float()
    flat_iou = predicted_iou.flatten().float()
    count = flat_logits.shape[0]

    # Foreground pairs whose candidate falls in this chunk.
    candidate, gt, pair_iou = matching.foreground_pairs()
    inside = (candidate >= offset) & (candidate < offset + count)
    local = candidate[inside] - offset
    targets = gt_low_res[gt[inside]].to(flat_logits.device, torch.float32)
    pair_logits = flat_logits[local]

    labels = torch.zeros(count, device=flat_logits.device)
    labels[local] = 1.0
    return {
        "bce": bce_sum(pair_logits, targets),
        "focal": focal_sum(pair_logits, targets, settings.focal_alpha, settings.focal_gamma),
        "dice": dice_sum(pair_logits, targets),
        "iou": iou_sum(flat_iou[local], pair_iou[inside].to(flat_iou.device)),
        "cls": cls_sum(flat_iou, labels),
    }


def train_image(sam: Sam, record: ImageRecord, points: torch.Tensor, settings: StepSettings,
                loss_scale: float,
                autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> ImageStepResult:
    """Run the forward and backward pass of one image, adding ``loss_scale`` times its loss
    gradient to the model's ``.grad`` fields.

    ``autocast`` makes the context that the forward passes run in (bf16 autocast on CUDA).

    Raises:
        NonFiniteLossError: when a loss term of the image is NaN or infinite. The gradients
            are then unusable and the run must stop.
    """
    with autocast():
        embedding = encode_image(sam, record.image)
    gt_low_res = record.gt_low_res.to(embedding.device)
    num_prompts = points.shape[0]
    num_candidates = num_prompts * CANDIDATES_PER_PROMPT

    if num_prompts <= settings.chunk_size:
        with autocast():
            logits, predicted_iou = decode_prompts(sam, embedding, points)
        ious = iou_matrix(logits.detach().flatten(0, 1) > 0, gt_low_res)
        matching = hungarian_match(ious, settings.match_iou_threshold)
        normalise = LossNormaliser(int(matching.foreground.sum()), num_candidates)
        terms = normalise(candidate_loss_sums(logits, predicted_iou, 0, matching, gt_low_res,
                                              settings))
        total = weighted_total(terms, settings.loss_weights)
        _check_finite(terms, total, record)
        if total.requires_grad:  # False only while every part of the model is frozen
            (total * loss_scale).backward()
        return _result(terms, total, num_candidates, normalise.num_foreground)

    # Pass 1: match on the whole grid without keeping any graph.
    detached = embedding.detach().requires_grad_(embedding.requires_grad)
    with autocast():
        ious = grid_iou_matrix(sam, detached, points, gt_low_res, settings.chunk_size)
    matching = hungarian_match(ious, settings.match_iou_threshold)
    normalise = LossNormaliser(int(matching.foreground.sum()), num_candidates)

    # Pass 2: each chunk's share of the loss, backpropagated chunk by chunk.
    terms = {}
    for chunk in prompt_chunks(num_prompts, settings.chunk_size):
        with autocast():
            logits, predicted_iou = decode_prompts(sam, detached, points[chunk])
        offset = chunk.start * CANDIDATES_PER_PROMPT
        chunk_terms = normalise(candidate_loss_sums(logits, predicted_iou, offset, matching,
                                                    gt_low_res, settings))
        chunk_total = weighted_total(chunk_terms, settings.loss_weights)
        _check_finite(chunk_terms, chunk_total, record)
        if chunk_total.requires_grad:
            (chunk_total * loss_scale).backward()
        for name, value in chunk_terms.items():
            terms[name] = terms.get(name, 0.0) + value.detach()

    if detached.grad is not None:
        embedding.backward(detached.grad)
    total = weighted_total(terms, settings.loss_weights)
    return _result(terms, total, num_candidates, normalise.num_foreground)


def _check_finite(terms: dict[str, torch.Tensor], total: torch.Tensor,
                  record: ImageRecord) -> None:
    if math.isfinite(float(total.detach())):
        return
    values = ", ".join(f"{name}={float(value):.4g}" for name, value in terms.items())
    raise NonFiniteLossError(f"non-finite loss on image {record.image_path}: {values}; "
                             "lower the learning rate or check the image's masks")


def _result(terms: dict[str, torch.Tensor], total: torch.Tensor, num_candidates: int,
            num_foreground: int) -> ImageStepResult:
    return ImageStepResult(
        terms={name: float(value.detach()) for name, value in terms.items()},
        total=float(total.detach()),
        num_candidates=num_candidates,
        num_foreground=num_foreground,
    )

"""The train step written as the training guide describes it, for comparison with
``trainable.step.train_image``.

Every prompt goes through the decoder in one batch with its graph kept. The IoU matrix comes
from broadcasting the (3K, 1, 256, 256) candidates against the (1, G, 256, 256) ground truth,
and the losses are summed pair by pair in Python. It computes the same loss as ``train_image``
(the benchmark and ``tests/test_optimisations.py`` check that), with memory that grows with the
number of prompts.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from trainable.data import ImageRecord
from trainable.losses import PROBABILITY_EPS, TASK_TERMS
from trainable.model import Sam
from trainable.prediction import decode_prompts, encode_image
from trainable.step import StepSettings


def straightforward_step(sam: Sam, record: ImageRecord, points: torch.Tensor,
                         settings: StepSettings, loss_scale: float = 1.0,
                         autocast: Callable[[], ContextManager] = contextlib.nullcontext,
                         lap: Callable[[str], None] = lambda stage: None
                         ) -> tuple[dict[str, float], float]:
    """Run one image's forward and backward pass; return its loss terms and weighted total.

    ``autocast`` and ``lap`` work as in ``train_image``; ``lap`` is called at the end of the
    same stages.
    """
    with autocast():
        embedding = encode_image(sam, record.image)
    lap("encoder_forward")
    with autocast():
        logits, predicted_iou = decode_prompts(sam, embedding, points)
    logits = logits.flatten(0, 1).float()
    predicted_iou = predicted_iou.flatten().float()
    lap("decoder_pass1")

    gt = record.gt_low_res.to(logits.device).float()
    binary = (logits.detach() > 0).float()
    intersection = (binary[:, None] * gt[None]).sum((2, 3))
    union = ((binary[:, None] + gt[None]) > 0).float().sum((2, 3))
    ious = torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
    rows, cols = linear_sum_assignment(ious.cpu().double().numpy(), maximize=True)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols)
             if ious[r, c] >= settings.match_iou_threshold]
    lap("matching")

    zero = torch.zeros((), device=logits.device)
    sums = {"bce": zero, "focal": zero, "dice": zero, "iou": zero}
    alpha, gamma = settings.focal_alpha, settings.focal_gamma
    for candidate, gt_index in pairs:
        x, target = logits[candidate], gt[gt_index]
        prob = torch.sigmoid(x)
        cross_entropy = F.binary_cross_entropy_with_logits(x, target, reduction="none")
        p_t = prob * target + (1 - prob) * (1 - target)
        alpha_t = alpha * target + (1 - alpha) * (1 - target)
        sums["bce"] = sums["bce"] + cross_entropy.mean()
        sums["focal"] = sums["focal"] + (alpha_t * (1 - p_t) ** gamma * cross_entropy).mean()
        sums["dice"] = sums["dice"] + 1 - (2 * (prob * target).sum() + 1) / (
            prob.sum() + target.sum() + 1)
        sums["iou"] = sums["iou"] + (predicted_iou[candidate] - ious[candidate, gt_index]) ** 2
    count = max(len(pairs), 1)
    terms = {name: value / count for name, value in sums.items()}
    labels = torch.zeros_like(predicted_iou)
    for candidate, _ in pairs:
        labels[candidate] = 1.0
    terms["cls"] = F.binary_cross_entropy(
        predicted_iou.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS), labels)
    total = sum(settings.loss_weights[name] * terms[name] for name in TASK_TERMS)
    lap("losses")

    if embedding.requires_grad:
        embedding.register_hook(lambda _: lap("decoder_backward"))
    (total * loss_scale).backward()
    lap("encoder_backward")
    return {name: float(value.detach()) for name, value in terms.items()}, float(total.detach())

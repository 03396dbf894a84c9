"""Validation: pair predictions with ground-truth masks as training does, then score the pairs.

Matching runs on the 256x256 logits, as in training. Only the matched candidates are then
upsampled to the original image size, where Dice and IoU are computed on binary masks. A
ground-truth mask that gets no candidate scores 0. ``val_dice`` and ``val_iou`` are means over
all ground-truth objects of the split, and ``val_score`` is their mean.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch

from trainable.data import ImageRecord
from trainable.model import Sam
from trainable.matching import hungarian_match
from trainable.prediction import (CANDIDATES_PER_PROMPT, decode_prompts, encode_image,
                                  grid_iou_matrix, prompt_chunks)

METRIC_NAMES = ("val_dice", "val_iou", "val_score")


@dataclass
class ImageEvaluation:
    """Scores of one validation image.

    Attributes:
        dice, iou: (G,) score of each ground-truth object with its matched prediction.
        matched_masks: (P, H, W) bool predictions that were matched, at the original size.
    """

    record: ImageRecord
    dice: np.ndarray
    iou: np.ndarray
    matched_masks: np.ndarray


@torch.no_grad()
def evaluate_image(sam: Sam, record: ImageRecord, points: torch.Tensor, chunk_size: int,
                   autocast: Callable[[], ContextManager] = contextlib.nullcontext
                   ) -> ImageEvaluation:
    """Predict over the whole grid of one image and score the Hungarian pairs."""
    num_objects = record.num_objects
    height, width = record.original_size
    dice = np.zeros(num_objects)
    iou = np.zeros(num_objects)
    if num_objects == 0:
        return ImageEvaluation(record, dice, iou, np.zeros((0, height, width), dtype=bool))

    with autocast():
        embedding = encode_image(sam, record.image)
        ious = grid_iou_matrix(sam, embedding, points, record.gt_low_res, chunk_size)
    # Any threshold works here: the metrics score every pair, foreground or not.
    matching = hungarian_match(ious, threshold=0.0)

    # Decode again only the prompts whose candidates were matched.
    prompt_index = matching.candidate_index // CANDIDATES_PER_PROMPT
    slot = matching.candidate_index % CANDIDATES_PER_PROMPT
    prompts, inverse = torch.unique(prompt_index, return_inverse=True)
    chunks = []
    for chunk in prompt_chunks(prompts.shape[0], chunk_size):
        with autocast():
            logits, _ = decode_prompts(sam, embedding, points[prompts[chunk].cpu()])
        chunks.append(logits.float())
    logits = torch.cat(chunks)[inverse, slot]
    masks = sam.postprocess_masks(logits[:, None], record.input_size, record.original_size)
    predicted = (masks[:, 0] > 0).cpu()

    gt = record.gt_masks[matching.gt_index.cpu()]
    intersection = (predicted & gt).flatten(1).sum(1).double()
    predicted_area = predicted.flatten(1).sum(1).double()
    gt_area = gt.flatten(1).sum(1).double()
    union = predicted_area + gt_area - intersection
    gt_index = matching.gt_index.cpu().numpy()
    dice[gt_index] = (2 * intersection / (predicted_area + gt_area)).numpy()
    iou[gt_index] = (intersection / union).numpy()
    return ImageEvaluation(record, dice, iou, predicted.numpy())


def summarise(evaluations: list[ImageEvaluation]) -> dict[str, float]:
    """Return ``val_dice``, ``val_iou`` and ``val_score`` over every object of ``evaluations``."""
    dice = np.concatenate([e.dice for e in evaluations])
    iou = np.concatenate([e.iou for e in evaluations])
    if dice.size == 0:
        raise ValueError("the validation split has no object masks, so Dice and IoU are "
                         "undefined; add masks to the validation images")
    val_dice = float(dice.mean())
    val_iou = float(iou.mean())
    return {"val_dice": val_dice, "val_iou": val_iou, "val_score": (val_dice + val_iou) / 2}

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

With a :class:`~trainable.distillation.Distiller`, the decoder distillation term is computed
with the task terms in each chunk, and the encoder-side terms (embedding, attention, RKD) once
per image; in the chunked step their gradient and the accumulated embedding gradient go
through the encoder in one backward pass.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ContextManager

import torch

from trainable.data import ImageRecord
from trainable.model import Sam
from trainable.losses import (TASK_TERMS, LossNormaliser, bce_sum, cls_sum, dice_sum,
                              focal_sum, iou_sum)
from trainable.matching import Matching, hungarian_match, iou_matrix
from trainable.prediction import (CANDIDATES_PER_PROMPT, decode_prompts, encode_image,
                                  grid_iou_matrix, prompt_chunks)

if TYPE_CHECKING:
    from trainable.distillation import Distiller


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
                autocast: Callable[[], ContextManager] = contextlib.nullcontext,
                distiller: Distiller | None = None,
                lambda_coef: float = 0.0,
                lap: Callable[[str], None] | None = None) -> ImageStepResult:
    """Run the forward and backward pass of one image, adding ``loss_scale`` times its loss
    gradient to the model's ``.grad`` fields.

    ``autocast`` makes the context that the forward passes run in (bf16 autocast on CUDA).
    With ``distiller``, the image's loss also contains the distillation terms, scaled by
    ``lambda_coef`` (λ of the current epoch), and they are returned among the terms.
    ``lap``, when given, is called with a stage's name at the end of each stage, so that a
    caller can time the stages (``benchmarks/step.py`` does); stages of the chunk loop are
    reported once per chunk.

    Raises:
        NonFiniteLossError: when a loss term of the image is NaN or infinite. The gradients
            are then unusable and the run must stop.
    """
    capture = (distiller.student_attention(sam) if distiller is not None
               else contextlib.nullcontext([]))
    lap = lap or _ignore_lap
    with autocast(), capture as student_maps:
        embedding = encode_image(sam, record.image)
    lap("encoder_forward")
    gt_low_res = record.gt_low_res.to(embedding.device)
    num_prompts = points.shape[0]
    num_candidates = num_prompts * CANDIDATES_PER_PROMPT

    # Encoder-side distillation: once per image, on the embedding's full graph.
    targets = []
    encoder_terms: dict[str, torch.Tensor] = {}
    if distiller is not None:
        targets = distiller.targets(record)
        encoder_terms = distiller.encoder_terms(embedding, student_maps, targets)
    distills_decoder = distiller is not None and "distill_decoder" in distiller.term_names

    if num_prompts <= settings.chunk_size:
        with autocast():
            logits, predicted_iou = decode_prompts(sam, embedding, points)
        lap("decoder_pass1")
        ious = iou_matrix(logits.detach().flatten(0, 1) > 0, gt_low_res)
        matching = hungarian_match(ious, settings.match_iou_threshold)
        normalise = LossNormaliser(int(matching.foreground.sum()), num_candidates)
        lap("matching")
        terms = normalise(candidate_loss_sums(logits, predicted_iou, 0, matching, gt_low_res,
                                              settings))
        terms.update(encoder_terms)
        if distills_decoder:
            terms["distill_decoder"] = distiller.decoder_sum(
                logits, predicted_iou, points, targets, autocast) / num_candidates
        total = _total(terms, settings, distiller, lambda_coef)
        _check_finite(terms, total, record)
        lap("losses")
        if total.requires_grad:  # False only while every part of the model is frozen
            if lap is not _ignore_lap and embedding.requires_grad:
                # One backward call covers both parts; the embedding's gradient separates them.
                embedding.register_hook(lambda _: lap("decoder_backward"))
            (total * loss_scale).backward()
        lap("encoder_backward")
        return _result(terms, total, num_candidates, normalise.num_foreground)

    # Pass 1: match on the whole grid without keeping any graph.
    detached = embedding.detach().requires_grad_(embedding.requires_grad)
    with autocast():
        ious = grid_iou_matrix(sam, detached, points, gt_low_res, settings.chunk_size)
    lap("decoder_pass1")
    matching = hungarian_match(ious, settings.match_iou_threshold)
    normalise = LossNormaliser(int(matching.foreground.sum()), num_candidates)
    lap("matching")

    # Pass 2: each chunk's share of the loss, backpropagated chunk by chunk.
    terms = {}
    for chunk in prompt_chunks(num_prompts, settings.chunk_size):
        with autocast():
            logits, predicted_iou = decode_prompts(sam, detached, points[chunk])
        lap("decoder_pass2")
        offset = chunk.start * CANDIDATES_PER_PROMPT
        chunk_terms = normalise(candidate_loss_sums(logits, predicted_iou, offset, matching,
                                                    gt_low_res, settings))
        if distills_decoder:
            chunk_terms["distill_decoder"] = distiller.decoder_sum(
                logits, predicted_iou, points[chunk], targets, autocast) / num_candidates
        chunk_total = _total(chunk_terms, settings, distiller, lambda_coef)
        _check_finite(chunk_terms, chunk_total, record)
        lap("losses")
        if chunk_total.requires_grad:
            (chunk_total * loss_scale).backward()
        for name, value in chunk_terms.items():
            terms[name] = terms.get(name, 0.0) + value.detach()
        lap("decoder_backward")

    # One backward pass through the encoder: the decoder chunks' embedding gradient together
    # with the encoder-side distillation terms.
    roots, root_gradients = [], []
    if detached.grad is not None:
        roots.append(embedding)
        root_gradients.append(detached.grad)
    if encoder_terms:
        encoder_total = _total(encoder_terms, settings, distiller, lambda_coef)
        _check_finite(encoder_terms, encoder_total, record)
        if encoder_total.requires_grad:
            roots.append(encoder_total * loss_scale)
            root_gradients.append(None)
    if roots:
        torch.autograd.backward(roots, root_gradients)
    lap("encoder_backward")
    terms.update({name: value.detach() for name, value in encoder_terms.items()})
    total = _total(terms, settings, distiller, lambda_coef)
    return _result(terms, total, num_candidates, normalise.num_foreground)


def _total(terms: dict[str, torch.Tensor], settings: StepSettings, distiller: Distiller | None,
           lambda_coef: float) -> torch.Tensor:
    """Return the weighted task terms plus λ times the weighted distillation terms present."""
    total = sum(settings.loss_weights[name] * terms[name] for name in TASK_TERMS
                if name in terms)
    if distiller is not None:
        total = total + distiller.weighted_total(terms, lambda_coef)
    return torch.as_tensor(total)


def _ignore_lap(stage: str) -> None:
    pass


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

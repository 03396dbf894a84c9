"""One image's training step: predict over the grid, match, compute the losses, backpropagate.

When the grid fits in one decoder chunk the step is the plain computation. Otherwise memory is
set by the chunk size, and the step is one of two chunked schedules:

- **Matched re-decode** (when the image has few ground-truth masks for its grid). Decode each
  chunk with gradients, keep its IoU rows against the ground truth, and backpropagate at once
  the terms that do not depend on the matching: the classification term as if every candidate
  were background, and the decoder distillation term. After matching on the full (3K, G)
  matrix, decode again only the prompts that hold a foreground candidate (at most G) and
  backpropagate their mask and IoU terms together with the change of their candidates'
  classification term from background to foreground.
- **Two passes** (when the ground-truth masks are many for the grid). Without gradients, decode
  every chunk and keep only its IoU rows. After matching, decode each chunk again with
  gradients and backpropagate its share of the loss.

Both schedules backpropagate into a detached copy of the image embedding and finally push the
accumulated embedding gradient through the encoder once. The loss is a sum over candidates with
divisors that are known before any gradient is taken (the candidate count for the
classification term, the foreground count for the rest, used only after matching), so the
gradients equal those of the unchunked computation up to floating-point summation order.

With a :class:`~trainable.distillation.Distiller`, the encoder-side terms (embedding,
attention, RKD) are computed once per image and go through the encoder in the same backward
pass as the accumulated embedding gradient.
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

SCHEDULES = ("auto", "matched_redecode", "two_pass")
# Decoding a prompt with gradients (forward and backward) cost 1.5 to 2.2 times the
# gradient-free decode that the two-pass schedule spends on every prompt (grids 8, 16 and 32 on
# the CPU in BENCHMARKS.md). The matched re-decode repeats that for at most one prompt per
# ground-truth mask, so with masks at most 0.4 of the prompts it is the cheaper schedule at
# either end of that range. NOTE: the ratio is not measured on a GPU.
MATCHED_REDECODE_MAX_GT_SHARE = 0.4

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
    # How a grid larger than one chunk is scheduled (module docstring). "auto" picks by the
    # ratio of ground-truth masks to prompts, and the other values are for tests and benchmarks.
    schedule: str = "auto"

    def uses_matched_redecode(self, num_prompts: int, num_gt: int) -> bool:
        if self.schedule == "auto":
            return num_gt <= MATCHED_REDECODE_MAX_GT_SHARE * num_prompts
        if self.schedule not in SCHEDULES:
            raise ValueError(f"invalid step schedule {self.schedule!r}: expected one of "
                             f"{', '.join(SCHEDULES)}")
        return self.schedule == "matched_redecode"


@dataclass
class ImageStepResult:
    """Loss terms of one image (already divided by its counts) and its matching counts."""

    terms: dict[str, float]
    total: float
    num_candidates: int
    num_foreground: int


def candidate_loss_sums(logits: torch.Tensor, predicted_iou: torch.Tensor,
                        candidate_ids: torch.Tensor, matching: Matching,
                        gt_low_res: torch.Tensor, settings: StepSettings) -> dict[str, torch.Tensor]:
    """Return the summed task terms of some candidates of an image.

    Args:
        logits: (k, 3, 256, 256) decoder logits of k prompts.
        predicted_iou: (k, 3) IoU head outputs of the same prompts.
        candidate_ids: (3k,) flat index of each of these candidates in the image's candidate
            order (prompt by prompt, three per prompt), ascending.
        matching: the image's Hungarian pairs over all its candidates.
    """
    flat_logits, flat_iou, local, sums = _foreground_sums(logits, predicted_iou, candidate_ids,
                                                          matching, gt_low_res, settings)
    labels = torch.zeros(flat_iou.shape[0], device=flat_iou.device)
    labels[local] = 1.0
    sums["cls"] = cls_sum(flat_iou, labels)
    return sums


def foreground_correction_sums(logits: torch.Tensor, predicted_iou: torch.Tensor,
                               candidate_ids: torch.Tensor, matching: Matching,
                               gt_low_res: torch.Tensor,
                               settings: StepSettings) -> dict[str, torch.Tensor]:
    """Return what the foreground candidates among ``candidate_ids`` add to a loss whose
    classification term counted every candidate as background: their summed mask and IoU
    terms, and the change of their classification term from label 0 to label 1.

    Arguments as for :func:`candidate_loss_sums`.
    """
    flat_logits, flat_iou, local, sums = _foreground_sums(logits, predicted_iou, candidate_ids,
                                                          matching, gt_low_res, settings)
    confidence = flat_iou[local]
    sums["cls"] = (cls_sum(confidence, torch.ones_like(confidence))
                   - cls_sum(confidence, torch.zeros_like(confidence)))
    return sums


def _foreground_sums(logits: torch.Tensor, predicted_iou: torch.Tensor,
                     candidate_ids: torch.Tensor, matching: Matching, gt_low_res: torch.Tensor,
                     settings: StepSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                      dict[str, torch.Tensor]]:
    """Return the flat logits and IoU outputs, the local positions of the foreground candidates
    among ``candidate_ids``, and the summed mask and IoU terms of their pairs."""
    flat_logits = logits.flatten(0, 1).float()
    flat_iou = predicted_iou.flatten().float()
    device = flat_logits.device

    # Foreground pairs whose candidate is among ``candidate_ids``, and that candidate's index in
    # ``candidate_ids``.
    candidate, gt, pair_iou = matching.foreground_pairs()
    ids = candidate_ids.to(candidate.device)
    inside = torch.isin(candidate, ids)
    local = torch.searchsorted(ids, candidate[inside]).to(device)
    targets = gt_low_res[gt[inside]].to(device, torch.float32)
    pair_logits = flat_logits[local]
    sums = {
        "bce": bce_sum(pair_logits, targets),
        "focal": focal_sum(pair_logits, targets, settings.focal_alpha, settings.focal_gamma),
        "dice": dice_sum(pair_logits, targets),
        "iou": iou_sum(flat_iou[local], pair_iou[inside].to(device)),
    }
    return flat_logits, flat_iou, local, sums


def _candidate_ids(prompts: torch.Tensor) -> torch.Tensor:
    """Flat candidate indices of the given prompt indices, three per prompt in order."""
    return (prompts[:, None] * CANDIDATES_PER_PROMPT
            + torch.arange(CANDIDATES_PER_PROMPT)).flatten()


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
        terms = normalise(candidate_loss_sums(logits, predicted_iou,
                                              torch.arange(num_candidates), matching,
                                              gt_low_res, settings))
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

    detached = embedding.detach().requires_grad_(embedding.requires_grad)
    chunks = _ChunkedImage(sam, record, points, detached, gt_low_res, settings, loss_scale,
                           autocast, distiller if distills_decoder else None, targets,
                           lambda_coef, lap)
    if settings.uses_matched_redecode(num_prompts, gt_low_res.shape[0]):
        terms, normalise = chunks.matched_redecode()
    else:
        terms, normalise = chunks.two_passes()

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


@dataclass
class _ChunkedImage:
    """The decoder side of one image's step when its grid spans several chunks.

    Both schedules decode from ``detached``, a detached copy of the image embedding, so that
    each chunk's backward pass stops there and the embedding gradient accumulates in
    ``detached.grad``. ``distiller`` is set only when it has a decoder term.
    """

    sam: Sam
    record: ImageRecord
    points: torch.Tensor
    detached: torch.Tensor
    gt_low_res: torch.Tensor
    settings: StepSettings
    loss_scale: float
    autocast: Callable[[], ContextManager]
    distiller: Distiller | None
    targets: list
    lambda_coef: float
    lap: Callable[[str], None]

    @property
    def num_candidates(self) -> int:
        return self.points.shape[0] * CANDIDATES_PER_PROMPT

    def two_passes(self) -> tuple[dict[str, torch.Tensor], LossNormaliser]:
        """Match on IoU rows decoded without gradients, then decode each chunk again with
        gradients and backpropagate its share of the loss."""
        with self.autocast():
            ious = grid_iou_matrix(self.sam, self.detached, self.points, self.gt_low_res,
                                   self.settings.chunk_size)
        self.lap("decoder_pass1")
        matching, normalise = self._match(ious)

        terms: dict[str, torch.Tensor] = {}
        for chunk in prompt_chunks(self.points.shape[0], self.settings.chunk_size):
            logits, predicted_iou = self._decode(self.points[chunk])
            self.lap("decoder_pass2")
            chunk_ids = torch.arange(chunk.start * CANDIDATES_PER_PROMPT,
                                     chunk.stop * CANDIDATES_PER_PROMPT)
            chunk_terms = normalise(candidate_loss_sums(logits, predicted_iou, chunk_ids,
                                                        matching, self.gt_low_res,
                                                        self.settings))
            if self.distiller is not None:
                chunk_terms["distill_decoder"] = self._distill_decoder(logits, predicted_iou,
                                                                       self.points[chunk])
            self._backward(chunk_terms, terms)
        return terms, normalise

    def matched_redecode(self) -> tuple[dict[str, torch.Tensor], LossNormaliser]:
        """Backpropagate every chunk's matching-independent terms as it is decoded, then
        decode the prompts of the foreground pairs again for the rest of the loss."""
        terms: dict[str, torch.Tensor] = {}
        rows = []
        for chunk in prompt_chunks(self.points.shape[0], self.settings.chunk_size):
            logits, predicted_iou = self._decode(self.points[chunk])
            self.lap("decoder_pass1")
            rows.append(iou_matrix(logits.detach().flatten(0, 1) > 0, self.gt_low_res))
            confidence = predicted_iou.flatten().float()
            chunk_terms = {"cls": cls_sum(confidence, torch.zeros_like(confidence))
                           / max(self.num_candidates, 1)}
            if self.distiller is not None:
                chunk_terms["distill_decoder"] = self._distill_decoder(logits, predicted_iou,
                                                                       self.points[chunk])
            self._backward(chunk_terms, terms)
        matching, normalise = self._match(torch.cat(rows))

        foreground_candidates = matching.foreground_pairs()[0].cpu()
        prompts = torch.unique(foreground_candidates // CANDIDATES_PER_PROMPT)
        for chunk in prompt_chunks(prompts.numel(), self.settings.chunk_size):
            chunk_prompts = prompts[chunk]
            logits, predicted_iou = self._decode(self.points[chunk_prompts])
            self.lap("decoder_pass2")
            self._backward(normalise(foreground_correction_sums(
                logits, predicted_iou, _candidate_ids(chunk_prompts), matching,
                self.gt_low_res, self.settings)), terms)
        # Terms that no foreground pair reached are 0, as in the other schedules.
        for name in TASK_TERMS:
            terms.setdefault(name, torch.zeros((), device=self.detached.device))
        return terms, normalise

    def _decode(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            return decode_prompts(self.sam, self.detached, points)

    def _match(self, ious: torch.Tensor) -> tuple[Matching, LossNormaliser]:
        matching = hungarian_match(ious, self.settings.match_iou_threshold)
        normalise = LossNormaliser(int(matching.foreground.sum()), self.num_candidates)
        self.lap("matching")
        return matching, normalise

    def _distill_decoder(self, logits: torch.Tensor, predicted_iou: torch.Tensor,
                         points: torch.Tensor) -> torch.Tensor:
        return self.distiller.decoder_sum(logits, predicted_iou, points, self.targets,
                                          self.autocast) / self.num_candidates

    def _backward(self, chunk_terms: dict[str, torch.Tensor],
                  terms: dict[str, torch.Tensor]) -> None:
        """Backpropagate a chunk's weighted terms and add their values to ``terms``."""
        chunk_total = _total(chunk_terms, self.settings, self.distiller, self.lambda_coef)
        _check_finite(chunk_terms, chunk_total, self.record)
        self.lap("losses")
        if chunk_total.requires_grad:
            (chunk_total * self.loss_scale).backward()
        for name, value in chunk_terms.items():
            terms[name] = terms.get(name, 0.0) + value.detach()
        self.lap("decoder_backward")


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
    values = ", ".join(f"{name}={float(torch.as_tensor(value).detach()):.4g}"
                       for name, value in terms.items())
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

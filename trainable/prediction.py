"""Prediction over the prompt grid: the image encoder once, the mask decoder in chunks of prompts.

SAM's decoder copies the 64x64x256 image embedding for every prompt, so decoding a whole grid
at once needs memory in proportion to ``grid_points ** 2``. Here prompts are decoded
``chunk_size`` at a time; each prompt is decoded independently of the others, so chunking
changes the memory and not the result.
"""

from __future__ import annotations

from typing import Iterator

import torch

from trainable.matching import iou_matrix
from trainable.model import Sam

CANDIDATES_PER_PROMPT = 3


def encode_image(sam: Sam, image: torch.Tensor) -> torch.Tensor:
    """Return the (1, 256, 64, 64) embedding of a uint8 RGB image (3, h, w), h and w <= 1024."""
    pixels = image.to(sam.device, torch.float32)[None]
    return sam.image_encoder(sam.preprocess(pixels))


def decode_prompts(sam: Sam, embedding: torch.Tensor,
                   points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one positive point per prompt into three candidates each.

    Args:
        embedding: (1, 256, 64, 64) image embedding.
        points: (K, 2) prompt positions (x, y) in the encoder frame.

    Returns:
        logits (K, 3, 256, 256) and predicted IoU (K, 3).
    """
    coords = points.to(embedding.device)[:, None, :]
    labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=embedding.device)
    sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    return sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )


def prompt_chunks(num_prompts: int, chunk_size: int) -> Iterator[slice]:
    """Yield consecutive slices of at most ``chunk_size`` prompts."""
    for start in range(0, num_prompts, chunk_size):
        yield slice(start, min(start + chunk_size, num_prompts))


@torch.no_grad()
def grid_iou_matrix(sam: Sam, embedding: torch.Tensor, points: torch.Tensor,
                    gt_low_res: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Return the (3K, G) IoU of every binarised candidate against every ground-truth mask.

    Candidates are ordered prompt by prompt, three per prompt, as ``logits.flatten(0, 1)``.
    Only the IoU rows are kept between chunks, so memory stays set by ``chunk_size``.
    """
    rows = []
    gt = gt_low_res.to(embedding.device)
    for chunk in prompt_chunks(points.shape[0], chunk_size):
        logits, _ = decode_prompts(sam, embedding, points[chunk])
        rows.append(iou_matrix(logits.flatten(0, 1) > 0, gt))
    return torch.cat(rows)

"""Attention maps for distillation: which blocks are compared, and their compact pooled form.

Layer mapping
    The student is MobileSAM's TinyViT. Its 10 attention blocks, in forward order, are
    stage 1 (blocks 0-1: 128x128 tokens, 7x7 windows), stage 2 (blocks 2-7: 64x64 tokens,
    14x14 windows) and stage 3 (blocks 8-9: 64x64 tokens, 7x7 windows).

    - vit_b, vit_l, vit_h teachers: student blocks 1, 4, 7 and 9 are compared with the
      teacher's four global-attention blocks. The student blocks are the last of stage 1, the
      third and the last of stage 2, and the last of stage 3. The teacher blocks end each quarter of its depth (vit_b: 2, 5,
      8, 11; vit_l: 5, 11, 17, 23; vit_h: 7, 15, 23, 31). Both sides sit at about the same
      relative depth (2/10, 5/10, 8/10, 10/10 against 3/12, 6/12, 9/12, 12/12).
    - vit_t teacher: every block with the block of the same index.

Pooled form
    A block's attention probabilities are averaged over its heads and pooled to a G x G grid
    of image regions (G = ``attention.grid_size``; a region is (1024 / G) pixels square, so
    4x4 tokens at 64x64 and 8x8 tokens at 128x128 for G = 16). Entry (i, j) is the share of
    region i's attention that goes to tokens of region j: every row is a distribution over
    regions. Tokens that a windowed block adds as window padding are dropped. A map has
    G^4 entries (65,536 for G = 16), where the full maps of a global block have
    heads x 4096^2.

Windowed student against global teacher
    A windowed student block cannot attend outside its window, so at region level it reaches
    only some regions (its support, fixed by the window geometry). The loss restricts each
    teacher row to the student's support and renormalises it before KL(teacher || student),
    so it measures how the student spreads attention within its reach and is 0 when the
    restricted distributions agree.

The probabilities are recomputed from each block's input with the block's own parameters
(mobile_sam's attention modules do not return them), in a forward hook, so the student's
maps stay in the autograd graph.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from mobile_sam.modeling import ImageEncoderViT, TinyViT
    from mobile_sam.modeling.image_encoder import add_decomposed_rel_pos

# Student blocks compared with the four global blocks of a vit_b/l/h teacher (see above).
STUDENT_BLOCKS_FOR_VIT_TEACHER = (1, 4, 7, 9)
VIT_GLOBAL_BLOCKS = 4
# Probabilities below this are treated as 0 inside log(); it only matters for underflow.
LOG_EPS = 1e-12


class AttentionMappingError(ValueError):
    """A student or teacher whose attention blocks cannot be mapped onto each other."""


@dataclass(frozen=True)
class AttentionSite:
    """One attention block: its attention module and the geometry of its token grid.

    ``window`` is the side of its attention windows in tokens, 0 for global attention.
    """

    module: nn.Module
    kind: str  # "tinyvit" or "vit"
    height: int
    width: int
    window: int

    @property
    def is_global(self) -> bool:
        return self.window == 0 or (self.window >= self.height and self.window >= self.width)


def attention_sites(image_encoder: nn.Module) -> list[AttentionSite]:
    """Return the attention blocks of a TinyViT or SAM ViT image encoder in forward order."""
    if isinstance(image_encoder, TinyViT):
        sites = []
        for layer in image_encoder.layers[1:]:  # layers[0] is convolutional
            for block in layer.blocks:
                height, width = block.input_resolution
                sites.append(AttentionSite(block.attn, "tinyvit", height, width,
                                           block.window_size))
        return sites
    if isinstance(image_encoder, ImageEncoderViT):
        side = image_encoder.pos_embed.shape[1] if image_encoder.pos_embed is not None else 64
        return [AttentionSite(block.attn, "vit", side, side, block.window_size)
                for block in image_encoder.blocks]
    raise AttentionMappingError(
        f"attention distillation needs a TinyViT (vit_t) or SAM ViT image encoder; got "
        f"{type(image_encoder).__name__}. Disable distillation.attention for this model.")


def teacher_blocks(teacher_encoder: nn.Module) -> list[int]:
    """Return the teacher's attention blocks that are compared, and cached, in forward order."""
    sites = attention_sites(teacher_encoder)
    if isinstance(teacher_encoder, TinyViT):
        return list(range(len(sites)))
    global_blocks = [index for index, site in enumerate(sites) if site.window == 0]
    if len(global_blocks) != VIT_GLOBAL_BLOCKS:
        raise AttentionMappingError(
            f"expected {VIT_GLOBAL_BLOCKS} global-attention blocks in the SAM ViT teacher, "
            f"found {len(global_blocks)} at {global_blocks}")
    return global_blocks


def block_mapping(student_encoder: nn.Module,
                  teacher_encoder: nn.Module) -> list[tuple[int, int]]:
    """Return (student block, teacher block) index pairs, as this module's docstring states."""
    if not isinstance(student_encoder, TinyViT):
        raise AttentionMappingError(
            "attention distillation maps a TinyViT (vit_t) student onto its teachers; the "
            f"student's image encoder is a {type(student_encoder).__name__}. Disable "
            "distillation.attention for this model.")
    student = attention_sites(student_encoder)
    teacher = teacher_blocks(teacher_encoder)
    if isinstance(teacher_encoder, TinyViT):
        if len(teacher) != len(student):
            raise AttentionMappingError(
                f"a vit_t teacher is mapped block to block, but it has {len(teacher)} "
                f"attention blocks and the student {len(student)}")
        return list(zip(range(len(student)), teacher))
    if len(student) <= max(STUDENT_BLOCKS_FOR_VIT_TEACHER):
        raise AttentionMappingError(
            f"the student has {len(student)} attention blocks; the mapping onto a ViT teacher "
            f"needs blocks {STUDENT_BLOCKS_FOR_VIT_TEACHER}")
    return list(zip(STUDENT_BLOCKS_FOR_VIT_TEACHER, teacher))


@contextlib.contextmanager
def capture_pooled_attention(sites: list[AttentionSite],
                             grid_size: int) -> Iterator[list[torch.Tensor]]:
    """Collect the pooled (G^2, G^2) attention map of each site during the forward passes
    inside the ``with`` block, in the order of ``sites``.

    The maps carry gradients when the forward pass does. Hooks are removed on exit.
    """
    maps: list[torch.Tensor | None] = [None] * len(sites)
    handles = []

    def hook_for(index: int, site: AttentionSite):
        def hook(module, inputs, output):
            maps[index] = pooled_attention(site, inputs[0], grid_size)
        return hook

    for index, site in enumerate(sites):
        handles.append(site.module.register_forward_hook(hook_for(index, site)))
    collected: list[torch.Tensor] = []
    try:
        yield collected
    finally:
        for handle in handles:
            handle.remove()
    missing = [index for index, value in enumerate(maps) if value is None]
    if missing:
        raise RuntimeError(f"attention blocks {missing} did not run during the forward pass")
    collected.extend(maps)


def pooled_attention(site: AttentionSite, block_input: torch.Tensor,
                     grid_size: int) -> torch.Tensor:
    """Return the head-averaged attention of one block pooled to (G^2, G^2), rows summing to 1.

    ``block_input`` is what the block's attention module received (batch size 1 image).
    """
    if site.kind == "tinyvit":
        probabilities = tinyvit_attention(site.module, block_input).mean(1)
        sums = pool_attention_sums(probabilities, site, grid_size)
    else:
        sums = None
        for probabilities in vit_attention_heads(site.module, block_input):
            pooled = pool_attention_sums(probabilities, site, grid_size)
            sums = pooled if sums is None else sums + pooled
        sums = sums / site.module.num_heads
    return sums / sums.sum(-1, keepdim=True).clamp_min(LOG_EPS)


def tinyvit_attention(attention: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Return the softmax attention (windows, heads, N, N) of a TinyViT attention module.

    Recomputed from the module's input as its forward does: layer norm, then q and k from the
    fused projection, scaled dot products plus the learned relative position biases.
    """
    windows, count, _ = tokens.shape
    normalised = attention.norm(tokens)
    projected = attention.qkv(normalised).view(windows, count, attention.num_heads, -1)
    query, key, _ = projected.split([attention.key_dim, attention.key_dim, attention.d], dim=3)
    query = query.transpose(1, 2)
    key = key.transpose(1, 2)
    biases = attention.attention_biases[:, attention.attention_bias_idxs]
    logits = (query @ key.transpose(-2, -1)) * attention.scale + biases
    return logits.softmax(dim=-1)


def vit_attention_heads(attention: nn.Module, tokens: torch.Tensor) -> Iterator[torch.Tensor]:
    """Yield the softmax attention (windows, N, N) of each head of a SAM ViT attention module.

    ``tokens`` is the module's input (windows, h, w, C). The decomposed relative position
    terms are added with mobile_sam's own function, as the module's forward does. Heads come
    one at a time because a global block's map is 4096 x 4096 per head.
    """
    windows, height, width, _ = tokens.shape
    projected = attention.qkv(tokens).reshape(windows, height * width, 3, attention.num_heads, -1)
    for head in range(attention.num_heads):
        query = projected[:, :, 0, head]
        key = projected[:, :, 1, head]
        logits = (query * attention.scale) @ key.transpose(-2, -1)
        if attention.use_rel_pos:
            logits = add_decomposed_rel_pos(logits, query, attention.rel_pos_h,
                                            attention.rel_pos_w, (height, width), (height, width))
        yield logits.softmax(dim=-1)


def pool_attention_sums(probabilities: torch.Tensor, site: AttentionSite,
                        grid_size: int) -> torch.Tensor:
    """Sum attention probabilities (windows, N, N) over region pairs, giving (G^2, G^2).

    Windows are ordered row by row over the padded token grid and tokens row by row inside a
    window, as both TinyViT and SAM's ViT partition them.
    """
    _check_grid(site, grid_size)
    if site.is_global:
        rows = site.height // grid_size
        cols = site.width // grid_size
        blocks = probabilities.reshape(grid_size, rows, grid_size, cols,
                                       grid_size, rows, grid_size, cols)
        return blocks.sum((1, 3, 5, 7)).reshape(grid_size ** 2, grid_size ** 2)

    index = _region_pair_index(site.height, site.width, site.window, grid_size,
                               str(probabilities.device))
    bins = grid_size ** 2 + 1  # the last bin collects window padding
    sums = probabilities.new_zeros(bins * bins).index_add(0, index, probabilities.reshape(-1))
    return sums.view(bins, bins)[:-1, :-1]


def window_support(site: AttentionSite, grid_size: int) -> torch.Tensor:
    """Return the bool (G^2, G^2) region pairs that a block can connect by attention."""
    if site.is_global:
        return torch.ones(grid_size ** 2, grid_size ** 2, dtype=torch.bool)
    return _window_support(site.height, site.width, site.window, grid_size)


def _check_grid(site: AttentionSite, grid_size: int) -> None:
    if site.height % grid_size or site.width % grid_size:
        raise AttentionMappingError(
            f"attention grid_size {grid_size} does not divide the {site.height}x{site.width} "
            "token grid of an attention block")


def _window_regions(height: int, width: int, window: int, grid_size: int) -> torch.Tensor:
    """Region index of every token slot, (windows, window^2); padding slots get G^2."""
    padded_height = math.ceil(height / window) * window
    padded_width = math.ceil(width / window) * window
    rows = torch.arange(padded_height).view(-1, 1, window, 1)
    cols = torch.arange(padded_width).view(1, -1, 1, window)
    rows, cols = torch.broadcast_tensors(rows, cols)  # (windows down, windows across, i, j)
    region = (rows // (height // grid_size)) * grid_size + cols // (width // grid_size)
    region = torch.where((rows < height) & (cols < width), region, grid_size ** 2)
    return region.reshape(-1, window * window)


@functools.lru_cache(maxsize=32)
def _region_pair_index(height: int, width: int, window: int, grid_size: int,
                       device: str) -> torch.Tensor:
    regions = _window_regions(height, width, window, grid_size)
    bins = grid_size ** 2 + 1
    pairs = regions[:, :, None] * bins + regions[:, None, :]
    return pairs.reshape(-1).to(device)


@functools.lru_cache(maxsize=32)
def _window_support(height: int, width: int, window: int, grid_size: int) -> torch.Tensor:
    regions = _window_regions(height, width, window, grid_size)
    bins = grid_size ** 2 + 1
    pairs = (regions[:, :, None] * bins + regions[:, None, :]).reshape(-1)
    counts = torch.bincount(pairs, minlength=bins * bins).view(bins, bins)[:-1, :-1]
    return counts > 0

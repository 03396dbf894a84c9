"""Shared fixtures: a small SAM built from mobile_sam's parts, generated datasets, coco-mini."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from trainable.model import Sam  # noqa: E402  (after the environment is set)

COCO_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"


class PatchEncoder(nn.Module):
    """A one-layer stand-in for TinyViT: 16x16 patches of the 1024x1024 input to 256 channels."""

    img_size = 1024

    def __init__(self):
        super().__init__()
        self.project = nn.Conv2d(3, 256, kernel_size=16, stride=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x)


def build_small_sam(seed: int = 0) -> Sam:
    """A SAM with mobile_sam's prompt encoder and a one-block decoder, fast on a CPU."""
    from mobile_sam.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    torch.manual_seed(seed)
    return Sam(
        image_encoder=PatchEncoder(),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                     input_image_size=(1024, 1024), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=256, mlp_dim=64, num_heads=2),
            transformer_dim=256, iou_head_depth=2, iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


@pytest.fixture
def small_sam() -> Sam:
    return build_small_sam()


@pytest.fixture
def synthetic_root(tmp_path: Path) -> Path:
    from trainable.synthetic import generate_dataset

    return generate_dataset(tmp_path / "data", train_images=2, val_images=1, seed=3)


@pytest.fixture
def coco_mini() -> Path:
    if not (COCO_MINI / "train" / "image").is_dir():
        pytest.skip(f"the coco-mini sample is not present at {COCO_MINI}")
    return COCO_MINI


def write_png(path: Path, array: np.ndarray) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path

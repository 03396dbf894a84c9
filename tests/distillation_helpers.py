"""Helpers for the distillation tests: teachers around any SAM, and distillation settings."""

from __future__ import annotations

from typing import Any

import torch

from trainable.config import DistillationConfig, TeacherConfig, load_config
from trainable.model import Sam
from trainable.teachers import Teacher, state_dict_sha256

def frozen_teacher(sam: Sam, name: str = "teacher", weight: float = 1.0) -> Teacher:
    """Wrap a model (for example a small test SAM) as a frozen teacher in eval mode."""
    for parameter in sam.parameters():
        parameter.requires_grad_(False)
    sam.eval()
    return Teacher(name=name, model_type="test", weight=weight, sam=sam,
                   weights_sha256=state_dict_sha256(sam), source="test model",
                   config=TeacherConfig(name=name, allow_random_weights=True),
                   device=torch.device("cpu"))


def distillation_settings(**sections: Any) -> DistillationConfig:
    """Return a checked ``distillation`` section with ``sections`` merged in."""
    config = load_config({
        "dataset": {"train_dir": "/data/train", "val_dir": "/data/val"},
        "distillation": {"enable": True, **sections},
        "teachers": [{"name": "teacher", "type": "vit_t", "allow_random_weights": True}],
    })
    return config.distillation

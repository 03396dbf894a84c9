"""Building SAM models from ``mobile_sam.sam_model_registry`` and moving official weights in and out.

Weights are official state dicts: ``mobile_sam.pt`` for ``vit_t`` and ``sam_vit_*.pth`` for
the SAM teachers. What :func:`save_official_weights` writes loads unchanged with
``sam_model_registry["vit_t"](checkpoint=path)``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from trainable.config import FreezeConfig

# timm warns about deprecated imports and re-registered TinyViT names when mobile_sam loads.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from mobile_sam import sam_model_registry
    from mobile_sam.modeling import Sam

logger = logging.getLogger(__name__)

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


class CheckpointError(ValueError):
    """A model checkpoint that is missing, unreadable or does not fit the model type."""


def build_model(model_type: str, checkpoint_path: str | None = None) -> Sam:
    """Build a SAM model of ``model_type`` with random weights or the official ``checkpoint_path``."""
    if model_type not in sam_model_registry:
        raise ValueError(f"unknown model type {model_type!r}; expected one of "
                         f"{', '.join(sorted(sam_model_registry))}")
    sam = sam_model_registry[model_type]()
    if checkpoint_path is not None:
        load_weights(sam, checkpoint_path, model_type)
        logger.info("loaded %s weights from %s", model_type, checkpoint_path)
    return sam


def read_state_dict(path: str | os.PathLike, model_type: str) -> dict[str, torch.Tensor]:
    """Read an official state dict as CPU tensors, without running any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"cannot read checkpoint {path} as a {model_type} state dict: "
                              f"{error}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} is not a state dict of tensors")
    return state


def load_weights(sam: Sam, path: str | os.PathLike, model_type: str) -> None:
    """Load an official state dict into ``sam``, naming the file when the keys do not fit."""
    state = read_state_dict(path, model_type)
    try:
        sam.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path} does not fit a {model_type} model: "
                              f"{str(error).splitlines()[0]}") from error


def save_official_weights(sam: Sam, path: str | os.PathLike) -> None:
    """Write the model's state dict as CPU tensors, the format of the official checkpoints."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu() for name, tensor in sam.state_dict().items()}
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def frozen_parts(freeze: FreezeConfig, epoch: int) -> list[str]:
    """Return the parts of the model held fixed during training epoch ``epoch``."""
    if freeze.unfreeze_epoch > 0 and epoch >= freeze.unfreeze_epoch:
        return []
    return [part for part in PARTS if getattr(freeze, part)]


def apply_freeze(sam: Sam, frozen: list[str]) -> None:
    """Set ``requires_grad`` so that exactly the parts in ``frozen`` receive no gradient."""
    for part in PARTS:
        for parameter in getattr(sam, part).parameters():
            parameter.requires_grad_(part not in frozen)

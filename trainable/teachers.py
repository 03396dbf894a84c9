"""SAM teachers for distillation, built from the config's ``teachers`` list.

A teacher is frozen (no parameter requires a gradient) and stays in eval mode. Its weights come
from its official checkpoint. Only with ``allow_random_weights: true`` may it have none. It is
then initialised from a seed derived from its name, so every run and every trial of a search
builds the same random teacher and shares its cached outputs.

Each teacher carries the SHA-256 of its weights (of the checkpoint file, or of the random state
dict), which keys the teacher cache.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from trainable.config import TeacherConfig
from trainable.model import CheckpointError, Sam, build_model

logger = logging.getLogger(__name__)

# Base of the seed of a teacher with random weights; the teacher's name is added to it.
RANDOM_TEACHER_SEED = 1_000_003
HASH_BLOCK_BYTES = 1 << 20


@dataclass
class Teacher:
    """One frozen SAM teacher.

    Attributes:
        name, model_type: from the config.
        weight: the teacher's weight in the sum over teachers.
        sam: the model; ``sam.image_encoder`` is None after :meth:`release_image_encoder`.
        weights_sha256: SHA-256 of the checkpoint file, or of the state dict when random.
        source: the checkpoint path, or a note that the weights are random.
    """

    name: str
    model_type: str
    weight: float
    sam: Sam
    weights_sha256: str
    source: str
    config: TeacherConfig
    device: torch.device

    @property
    def has_image_encoder(self) -> bool:
        return self.sam.image_encoder is not None

    def release_image_encoder(self) -> None:
        """Drop the image encoder, which a run needs only to fill the cache, to free memory."""
        if self.sam.image_encoder is None:
            return
        self.sam.image_encoder = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def restore_image_encoder(self) -> None:
        """Build the image encoder again after :meth:`release_image_encoder`."""
        if self.sam.image_encoder is not None:
            return
        sam, weights_sha256, _ = _build_teacher_model(self.config)
        if weights_sha256 != self.weights_sha256:
            raise CheckpointError(
                f"teacher {self.name!r}: its weights changed during the run (sha256 "
                f"{self.weights_sha256[:12]} at the start, {weights_sha256[:12]} now); "
                f"restore {self.source} or restart the run")
        self.sam.image_encoder = _freeze(sam).image_encoder.to(self.device)


def load_teachers(configs: list[TeacherConfig], device: torch.device) -> list[Teacher]:
    """Build every teacher of the config on ``device``, with its weight in the sum.

    Teachers without a ``weight`` share equal weights summing to 1.

    Raises:
        CheckpointError: for a missing, unreadable or unfitting checkpoint, naming the
            teacher and the path.
    """
    teachers = []
    for config in configs:
        weight = config.weight if config.weight is not None else 1.0 / len(configs)
        teachers.append(load_teacher(config, weight, device))
    return teachers


def load_teacher(config: TeacherConfig, weight: float, device: torch.device) -> Teacher:
    """Build one frozen teacher in eval mode on ``device``."""
    sam, weights_sha256, source = _build_teacher_model(config)
    return Teacher(name=config.name, model_type=config.type, weight=weight,
                   sam=_freeze(sam).to(device), weights_sha256=weights_sha256, source=source,
                   config=config, device=device)


def random_teacher_seed(name: str) -> int:
    """Return the seed of a random teacher: fixed per name, the same in every process."""
    return RANDOM_TEACHER_SEED + zlib.crc32(name.encode())


def file_sha256(path: str | Path) -> str:
    """Return the SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Return the SHA-256 of a model's state dict: names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _build_teacher_model(config: TeacherConfig) -> tuple[Sam, str, str]:
    """Return the teacher's model, the SHA-256 of its weights and where they came from.

    The global random state is left as it was, so adding a teacher does not change the
    student's training.
    """
    if config.checkpoint_path is not None:
        path = Path(config.checkpoint_path)
        if not path.is_file():
            raise CheckpointError(f"teacher {config.name!r}: checkpoint not found: {path}; set "
                                  f"its checkpoint_path to the official {config.type} weights")
        try:
            with torch.random.fork_rng(devices=[]):
                sam = build_model(config.type, path)
            weights_sha256 = file_sha256(path)
        except (CheckpointError, OSError) as error:
            raise CheckpointError(f"teacher {config.name!r}: cannot use checkpoint {path}: "
                                  f"{error}") from error
        return sam, weights_sha256, str(path)

    if not config.allow_random_weights:
        raise CheckpointError(f"teacher {config.name!r} has no checkpoint_path; set it to the "
                              "teacher's official checkpoint (random weights need "
                              "allow_random_weights: true)")
    seed = random_teacher_seed(config.name)
    logger.warning("teacher %r (%s) has random weights (seed %d) because it has no "
                   "checkpoint_path and allow_random_weights is true; distilling from it "
                   "teaches nothing, so use it for tests and dry runs only",
                   config.name, config.type, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = build_model(config.type)
    return sam, state_dict_sha256(sam), f"random weights (seed {seed})"


def _freeze(sam: Sam) -> Sam:
    for parameter in sam.parameters():
        parameter.requires_grad_(False)
    # eval() after the weights are loaded also refreshes TinyViT's cached attention biases,
    # which mobile_sam computes when eval() is first called, before any checkpoint is loaded.
    return sam.eval()

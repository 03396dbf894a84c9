"""Training configuration: the JSON form of one segment-everything run, with defaults and checks.

Every section is a dataclass whose fields carry the default and whose ``_check`` method states
the valid range. :func:`load_config` turns a nested dict into a :class:`TrainingConfig`; an
unknown key names its full path and the nearest valid key, and a value out of range names the
value and the rule.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

MODEL_TYPES = ("vit_t", "vit_b", "vit_l", "vit_h")
LAMBDA_SCHEDULE_TYPES = ("constant", "plateau", "step", "cosine", "staged")
DISTILLATION_TERMS = ("encoder", "decoder", "attention", "rkd")
ATTENTION_GRID_SIZES = (2, 4, 8, 16, 32)
CACHE_DTYPES = ("float16", "float32")


class ConfigError(ValueError):
    """A training config that has an unknown key, a wrong type or a value out of range."""


@dataclass
class DatasetConfig:
    """Where the images are and how the prompt grid is laid out.

    ``train_dir`` and ``val_dir`` each contain ``image/<id>.<jpg|png>`` and ``mask/<id>/*.png``.
    ``grid_points`` is the number of point prompts per side of the image, so a run decodes
    ``grid_points ** 2`` prompts per image. ``mask_threshold`` binarises masks that are not
    0/255 or 0/1: a pixel is foreground when its value is at least that fraction of the mask's
    maximum possible value (255 for 8-bit, 65535 for 16-bit).
    """

    mode: str = "everything"
    train_dir: str = ""
    val_dir: str = ""
    grid_points: int = 32
    num_workers: int = 0
    image_size: int = 1024
    mask_threshold: float = 0.5
    cache_dir: str | None = None

    def _check(self, path: str) -> None:
        _require(self.mode == "everything", f"{path}.mode", self.mode,
                 'must be "everything": this trainer only trains with grid prompts')
        _require(bool(self.train_dir), f"{path}.train_dir", self.train_dir, "must name a folder")
        _require(bool(self.val_dir), f"{path}.val_dir", self.val_dir, "must name a folder")
        _require(1 <= self.grid_points <= 128, f"{path}.grid_points", self.grid_points,
                 "must be an integer from 1 to 128")
        _require(self.num_workers >= 0, f"{path}.num_workers", self.num_workers, "must be >= 0")
        _require(self.image_size == 1024, f"{path}.image_size", self.image_size,
                 "must be 1024: MobileSAM's TinyViT encoder only accepts 1024x1024 input")
        _require(0.0 < self.mask_threshold < 1.0, f"{path}.mask_threshold", self.mask_threshold,
                 "must lie strictly between 0 and 1")


@dataclass
class ModelConfig:
    """Which model to train, where its starting weights are, and where the run writes.

    ``checkpoint_path`` is an official state dict (``mobile_sam.pt``); ``None`` starts from
    random weights. ``save_dir`` receives ``best.pt``, ``training_log.txt`` and, unless
    ``visual.save_path`` names another folder, the visualisations. ``decoder_chunk_size`` is
    the number of prompts decoded at once. Peak memory grows with it, not with ``grid_points``.
    """

    type: str = "vit_t"
    checkpoint_path: str | None = None
    save_dir: str = "runs/segment_everything"
    decoder_chunk_size: int = 64

    def _check(self, path: str) -> None:
        _require(self.type == "vit_t", f"{path}.type", self.type,
                 'must be "vit_t": the student is MobileSAM (SAM models serve as teachers)')
        _require(bool(self.save_dir), f"{path}.save_dir", self.save_dir, "must name a folder")
        _require(self.decoder_chunk_size >= 1, f"{path}.decoder_chunk_size",
                 self.decoder_chunk_size, "must be >= 1")


@dataclass
class LossWeights:
    """Weights of the five task losses; each must be >= 0 and at least one > 0."""

    bce: float = 1.0
    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    cls: float = 1.0

    def _check(self, path: str) -> None:
        for name in ("bce", "focal", "dice", "iou", "cls"):
            _require(getattr(self, name) >= 0.0, f"{path}.{name}", getattr(self, name),
                     "must be >= 0")
        _require(any(getattr(self, n) > 0 for n in ("bce", "focal", "dice", "iou", "cls")),
                 path, dataclasses.asdict(self), "at least one weight must be > 0")


@dataclass
class TrainConfig:
    """Optimisation settings.

    ``epochs`` counts training epochs; epoch 0 is a validation before any update.
    ``batch_size`` images share one optimiser step, times ``gradient_accumulation``.
    The learning rate warms up linearly over ``warmup_epochs`` (fractions allowed), then
    follows a cosine down to ``lr * min_lr_ratio``. ``early_stop_patience`` epochs without a
    better ``val_score`` stop the run (0 turns early stopping off). ``match_iou_threshold`` is
    the IoU a Hungarian-matched pair needs to count as foreground. ``prompt_subset`` trains on a
    random fraction of the grid prompts per image and step (1.0 keeps every prompt);
    validation always uses the full grid.
    """

    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 1
    gradient_accumulation: int = 1
    grad_clip_norm: float = 1.0
    bf16: bool = True
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    early_stop_patience: int = 5
    match_iou_threshold: float = 0.5
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    prompt_subset: float = 1.0
    seed: int = 0
    device: str = "auto"
    loss_weights: LossWeights = field(default_factory=LossWeights)

    def _check(self, path: str) -> None:
        _require(self.epochs >= 1, f"{path}.epochs", self.epochs, "must be >= 1")
        _require(0.0 < self.lr < 1.0, f"{path}.lr", self.lr, "must lie in (0, 1)")
        _require(self.weight_decay >= 0.0, f"{path}.weight_decay", self.weight_decay,
                 "must be >= 0")
        _require(self.batch_size >= 1, f"{path}.batch_size", self.batch_size, "must be >= 1")
        _require(self.gradient_accumulation >= 1, f"{path}.gradient_accumulation",
                 self.gradient_accumulation, "must be >= 1")
        _require(self.grad_clip_norm >= 0.0, f"{path}.grad_clip_norm", self.grad_clip_norm,
                 "must be >= 0 (0 turns clipping off)")
        _require(self.warmup_epochs >= 0.0, f"{path}.warmup_epochs", self.warmup_epochs,
                 "must be >= 0")
        _require(0.0 <= self.min_lr_ratio <= 1.0, f"{path}.min_lr_ratio", self.min_lr_ratio,
                 "must lie in [0, 1]")
        _require(self.early_stop_patience >= 0, f"{path}.early_stop_patience",
                 self.early_stop_patience, "must be >= 0 (0 turns early stopping off)")
        _require(0.0 < self.match_iou_threshold <= 1.0, f"{path}.match_iou_threshold",
                 self.match_iou_threshold, "must lie in (0, 1]")
        _require(0.0 <= self.focal_alpha <= 1.0, f"{path}.focal_alpha", self.focal_alpha,
                 "must lie in [0, 1]")
        _require(self.focal_gamma >= 0.0, f"{path}.focal_gamma", self.focal_gamma,
                 "must be >= 0")
        _require(0.0 < self.prompt_subset <= 1.0, f"{path}.prompt_subset", self.prompt_subset,
                 "must lie in (0, 1]")
        _require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                 f"{path}.device", self.device, 'must be "auto", "cpu", "cuda" or "cuda:<n>"')


@dataclass
class VisualConfig:
    """Overlays of matched masks and grid points, written during validation.

    Images go to ``save_path/epoch_<n>/`` (``save_path`` defaults to ``<save_dir>/visual``)
    on a new best ``val_score`` and every ``save_every_n_epochs`` epochs (0: only on a new
    best). At most ``max_images`` validation images are drawn per epoch.
    """

    enable: bool = True
    save_path: str | None = None
    save_every_n_epochs: int = 0
    max_images: int = 4

    def _check(self, path: str) -> None:
        _require(self.save_every_n_epochs >= 0, f"{path}.save_every_n_epochs",
                 self.save_every_n_epochs, "must be >= 0")
        _require(self.max_images >= 1, f"{path}.max_images", self.max_images, "must be >= 1")


@dataclass
class FreezeConfig:
    """Parts of the model held fixed.

    A part whose flag is true is frozen until the start of epoch ``unfreeze_epoch`` when that is
    > 0, and for the whole run when it is 0. The defaults train every part from epoch 1.
    """

    image_encoder: bool = False
    prompt_encoder: bool = False
    mask_decoder: bool = False
    unfreeze_epoch: int = 0

    def _check(self, path: str) -> None:
        _require(self.unfreeze_epoch >= 0, f"{path}.unfreeze_epoch", self.unfreeze_epoch,
                 "must be >= 0")


@dataclass
class LambdaScheduleConfig:
    """How λ moves over the epochs. Only the fields of the chosen ``type`` are read.

    - ``constant``: λ stays at ``distillation.lambda_coef``.
    - ``plateau``: λ is multiplied by ``factor`` after ``patience`` epochs without a better
      ``val_score`` (improvement larger than ``threshold``), kept within
      [``min_lambda``, ``max_lambda``].
    - ``step``: λ is multiplied by ``gamma`` every ``step_size`` epochs.
    - ``cosine``: λ follows a half cosine from its initial value to ``final_fraction`` of it at
      the last epoch.
    - ``staged``: λ is on for the first ``stage_epochs`` epochs and 0 afterwards, or the
      reverse when ``reverse`` is true.
    """

    type: str = "constant"
    factor: float = 0.5
    patience: int = 2
    threshold: float = 1e-4
    min_lambda: float = 0.0
    max_lambda: float = 100.0
    step_size: int = 1
    gamma: float = 0.5
    final_fraction: float = 0.0
    stage_epochs: int = 1
    reverse: bool = False

    def _check(self, path: str) -> None:
        _require(self.type in LAMBDA_SCHEDULE_TYPES, f"{path}.type", self.type,
                 f"must be one of {', '.join(LAMBDA_SCHEDULE_TYPES)}"
                 + _suggestion(self.type, LAMBDA_SCHEDULE_TYPES))
        _require(0.0 < self.factor < 1.0, f"{path}.factor", self.factor, "must lie in (0, 1)")
        _require(self.patience >= 1, f"{path}.patience", self.patience, "must be >= 1")
        _require(self.threshold >= 0.0, f"{path}.threshold", self.threshold, "must be >= 0")
        _require(0.0 <= self.min_lambda <= self.max_lambda, f"{path}.min_lambda",
                 self.min_lambda, f"must lie in [0, max_lambda={self.max_lambda}]")
        _require(self.step_size >= 1, f"{path}.step_size", self.step_size, "must be >= 1")
        _require(0.0 < self.gamma <= 1.0, f"{path}.gamma", self.gamma, "must lie in (0, 1]")
        _require(0.0 <= self.final_fraction <= 1.0, f"{path}.final_fraction",
                 self.final_fraction, "must lie in [0, 1]")
        _require(self.stage_epochs >= 1, f"{path}.stage_epochs", self.stage_epochs,
                 "must be >= 1")


@dataclass
class EncoderDistillationConfig:
    """Student against teacher image embeddings (both 256x64x64 for every SAM variant).

    The term is ``mse_weight * MSE + kl_weight * KL``. MSE is averaged over all elements. KL is
    taken over the 256 channels at each of the 64x64 positions: both embeddings are softened
    by a softmax over channels at ``temperature``, KL(teacher || student) is averaged over the
    positions and multiplied by ``temperature ** 2`` so that its gradient scale does not
    depend on the temperature.
    """

    enable: bool = True
    weight: float = 1.0
    mse_weight: float = 1.0
    kl_weight: float = 0.0
    temperature: float = 1.0

    def _check(self, path: str) -> None:
        _check_term_weights(self, path, ("weight", "mse_weight", "kl_weight"))
        _require(self.temperature > 0.0, f"{path}.temperature", self.temperature, "must be > 0")


@dataclass
class DecoderDistillationConfig:
    """Student against teacher mask decoder outputs for the same grid prompts.

    The teacher's prompt encoder and mask decoder run on the teacher's cached image embedding
    with the student's prompts, in the same chunks. The term is ``mask_weight`` times the
    binary KL(teacher || student) between the sigmoid of the 256x256 low-resolution mask
    logits at ``temperature`` (averaged over pixels, times ``temperature ** 2``), plus
    ``iou_weight`` times the squared difference of the IoU predictions, both averaged over
    the image's candidates.
    """

    enable: bool = False
    weight: float = 1.0
    mask_weight: float = 1.0
    iou_weight: float = 1.0
    temperature: float = 1.0

    def _check(self, path: str) -> None:
        _check_term_weights(self, path, ("weight", "mask_weight", "iou_weight"))
        _require(self.temperature > 0.0, f"{path}.temperature", self.temperature, "must be > 0")


@dataclass
class AttentionDistillationConfig:
    """Attention maps of mapped image-encoder blocks, compared by KL.

    Each map is averaged over heads and pooled to ``grid_size`` x ``grid_size`` image regions
    (region-to-region attention). ``trainable.distillation_attention`` states which student
    block is compared with which teacher block. ``grid_size`` must divide 64, the side of the
    encoders' token grid.
    """

    enable: bool = False
    weight: float = 1.0
    grid_size: int = 16

    def _check(self, path: str) -> None:
        _require(self.weight >= 0.0, f"{path}.weight", self.weight, "must be >= 0")
        _require(self.grid_size in ATTENTION_GRID_SIZES, f"{path}.grid_size", self.grid_size,
                 f"must be one of {', '.join(map(str, ATTENTION_GRID_SIZES))} (a divisor of the "
                 "64x64 token grid; larger grids make the cached maps too large)")


@dataclass
class RkdConfig:
    """Relational knowledge distillation (Park et al., 2019) within one image.

    Each image embedding is average-pooled to ``grid_size`` x ``grid_size`` region vectors.
    The term is ``distance_weight`` times the smooth-L1 difference of their pairwise distance
    matrices (each divided by its mean distance), plus ``angle_weight`` times that of their
    angle tensors. The relations are among regions of one image, so the term carries signal
    at batch size 1.
    """

    enable: bool = False
    weight: float = 1.0
    distance_weight: float = 1.0
    angle_weight: float = 2.0
    grid_size: int = 8

    def _check(self, path: str) -> None:
        _check_term_weights(self, path, ("weight", "distance_weight", "angle_weight"))
        _require(2 <= self.grid_size <= 16, f"{path}.grid_size", self.grid_size,
                 "must be an integer from 2 to 16 (the angle tensor has grid_size ** 6 entries)")


@dataclass
class DistillationConfig:
    """Distillation from the ``teachers``, scaled by λ.

    ``lambda_coef`` is the initial λ. ``dynamic_lambda: true`` is the short form of
    ``lambda_schedule: {"type": "plateau"}``. The distillation loss of an image is
    λ * sum over the enabled terms of ``weight`` * sum over teachers of the teacher's weight
    times the term. ``cache_dir`` stores teacher outputs shared by runs (default:
    ``<dataset.cache_dir>/teacher_outputs``, else ``<model.save_dir>/teacher_cache``), in
    the precision ``cache_dtype``.
    """

    enable: bool = False
    lambda_coef: float = 1.0
    dynamic_lambda: bool = False
    lambda_schedule: LambdaScheduleConfig = field(default_factory=LambdaScheduleConfig)
    encoder: EncoderDistillationConfig = field(default_factory=EncoderDistillationConfig)
    decoder: DecoderDistillationConfig = field(default_factory=DecoderDistillationConfig)
    attention: AttentionDistillationConfig = field(default_factory=AttentionDistillationConfig)
    rkd: RkdConfig = field(default_factory=RkdConfig)
    cache_dir: str | None = None
    cache_dtype: str = "float16"

    def _check(self, path: str) -> None:
        _require(self.lambda_coef >= 0.0, f"{path}.lambda_coef", self.lambda_coef,
                 "must be >= 0")
        if self.dynamic_lambda:
            _require(self.lambda_schedule.type in ("constant", "plateau"),
                     f"{path}.dynamic_lambda", self.dynamic_lambda,
                     "means a plateau schedule and contradicts lambda_schedule.type="
                     f"{self.lambda_schedule.type!r}; set one of the two")
            self.lambda_schedule.type = "plateau"
        _require(self.cache_dtype in CACHE_DTYPES, f"{path}.cache_dtype", self.cache_dtype,
                 f"must be one of {', '.join(CACHE_DTYPES)}")
        if self.enable:
            _require(any(getattr(self, name).enable for name in DISTILLATION_TERMS),
                     f"{path}.enable", self.enable,
                     f"needs at least one of {', '.join(DISTILLATION_TERMS)} enabled")


@dataclass
class TeacherConfig:
    """One SAM teacher: its model type, its official checkpoint and its weight in the sum.

    Without ``weight`` on any teacher every teacher weighs ``1 / len(teachers)``; give either
    every teacher a weight or none. ``allow_random_weights: true`` accepts a teacher without a
    checkpoint (tests and dry runs only): it is then initialised from a fixed seed, so every
    run gets the same random teacher.
    """

    name: str = ""
    type: str = "vit_b"
    checkpoint_path: str | None = None
    weight: float | None = None
    allow_random_weights: bool = False

    def _check(self, path: str) -> None:
        _require(bool(self.name), f"{path}.name", self.name, "must name the teacher")
        _require(self.type in MODEL_TYPES, f"{path}.type", self.type,
                 f"must be one of {', '.join(MODEL_TYPES)}" + _suggestion(self.type, MODEL_TYPES))
        _require(self.weight is None or self.weight > 0.0, f"{path}.weight", self.weight,
                 "must be > 0")
        _require(self.checkpoint_path is not None or self.allow_random_weights,
                 f"{path}.checkpoint_path", self.checkpoint_path,
                 "must name the teacher's checkpoint (random weights need "
                 "allow_random_weights: true)")


@dataclass
class TrainingConfig:
    """One segment-everything training run."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    visual: VisualConfig = field(default_factory=VisualConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    teachers: list[TeacherConfig] = field(default_factory=list)

    def _check(self, path: str) -> None:
        freeze = self.freeze
        if freeze.image_encoder and freeze.prompt_encoder and freeze.mask_decoder:
            _require(0 < freeze.unfreeze_epoch <= self.train.epochs, "freeze.unfreeze_epoch",
                     freeze.unfreeze_epoch, "must lie in [1, train.epochs] when every part is "
                     "frozen, or nothing would ever train")
        if self.distillation.enable:
            _require(len(self.teachers) > 0, "distillation.enable", True,
                     "needs at least one entry in teachers")
        names = [t.name for t in self.teachers]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        _require(not duplicated, "teachers", duplicated, "teacher names must be unique")
        weighted = [t.name for t in self.teachers if t.weight is not None]
        _require(len(weighted) in (0, len(self.teachers)), "teachers", weighted,
                 "only these teachers have a weight; give every teacher a weight or none "
                 "(none means equal weights summing to 1)")

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a plain nested dict, the form :func:`load_config` reads."""
        return dataclasses.asdict(self)

    @property
    def output_dir(self) -> Path:
        return Path(self.model.save_dir)

    @property
    def visual_dir(self) -> Path:
        if self.visual.save_path:
            return Path(self.visual.save_path)
        return self.output_dir / "visual"


def load_config(source: Union[str, os.PathLike, dict[str, Any]],
                base_dir: Union[str, os.PathLike, None] = None) -> TrainingConfig:
    """Build and check a :class:`TrainingConfig` from a JSON file path or a nested dict.

    Missing keys take their documented defaults. Relative paths in a file are resolved
    against the file's folder; relative paths in a dict against ``base_dir``, by default the
    current folder.

    Raises:
        ConfigError: for an unknown key, a wrong type or a value out of range.
    """
    if isinstance(source, dict):
        raw, base = source, Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        file = Path(source)
        try:
            raw = json.loads(file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {file}") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"config file {file} is not valid JSON: {error}") from None
        base = file.resolve().parent
    if not isinstance(raw, dict):
        raise ConfigError(f"a training config must be a JSON object, got {type(raw).__name__}")
    config = _build(TrainingConfig, raw, "")
    _resolve_paths(config, base)
    return config


def _build(cls: type, raw: Any, path: str) -> Any:
    """Create dataclass ``cls`` from ``raw``, checking keys and types, then run its checks."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'} must be an object, got {raw!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        key_path = f"{path}.{key}" if path else key
        if key not in names:
            raise ConfigError(f"unknown key {key_path!r}" + _suggestion(key, names))
        values[key] = _convert(hints[key], value, key_path)
    instance = cls(**values)
    instance._check(path or "config")
    return instance


def _convert(hint: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the type ``hint`` and convert nested objects to dataclasses."""
    origin = get_origin(hint)
    if origin is Union or (origin is not None and type(None) in get_args(hint)):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(options[0], value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        (item,) = get_args(hint)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{path} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")


def _check_term_weights(section: Any, path: str, names: tuple[str, ...]) -> None:
    """Check that the weights of a distillation term are >= 0 and its parts not all 0."""
    for name in names:
        _require(getattr(section, name) >= 0.0, f"{path}.{name}", getattr(section, name),
                 "must be >= 0")
    parts = names[1:]
    if section.enable:
        _require(any(getattr(section, name) > 0.0 for name in parts), path,
                 {name: getattr(section, name) for name in parts},
                 "at least one of these weights must be > 0 while the term is enabled")


def _require(condition: bool, path: str, value: Any, rule: str) -> None:
    if not condition:
        raise ConfigError(f"{path}={value!r} is invalid: {rule}")


def _suggestion(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.4)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _resolve_paths(config: TrainingConfig, base: Path) -> None:
    """Make every path in ``config`` absolute, because trials run in other working folders."""

    def absolute(value: str | None) -> str | None:
        if not value:
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    config.dataset.train_dir = absolute(config.dataset.train_dir)
    config.dataset.val_dir = absolute(config.dataset.val_dir)
    config.dataset.cache_dir = absolute(config.dataset.cache_dir)
    config.distillation.cache_dir = absolute(config.distillation.cache_dir)
    config.model.checkpoint_path = absolute(config.model.checkpoint_path)
    config.model.save_dir = absolute(config.model.save_dir)
    config.visual.save_path = absolute(config.visual.save_path)
    for teacher in config.teachers:
        teacher.checkpoint_path = absolute(teacher.checkpoint_path)

"""The training-config keys a search space may set, with their types, defaults and valid ranges.

The table mirrors the defaults and the ``_check`` rules of ``trainable/config.py``. It is kept
here, not imported, because this package must not import ``trainable`` (which pulls in torch).
A test compares the two, so a change there that is not copied here fails the tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from search_spaces._errors import SearchSpaceError, nearest_name

SCHEDULE_TYPE_PATH = "distillation.lambda_schedule.type"
LAMBDA_SCHEDULE_TYPES = ("constant", "plateau", "step", "cosine", "staged")
DYNAMIC_LAMBDA_PATH = "distillation.dynamic_lambda"
DISTILLATION_ENABLE_PATH = "distillation.enable"
EPOCHS_PATH = "train.epochs"
LOSS_WEIGHT_PATHS = tuple(
    f"train.loss_weights.{name}" for name in ("bce", "focal", "dice", "iou", "cls")
)


@dataclass(frozen=True)
class TunableKey:
    """One config key that a search may set: its Python type, default and valid range.

    ``low`` and ``high`` are ``None`` where the config sets no bound. ``schedule`` names the
    λ-schedule type that reads the key. A run of another schedule type ignores the key, so a
    space may sample it only with that type.
    """

    path: str
    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    choices: tuple[str, ...] | None = None
    schedule: str | None = None

    def valid_range(self) -> str:
        """Describe the valid values in the words of an error message, e.g. ``(0, 1]``."""
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "one of " + ", ".join(self.choices or ())
        if self.low is not None and self.high is not None:
            left = "[" if self.low_inclusive else "("
            right = "]" if self.high_inclusive else ")"
            return f"{left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>=' if self.low_inclusive else '>'} {self.low:g}"
        return "any number"

    def type_error(self, value: Any) -> str | None:
        """Return why ``value`` has the wrong type for this key, or ``None`` if its type fits.

        An int is a valid float (the config loader converts it), but a bool is never a number.
        """
        if self.kind is bool:
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if self.kind is str:
            return None if isinstance(value, str) else f"must be a string, got {value!r}"
        if isinstance(value, bool):
            return f"must be a number, got {value!r}"
        if self.kind is int:
            return None if isinstance(value, int) else f"must be an integer, got {value!r}"
        if not isinstance(value, (int, float)):
            return f"must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        return None

    def contains(self, value: Any) -> bool:
        """Return whether ``value`` has the right type and lies in the valid range."""
        if self.type_error(value) is not None:
            return False
        if self.kind is bool:
            return True
        if self.kind is str:
            return value in (self.choices or ())
        if self.low is not None:
            if value < self.low or (value == self.low and not self.low_inclusive):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and not self.high_inclusive):
                return False
        return True


def _float(path: str, default: float, low: float | None = 0.0, high: float | None = None,
           low_inclusive: bool = True, high_inclusive: bool = True,
           schedule: str | None = None) -> TunableKey:
    return TunableKey(path, float, default, low, high, low_inclusive, high_inclusive,
                      schedule=schedule)


def _int(path: str, default: int, low: int = 1, high: int | None = None,
         schedule: str | None = None) -> TunableKey:
    return TunableKey(path, int, default, low, high, schedule=schedule)


_SCHEDULE = "distillation.lambda_schedule"

TUNABLE_KEYS: dict[str, TunableKey] = {key.path: key for key in (
    # Task-loss weights. The config also requires at least one weight > 0, which
    # validate_space checks against the whole space.
    _float("train.loss_weights.bce", 1.0),
    _float("train.loss_weights.focal", 20.0),
    _float("train.loss_weights.dice", 1.0),
    _float("train.loss_weights.iou", 1.0),
    _float("train.loss_weights.cls", 1.0),

    # Optimisation and matching.
    _float("train.lr", 1e-4, 0.0, 1.0, low_inclusive=False, high_inclusive=False),
    _float("train.weight_decay", 1e-4),
    _float("train.warmup_epochs", 1.0),
    _float("train.min_lr_ratio", 0.01, 0.0, 1.0),
    _float("train.grad_clip_norm", 1.0),
    _float("train.focal_alpha", 0.25, 0.0, 1.0),
    _float("train.focal_gamma", 2.0),
    _float("train.match_iou_threshold", 0.5, 0.0, 1.0, low_inclusive=False),
    _float("train.prompt_subset", 1.0, 0.0, 1.0, low_inclusive=False),

    # Prompt grid: points per side of the image.
    _int("dataset.grid_points", 32, 1, 128),

    # Distillation weight λ and its schedule. Each schedule parameter is read only by its type.
    _float("distillation.lambda_coef", 1.0),
    TunableKey(SCHEDULE_TYPE_PATH, str, "constant", choices=LAMBDA_SCHEDULE_TYPES),
    _float(f"{_SCHEDULE}.factor", 0.5, 0.0, 1.0, low_inclusive=False, high_inclusive=False,
           schedule="plateau"),
    _int(f"{_SCHEDULE}.patience", 2, schedule="plateau"),
    _float(f"{_SCHEDULE}.threshold", 1e-4, schedule="plateau"),
    # min_lambda must also stay <= max_lambda, which validate_space checks.
    _float(f"{_SCHEDULE}.min_lambda", 0.0, schedule="plateau"),
    _float(f"{_SCHEDULE}.max_lambda", 100.0, schedule="plateau"),
    _int(f"{_SCHEDULE}.step_size", 1, schedule="step"),
    _float(f"{_SCHEDULE}.gamma", 0.5, 0.0, 1.0, low_inclusive=False, schedule="step"),
    _float(f"{_SCHEDULE}.final_fraction", 0.0, 0.0, 1.0, schedule="cosine"),
    _int(f"{_SCHEDULE}.stage_epochs", 1, schedule="staged"),
    TunableKey(f"{_SCHEDULE}.reverse", bool, False, schedule="staged"),
)}


# Defaults of the keys that are not searched but that the checks against a base config read.
CONTEXT_DEFAULTS: dict[str, Any] = {
    DISTILLATION_ENABLE_PATH: False,
    DYNAMIC_LAMBDA_PATH: False,
    EPOCHS_PATH: 10,
}


def tunable_key(path: str) -> TunableKey:
    """Look up a tunable key by its dotted path, raising with the nearest valid path if unknown."""
    try:
        return TUNABLE_KEYS[path]
    except KeyError:
        raise SearchSpaceError(
            f"{path!r} is not a tunable config key{nearest_name(path, TUNABLE_KEYS)}. "
            f"Tunable keys: {', '.join(TUNABLE_KEYS)}"
        ) from None


def read_base_value(base_config: Mapping[str, Any], path: str) -> Any:
    """Return the value at a dotted ``path`` of a nested config dict, or its default if absent.

    ``distillation.lambda_schedule.type`` returns the schedule a run will use, so
    ``dynamic_lambda: true`` with type ``constant`` (its short form) reads as ``plateau``.
    """
    if path == SCHEDULE_TYPE_PATH:
        return _effective_schedule_type(base_config)
    found, value = _lookup(base_config, path)
    if found:
        return value
    if path in TUNABLE_KEYS:
        return TUNABLE_KEYS[path].default
    return CONTEXT_DEFAULTS[path]


def _effective_schedule_type(base_config: Mapping[str, Any]) -> str:
    found, schedule_type = _lookup(base_config, SCHEDULE_TYPE_PATH)
    if not found:
        schedule_type = TUNABLE_KEYS[SCHEDULE_TYPE_PATH].default
    if read_base_value(base_config, DYNAMIC_LAMBDA_PATH) and schedule_type == "constant":
        return "plateau"
    return schedule_type


def _lookup(config: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = config
    walked = []
    for part in path.split("."):
        if not isinstance(node, Mapping):
            raise SearchSpaceError(
                f"base config: {'.'.join(walked)} must be an object, got {node!r}"
            )
        if part not in node:
            return False, None
        node = node[part]
        walked.append(part)
    return True, node

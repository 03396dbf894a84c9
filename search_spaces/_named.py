"""The named search spaces and their registry.

Ranges, and why:

- Loss weights are log-uniform over one decade either side of the defaults of the training
  guide (BCE 1, focal 20, Dice 1, IoU 1, classification 1). The loss is a weighted sum, so what
  changes training is the ratio between terms, and a log scale samples ratios evenly.
- The grid is categorical over 8 to 32 points per side. Decode time grows with the square of
  the points per side (peak memory does not, because prompts are decoded in chunks), and 32 is
  the default of the training config and of SAM's automatic mask generator. A categorical lets
  the sampler learn each density on its own.
- The initial λ is log-uniform over a decade either side of its default of 1.
- The λ-schedule type is categorical over all five types, and each type's own parameters are
  sampled only for that type. The epoch counts (``step_size``, ``stage_epochs``) go up to 5,
  half of the default run of 10 epochs. ``min_lambda`` and ``max_lambda`` are not searched: a
  plateau schedule only lowers λ, so they act as safety bounds rather than as the schedule's
  shape. A YAML space can still search them.
"""

from __future__ import annotations

from search_spaces._errors import SearchSpaceError, nearest_name
from search_spaces._keys import SCHEDULE_TYPE_PATH, TUNABLE_KEYS
from search_spaces._params import CategoricalParam, FloatParam, IntParam
from search_spaces._space import SearchSpace

# One decade either side of a default, on a log scale.
_DECADES_AROUND_DEFAULT = 10.0

GRID_POINTS_CHOICES = (8, 12, 16, 24, 32)


def _around_default(path: str) -> FloatParam:
    default = TUNABLE_KEYS[path].default
    return FloatParam(path, default / _DECADES_AROUND_DEFAULT,
                      default * _DECADES_AROUND_DEFAULT, log=True)


_SCHEDULE = "distillation.lambda_schedule"

_LOSS_WEIGHT_PARAMS = tuple(
    _around_default(f"train.loss_weights.{name}")
    for name in ("bce", "focal", "dice", "iou", "cls")
)

_GRID_PARAMS = (CategoricalParam("dataset.grid_points", GRID_POINTS_CHOICES),)

_LAMBDA_SCHEDULE_PARAMS = (
    _around_default("distillation.lambda_coef"),
    CategoricalParam(
        SCHEDULE_TYPE_PATH,
        ("constant", "plateau", "step", "cosine", "staged"),
        conditional={
            "plateau": (
                FloatParam(f"{_SCHEDULE}.factor", 0.1, 0.9),
                IntParam(f"{_SCHEDULE}.patience", 1, 5),
                FloatParam(f"{_SCHEDULE}.threshold", 1e-5, 1e-2, log=True),
            ),
            "step": (
                IntParam(f"{_SCHEDULE}.step_size", 1, 5),
                # gamma = 1 would be the constant schedule, which is already a choice.
                FloatParam(f"{_SCHEDULE}.gamma", 0.1, 0.9),
            ),
            "cosine": (
                FloatParam(f"{_SCHEDULE}.final_fraction", 0.0, 0.5),
            ),
            "staged": (
                IntParam(f"{_SCHEDULE}.stage_epochs", 1, 5),
                CategoricalParam(f"{_SCHEDULE}.reverse", (False, True)),
            ),
        },
    ),
)

SPACES: dict[str, SearchSpace] = {
    "loss_weights": SearchSpace(
        "loss_weights", _LOSS_WEIGHT_PARAMS,
        "the five task-loss weights, log-uniform from default/10 to default*10"),
    "grid": SearchSpace(
        "grid", _GRID_PARAMS,
        "the prompt grid's points per side"),
    "lambda_schedule": SearchSpace(
        "lambda_schedule", _LAMBDA_SCHEDULE_PARAMS,
        "the initial λ, the λ-schedule type and that type's own parameters"),
    "full": SearchSpace(
        "full", _LOSS_WEIGHT_PARAMS + _GRID_PARAMS + _LAMBDA_SCHEDULE_PARAMS,
        "loss_weights, grid and lambda_schedule together"),
}


def get_space(name: str) -> SearchSpace:
    """Return the named search space from :data:`SPACES`.

    Raises:
        SearchSpaceError: naming the unknown space, the nearest valid name and all valid names.
    """
    try:
        return SPACES[name]
    except KeyError:
        raise SearchSpaceError(
            f"unknown search space {name!r}{nearest_name(name, SPACES)}. "
            f"Named spaces: {', '.join(SPACES)}"
        ) from None

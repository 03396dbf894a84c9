"""Checks that a search space only samples values a training config accepts.

:func:`check_params` runs when a :class:`~search_spaces.SearchSpace` is built and needs only the
space. :func:`validate_space` adds the checks that depend on the base training config. Both run
before any trial, so a bad space fails the command instead of a trial.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from search_spaces._errors import SearchSpaceError
from search_spaces._keys import (
    DISTILLATION_ENABLE_PATH,
    EPOCHS_PATH,
    LOSS_WEIGHT_PATHS,
    SCHEDULE_TYPE_PATH,
    TunableKey,
    read_base_value,
    tunable_key,
)
from search_spaces._params import (
    CategoricalParam,
    FloatParam,
    IntParam,
    Occurrence,
    Param,
    same_choice,
    walk_params,
)

if TYPE_CHECKING:
    from search_spaces._space import SearchSpace

logger = logging.getLogger(__name__)

_MIN_LAMBDA_PATH = "distillation.lambda_schedule.min_lambda"
_MAX_LAMBDA_PATH = "distillation.lambda_schedule.max_lambda"
# Schedule lengths in epochs: a value >= train.epochs leaves λ unchanged for the whole run.
_EPOCH_COUNT_PATHS = (
    "distillation.lambda_schedule.step_size",
    "distillation.lambda_schedule.stage_epochs",
)


def check_params(params: Sequence[Param]) -> None:
    """Raise SearchSpaceError unless every parameter sets a tunable key with valid values.

    Checks, for each parameter: the key exists, the parameter's type fits the key's type, its
    range or choices lie in the key's valid range, and a λ-schedule parameter is only sampled
    with its own schedule type. Across parameters: no name is sampled twice in one trial, and a
    name repeated in exclusive branches has the same distribution kind everywhere.
    """
    occurrences = list(walk_params(params))
    if not occurrences:
        raise SearchSpaceError("the search space has no parameters. Add at least one.")

    type_is_searched = any(o.param.name == SCHEDULE_TYPE_PATH for o in occurrences)
    for occurrence in occurrences:
        key = tunable_key(occurrence.param.name)
        _check_type_fits_key(occurrence.param, key)
        _check_values_fit_key(occurrence.param, key)
        _check_schedule_placement(occurrence, key, type_is_searched)
    _check_repeated_names(occurrences)


def validate_space(space: SearchSpace, base_config: Mapping[str, Any]) -> None:
    """Raise SearchSpaceError unless every trial of ``space`` on ``base_config`` is a valid run.

    On top of the checks made when the space was built, this checks against the base config:

    - distillation parameters need ``distillation.enable: true``, because otherwise λ is unused;
    - a λ-schedule parameter that is not under a branch of ``distillation.lambda_schedule.type``
      needs the base config's schedule to be of its type;
    - ``min_lambda`` can never exceed ``max_lambda``;
    - at least one task-loss weight stays above 0 in every trial.

    It logs a warning, without raising, when ``step_size`` or ``stage_epochs`` can reach
    ``train.epochs``, because such values leave λ unchanged for the whole run.
    """
    occurrences = space.occurrences()
    searched = {o.param.name for o in occurrences}

    _check_distillation_enabled(searched, base_config)
    _check_schedule_matches_base(occurrences, searched, base_config)
    _check_min_below_max_lambda(occurrences, searched, base_config)
    _check_some_loss_weight_positive(occurrences, searched, base_config)
    _warn_schedule_longer_than_run(occurrences, searched, base_config)


# Checks of one parameter against its key.

def _check_type_fits_key(param: Param, key: TunableKey) -> None:
    kind = {float: "float", int: "integer", bool: "boolean", str: "string"}[key.kind]
    if isinstance(param, FloatParam) and key.kind is not float:
        advice = "Use type int" if key.kind is int else "Use type categorical"
        raise SearchSpaceError(
            f"{param.name}: type float does not fit this {kind} key. {advice}."
        )
    if isinstance(param, IntParam) and key.kind not in (int, float):
        raise SearchSpaceError(
            f"{param.name}: type int does not fit this {kind} key. Use type categorical."
        )


def _check_values_fit_key(param: Param, key: TunableKey) -> None:
    if isinstance(param, CategoricalParam):
        for choice in param.choices:
            type_error = key.type_error(choice)
            if type_error is not None:
                raise SearchSpaceError(f"{param.name}: every choice {type_error}")
            if not key.contains(choice):
                raise SearchSpaceError(
                    f"{param.name}: choice {choice!r} is outside the key's valid values "
                    f"({key.valid_range()})"
                )
        return

    for field_name in ("low", "high"):
        value = getattr(param, field_name)
        if not key.contains(value):
            raise SearchSpaceError(
                f"{param.name}: {field_name}={value!r} is outside the key's valid range "
                f"{key.valid_range()}"
            )


def _check_schedule_placement(occurrence: Occurrence, key: TunableKey,
                              type_is_searched: bool) -> None:
    name = occurrence.param.name
    if name == SCHEDULE_TYPE_PATH and occurrence.conditions:
        parent, choice = occurrence.conditions[-1]
        raise SearchSpaceError(
            f"{name} must be sampled in every trial, not only when {parent}={choice!r}, "
            "because the λ-schedule parameters are conditional on it"
        )
    if key.schedule is None:
        return

    branch = next((c for p, c in occurrence.conditions if p == SCHEDULE_TYPE_PATH), None)
    if branch is None and type_is_searched:
        raise SearchSpaceError(
            f"{name} is read only by the {key.schedule!r} λ schedule, but this space samples "
            f"it for every {SCHEDULE_TYPE_PATH}. Move it under "
            f"conditional: {{{key.schedule}: ...}} of {SCHEDULE_TYPE_PATH}."
        )
    if branch is not None and branch != key.schedule:
        raise SearchSpaceError(
            f"{name} is read only by the {key.schedule!r} λ schedule but is in the {branch!r} "
            f"branch of {SCHEDULE_TYPE_PATH}. Move it to the {key.schedule!r} branch."
        )


def _check_repeated_names(occurrences: list[Occurrence]) -> None:
    """Reject a name sampled twice in one trial or with two kinds of distribution.

    Optuna returns the first value for a name suggested twice in one trial, and rejects a name
    whose distribution kind, log setting or choices differ between trials of one study.
    """
    for index, first in enumerate(occurrences):
        for second in occurrences[index + 1:]:
            if first.param.name != second.param.name:
                continue
            name = first.param.name
            if not _are_exclusive(first.conditions, second.conditions):
                raise SearchSpaceError(
                    f"{name} is defined twice ({_where(first)} and {_where(second)}) and "
                    "both can be sampled in the same trial. Define it once."
                )
            if not _same_distribution_kind(first.param, second.param):
                raise SearchSpaceError(
                    f"{name} has different types, log settings or choices in "
                    f"{_where(first)} and {_where(second)}. Optuna needs one distribution kind "
                    "per parameter name: use the same type, log and choices in every branch."
                )


def _are_exclusive(first: tuple, second: tuple) -> bool:
    """Return whether two condition lists can never hold in the same trial."""
    first_choices = dict(first)
    return any(parent in first_choices and not same_choice(first_choices[parent], choice)
               for parent, choice in second)


def _same_distribution_kind(first: Param, second: Param) -> bool:
    if type(first) is not type(second):
        return False
    if isinstance(first, CategoricalParam):
        return len(first.choices) == len(second.choices) and all(
            same_choice(a, b) for a, b in zip(first.choices, second.choices))
    return first.log == second.log


def _where(occurrence: Occurrence) -> str:
    if not occurrence.conditions:
        return "at the top level"
    return "under " + ", ".join(f"{parent}={choice!r}" for parent, choice in occurrence.conditions)


# Checks against the base config.

def _check_distillation_enabled(searched: set[str], base_config: Mapping[str, Any]) -> None:
    distillation_params = sorted(n for n in searched if n.startswith("distillation."))
    if distillation_params and not read_base_value(base_config, DISTILLATION_ENABLE_PATH):
        raise SearchSpaceError(
            f"the space searches {', '.join(distillation_params)}, but the base config has "
            f"{DISTILLATION_ENABLE_PATH}: false, so λ has no effect on the run. Enable "
            "distillation (with at least one teacher) or use a space without distillation "
            "parameters, for example loss_weights or grid."
        )


def _check_schedule_matches_base(occurrences: list[Occurrence], searched: set[str],
                                 base_config: Mapping[str, Any]) -> None:
    if SCHEDULE_TYPE_PATH in searched:
        return  # check_params has already required every schedule parameter to be in its branch
    base_type = read_base_value(base_config, SCHEDULE_TYPE_PATH)
    for occurrence in occurrences:
        key = tunable_key(occurrence.param.name)
        if key.schedule is not None and key.schedule != base_type:
            raise SearchSpaceError(
                f"{key.path} is read only by the {key.schedule!r} λ schedule, but the base "
                f"config's {SCHEDULE_TYPE_PATH} is {base_type!r} and the space does not search "
                f"it. Set {SCHEDULE_TYPE_PATH} to {key.schedule!r} in the base config, or "
                f"search the type and put {key.path} under its {key.schedule!r} branch."
            )


def _check_min_below_max_lambda(occurrences: list[Occurrence], searched: set[str],
                                base_config: Mapping[str, Any]) -> None:
    # The config checks min_lambda <= max_lambda whatever the schedule type.
    if _MIN_LAMBDA_PATH not in searched and _MAX_LAMBDA_PATH not in searched:
        return
    highest_min = max(_possible_values(occurrences, _MIN_LAMBDA_PATH, base_config))
    lowest_max = min(_possible_values(occurrences, _MAX_LAMBDA_PATH, base_config))
    if highest_min > lowest_max:
        raise SearchSpaceError(
            f"{_MIN_LAMBDA_PATH} can reach {highest_min:g} while {_MAX_LAMBDA_PATH} can be as "
            f"low as {lowest_max:g}, and a config with min_lambda > max_lambda is invalid. "
            "Make the two ranges (or base values) disjoint, with min_lambda below max_lambda."
        )


def _check_some_loss_weight_positive(occurrences: list[Occurrence], searched: set[str],
                                     base_config: Mapping[str, Any]) -> None:
    if not searched.intersection(LOSS_WEIGHT_PATHS):
        return
    if all(min(_possible_values(occurrences, path, base_config)) <= 0
           for path in LOSS_WEIGHT_PATHS):
        raise SearchSpaceError(
            f"every task-loss weight ({', '.join(LOSS_WEIGHT_PATHS)}) can be 0 in the same "
            "trial, and a config needs at least one weight > 0. Give one searched weight a "
            "low above 0, or keep one weight above 0 in the base config and out of the space."
        )


def _warn_schedule_longer_than_run(occurrences: list[Occurrence], searched: set[str],
                                   base_config: Mapping[str, Any]) -> None:
    epochs = read_base_value(base_config, EPOCHS_PATH)
    for path in _EPOCH_COUNT_PATHS:
        if path not in searched:
            continue
        longest = max(_possible_values(occurrences, path, base_config))
        if longest >= epochs:
            logger.warning(
                "%s can reach %s, which is not below %s=%s: with such values the schedule "
                "leaves λ unchanged for the whole run", path, longest, EPOCHS_PATH, epochs)


def _possible_values(occurrences: list[Occurrence], path: str,
                     base_config: Mapping[str, Any]) -> list[float]:
    """List the extreme values ``path`` can take in a trial: range ends, choices, base value.

    The base value counts unless the parameter is sampled in every trial.
    """
    values: list[float] = []
    always_sampled = False
    for occurrence in occurrences:
        param = occurrence.param
        if param.name != path:
            continue
        if isinstance(param, CategoricalParam):
            values.extend(param.choices)
        else:
            values.extend((param.low, param.high))
        always_sampled = always_sampled or not occurrence.conditions
    if not always_sampled:
        values.append(read_base_value(base_config, path))
    return values

"""Moving values between a nested training config and the flat, dotted params of a trial."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from search_spaces._errors import SearchSpaceError
from search_spaces._keys import DYNAMIC_LAMBDA_PATH, SCHEDULE_TYPE_PATH, read_base_value
from search_spaces._params import CategoricalParam, Param
from search_spaces._space import SearchSpace


def apply_params(base_config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``base_config`` with each dotted param set at its nested path.

    ``{"train.loss_weights.bce": 0.5}`` sets ``config["train"]["loss_weights"]["bce"]``,
    creating ``train`` and ``loss_weights`` if the base config lacks them. ``base_config`` is
    not modified.

    When ``params`` sets ``distillation.lambda_schedule.type``, ``distillation.dynamic_lambda``
    is set to false if the base config has it. ``dynamic_lambda: true`` is a short form of the
    plateau schedule, so keeping it would turn a sampled ``constant`` into ``plateau`` and make
    every other sampled type an invalid config.

    Raises:
        SearchSpaceError: for an empty path segment, or a path that passes through a value
            that is not an object in the base config.
    """
    config = copy.deepcopy(dict(base_config))
    for path, value in params.items():
        _set_path(config, path, value)

    if SCHEDULE_TYPE_PATH in params and _has_path(config, DYNAMIC_LAMBDA_PATH):
        _set_path(config, DYNAMIC_LAMBDA_PATH, False)
    return config


def base_values(space: SearchSpace, base_config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the base config's own values for the parameters of ``space``, for a warm start.

    Pass the result as ``OptunaSearch(points_to_evaluate=[...])`` (or to
    ``study.enqueue_trial``) so that the first trial runs the hand-set config. Keys missing from
    the base config take the training config's defaults. A conditional parameter is included
    when its parent's base value selects its branch, so a base config with a ``step`` schedule
    yields ``gamma`` and ``step_size`` but no ``factor``.

    A base value that the space cannot sample (outside the range, off the step grid, not among
    the choices) is left out, and so is the branch below it. Optuna then samples those
    parameters in the first trial, which is therefore not exactly the base config.
    """
    values: dict[str, Any] = {}
    _collect_base_values(space.params, base_config, values)
    return values


def _collect_base_values(params: Sequence[Param], base_config: Mapping[str, Any],
                         values: dict[str, Any]) -> None:
    for param in params:
        value = param.feasible_value(read_base_value(base_config, param.name))
        if value is None:
            continue
        values[param.name] = value
        if isinstance(param, CategoricalParam):
            _collect_base_values(param.branch(value), base_config, values)


def _set_path(config: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    if not all(parts):
        raise SearchSpaceError(f"invalid parameter name {path!r}: it has an empty path segment")

    node = config
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            parent = ".".join(parts[:depth + 1])
            raise SearchSpaceError(
                f"cannot set {path}: {parent} in the base config is {child!r}, not an object"
            )
        node = child
    node[parts[-1]] = value


def _has_path(config: Mapping[str, Any], path: str) -> bool:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True

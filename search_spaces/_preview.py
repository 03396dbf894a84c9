"""Showing a search space before a search: a readable table and a few sampled configs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import optuna

from search_spaces._base_config import apply_params
from search_spaces._params import CategoricalParam, Param, format_choice
from search_spaces._space import SearchSpace
from search_spaces._validation import validate_space

_INDENT = "  "


def describe_space(space: SearchSpace) -> str:
    """Render ``space`` as a table of parameters and their values, conditional ones indented.

    Example output::

        search space 'grid': the prompt grid's points per side
        parameter            values
        dataset.grid_points  one of 8, 12, 16, 24, 32
    """
    rows = list(_table_rows(space.params, depth=0))
    width = max(len(left) for left, right in rows if right is not None)
    width = max(width, len("parameter"))

    title = f"search space {space.name!r}"
    if space.description:
        title += f": {space.description}"
    lines = [title, f"{'parameter':<{width}}  values"]
    for left, right in rows:
        lines.append(left if right is None else f"{left:<{width}}  {right}")
    return "\n".join(lines)


def sample_params(space: SearchSpace, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Draw ``n`` sets of params from ``space`` with a seeded random sampler, without Ray.

    Each set maps dotted config paths to values, like the config of one Ray Tune trial. The
    same ``seed`` gives the same sets.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    with _optuna_logging_quiet():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))

    samples = []
    for _ in range(n):
        # The trials never get a result, because the study serves only as a sampler here.
        trial = study.ask()
        space(trial)
        samples.append(dict(trial.params))
    return samples


def sample_configs(space: SearchSpace, base_config: Mapping[str, Any], n: int,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Check ``space`` against ``base_config``, then return ``n`` sampled full training configs.

    Each config is ``base_config`` with one set of :func:`sample_params` applied, as a trial
    would run it.

    Raises:
        SearchSpaceError: when :func:`validate_space` rejects the space for this base config.
    """
    validate_space(space, base_config)
    return [apply_params(base_config, params) for params in sample_params(space, n, seed)]


def _table_rows(params: Sequence[Param], depth: int) -> Iterator[tuple[str, str | None]]:
    """Yield ``(left, right)`` rows. A condition header has ``right=None``."""
    indent = _INDENT * depth
    for param in params:
        yield indent + param.name, param.describe()
        if isinstance(param, CategoricalParam):
            for choice, branch in param.conditional.items():
                if branch:
                    yield f"{indent}{_INDENT}if {param.name} = {format_choice(choice)}:", None
                    yield from _table_rows(branch, depth + 2)


@contextlib.contextmanager
def _optuna_logging_quiet() -> Iterator[None]:
    """Hide Optuna's INFO line about the new in-memory study, which means nothing here."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)

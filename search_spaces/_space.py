"""The search space: a checked list of parameters that Optuna samples define-by-run."""

from __future__ import annotations

from collections.abc import Iterable

import optuna

from search_spaces._params import Occurrence, Param, suggest_params, walk_params
from search_spaces._validation import check_params


class SearchSpace:
    """A named set of parameters, each setting one config key given by its dotted path.

    Calling the space with an ``optuna.Trial`` samples every top-level parameter and, for each
    categorical parameter, the parameters of its sampled choice's branch. That makes the space
    a define-by-run function that ``OptunaSearch(space=...)`` of Ray Tune accepts as is. The
    trial's params then map dotted config paths to values, which :func:`apply_params` writes
    into the base config.

    The parameters are checked against the tunable config keys on construction, so a space
    that exists can only sample values the keys accept. :func:`validate_space` adds the checks
    that need the base config.

    Example::

        space = SearchSpace("lr_only", [FloatParam("train.lr", 1e-5, 1e-3, log=True)])
        study = optuna.create_study()
        trial = study.ask()
        space(trial)
        trial.params  # {"train.lr": 0.00031...}
    """

    def __init__(self, name: str, params: Iterable[Param], description: str = "") -> None:
        self.name = name
        self.params: tuple[Param, ...] = tuple(params)
        self.description = description
        check_params(self.params)

    def __call__(self, trial: optuna.Trial) -> None:
        suggest_params(trial, self.params)

    def occurrences(self) -> list[Occurrence]:
        """List every parameter, conditional ones included, with the conditions that sample it."""
        return list(walk_params(self.params))

    def param_names(self) -> list[str]:
        """List the distinct parameter names in the order they are first sampled."""
        return list(dict.fromkeys(o.param.name for o in self.occurrences()))

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, {len(self.param_names())} parameters)"

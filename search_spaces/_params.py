"""Search-space parameters: a float or int range, or a categorical with conditional branches.

Each parameter is named by the dotted path of the config key it sets and checks, on
construction, the rules Optuna's distributions impose (``low < high``, ``low > 0`` on a log
scale, a ``step`` that divides the range). Whether the key exists and the range fits the key is
checked by :class:`~search_spaces.SearchSpace` against the table of tunable keys.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple, Union

import optuna

from search_spaces._errors import SearchSpaceError

Choice = Union[bool, int, float, str]

# Optuna's own tolerance for "value lies on the step grid" (FloatDistribution._contains).
_STEP_TOLERANCE = 1e-8


@dataclass(frozen=True)
class FloatParam:
    """A float from ``[low, high]``: uniform, log-uniform (``log``) or on a grid of ``step``."""

    name: str
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def __post_init__(self) -> None:
        _require_number(self.name, "low", self.low)
        _require_number(self.name, "high", self.high)
        _require_bool(self.name, "log", self.log)
        _require_ordered_range(self.name, self.low, self.high)
        if self.log and self.low <= 0:
            raise SearchSpaceError(
                f"{self.name}: log=true needs low > 0, got low={self.low!r}. "
                "Raise low or drop log."
            )
        if self.step is not None:
            _require_number(self.name, "step", self.step)
            if self.log:
                raise SearchSpaceError(
                    f"{self.name}: step={self.step!r} cannot be combined with log=true, because "
                    "Optuna samples a log-scale float without a grid. Drop one of the two."
                )
            _require_step(self.name, self.low, self.high, self.step)

    def suggest(self, trial: optuna.Trial) -> float:
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def feasible_value(self, value: Any) -> float | None:
        """Return ``value`` as this parameter samples it, or ``None`` if it cannot be sampled."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not self.low <= value <= self.high:
            return None
        if self.step is not None and not _on_step_grid(value, self.low, self.step):
            return None
        return float(value)

    def describe(self) -> str:
        text = f"float in [{self.low:g}, {self.high:g}]"
        if self.log:
            text += ", log scale"
        if self.step is not None:
            text += f", step {self.step:g}"
        return text


@dataclass(frozen=True)
class IntParam:
    """An integer from ``[low, high]`` on a grid of ``step``, or log-uniform (``log``)."""

    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def __post_init__(self) -> None:
        _require_integer(self.name, "low", self.low)
        _require_integer(self.name, "high", self.high)
        _require_integer(self.name, "step", self.step)
        _require_bool(self.name, "log", self.log)
        _require_ordered_range(self.name, self.low, self.high)
        if self.log and self.low < 1:
            raise SearchSpaceError(
                f"{self.name}: log=true needs low >= 1, got low={self.low!r}. "
                "Raise low or drop log."
            )
        if self.log and self.step != 1:
            raise SearchSpaceError(
                f"{self.name}: step={self.step!r} cannot be combined with log=true, because "
                "Optuna samples a log-scale integer without a grid. Drop one of the two."
            )
        _require_step(self.name, self.low, self.high, self.step)

    def suggest(self, trial: optuna.Trial) -> int:
        return trial.suggest_int(self.name, self.low, self.high, step=self.step, log=self.log)

    def feasible_value(self, value: Any) -> int | None:
        """Return ``value`` as this parameter samples it, or ``None`` if it cannot be sampled."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, float) and not value.is_integer():
            return None
        value = int(value)
        if not self.low <= value <= self.high or (value - self.low) % self.step != 0:
            return None
        return value

    def describe(self) -> str:
        text = f"int in [{self.low}, {self.high}]"
        if self.log:
            text += ", log scale"
        if self.step != 1:
            text += f", step {self.step}"
        return text


@dataclass(frozen=True)
class CategoricalParam:
    """One of ``choices``, with optional parameters sampled only when a given choice is drawn.

    ``conditional`` maps a choice to its branch of parameters. A choice without an entry in
    ``conditional`` samples nothing more.
    """

    name: str
    choices: tuple[Choice, ...]
    conditional: Mapping[Choice, tuple[Param, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Sequence):
            raise SearchSpaceError(
                f"{self.name}: choices must be a list, got {self.choices!r}"
            )
        object.__setattr__(self, "choices", tuple(self.choices))
        if not self.choices:
            raise SearchSpaceError(f"{self.name}: choices is empty. List at least one value.")
        for choice in self.choices:
            if not isinstance(choice, (bool, int, float, str)):
                raise SearchSpaceError(
                    f"{self.name}: choice {choice!r} is not a number, string or boolean"
                )
        for index, choice in enumerate(self.choices):
            if any(same_choice(choice, other) for other in self.choices[:index]):
                raise SearchSpaceError(f"{self.name}: choice {choice!r} is listed twice")

        if not isinstance(self.conditional, Mapping):
            raise SearchSpaceError(
                f"{self.name}: conditional must map choices to parameters, "
                f"got {self.conditional!r}"
            )
        branches = {}
        for choice, params in self.conditional.items():
            if not any(same_choice(choice, c) for c in self.choices):
                raise SearchSpaceError(
                    f"{self.name}: conditional has a branch for {choice!r}, which is not "
                    f"among the choices {list(self.choices)}. Add it to choices or remove "
                    "the branch."
                )
            params = tuple(params)
            for param in params:
                if not isinstance(param, (FloatParam, IntParam, CategoricalParam)):
                    raise SearchSpaceError(
                        f"{self.name}: the {choice!r} branch contains {param!r}, which is not "
                        "a search-space parameter"
                    )
            branches[choice] = params
        object.__setattr__(self, "conditional", branches)

    def suggest(self, trial: optuna.Trial) -> Choice:
        return trial.suggest_categorical(self.name, self.choices)

    def branch(self, choice: Choice) -> tuple[Param, ...]:
        """Return the parameters sampled when this parameter takes ``choice``."""
        for key, params in self.conditional.items():
            if same_choice(key, choice):
                return params
        return ()

    def feasible_value(self, value: Any) -> Choice | None:
        """Return the choice equal to ``value``, or ``None`` if ``value`` is not a choice."""
        for choice in self.choices:
            if same_choice(choice, value):
                return choice
        return None

    def describe(self) -> str:
        return "one of " + ", ".join(format_choice(c) for c in self.choices)


Param = Union[FloatParam, IntParam, CategoricalParam]


class Occurrence(NamedTuple):
    """A parameter and the conditions under which it is sampled.

    ``conditions`` lists ``(parent name, choice)`` pairs from the top level down. It is empty
    for a parameter sampled in every trial.
    """

    param: Param
    conditions: tuple[tuple[str, Choice], ...]


def walk_params(params: Sequence[Param],
                conditions: tuple[tuple[str, Choice], ...] = ()) -> Iterator[Occurrence]:
    """Yield every parameter of ``params`` and of their conditional branches, depth first."""
    for param in params:
        yield Occurrence(param, conditions)
        if isinstance(param, CategoricalParam):
            for choice, branch in param.conditional.items():
                yield from walk_params(branch, conditions + ((param.name, choice),))


def suggest_params(trial: optuna.Trial, params: Sequence[Param]) -> None:
    """Sample ``params`` on ``trial`` and, for each categorical, the branch of its choice."""
    for param in params:
        value = param.suggest(trial)
        if isinstance(param, CategoricalParam):
            suggest_params(trial, param.branch(value))


def same_choice(a: Any, b: Any) -> bool:
    # Python counts True == 1 and 1 == 1.0, but only the second pair is one config value.
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def format_choice(choice: Choice) -> str:
    if isinstance(choice, bool):
        return "true" if choice else "false"
    if isinstance(choice, float):
        return f"{choice:g}"
    return str(choice)


def _on_step_grid(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return abs(k - round(k)) < _STEP_TOLERANCE


def _require_number(name: str, field_name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SearchSpaceError(f"{name}: {field_name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SearchSpaceError(f"{name}: {field_name} must be finite, got {value!r}")


def _require_integer(name: str, field_name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SearchSpaceError(f"{name}: {field_name} must be an integer, got {value!r}")


def _require_bool(name: str, field_name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SearchSpaceError(f"{name}: {field_name} must be true or false, got {value!r}")


def _require_ordered_range(name: str, low: float, high: float) -> None:
    if low >= high:
        raise SearchSpaceError(
            f"{name}: the range is empty or inverted (low={low!r}, high={high!r}). "
            "low must be below high. To fix the value instead, set it in the base config "
            "and leave the parameter out of the space."
        )


def _require_step(name: str, low: float, high: float, step: float) -> None:
    """Reject a step that Optuna would reject or would silently change."""
    if step <= 0:
        raise SearchSpaceError(f"{name}: step must be > 0, got {step!r}")
    # Optuna would lower `high` to the last point of the grid with only a warning. Decimal
    # keeps decimal steps such as 0.1 exact.
    span = Decimal(str(high)) - Decimal(str(low))
    remainder = span % Decimal(str(step))
    if remainder != 0:
        last = Decimal(str(high)) - remainder
        raise SearchSpaceError(
            f"{name}: step={step!r} does not divide the range [{low!r}, {high!r}]. "
            f"Set high to {last} or choose a step that divides high - low."
        )

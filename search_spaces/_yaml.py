"""Search spaces written by users, as YAML files or the equivalent dicts.

A search-space file contains one top-level key, ``space``. Its value is either the name of a
named space::

    space: full

or a mapping from dotted config paths to parameters, optionally starting from named spaces::

    space:
      use: [loss_weights, grid]          # optional: a name or a list of names
      train.loss_weights.focal: {type: float, low: 5.0, high: 50.0, log: true}
      train.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      distillation.lambda_coef: {type: float, low: 0.1, high: 10.0, log: true}
      distillation.lambda_schedule.type:
        type: categorical
        choices: [constant, step, cosine]
        conditional:
          step:
            distillation.lambda_schedule.step_size: {type: int, low: 1, high: 4}
            distillation.lambda_schedule.gamma: {type: float, low: 0.1, high: 0.9}
          cosine:
            distillation.lambda_schedule.final_fraction: {type: float, low: 0.0, high: 0.5}

A parameter is one of:

- ``{type: float, low, high}``, optionally with ``log: true`` (needs ``low > 0``) or
  ``step: S`` (samples ``low, low + S, ..., high``; ``S`` must divide ``high - low``);
- ``{type: int, low, high}``, optionally with ``step: S`` (default 1) or ``log: true``;
- ``{type: categorical, choices: [...]}``, optionally with ``conditional``, which maps some
  of the choices to further parameters sampled only when that choice is drawn. Branches nest.

``low < high`` always: a value that should not vary belongs in the base config. A parameter
listed here replaces the top-level parameter of the same name taken from ``use``. The keys that
may be searched are those of ``search_spaces.TUNABLE_KEYS``. A λ-schedule parameter such as
``gamma`` goes under the branch of its own type, or at the top level when the type is not
searched and the base config uses that type.

Numbers in exponent notation without a dot (``1e-5``) read as floats, not as the strings that
YAML 1.1 makes of them. A key repeated in one mapping is an error instead of the last one
silently winning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import yaml

from search_spaces._errors import SearchSpaceError, nearest_name
from search_spaces._keys import tunable_key
from search_spaces._named import get_space
from search_spaces._params import CategoricalParam, FloatParam, IntParam, Param
from search_spaces._space import SearchSpace

_USE_KEY = "use"
_FIELDS = {
    "float": {"type", "low", "high", "step", "log"},
    "int": {"type", "low", "high", "step", "log"},
    "categorical": {"type", "choices", "conditional"},
}
_REQUIRED_FIELDS = {
    "float": ("low", "high"),
    "int": ("low", "high"),
    "categorical": ("choices",),
}


def load_space(path: Union[str, os.PathLike]) -> SearchSpace:
    """Read a search-space YAML file and return its checked :class:`SearchSpace`.

    Raises:
        SearchSpaceError: for a missing or unreadable file, invalid YAML, a file whose top level
            is not ``space: ...`` alone, or any invalid parameter. The message starts with the
            file's path.
    """
    file = Path(path)
    try:
        document = yaml.load(file.read_text(), Loader=_SpaceLoader)
    except FileNotFoundError:
        raise SearchSpaceError(f"search-space file not found: {file}") from None
    except OSError as error:
        raise SearchSpaceError(f"failed to read search-space file {file}: {error}") from None
    except yaml.YAMLError as error:
        raise SearchSpaceError(f"{file} is not valid YAML: {error}") from None

    if not isinstance(document, dict) or "space" not in document:
        raise SearchSpaceError(
            f"{file}: expected a top-level 'space' key (a space name or a mapping of "
            f"parameters), got {document!r}"
        )
    extra = sorted(str(key) for key in document if key != "space")
    if extra:
        raise SearchSpaceError(
            f"{file}: unknown top-level keys {extra}. A search-space file contains only "
            "'space'."
        )
    try:
        return parse_space(document["space"], name=str(file))
    except SearchSpaceError as error:
        raise SearchSpaceError(f"{file}: {error}") from None


def parse_space(spec: Union[str, Mapping[str, Any]], name: str = "custom") -> SearchSpace:
    """Build a :class:`SearchSpace` from the value of a file's ``space`` key.

    ``spec`` is a named space's name or a mapping as described in this module's docstring.
    ``name`` names the resulting space unless ``spec`` is a name.

    Raises:
        SearchSpaceError: naming the parameter and the field at fault.
    """
    if isinstance(spec, str):
        return get_space(spec)
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(
            f"space must be a named space or a mapping of parameters, got {spec!r}"
        )

    params: dict[str, Param] = {}
    used = _used_space_names(spec.get(_USE_KEY, []))
    for space_name in used:
        for param in get_space(space_name).params:
            params[param.name] = param
    for path, param_spec in spec.items():
        if path != _USE_KEY:
            params[path] = _parse_param(path, param_spec)

    description = f"built on {', '.join(used)}" if used else ""
    return SearchSpace(name, params.values(), description)


def _used_space_names(value: Any) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SearchSpaceError(
            f"use must be a space name or a list of space names, got {value!r}"
        )
    return names


def _parse_param(path: Any, spec: Any) -> Param:
    if not isinstance(path, str):
        raise SearchSpaceError(f"parameter names must be dotted config paths, got {path!r}")
    tunable_key(path)
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(
            f"{path}: expected a mapping such as {{type: float, low: 0.1, high: 1.0}}, "
            f"got {spec!r}"
        )

    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise SearchSpaceError(
            f"{path}: type must be one of {', '.join(_FIELDS)}, got {kind!r}"
            + (nearest_name(kind, _FIELDS) if isinstance(kind, str) else "")
        )
    for field_name in spec:
        if field_name not in _FIELDS[kind]:
            raise SearchSpaceError(
                f"{path}: unknown field {field_name!r} for type {kind}"
                f"{nearest_name(str(field_name), _FIELDS[kind])}. "
                f"Fields of type {kind}: {', '.join(sorted(_FIELDS[kind]))}"
            )
    for field_name in _REQUIRED_FIELDS[kind]:
        if field_name not in spec:
            raise SearchSpaceError(f"{path}: type {kind} needs the field {field_name!r}")

    if kind == "float":
        return FloatParam(path, spec["low"], spec["high"], step=spec.get("step"),
                          log=spec.get("log", False))
    if kind == "int":
        return IntParam(path, spec["low"], spec["high"], step=spec.get("step", 1),
                        log=spec.get("log", False))
    return CategoricalParam(path, spec["choices"],
                            _parse_branches(path, spec.get("conditional", {})))


def _parse_branches(path: str, conditional: Any) -> dict[Any, tuple[Param, ...]]:
    if not isinstance(conditional, Mapping):
        raise SearchSpaceError(
            f"{path}: conditional must map choices to parameters, got {conditional!r}"
        )
    branches = {}
    for choice, branch_spec in conditional.items():
        if branch_spec is None:
            branch_spec = {}
        if not isinstance(branch_spec, Mapping):
            raise SearchSpaceError(
                f"{path}: the {choice!r} branch must map dotted config paths to parameters, "
                f"got {branch_spec!r}"
            )
        if _USE_KEY in branch_spec:
            raise SearchSpaceError(
                f"{path}: 'use' is only valid at the top level of a space, not in the "
                f"{choice!r} branch"
            )
        branches[choice] = tuple(_parse_param(p, s) for p, s in branch_spec.items())
    return branches


class _SpaceLoader(yaml.SafeLoader):
    """YAML's safe loader that reads ``1e-5`` as a float and rejects repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        self.flatten_mapping(node)
        seen = []
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"found the key {key!r} twice", key_node.start_mark)
            seen.append(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 floats need a dot, so PyYAML reads 1e-5 as a string. Learning rates are written
# that way, so accept exponents without a dot too.
_SpaceLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

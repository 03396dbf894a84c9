"""Specification of search_spaces: named spaces, the YAML form, checks, and config plumbing.

Expected ranges and configs are written out by hand here, not read from the package, so that a
changed range or a wrong merge fails a test instead of passing by construction.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search_spaces import (
    SPACES,
    TUNABLE_KEYS,
    CategoricalParam,
    FloatParam,
    SearchSpace,
    SearchSpaceError,
    apply_params,
    base_values,
    describe_space,
    get_space,
    load_space,
    parse_space,
    sample_configs,
    sample_params,
    validate_space,
)

TYPE = "distillation.lambda_schedule.type"
S = "distillation.lambda_schedule"

LOSS_WEIGHT_RANGES = {
    "train.loss_weights.bce": (0.1, 10.0),
    "train.loss_weights.focal": (2.0, 200.0),
    "train.loss_weights.dice": (0.1, 10.0),
    "train.loss_weights.iou": (0.1, 10.0),
    "train.loss_weights.cls": (0.1, 10.0),
}
GRID_CHOICES = {8, 12, 16, 24, 32}
LAMBDA_COEF_RANGE = (0.1, 10.0)
SCHEDULE_TYPES = {"constant", "plateau", "step", "cosine", "staged"}

# Per schedule type: its own parameters and their ranges (a set lists categorical choices).
SCHEDULE_PARAMS = {
    "constant": {},
    "plateau": {f"{S}.factor": (0.1, 0.9), f"{S}.patience": (1, 5),
                f"{S}.threshold": (1e-5, 1e-2)},
    "step": {f"{S}.step_size": (1, 5), f"{S}.gamma": (0.1, 0.9)},
    "cosine": {f"{S}.final_fraction": (0.0, 0.5)},
    "staged": {f"{S}.stage_epochs": (1, 5), f"{S}.reverse": {False, True}},
}
SCHEDULE_TYPE_OF_PARAM = {
    name: schedule for schedule, params in SCHEDULE_PARAMS.items() for name in params
}
INTEGER_PARAMS = {"dataset.grid_points", f"{S}.patience", f"{S}.step_size", f"{S}.stage_epochs"}

TOP_LEVEL_NAMES = {
    "loss_weights": set(LOSS_WEIGHT_RANGES),
    "grid": {"dataset.grid_points"},
    "lambda_schedule": {"distillation.lambda_coef", TYPE},
    "full": set(LOSS_WEIGHT_RANGES) | {"dataset.grid_points", "distillation.lambda_coef", TYPE},
}

DISTILLATION_BASE = {
    "dataset": {"train_dir": "data/train", "val_dir": "data/val"},
    "distillation": {"enable": True},
    "teachers": [{"name": "sam_b", "type": "vit_b", "allow_random_weights": True}],
}

CONFIG_PY = Path(__file__).resolve().parents[1] / "trainable" / "config.py"


@pytest.fixture(scope="module")
def training_config():
    """trainable/config.py loaded by path, so that its package's torch imports stay out."""
    if not CONFIG_PY.exists():
        pytest.skip(f"{CONFIG_PY} not found")
    spec = importlib.util.spec_from_file_location("_training_config_under_test", CONFIG_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        pytest.skip(f"trainable/config.py needs more than the standard library: {error}")
    yield module
    del sys.modules[spec.name]


def assert_in_expected_range(name, value, expected):
    if isinstance(expected, set):
        assert value in expected, f"{name}={value!r} not among {expected}"
        return
    if name in INTEGER_PARAMS:
        assert isinstance(value, int) and not isinstance(value, bool), f"{name}={value!r}"
    low, high = expected
    assert low <= value <= high, f"{name}={value!r} outside [{low}, {high}]"


def expected_range(name):
    if name in LOSS_WEIGHT_RANGES:
        return LOSS_WEIGHT_RANGES[name]
    if name == "dataset.grid_points":
        return GRID_CHOICES
    if name == "distillation.lambda_coef":
        return LAMBDA_COEF_RANGE
    if name == TYPE:
        return SCHEDULE_TYPES
    return SCHEDULE_PARAMS[SCHEDULE_TYPE_OF_PARAM[name]][name]


# Named spaces.

def test_package_imports_neither_torch_nor_ray():
    # A fresh interpreter, because this test process may have imported them elsewhere.
    code = ("import sys, search_spaces; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=True)
    assert result.stdout.strip() == "[]"


def test_registry_has_the_four_named_spaces():
    assert set(SPACES) == {"loss_weights", "grid", "lambda_schedule", "full"}
    for name, space in SPACES.items():
        assert get_space(name) is space
        assert space.name == name


def test_get_space_unknown_name_suggests_nearest():
    with pytest.raises(SearchSpaceError) as raised:
        get_space("ful")
    assert "'ful'" in str(raised.value)
    assert "did you mean 'full'?" in str(raised.value)


@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_named_space_samples_inside_ranges(space_name):
    samples = sample_params(SPACES[space_name], 50, seed=0)

    assert len(samples) == 50
    for params in samples:
        assert TOP_LEVEL_NAMES[space_name] <= set(params)
        for name, value in params.items():
            assert name in TOP_LEVEL_NAMES[space_name] or name in SCHEDULE_TYPE_OF_PARAM
            assert_in_expected_range(name, value, expected_range(name))


@pytest.mark.parametrize("space_name", ["lambda_schedule", "full"])
def test_schedule_params_only_for_their_type(space_name):
    samples = sample_params(SPACES[space_name], 50, seed=1)

    for params in samples:
        schedule_type = params[TYPE]
        present = {name for name in params if name in SCHEDULE_TYPE_OF_PARAM}
        assert present == set(SCHEDULE_PARAMS[schedule_type]), params
    assert {params[TYPE] for params in samples} == SCHEDULE_TYPES


def test_full_space_is_the_three_spaces_together():
    expected = (SPACES["loss_weights"].param_names() + SPACES["grid"].param_names()
                + SPACES["lambda_schedule"].param_names())
    assert SPACES["full"].param_names() == expected


def test_sample_params_is_reproducible_by_seed():
    first = sample_params(SPACES["full"], 5, seed=7)
    again = sample_params(SPACES["full"], 5, seed=7)
    other = sample_params(SPACES["full"], 5, seed=8)
    assert first == again
    assert first != other


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_space_drives_a_tpe_study():
    space = SPACES["full"]
    sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, group=True,
                                         n_startup_trials=5)
    study = optuna.create_study(sampler=sampler)

    def objective(trial):
        space(trial)
        return trial.params["train.loss_weights.focal"]

    study.optimize(objective, n_trials=15)

    assert len(study.trials) == 15
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        present = {n for n in trial.params if n in SCHEDULE_TYPE_OF_PARAM}
        assert present == set(SCHEDULE_PARAMS[trial.params[TYPE]])


def test_space_survives_pickling():
    # Ray pickles the searcher, and the space with it, to checkpoint and restore a search.
    restored = pickle.loads(pickle.dumps(SPACES["full"]))
    assert sample_params(restored, 3, seed=2) == sample_params(SPACES["full"], 3, seed=2)


# The tunable-key table against the training config it mirrors.

def test_tunable_defaults_match_training_config(training_config):
    defaults = training_config.TrainingConfig().to_dict()
    for path, key in TUNABLE_KEYS.items():
        node = defaults
        for part in path.split("."):
            node = node[part]
        assert node == key.default, path


def test_tunable_ranges_match_training_config(training_config):
    base = {"dataset": {"train_dir": "data/train", "val_dir": "data/val"}}

    def accepted(path, value):
        try:
            training_config.load_config(apply_params(base, {path: value}))
        except training_config.ConfigError:
            return False
        return True

    for path, key in TUNABLE_KEYS.items():
        assert accepted(path, key.default), path
        if key.kind is str:
            for choice in key.choices:
                assert accepted(path, choice), (path, choice)
            assert not accepted(path, "cosin"), path
            continue
        if key.kind is bool:
            assert accepted(path, True), path
            assert accepted(path, False), path
            assert not accepted(path, 1), path
            continue

        delta = 1 if key.kind is int else 1e-6
        if key.low is not None:
            assert accepted(path, key.low) == key.low_inclusive, (path, key.low)
            assert not accepted(path, key.low - delta), (path, key.low - delta)
        if key.high is not None:
            assert accepted(path, key.high) == key.high_inclusive, (path, key.high)
            assert not accepted(path, key.high + delta), (path, key.high + delta)
        if key.kind is int:
            assert not accepted(path, float(key.default)), path


def test_sampled_configs_pass_training_config_checks(training_config):
    # dynamic_lambda: true in the base would turn every sampled type but plateau into an
    # invalid config unless apply_params clears it.
    base = apply_params(DISTILLATION_BASE, {"distillation.dynamic_lambda": True})
    space = SPACES["full"]

    configs = sample_configs(space, base, 30, seed=3)
    samples = sample_params(space, 30, seed=3)

    for config, params in zip(configs, samples):
        loaded = training_config.load_config(config)
        assert loaded.distillation.lambda_schedule.type == params[TYPE]
        assert loaded.dataset.grid_points == params["dataset.grid_points"]
        assert loaded.train.loss_weights.focal == params["train.loss_weights.focal"]


# YAML spaces.

BRIEF_EXAMPLE_YAML = """\
space:
  train.loss_weights.focal: {type: float, low: 2.0, high: 200.0, log: true}
  dataset.grid_points: {type: categorical, choices: [8, 16, 32]}
  distillation.lambda_schedule.type:
    type: categorical
    choices: [constant, step, cosine]
    conditional:
      step:
        distillation.lambda_schedule.gamma: {type: float, low: 0.1, high: 0.9}
      cosine:
        distillation.lambda_schedule.final_fraction: {type: float, low: 0.0, high: 0.5}
"""


def write_yaml(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_space_loads_and_samples(tmp_path):
    space = load_space(write_yaml(tmp_path, BRIEF_EXAMPLE_YAML))
    samples = sample_params(space, 50, seed=0)

    for params in samples:
        assert 2.0 <= params["train.loss_weights.focal"] <= 200.0
        assert params["dataset.grid_points"] in {8, 16, 32}
        schedule_type = params[TYPE]
        assert schedule_type in {"constant", "step", "cosine"}
        assert (f"{S}.gamma" in params) == (schedule_type == "step")
        assert (f"{S}.final_fraction" in params) == (schedule_type == "cosine")
        if schedule_type == "step":
            assert 0.1 <= params[f"{S}.gamma"] <= 0.9
        if schedule_type == "cosine":
            assert 0.0 <= params[f"{S}.final_fraction"] <= 0.5
    assert {params[TYPE] for params in samples} == {"constant", "step", "cosine"}


def test_yaml_space_name_gives_named_space(tmp_path):
    assert load_space(write_yaml(tmp_path, "space: full\n")) is SPACES["full"]


def test_yaml_use_keeps_named_params_and_overrides(tmp_path):
    text = """\
space:
  use: [loss_weights, grid]
  train.loss_weights.focal: {type: float, low: 5, high: 50, log: true}
  train.lr: {type: float, low: 1e-5, high: 1e-3, log: true}
"""
    space = load_space(write_yaml(tmp_path, text))

    assert space.param_names() == [
        "train.loss_weights.bce", "train.loss_weights.focal", "train.loss_weights.dice",
        "train.loss_weights.iou", "train.loss_weights.cls", "dataset.grid_points", "train.lr",
    ]
    focal = next(p for p in space.params if p.name == "train.loss_weights.focal")
    assert (focal.low, focal.high, focal.log) == (5, 50, True)
    for params in sample_params(space, 20, seed=0):
        assert 5 <= params["train.loss_weights.focal"] <= 50
        assert 1e-5 <= params["train.lr"] <= 1e-3


def test_yaml_exponent_without_dot_reads_as_float(tmp_path):
    text = "space:\n  train.lr: {type: float, low: 1e-5, high: 3E-3, log: true}\n"
    (param,) = load_space(write_yaml(tmp_path, text)).params
    assert param.low == 1e-5
    assert param.high == 3e-3


def test_yaml_integer_bounds_fit_float_key(tmp_path):
    text = """\
space:
  train.loss_weights.focal: {type: int, low: 5, high: 50, step: 5}
  train.loss_weights.dice: {type: float, low: 1, high: 3}
"""
    space = load_space(write_yaml(tmp_path, text))
    for params in sample_params(space, 20, seed=0):
        assert params["train.loss_weights.focal"] in range(5, 51, 5)
        assert 1 <= params["train.loss_weights.dice"] <= 3


def test_yaml_bool_choices_and_branches(tmp_path):
    text = """\
space:
  distillation.lambda_schedule.type:
    type: categorical
    choices: [staged]
    conditional:
      staged:
        distillation.lambda_schedule.reverse: {type: categorical, choices: [false, true]}
"""
    space = load_space(write_yaml(tmp_path, text))
    values = {params[f"{S}.reverse"] for params in sample_params(space, 20, seed=0)}
    assert values == {False, True}


def test_dict_form_equals_yaml_form(tmp_path):
    spec = {
        "dataset.grid_points": {"type": "categorical", "choices": [8, 16, 32]},
        TYPE: {"type": "categorical", "choices": ["constant", "step"],
               "conditional": {"step": {f"{S}.gamma": {"type": "float", "low": 0.1,
                                                      "high": 0.9}}}},
    }
    text = """\
space:
  dataset.grid_points: {type: categorical, choices: [8, 16, 32]}
  distillation.lambda_schedule.type:
    type: categorical
    choices: [constant, step]
    conditional:
      step:
        distillation.lambda_schedule.gamma: {type: float, low: 0.1, high: 0.9}
"""
    from_dict = parse_space(spec)
    from_yaml = load_space(write_yaml(tmp_path, text))
    assert from_dict.params == from_yaml.params


# Invalid spaces: each raises SearchSpaceError naming the parameter.

def grid_spec(**fields):
    return {"dataset.grid_points": fields}


def type_spec(choices, conditional):
    return {TYPE: {"type": "categorical", "choices": choices, "conditional": conditional}}


INVALID_SPACES = {
    "unknown parameter": (
        {"train.loss_weights.foca": {"type": "float", "low": 1, "high": 2}},
        ["'train.loss_weights.foca' is not a tunable config key",
         "did you mean 'train.loss_weights.focal'?"]),
    "inverted range": (
        {"train.loss_weights.bce": {"type": "float", "low": 10, "high": 1}},
        ["train.loss_weights.bce", "empty or inverted", "low=10", "high=1"]),
    "empty range": (
        grid_spec(type="int", low=16, high=16),
        ["dataset.grid_points", "empty or inverted"]),
    "log range from zero": (
        {"train.loss_weights.bce": {"type": "float", "low": 0.0, "high": 1.0, "log": True}},
        ["train.loss_weights.bce", "log=true needs low > 0"]),
    "int log range from zero": (
        grid_spec(type="int", low=0, high=32, log=True),
        ["dataset.grid_points", "log=true needs low >= 1"]),
    "int range below valid range": (
        grid_spec(type="int", low=0, high=32),
        ["dataset.grid_points", "low=0 is outside the key's valid range [1, 128]"]),
    "int range above valid range": (
        grid_spec(type="int", low=8, high=256),
        ["dataset.grid_points", "high=256 is outside the key's valid range [1, 128]"]),
    "choice outside valid range": (
        grid_spec(type="categorical", choices=[0, 8]),
        ["dataset.grid_points", "choice 0 is outside"]),
    "exclusive bound reached": (
        type_spec(["plateau"], {"plateau": {f"{S}.factor": {"type": "float", "low": 0.5,
                                                             "high": 1.0}}}),
        [f"{S}.factor", "high=1.0 is outside the key's valid range (0, 1)"]),
    "negative weight": (
        {"train.loss_weights.iou": {"type": "float", "low": -1, "high": 1}},
        ["train.loss_weights.iou", "low=-1", ">= 0"]),
    "string choice for int key": (
        grid_spec(type="categorical", choices=[8, "sixteen"]),
        ["dataset.grid_points", "must be an integer, got 'sixteen'"]),
    "string bound for int key": (
        grid_spec(type="int", low="8", high=32),
        ["dataset.grid_points", "low must be an integer, got '8'"]),
    "fractional bound for int type": (
        grid_spec(type="int", low=1.5, high=32),
        ["dataset.grid_points", "low must be an integer, got 1.5"]),
    "float type for int key": (
        grid_spec(type="float", low=8, high=32),
        ["dataset.grid_points", "type float does not fit this integer key"]),
    "int type for string key": (
        {TYPE: {"type": "int", "low": 1, "high": 2}},
        [TYPE, "type int does not fit this string key"]),
    "boolean choice for float key": (
        {"train.loss_weights.cls": {"type": "categorical", "choices": [1.0, True]}},
        ["train.loss_weights.cls", "must be a number, got True"]),
    "unknown schedule type": (
        {TYPE: {"type": "categorical", "choices": ["constant", "cosin"]}},
        [TYPE, "choice 'cosin' is outside", "one of constant, plateau, step, cosine, staged"]),
    "empty choices": (
        grid_spec(type="categorical", choices=[]),
        ["dataset.grid_points", "choices is empty"]),
    "repeated choice": (
        grid_spec(type="categorical", choices=[8, 16, 8]),
        ["dataset.grid_points", "choice 8 is listed twice"]),
    "branch for type not among choices": (
        type_spec(["constant", "step"],
                  {"cosine": {f"{S}.final_fraction": {"type": "float", "low": 0, "high": 1}}}),
        [TYPE, "branch for 'cosine'", "not among the choices"]),
    "schedule param under another type": (
        type_spec(["step", "cosine"],
                  {"cosine": {f"{S}.gamma": {"type": "float", "low": 0.1, "high": 0.9}}}),
        [f"{S}.gamma", "'step' λ schedule", "'cosine' branch"]),
    "schedule param outside branch while type searched": (
        {**type_spec(["constant", "step"], {}),
         f"{S}.gamma": {"type": "float", "low": 0.1, "high": 0.9}},
        [f"{S}.gamma", "'step' λ schedule", "Move it under"]),
    "schedule type conditional on another param": (
        grid_spec(type="categorical", choices=[8, 16],
                  conditional={8: {TYPE: {"type": "categorical", "choices": ["step"]}}}),
        [TYPE, "must be sampled in every trial", "dataset.grid_points=8"]),
    "param sampled twice in one trial": (
        {"distillation.lambda_coef": {"type": "float", "low": 0.1, "high": 1},
         **type_spec(["step"], {"step": {"distillation.lambda_coef": {
             "type": "float", "low": 1, "high": 2}}})},
        ["distillation.lambda_coef", "defined twice", "at the top level"]),
    "param with two kinds in exclusive branches": (
        type_spec(["step", "cosine"], {
            "step": {"distillation.lambda_coef": {"type": "float", "low": 0.1, "high": 1,
                                                  "log": True}},
            "cosine": {"distillation.lambda_coef": {"type": "float", "low": 0.1, "high": 1}},
        }),
        ["distillation.lambda_coef", "different types, log settings or choices"]),
    "unknown field": (
        {"train.loss_weights.bce": {"type": "float", "low": 1, "hi": 2}},
        ["train.loss_weights.bce", "unknown field 'hi'", "did you mean 'high'?"]),
    "conditional on a float": (
        {"train.loss_weights.bce": {"type": "float", "low": 1, "high": 2, "conditional": {}}},
        ["train.loss_weights.bce", "unknown field 'conditional' for type float"]),
    "missing field": (
        {"train.loss_weights.bce": {"type": "float", "low": 1}},
        ["train.loss_weights.bce", "needs the field 'high'"]),
    "unknown type": (
        {"train.loss_weights.bce": {"type": "floaat", "low": 1, "high": 2}},
        ["train.loss_weights.bce", "got 'floaat'", "did you mean 'float'?"]),
    "parameter not a mapping": (
        {"train.loss_weights.bce": [0.1, 10]},
        ["train.loss_weights.bce", "expected a mapping"]),
    "step combined with log": (
        {"train.loss_weights.bce": {"type": "float", "low": 0.1, "high": 1, "step": 0.1,
                                    "log": True}},
        ["train.loss_weights.bce", "cannot be combined with log=true"]),
    "step that does not divide the range": (
        {"train.loss_weights.bce": {"type": "float", "low": 0.1, "high": 1.0, "step": 0.2}},
        ["train.loss_weights.bce", "does not divide", "Set high to 0.9"]),
    "log that is not a boolean": (
        {"train.loss_weights.bce": {"type": "float", "low": 0.1, "high": 1, "log": "yes"}},
        ["train.loss_weights.bce", "log must be true or false"]),
    "unknown named space in use": (
        {"use": "fulll"},
        ["unknown search space 'fulll'", "did you mean 'full'?"]),
    "empty space": (
        {},
        ["no parameters"]),
}


@pytest.mark.parametrize("case", sorted(INVALID_SPACES))
def test_invalid_space_raises_naming_parameter(case):
    spec, fragments = INVALID_SPACES[case]
    with pytest.raises(SearchSpaceError) as raised:
        parse_space(spec)
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_yaml_error_names_file_and_parameter(tmp_path):
    path = write_yaml(tmp_path, "space:\n  dataset.grid_points: {type: int, low: 0, high: 8}\n")
    with pytest.raises(SearchSpaceError) as raised:
        load_space(path)
    assert str(path) in str(raised.value)
    assert "dataset.grid_points: low=0" in str(raised.value)


@pytest.mark.parametrize("text, fragment", [
    ("space: [", "is not valid YAML"),
    ("grid: {}\n", "expected a top-level 'space' key"),
    ("space: grid\nsamples: 3\n", "unknown top-level keys ['samples']"),
    ("space:\n  train.lr: {type: float, low: 1e-5, low: 1e-3}\n", "found the key 'low' twice"),
])
def test_invalid_yaml_file_raises(tmp_path, text, fragment):
    path = write_yaml(tmp_path, text)
    with pytest.raises(SearchSpaceError) as raised:
        load_space(path)
    assert str(path) in str(raised.value)
    assert fragment in str(raised.value)


def test_missing_yaml_file_raises(tmp_path):
    with pytest.raises(SearchSpaceError, match="search-space file not found: .*absent.yaml"):
        load_space(tmp_path / "absent.yaml")


# Checks against the base config.

GAMMA_TOP_LEVEL = {f"{S}.gamma": {"type": "float", "low": 0.1, "high": 0.9}}


def with_schedule(base, **schedule):
    return apply_params(base, {f"{S}.{key}": value for key, value in schedule.items()})


def test_schedule_param_needs_base_schedule_type():
    space = parse_space(GAMMA_TOP_LEVEL)
    with pytest.raises(SearchSpaceError) as raised:
        validate_space(space, DISTILLATION_BASE)
    message = str(raised.value)
    assert f"{S}.gamma" in message
    assert "'step' λ schedule" in message
    assert "is 'constant'" in message


def test_schedule_param_accepted_with_matching_base_type():
    validate_space(parse_space(GAMMA_TOP_LEVEL), with_schedule(DISTILLATION_BASE, type="step"))


def test_dynamic_lambda_base_counts_as_plateau():
    space = parse_space({f"{S}.factor": {"type": "float", "low": 0.1, "high": 0.9}})
    base = apply_params(DISTILLATION_BASE, {"distillation.dynamic_lambda": True})
    validate_space(space, base)
    assert base_values(space, base) == {f"{S}.factor": 0.5}


def test_distillation_params_need_distillation_enabled():
    with pytest.raises(SearchSpaceError) as raised:
        validate_space(SPACES["full"], {})
    message = str(raised.value)
    assert "distillation.lambda_coef" in message
    assert "distillation.enable: false" in message
    validate_space(SPACES["loss_weights"], {})


def test_min_lambda_range_above_max_lambda_rejected():
    space = parse_space(type_spec(["plateau"], {"plateau": {
        f"{S}.min_lambda": {"type": "float", "low": 0.0, "high": 5.0},
        f"{S}.max_lambda": {"type": "float", "low": 1.0, "high": 100.0},
    }}))
    with pytest.raises(SearchSpaceError) as raised:
        validate_space(space, DISTILLATION_BASE)
    assert f"{S}.min_lambda can reach 5" in str(raised.value)
    assert f"{S}.max_lambda can be as low as 1" in str(raised.value)


def test_min_lambda_range_above_base_max_lambda_rejected():
    space = parse_space({f"{S}.min_lambda": {"type": "float", "low": 0.0, "high": 200.0}})
    base = with_schedule(DISTILLATION_BASE, type="plateau", max_lambda=100.0)
    with pytest.raises(SearchSpaceError, match="max_lambda can be as low as 100"):
        validate_space(space, base)
    validate_space(space, with_schedule(base, max_lambda=500.0))


def test_all_loss_weights_possibly_zero_rejected():
    space = parse_space({"train.loss_weights.bce": {"type": "float", "low": 0.0, "high": 1.0}})
    zero_weights = apply_params({}, {f"train.loss_weights.{name}": 0.0
                                     for name in ("focal", "dice", "iou", "cls")})
    with pytest.raises(SearchSpaceError, match="every task-loss weight"):
        validate_space(space, zero_weights)
    validate_space(space, {})


def test_schedule_longer_than_run_logs_warning(caplog):
    base = apply_params(DISTILLATION_BASE, {"train.epochs": 4})
    with caplog.at_level(logging.WARNING, logger="search_spaces"):
        validate_space(SPACES["lambda_schedule"], base)
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"{S}.step_size can reach 5" in m and "train.epochs=4" in m for m in messages)
    assert any(f"{S}.stage_epochs can reach 5" in m for m in messages)


def test_sample_configs_validates_against_base():
    with pytest.raises(SearchSpaceError, match="distillation.enable"):
        sample_configs(SPACES["lambda_schedule"], {}, 3, seed=0)


def test_sample_configs_apply_sampled_params():
    base = {"dataset": {"train_dir": "/data/train"}}
    configs = sample_configs(SPACES["grid"], base, 4, seed=5)
    samples = sample_params(SPACES["grid"], 4, seed=5)
    assert configs == [
        {"dataset": {"train_dir": "/data/train", "grid_points": p["dataset.grid_points"]}}
        for p in samples
    ]


# apply_params.

def test_apply_params_sets_nested_paths():
    base = {
        "train": {"lr": 1e-4, "loss_weights": {"bce": 1.0, "focal": 20.0}},
        "dataset": {"train_dir": "/data/train"},
    }
    params = {
        "train.loss_weights.focal": 5.0,
        "dataset.grid_points": 16,
        "distillation.lambda_coef": 0.3,
        "distillation.lambda_schedule.type": "step",
        "distillation.lambda_schedule.gamma": 0.25,
    }

    config = apply_params(base, params)

    assert config == {
        "train": {"lr": 1e-4, "loss_weights": {"bce": 1.0, "focal": 5.0}},
        "dataset": {"train_dir": "/data/train", "grid_points": 16},
        "distillation": {"lambda_coef": 0.3,
                         "lambda_schedule": {"type": "step", "gamma": 0.25}},
    }


def test_apply_params_leaves_base_unchanged():
    base = {"train": {"loss_weights": {"bce": 1.0}}}
    config = apply_params(base, {"train.loss_weights.bce": 2.0})
    config["train"]["loss_weights"]["dice"] = 3.0
    assert base == {"train": {"loss_weights": {"bce": 1.0}}}


def test_apply_params_clears_dynamic_lambda_for_sampled_type():
    base = {"distillation": {"enable": True, "dynamic_lambda": True}}
    assert apply_params(base, {TYPE: "cosine"}) == {
        "distillation": {"enable": True, "dynamic_lambda": False,
                         "lambda_schedule": {"type": "cosine"}},
    }
    assert apply_params(base, {"distillation.lambda_coef": 2.0}) == {
        "distillation": {"enable": True, "dynamic_lambda": True, "lambda_coef": 2.0},
    }
    assert apply_params({}, {TYPE: "cosine"}) == {
        "distillation": {"lambda_schedule": {"type": "cosine"}},
    }


def test_apply_params_rejects_path_through_value():
    with pytest.raises(SearchSpaceError, match="cannot set train.lr: train in the base config"):
        apply_params({"train": 5}, {"train.lr": 1e-3})
    with pytest.raises(SearchSpaceError, match="empty path segment"):
        apply_params({}, {"train..lr": 1e-3})


# base_values.

DEFAULT_FULL_BASE_VALUES = {
    "train.loss_weights.bce": 1.0,
    "train.loss_weights.focal": 20.0,
    "train.loss_weights.dice": 1.0,
    "train.loss_weights.iou": 1.0,
    "train.loss_weights.cls": 1.0,
    "dataset.grid_points": 32,
    "distillation.lambda_coef": 1.0,
    TYPE: "constant",
}


def test_base_values_of_empty_config_are_defaults():
    assert base_values(SPACES["full"], {}) == DEFAULT_FULL_BASE_VALUES


def test_base_values_of_default_training_config(training_config):
    default_config = training_config.TrainingConfig().to_dict()
    assert base_values(SPACES["full"], default_config) == DEFAULT_FULL_BASE_VALUES


@pytest.mark.parametrize("schedule, expected", [
    ({"type": "plateau"}, {f"{S}.factor": 0.5, f"{S}.patience": 2, f"{S}.threshold": 1e-4}),
    ({"type": "step", "gamma": 0.3}, {f"{S}.step_size": 1, f"{S}.gamma": 0.3}),
    ({"type": "cosine", "final_fraction": 0.1}, {f"{S}.final_fraction": 0.1}),
    ({"type": "staged", "reverse": True}, {f"{S}.stage_epochs": 1, f"{S}.reverse": True}),
])
def test_base_values_follow_base_schedule_type(schedule, expected):
    base = with_schedule(DISTILLATION_BASE, **schedule)
    values = base_values(SPACES["lambda_schedule"], base)
    assert values == {"distillation.lambda_coef": 1.0, TYPE: schedule["type"], **expected}


def test_base_values_leave_out_values_outside_space():
    base = apply_params(DISTILLATION_BASE, {
        "train.loss_weights.focal": 500.0,
        "dataset.grid_points": 64,
        f"{S}.type": "step",
        f"{S}.gamma": 0.95,
    })
    values = base_values(SPACES["full"], base)

    assert "train.loss_weights.focal" not in values
    assert "dataset.grid_points" not in values
    assert f"{S}.gamma" not in values
    assert values[f"{S}.step_size"] == 1
    assert values[TYPE] == "step"


def test_base_values_skip_branch_of_type_not_among_choices():
    space = parse_space(type_spec(["step", "cosine"], {
        "step": {f"{S}.step_size": {"type": "int", "low": 1, "high": 3}},
    }))
    assert base_values(space, with_schedule(DISTILLATION_BASE, type="constant")) == {}


def test_base_values_warm_start_first_trial():
    base = with_schedule(DISTILLATION_BASE, type="step", gamma=0.3, step_size=2)
    space = SPACES["full"]
    values = base_values(space, base)

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.enqueue_trial(values)
    trial = study.ask()
    space(trial)

    assert trial.params == values


# describe_space.

def test_describe_grid_space():
    assert describe_space(SPACES["grid"]) == (
        "search space 'grid': the prompt grid's points per side\n"
        "parameter            values\n"
        "dataset.grid_points  one of 8, 12, 16, 24, 32"
    )


def test_describe_space_indents_conditional_params():
    text = describe_space(SPACES["lambda_schedule"])
    lines = text.splitlines()
    step_header = lines.index(f"  if {TYPE} = step:")
    assert lines[step_header + 1].split() == [f"{S}.step_size", "int", "in", "[1,", "5]"]
    assert lines[step_header + 2].startswith(f"    {S}.gamma ")
    assert lines[step_header + 2].endswith("float in [0.1, 0.9]")
    assert f"  if {TYPE} = constant:" not in lines


def test_custom_space_built_in_python():
    space = SearchSpace("lr_and_grid", [
        FloatParam("train.lr", 1e-5, 1e-3, log=True),
        CategoricalParam("dataset.grid_points", (16, 32)),
    ])
    for params in sample_params(space, 10, seed=0):
        assert 1e-5 <= params["train.lr"] <= 1e-3
        assert params["dataset.grid_points"] in {16, 32}

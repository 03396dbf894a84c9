"""Training config: defaults, unknown keys with suggestions, range and type errors."""

import json

import pytest

from trainable.config import ConfigError, load_config


def minimal(**sections):
    config = {"dataset": {"train_dir": "/data/train", "val_dir": "/data/val"}}
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def test_defaults_fill_every_section():
    config = load_config(minimal())
    assert config.dataset.grid_points == 32
    assert config.train.loss_weights.focal == 20.0
    assert config.freeze.unfreeze_epoch == 0
    assert config.distillation.lambda_schedule.type == "constant"
    assert config.teachers == []


def test_unknown_key_names_full_path_and_nearest_key():
    with pytest.raises(ConfigError, match=r"unknown key 'train\.loss_weights\.dcie' \(did you mean 'dice'\?\)"):
        load_config(minimal(train={"loss_weights": {"dcie": 1.0}}))


def test_out_of_range_names_value_and_rule():
    with pytest.raises(ConfigError, match=r"dataset\.grid_points=0 is invalid: must be an integer from 1 to 128"):
        load_config(minimal(dataset={"grid_points": 0}))
    with pytest.raises(ConfigError, match=r"train\.loss_weights\.bce=-1\.0 is invalid: must be >= 0"):
        load_config(minimal(train={"loss_weights": {"bce": -1}}))


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"train\.epochs must be an integer, got '3'"):
        load_config(minimal(train={"epochs": "3"}))
    with pytest.raises(ConfigError, match=r"train\.bf16 must be true or false"):
        load_config(minimal(train={"bf16": 1}))


def test_dynamic_lambda_means_plateau():
    config = load_config(minimal(distillation={"dynamic_lambda": True}))
    assert config.distillation.lambda_schedule.type == "plateau"
    with pytest.raises(ConfigError, match="contradicts lambda_schedule.type='step'"):
        load_config(minimal(distillation={"dynamic_lambda": True,
                                          "lambda_schedule": {"type": "step"}}))


def test_distillation_needs_teachers():
    with pytest.raises(ConfigError, match="needs at least one entry in teachers"):
        load_config(minimal(distillation={"enable": True}))


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    file = tmp_path / "cfg" / "train.json"
    file.parent.mkdir()
    file.write_text(json.dumps({"dataset": {"train_dir": "../data/train", "val_dir": "v"},
                                "model": {"save_dir": "out"}}))
    config = load_config(file)
    assert config.dataset.train_dir == str(tmp_path / "data" / "train")
    assert config.dataset.val_dir == str(tmp_path / "cfg" / "v")
    assert config.model.save_dir == str(tmp_path / "cfg" / "out")


def test_round_trip_through_dict():
    config = load_config(minimal(train={"epochs": 3}))
    assert load_config(config.to_dict()).to_dict() == config.to_dict()


def test_invalid_json_names_the_file(tmp_path):
    file = tmp_path / "bad.json"
    file.write_text("{")
    with pytest.raises(ConfigError, match=f"config file {file} is not valid JSON"):
        load_config(file)

"""Bad search input fails before Ray starts, with a message that names the problem."""

import json

import pytest
import ray

from tuner.search import main


@pytest.fixture
def base_config(tmp_path, synthetic_root):
    config = {"dataset": {"train_dir": str(synthetic_root / "train"),
                          "val_dir": str(synthetic_root / "val"), "grid_points": 2}}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(config))
    return path


def run_search(tmp_path, base_config, space_text, capsys, extra=()):
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    code = main(["--base-config", str(base_config), "--space", str(space),
                 "--storage-path", str(tmp_path / "results"), "--no-dashboard", *extra])
    assert not ray.is_initialized()
    return code, capsys.readouterr().err


def test_unknown_parameter_names_it_and_the_nearest(tmp_path, base_config, capsys):
    code, err = run_search(tmp_path, base_config, """
space:
  train.loss_weights.focall: {type: float, low: 1.0, high: 10.0}
""", capsys)
    assert code == 2
    assert "train.loss_weights.focall" in err
    assert "train.loss_weights.focal" in err


@pytest.mark.parametrize("low, high", [(5.0, 1.0), (2.0, 2.0)])
def test_inverted_or_empty_range(tmp_path, base_config, capsys, low, high):
    code, err = run_search(tmp_path, base_config, f"""
space:
  train.loss_weights.dice: {{type: float, low: {low}, high: {high}}}
""", capsys)
    assert code == 2
    assert "train.loss_weights.dice" in err
    assert "low" in err and "high" in err


def test_grid_points_zero_in_space(tmp_path, base_config, capsys):
    code, err = run_search(tmp_path, base_config, """
space:
  dataset.grid_points: {type: categorical, choices: [0, 8]}
""", capsys)
    assert code == 2
    assert "dataset.grid_points" in err
    assert "0" in err


def test_grid_points_zero_in_base_config(tmp_path, capsys, synthetic_root):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"dataset": {"train_dir": str(synthetic_root / "train"),
                                            "val_dir": str(synthetic_root / "val"),
                                            "grid_points": 0}}))
    code = main(["--base-config", str(path), "--space", "loss_weights", "--no-dashboard",
                 "--storage-path", str(tmp_path / "results")])
    assert code == 2
    assert "dataset.grid_points=0 is invalid" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_schedule_parameter_without_its_schedule(tmp_path, capsys, synthetic_root):
    config = {"dataset": {"train_dir": str(synthetic_root / "train"),
                          "val_dir": str(synthetic_root / "val"), "grid_points": 2},
              "distillation": {"enable": True},
              "teachers": [{"name": "t", "type": "vit_t", "allow_random_weights": True}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(config))
    code, err = run_search(tmp_path, path, """
space:
  distillation.lambda_schedule.gamma: {type: float, low: 0.1, high: 0.9}
""", capsys)
    assert code == 2
    assert "distillation.lambda_schedule.gamma" in err
    assert "step" in err


def test_unreadable_image_fails_before_ray(tmp_path, base_config, capsys, synthetic_root):
    broken = next((synthetic_root / "train" / "image").iterdir())
    broken.write_bytes(b"")
    code = main(["--base-config", str(base_config), "--space", "loss_weights", "--no-dashboard",
                 "--storage-path", str(tmp_path / "results")])
    assert code == 2
    assert f"cannot read image {broken}" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_unknown_setting_in_search_file(tmp_path, base_config, capsys):
    search = tmp_path / "search.yaml"
    search.write_text(f"base_config: {base_config}\ntrails: 3\n")
    code = main(["--config", str(search)])
    assert code == 2
    assert "unknown search setting 'trails' (did you mean 'trials'?)" in capsys.readouterr().err


def test_print_space_shows_space_and_samples(tmp_path, base_config, capsys):
    code = main(["--base-config", str(base_config), "--space", "loss_weights",
                 "--print-space", "--storage-path", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 0
    assert "train.loss_weights.focal" in out
    assert out.count("sample ") == 3
    assert not ray.is_initialized()


def test_reuse_actors_must_be_a_boolean(tmp_path, base_config, capsys):
    search = tmp_path / "search.yaml"
    search.write_text(f"base_config: {base_config}\nreuse_actors: sometimes\n")
    code = main(["--config", str(search)])
    assert code == 2
    assert "reuse_actors='sometimes' is invalid: must be true or false" in capsys.readouterr().err
    assert not ray.is_initialized()


@pytest.mark.parametrize("file_name, content, message", [
    ("absent.yaml", None, "search file not found: {path}"),
    ("list.yaml", "- trials: 3\n", "search file {path} must contain a mapping"),
    ("broken.json", "{\"trials\": 3,", "search file {path} cannot be parsed"),
])
def test_unreadable_search_file(tmp_path, capsys, file_name, content, message):
    path = tmp_path / file_name
    if content is not None:
        path.write_text(content)
    code = main(["--config", str(path)])
    assert code == 2
    assert message.format(path=path) in capsys.readouterr().err


def test_unparsable_base_config(tmp_path, capsys):
    base = tmp_path / "train.yaml"
    base.write_text("dataset: [unclosed\n")
    search = tmp_path / "search.yaml"
    search.write_text("base_config: train.yaml\n")
    code = main(["--config", str(search)])
    assert code == 2
    assert f"base training config {base} cannot be parsed" in capsys.readouterr().err

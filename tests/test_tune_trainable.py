"""The Ray Tune function trainable: per-epoch reports and an exact restart from its checkpoint."""

import os

import pytest
import ray
from ray import tune

from trainable.synthetic import generate_dataset
from trainable.training_log import TrainingLog
from trainable.tune_trainable import train_segment_everything


@pytest.fixture(scope="module")
def local_ray():
    # Trials unpickle CrashOnce, so its module must be importable in Ray's workers.
    tests = os.path.dirname(os.path.abspath(__file__))
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": tests}})
    yield
    ray.shutdown()


class CrashOnce:
    """An epoch observer factory whose observer raises once, after epoch 1, in a trial."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __call__(self, config):
        def observe(result, run):
            if result.epoch == 1 and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                raise RuntimeError("simulated node failure")
        return observe


def run_trial(config, storage, name, factories=(), max_failures=0):
    trainable = tune.with_parameters(train_segment_everything, observer_factories=list(factories))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 2}),
        param_space=config,
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=max_failures),
                                  sync_config=tune.SyncConfig(sync_artifacts=True)),
    )
    results = tuner.fit()
    assert results.num_errors == 0
    return results[0]


def test_restart_from_checkpoint_matches_uninterrupted_trial(local_ray, tmp_path):
    root = generate_dataset(tmp_path / "data", train_images=1, val_images=1, seed=7)
    config = {
        "dataset": {"train_dir": str(root / "train"), "val_dir": str(root / "val"),
                    "grid_points": 2},
        "train": {"epochs": 2, "lr": 1e-3, "warmup_epochs": 0.0, "match_iou_threshold": 0.05},
        "visual": {"enable": False},
    }
    plain = run_trial(config, tmp_path / "results", "plain")
    restarted = run_trial(config, tmp_path / "results", "restarted",
                          factories=[CrashOnce(tmp_path / "crashed")], max_failures=1)

    assert (tmp_path / "crashed").exists()
    assert plain.metrics["epoch"] == 2
    assert restarted.metrics["epoch"] == 2
    expected = TrainingLog(os.path.join(plain.path, "output")).read()
    actual = TrainingLog(os.path.join(restarted.path, "output")).read()
    assert [line["epoch"] for line in actual] == [0, 1, 2]
    for key in ("loss", "bce", "cls", "lr", "val_dice", "val_iou", "val_score"):
        assert actual[2][key] == pytest.approx(expected[2][key], rel=1e-5), key
    assert plain.checkpoint is not None

"""A failing trial ends with its reason in its log, in MLflow and in the summary; the search
goes on with the next trial, and retries restart the failed one."""

import json
import subprocess

import pandas as pd

from search_helpers import mlflow_runs, search_command, search_env, write_base_config
from trainable.synthetic import generate_dataset
from trainable.training_log import TrainingLog


def test_failed_trials_are_reported_and_the_search_goes_on(tmp_path):
    data = generate_dataset(tmp_path / "data", train_images=1, val_images=1, seed=6)
    base = write_base_config(tmp_path / "train.json", data, grid_points=1)
    corrupt = tmp_path / "mobile_sam.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    config = json.loads(base.read_text())
    config["model"] = {"checkpoint_path": str(corrupt)}
    base.write_text(json.dumps(config))
    storage = tmp_path / "results"

    completed = subprocess.run(
        search_command(base, storage, "failing", "--trials", "2", "--epochs", "1",
                       "--scheduler", "fifo", "--retries", "1"),
        capture_output=True, text=True, env=search_env(), timeout=600)
    output = completed.stdout + completed.stderr

    # No trial succeeded, so there is no best config and the command exits with status 1.
    assert completed.returncode == 1, output[-3000:]
    assert "2 trials, 2 failed" in completed.stdout
    assert f"cannot read checkpoint {corrupt}" in completed.stdout

    experiment = storage / "failing"
    table = pd.read_csv(experiment / "results.csv")
    assert list(table["status"]) == ["ERROR", "ERROR"]
    assert all(error.startswith("CheckpointError: cannot read checkpoint")
               for error in table["error"])

    for trial in experiment.glob("trial_*"):
        text = (trial / "output" / "training_log.txt").read_text()
        assert "# failed before training: CheckpointError: cannot read checkpoint" in text
        assert TrainingLog(trial / "output").read() == []

    client, parents, children = mlflow_runs(f"sqlite:///{experiment / 'mlflow.db'}")
    assert parents[0].info.status == "FAILED"
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FAILED"
        assert child.data.tags["error"].startswith("CheckpointError: cannot read checkpoint")
        # The first try and the retry.
        assert child.data.tags["attempts"] == "2"

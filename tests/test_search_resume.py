"""An interrupted search continues with --resume: finished trials kept, no repeated samples,
the total number of trials as asked, and MLflow child runs continued rather than duplicated."""

import os
import signal
import subprocess
import time

import pandas as pd

from search_helpers import mlflow_runs, run_search, search_command, search_env, write_base_config
from trainable.synthetic import generate_dataset
from trainable.training_log import TrainingLog

TRIALS = 3


def first_trial_finished(experiment) -> bool:
    # Tune writes the experiment state after every checkpoint; a trial counts as finished for
    # a resume once the state records it as TERMINATED.
    for state in experiment.glob("experiment_state-*.json"):
        if "TERMINATED" in state.read_text():
            return True
    return False


def test_resume_after_driver_is_killed(tmp_path):
    data = generate_dataset(tmp_path / "data", train_images=1, val_images=1, seed=5)
    base = write_base_config(tmp_path / "train.json", data, grid_points=1)
    storage = tmp_path / "results"
    experiment = storage / "resumable"
    command = search_command(base, storage, "resumable", "--trials", str(TRIALS),
                             "--epochs", "2", "--scheduler", "fifo",
                             "--max-concurrent-trials", "1")

    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=search_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not first_trial_finished(experiment):
            assert driver.poll() is None, "the search ended before it could be interrupted"
            assert time.monotonic() < deadline, "no trial finished within 600 s"
            time.sleep(1.0)
    finally:
        # Kill the driver and the local Ray cluster it started, as a crash or Ctrl-\ would.
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)

    finished_before = sorted(p.name for p in experiment.glob("trial_*")
                             if len(TrainingLog(p / "output").read()) == 3)
    assert len(finished_before) >= 1
    logs_before = {name: (experiment / name / "output" / "training_log.txt").read_text()
                   for name in finished_before}

    completed = run_search(search_command(base, storage, "resumable", "--resume"))
    assert "resuming" in completed.stdout + completed.stderr

    table = pd.read_csv(experiment / "results.csv")
    assert len(table) == TRIALS
    assert set(table["status"]) == {"TERMINATED"}
    params = table[[c for c in table if c.startswith("param.")]]
    assert not params.duplicated().any()
    for name, text in logs_before.items():
        assert (experiment / name / "output" / "training_log.txt").read_text() == text
    for trial in experiment.glob("trial_*"):
        assert [line["epoch"] for line in TrainingLog(trial / "output").read()] == [0, 1, 2]

    _, parents, children = mlflow_runs(f"sqlite:///{experiment / 'mlflow.db'}")
    assert len(parents) == 1
    assert len(children) == TRIALS
    assert len({c.data.tags["trial_id"] for c in children}) == TRIALS
    assert {c.info.status for c in children} == {"FINISHED"}

"""A real search on coco-mini: trial logs, nested MLflow runs per epoch, a runnable best config.

The same search settings run once on coco-mini against the default SQLite store and once
against an ``mlflow server`` that the test starts on 127.0.0.1. The second run uses two
generated images instead of coco-mini's eight to keep the suite's time in bounds; the MLflow
path it checks does not depend on the images. The first run reuses trial processes (the
default), the second starts one per trial.
"""

import json
import subprocess
import sys

import pytest

from search_helpers import (free_port, mlflow_runs, run_search, search_command, search_env,
                            wait_for_http, write_base_config)
from trainable.synthetic import generate_dataset
from trainable.training_log import TrainingLog
from tuner.trial import NODE_FILE

TRIALS = 2


def check_search(storage, name, tracking_uri):
    experiment = storage / name
    trial_dirs = sorted(experiment.glob("trial_*"))
    assert len(trial_dirs) == TRIALS
    for trial in trial_dirs:
        lines = TrainingLog(trial / "output").read()
        assert [line["epoch"] for line in lines] == [0, 1]
        for line in lines:
            assert 0.0 <= line["val_dice"] <= 1.0

    client, parents, children = mlflow_runs(tracking_uri)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert "best_val_score" in parent.data.metrics
    assert len(children) == TRIALS
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        for metric in ("val_dice", "val_iou", "val_score", "loss", "lambda", "lr"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, metric)]
            assert steps == ([0, 1] if metric not in ("loss",) else [1]), metric
        artifacts = [a.path for a in client.list_artifacts(child.info.run_id)]
        assert "training_log.txt" in artifacts
        assert "visual" in artifacts
    parent_artifacts = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert {"best_config.json", "results.csv"} <= set(parent_artifacts)
    return experiment


def trial_processes(experiment):
    return [json.loads((trial / NODE_FILE).read_text())["pid"]
            for trial in sorted(experiment.glob("trial_*"))]


def test_search_on_coco_mini_with_sqlite_store(coco_mini, tmp_path):
    base = write_base_config(tmp_path / "train.json", coco_mini)
    storage = tmp_path / "results"
    completed = run_search(search_command(base, storage, "coco", "--trials", str(TRIALS),
                                          "--epochs", "1", "--scheduler", "fifo"))
    assert "MLflow:" in completed.stdout
    assert "best_config:" in completed.stdout

    experiment = check_search(storage, "coco", f"sqlite:///{storage / 'coco' / 'mlflow.db'}")
    table = (experiment / "results.csv").read_text().splitlines()
    assert len(table) == TRIALS + 1
    assert (experiment / "best_model.pt").is_file()
    # One trial at a time with the same resources: the second ran in the first one's process.
    assert len(set(trial_processes(experiment))) == 1

    # The best config is a complete training config that the single-run command accepts.
    best = json.loads((experiment / "best_config.json").read_text())
    assert best["train"]["epochs"] == 1
    rerun = subprocess.run([sys.executable, "-m", "trainable", "--config",
                            str(experiment / "best_config.json")],
                           capture_output=True, text=True, env=search_env(), timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [line["epoch"] for line in TrainingLog(best["model"]["save_dir"]).read()] == [0, 1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=search_env(),
        start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout_s=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_search_with_mlflow_server(tmp_path, mlflow_server):
    data = generate_dataset(tmp_path / "data", train_images=1, val_images=1, seed=4)
    base = write_base_config(tmp_path / "train.json", data)
    storage = tmp_path / "results"
    completed = run_search(search_command(base, storage, "coco-http", "--trials", str(TRIALS),
                                          "--epochs", "1", "--scheduler", "fifo",
                                          "--mlflow-uri", mlflow_server,
                                          "--no-reuse-actors"))
    assert mlflow_server in completed.stdout
    experiment = check_search(storage, "coco-http", mlflow_server)
    assert len(set(trial_processes(experiment))) == TRIALS
    assert not (storage / "coco-http" / "mlflow.db").exists()

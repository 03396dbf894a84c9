"""Helpers for tests that run python -m tuner.search in a subprocess and read its MLflow store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

SEARCH_TIMEOUT_S = 900


def search_env() -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_base_config(path: Path, data_root: Path, grid_points: int = 2) -> Path:
    path.write_text(json.dumps({
        "dataset": {"train_dir": str(data_root / "train"), "val_dir": str(data_root / "val"),
                    "grid_points": grid_points},
        "train": {"warmup_epochs": 0.0},
        "visual": {"save_every_n_epochs": 1, "max_images": 1},
    }))
    return path


def search_command(base_config: Path, storage: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tuner.search", "--base-config", str(base_config),
            "--space", "loss_weights", "--storage-path", str(storage), "--name", name,
            "--no-dashboard", "--num-cpus", "2", "--cpus-per-trial", "2", *extra]


def run_search(command: list[str]) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, capture_output=True, text=True, env=search_env(),
                               timeout=SEARCH_TIMEOUT_S)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def mlflow_runs(tracking_uri: str, experiment: str = "segment-everything"):
    """Return (parent runs, child runs) of the experiment."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout_s: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_s} s")
        time.sleep(0.5)

"""MLflow runs of a search: one parent run, and one child run per trial nested under it.

Child runs are started inside the trials, with the tracking URI passed to them explicitly, and
found again by their ``trial_id`` tag when a trial restarts, so a resumed trial continues its
run instead of starting a second one. The driver's :class:`ChildRunFinaliser` closes the runs of
trials that Tune stopped (ASHA) or that failed before their own code could.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray.tune import Callback

from trainable.run import EpochResult, TrainingRun
from trainable.training_log import FILE_NAME

logger = logging.getLogger(__name__)

TRIAL_ID_TAG = "trial_id"
ERROR_TAG = "error"
# Starts of the trial: 1, plus one for each retry or resume.
ATTEMPTS_TAG = "attempts"
PARENT_RUN_FILE = "mlflow_parent_run.json"
# MLflow stores at most 6000 characters in a tag value; longer error texts are cut.
MAX_TAG_LENGTH = 5000


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return a nested dict as dotted keys, lists as their JSON text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Return the id of experiment ``name``, creating it when it does not exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def open_parent_run(tracking_uri: str, experiment: str, experiment_dir: Path, search_name: str,
                    params: dict[str, Any]) -> tuple[str, str]:
    """Start the search's parent run, or reopen the one a resumed search recorded.

    Returns (experiment id, parent run id).
    """
    client = MlflowClient(tracking_uri)
    record = experiment_dir / PARENT_RUN_FILE
    if record.exists():
        saved = json.loads(record.read_text())
        if saved["tracking_uri"] == tracking_uri:
            client.update_run(saved["run_id"], status="RUNNING")
            return saved["experiment_id"], saved["run_id"]

    artifacts = None
    if tracking_uri.startswith("sqlite:"):
        artifacts = (experiment_dir / "mlflow-artifacts").resolve().as_uri()
    experiment_id = ensure_experiment(client, experiment, artifacts)
    run = client.create_run(experiment_id, run_name=search_name, tags={"search": search_name})
    client.log_batch(run.info.run_id, params=[Param(k, _text(v)) for k, v in params.items()])
    experiment_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"tracking_uri": tracking_uri, "experiment_id": experiment_id,
                                  "run_id": run.info.run_id}))
    return experiment_id, run.info.run_id


def find_child_run(client: MlflowClient, experiment_id: str, parent_run_id: str,
                   trial_id: str) -> str | None:
    """Return the id of the child run of ``trial_id`` under the parent, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' "
                       f"and tags.{TRIAL_ID_TAG} = '{trial_id}'"),
        max_results=1)
    return runs[0].info.run_id if runs else None


class TrialTracking:
    """MLflow location of a search's trials, picklable so the driver can hand it to every trial."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id

    def child_run(self, trial_id: str, trial_name: str, config: dict[str, Any],
                  sampled: dict[str, Any], tags: dict[str, str] | None = None) -> "ChildRun":
        """Start the trial's child run, or continue it when the trial restarts.

        ``tags`` (such as the Ray node) are set again on every restart, so they describe the
        trial's latest attempt.
        """
        client = MlflowClient(self.tracking_uri)
        run_id = find_child_run(client, self.experiment_id, self.parent_run_id, trial_id)
        if run_id is None:
            run = client.create_run(self.experiment_id, run_name=trial_name, tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id, TRIAL_ID_TAG: trial_id,
                "sampled_params": ", ".join(sorted(sampled)), ATTEMPTS_TAG: "1",
                **(tags or {})})
            run_id = run.info.run_id
            params = flatten(config)
            params.pop("model.save_dir", None)
            params.pop("visual.save_path", None)
            client.log_batch(run_id, params=[Param(k, _text(v)) for k, v in params.items()])
        else:
            client.update_run(run_id, status="RUNNING")
            attempts = int(client.get_run(run_id).data.tags.get(ATTEMPTS_TAG, "1")) + 1
            tags = {**(tags or {}), ATTEMPTS_TAG: str(attempts)}
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            logger.info("continuing MLflow run %s of trial %s", run_id, trial_id)
        return ChildRun(client, run_id)


class ChildRun:
    """The MLflow run of one trial: per-epoch metrics, the log and visualisations."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id

    def log_epoch(self, result: EpochResult, run: TrainingRun) -> None:
        """Log an epoch's fields as metrics at step ``epoch`` and upload the trial's log."""
        timestamp = int(time.time() * 1000)
        metrics = [Metric(key, float(value), timestamp, result.epoch)
                   for key, value in result.fields().items() if key != "epoch"]
        self.client.log_batch(self.run_id, metrics=metrics)
        log_file = run.log.path
        if log_file.exists():
            self.client.log_artifact(self.run_id, str(log_file))
        for path in result.visualisations:
            self.client.log_artifact(self.run_id, path, f"visual/epoch_{result.epoch}")

    def finish(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, error: BaseException, log_file: Path | None = None) -> None:
        """End the run as FAILED with the error as a tag and, when it exists, the trial's log."""
        text = describe_error(error)
        self.client.set_tag(self.run_id, ERROR_TAG, text[:MAX_TAG_LENGTH])
        if log_file is not None and log_file.exists():
            self.client.log_artifact(self.run_id, str(log_file))
        self.client.set_terminated(self.run_id, "FAILED")


class ChildRunFinaliser(Callback):
    """Closes child runs that their trial could not close: stopped by ASHA, or failed early."""

    def __init__(self, tracking: TrialTracking):
        self.tracking = tracking

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._close(trial, "FINISHED", None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        error = trial.get_error() if hasattr(trial, "get_error") else None
        self._close(trial, "FAILED", error)

    def _close(self, trial, status: str, error: BaseException | None) -> None:
        try:
            client = MlflowClient(self.tracking.tracking_uri)
            run_id = find_child_run(client, self.tracking.experiment_id,
                                    self.tracking.parent_run_id, trial.trial_id)
            if run_id is None:
                return
            run = client.get_run(run_id)
            if error is not None and ERROR_TAG not in run.data.tags:
                client.set_tag(run_id, ERROR_TAG, describe_error(error)[:MAX_TAG_LENGTH])
            if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
                client.set_terminated(run_id, status)
        except Exception:  # a tracking hiccup must not end the whole search
            logger.exception("could not close the MLflow run of trial %s", trial.trial_id)


def describe_error(error: BaseException) -> str:
    """Return "Type: message" of the error a trial raised, unwrapping Ray's task error."""
    cause = getattr(error, "cause", None) or error
    return " ".join(f"{type(cause).__name__}: {cause}".split())


def trial_log_file(trial_dir: str) -> Path:
    return Path(trial_dir) / "output" / FILE_NAME


def _text(value: Any) -> str:
    text = "" if value is None else str(value)
    return text[:500]


def close_parent_run(tracking_uri: str, run_id: str, metrics: dict[str, float],
                     artifacts: list[Path], status: str = "FINISHED") -> None:
    """Log the best trial's figures and the summary files to the parent run, then end it."""
    client = MlflowClient(tracking_uri)
    timestamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), timestamp, 0)
                                      for k, v in metrics.items()])
    for path in artifacts:
        if path.exists():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status)


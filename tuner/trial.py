"""The function each trial of a search runs: sampled values merged into the base config, one
training run, and its MLflow child run."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import ray
from ray import tune

from search_spaces import apply_params
from trainable.data import ImageRecord
from trainable.training_log import TrainingLog
from trainable.tune_trainable import train_segment_everything
from tuner.live_metrics import LiveMetrics
from tuner.mlflow_runs import TrialTracking, trial_log_file

logger = logging.getLogger(__name__)

# The Ray node and process of a trial, recorded in a file of its folder. The node is also
# recorded as tags of the trial's MLflow run.
NODE_FILE = "ray_node.json"
NODE_ID_TAG = "ray_node_id"
NODE_IP_TAG = "ray_node_ip"


def run_trial(sampled: dict[str, Any], *, base_config: dict[str, Any],
              tracking: TrialTracking | None = None,
              records: tuple[list[ImageRecord], list[ImageRecord]] | None = None) -> None:
    """Train the base config with the trial's sampled values (flat dotted keys) applied."""
    config = apply_params(base_config, sampled)
    context = tune.get_context()
    node = record_node(os.getcwd())
    child = None
    if tracking is not None:
        child = tracking.child_run(context.get_trial_id(), context.get_trial_name(), config,
                                   sampled, tags={NODE_ID_TAG: node["node_id"],
                                                  NODE_IP_TAG: node["node_ip"]})
    factories = [lambda _config: child.log_epoch] if child is not None else []
    factories.append(lambda _config: LiveMetrics(context.get_trial_id(),
                                                 context.get_trial_name()))

    try:
        train_segment_everything(config, observer_factories=factories, records=records)
    except SystemExit:
        # Tune ends a trial that its scheduler stops with SystemExit from tune.report().
        if child is not None:
            child.client.set_tag(child.run_id, "stopped_by_scheduler", "true")
            child.finish()
        raise
    except BaseException as error:
        log_file = trial_log_file(os.getcwd())
        log = TrainingLog(log_file.parent)
        if not log.has_error():  # errors before the first epoch are not logged yet
            log.append_error(error)
        if child is not None:
            child.fail(error, log_file)
        raise
    if child is not None:
        child.finish()


def record_node(trial_dir: str) -> dict[str, str]:
    """Write the id and IP of the Ray node that runs this trial, and the id of its process, to
    the trial's folder, and return them."""
    node = {"node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid()}
    folder = Path(trial_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NODE_FILE).write_text(json.dumps(node))
    logger.info("trial running on Ray node %s at %s, process %d", node["node_id"],
                node["node_ip"], node["pid"])
    return node

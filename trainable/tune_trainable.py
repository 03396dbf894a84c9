"""The Ray Tune function trainable: one trial is one :class:`TrainingRun`.

Each epoch (epoch 0 included) is reported with a checkpoint holding the whole training state
and a copy of ``training_log.txt``, and a restarted trial continues exactly from
``tune.get_checkpoint()``. The log travels in the checkpoint because Tune restores a trial of a
resumed search into a fresh local folder that holds only the checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from ray import tune

from trainable.config import load_config
from trainable.data import ImageRecord
from trainable.run import EpochObserver, EpochResult, TrainingRun
from trainable.training_log import FILE_NAME

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"


def report_to_tune(result: EpochResult, run: TrainingRun) -> None:
    """Report an epoch's fields to Tune with a checkpoint of the run's state."""
    with tempfile.TemporaryDirectory() as folder:
        torch.save(run.state_dict(), Path(folder) / STATE_FILE)
        shutil.copyfile(run.log.path, Path(folder) / FILE_NAME)
        tune.report(result.fields(), checkpoint=tune.Checkpoint.from_directory(folder))


def restore_from_tune(run: TrainingRun) -> bool:
    """Load the trial's latest checkpoint into ``run``; return whether there was one."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location=run.device, weights_only=False)
        run.log.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(folder) / FILE_NAME, run.log.path)
    run.load_state_dict(state)
    logger.info("resumed from the checkpoint of epoch %d", run.epoch)
    return True


def train_segment_everything(
        config: dict[str, Any],
        observer_factories: Iterable[Callable[[dict[str, Any]], EpochObserver]] = (),
        records: tuple[list[ImageRecord], list[ImageRecord]] | None = None) -> None:
    """Run one training as a Ray Tune trial.

    Its outputs go to ``output/`` in the trial's working folder; run the Tuner with
    ``tune.SyncConfig(sync_artifacts=True)`` so that Ray copies them to the storage path.

    Args:
        config: a complete training config as a nested dict (the JSON form). Its
            ``model.save_dir`` is replaced by the trial's own folder, so that every trial writes
            its ``training_log.txt``, visualisations and best weights apart.
        observer_factories: each is called with the config dict and returns an extra epoch
            observer (for example the MLflow child run); pass them with ``tune.with_parameters``.
        records: the decoded (train, validation) splits, shared by the trials of a search
            through Ray's object store so that no trial decodes the images again; read from the
            config's folders when None.
    """
    config = dict(config)
    # Tune runs each trial in its own working folder and, with SyncConfig(sync_artifacts=True),
    # copies that folder to the storage path from whichever node runs the trial.
    # get_trial_dir() names a staging folder that only the driver's node copies.
    trial_dir = os.getcwd()
    config["model"] = {**config.get("model", {}), "save_dir": os.path.join(trial_dir, "output")}
    if not config.get("visual", {}).get("save_path"):
        config["visual"] = {**config.get("visual", {}),
                            "save_path": os.path.join(trial_dir, "output", "visual")}
    settings = load_config(config)
    train_records, val_records = records if records is not None else (None, None)
    run = TrainingRun(settings, train_records, val_records)
    restore_from_tune(run)
    observers = [factory(config) for factory in observer_factories]
    run.run([*observers, report_to_tune])

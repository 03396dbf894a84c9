"""The embedded default search: generated data and a search sized for a 2-core CPU machine.

Four trials of two epochs over the loss weights, on three generated images at 240x320 with a
2x2 prompt grid, from random MobileSAM weights (no checkpoint can be assumed) and a matching
threshold of 0.01 instead of 0.5. It shows every part of the service working; its scores mean
little.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trainable.synthetic import generate_dataset

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "search_results"


def default_settings(storage_path: str | None = None) -> dict[str, Any]:
    """Return the settings of the embedded search, generating its dataset on first use."""
    storage = Path(storage_path or DEFAULT_STORAGE).expanduser().resolve()
    data = storage / "default-data"
    if not (data / "val" / "image").is_dir():
        logger.info("generating the default dataset in %s", data)
        generate_dataset(data, train_images=2, val_images=1, size=(240, 320), seed=0)
    return {
        "_folder": str(Path.cwd()),
        "base_config": {
            "dataset": {"train_dir": str(data / "train"), "val_dir": str(data / "val"),
                        "grid_points": 2},
            "model": {"type": "vit_t", "checkpoint_path": None},
            # Random weights almost never reach an IoU of 0.5 (or even 0.1) with an object, so
            # only the classification loss would train and, under AdamW, one active term makes
            # every set of loss weights train alike. At 0.01 nearly every Hungarian pair is
            # foreground, so the mask, Dice and IoU terms train and the weights matter.
            "train": {"epochs": 2, "lr": 1e-4, "warmup_epochs": 0.5, "early_stop_patience": 0,
                      "match_iou_threshold": 0.01},
            "visual": {"save_every_n_epochs": 1, "max_images": 1},
        },
        "space": "loss_weights",
        "trials": 4,
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources_per_trial": {"cpu": 2},
        "max_concurrent_trials": 1,
        "storage_path": str(storage),
        "name": "default",
    }

"""One segment-everything MobileSAM training run, usable alone or as a Ray Tune trial."""

from trainable.config import ConfigError, TrainingConfig, load_config
from trainable.data import DatasetError, ImageRecord, load_split
from trainable.run import EpochResult, TrainingRun
from trainable.step import NonFiniteLossError

__all__ = [
    "ConfigError",
    "DatasetError",
    "EpochResult",
    "ImageRecord",
    "NonFiniteLossError",
    "TrainingConfig",
    "TrainingRun",
    "load_config",
    "load_split",
]

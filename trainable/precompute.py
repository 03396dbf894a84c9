"""Fill the teacher cache ahead of training: ``python -m trainable.precompute --config FILE``.

Runs every teacher's image encoder on every training image that the cache does not hold yet,
so that later runs (and every trial of a search) only read the cache. A search calls
:func:`fill_cache_for_search` once before its trials start.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainable.config import ConfigError, TrainingConfig, load_config
from trainable.data import DatasetError, ImageRecord, load_split
from trainable.distillation import cache_content, cache_folder
from trainable.distillation_attention import AttentionMappingError
from trainable.model import CheckpointError
from trainable.run import select_device
from trainable.teacher_cache import TeacherCache
from trainable.teachers import load_teacher

logger = logging.getLogger(__name__)

# Name of the cache folder that a search creates under its storage path.
SEARCH_CACHE_FOLDER = "teacher_cache"


@dataclass
class TeacherCacheSummary:
    """Result of filling the cache for one teacher."""

    teacher: str
    folder: str
    images: int
    computed: int
    size_bytes: int


def precompute(config: TrainingConfig,
               records: list[ImageRecord] | None = None) -> list[TeacherCacheSummary]:
    """Compute the missing teacher outputs of the training images (``records`` when given).

    Teachers run on ``train.device``, one at a time.
    """
    device = select_device(config.train.device)
    if records is None:
        records = load_split(config.dataset.train_dir, config.dataset.mask_threshold)
    cache = TeacherCache(cache_folder(config), config.distillation.cache_dtype)
    summaries = []
    for teacher_config in config.teachers:
        teacher = load_teacher(teacher_config, 1.0, device)
        computed = cache.fill(teacher, records, cache_content(config.distillation, teacher),
                              device)
        summaries.append(TeacherCacheSummary(teacher.name, str(cache.teacher_folder(teacher)),
                                             len(records), computed,
                                             cache.size_bytes(teacher)))
        logger.info("teacher %r: %d of %d training images computed, the rest were cached; "
                    "%.1f MB in %s", teacher.name, computed, len(records),
                    summaries[-1].size_bytes / 1e6, summaries[-1].folder)
        del teacher  # frees the teacher before the next one is loaded
    return summaries


def fill_cache_for_search(base_config: dict[str, Any], storage_path: str,
                          train_records: list[ImageRecord], cpus: float,
                          gpus: float) -> dict[str, Any]:
    """Fill the teacher cache once for all trials of a search; return the trials' base config.

    Without distillation the config is returned unchanged. Otherwise, unless the config sets
    ``distillation.cache_dir`` or ``dataset.cache_dir``, the cache goes to
    ``<storage_path>/teacher_cache``, so trials on other nodes find it when the storage path
    is shared. The teachers run as one Ray task with a trial's resources (``cpus``, ``gpus``),
    so on a cluster they run where a trial would, on a GPU when trials get one.

    Raises:
        ConfigError: when the cache would default to an ``s3://`` storage path, or the config
            is invalid.
    """
    if not base_config.get("distillation", {}).get("enable", False):
        return base_config
    config = copy.deepcopy(base_config)
    has_folder = (config["distillation"].get("cache_dir")
                  or config.get("dataset", {}).get("cache_dir"))
    if not has_folder:
        if "://" in str(storage_path):
            raise ConfigError(
                f"distillation.cache_dir is not set and the storage path {storage_path} is not "
                "a folder; set distillation.cache_dir to a folder on storage that every node "
                "can read")
        config["distillation"]["cache_dir"] = str(
            Path(storage_path).expanduser().resolve() / SEARCH_CACHE_FOLDER)
    settings = load_config(config)

    import ray

    task = ray.remote(num_cpus=cpus, num_gpus=gpus)(_precompute_task)
    logger.info("filling the teacher cache %s for %d training images before the trials start",
                cache_folder(settings), len(train_records))
    for summary in ray.get(task.remote(settings.to_dict(), train_records)):
        logger.info("teacher %r: %d of %d training images computed, the rest were cached; "
                    "%.1f MB in %s", summary.teacher, summary.computed, summary.images,
                    summary.size_bytes / 1e6, summary.folder)
    return config


def _precompute_task(config: dict[str, Any],
                     records: list[ImageRecord]) -> list[TeacherCacheSummary]:
    return precompute(load_config(config), records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainable.precompute",
        description="Compute the teachers' image embeddings (and pooled attention maps) of "
                    "every training image into the teacher cache, so that training runs only "
                    "read them.")
    parser.add_argument("--config", required=True, help="training config (JSON file)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        config = load_config(args.config)
        if not config.distillation.enable:
            raise ConfigError(f"distillation.enable is false in {args.config}, so no teacher "
                              "output is needed")
        summaries = precompute(config)
    except (ConfigError, DatasetError, CheckpointError, AttentionMappingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"teacher cache: {cache_folder(config)}")
    for summary in summaries:
        print(f"teacher {summary.teacher}: {summary.computed} of {summary.images} images "
              f"computed, {summary.size_bytes / 1e6:.1f} MB in {summary.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

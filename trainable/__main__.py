"""Run one training without Ray: ``python -m trainable --config FILE``."""

from __future__ import annotations

import argparse
import logging
import sys

from trainable.config import ConfigError, load_config
from trainable.data import DatasetError
from trainable.model import CheckpointError
from trainable.run import BEST_WEIGHTS_NAME, TrainingRun
from trainable.training_log import FILE_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainable",
        description="Finetune MobileSAM to segment everything from a grid of point prompts.")
    parser.add_argument("--config", required=True, help="training config (JSON file)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        config = load_config(args.config)
        run = TrainingRun(config)
    except (ConfigError, DatasetError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    best = run.run()
    print(f"best val_score: {best:.4f}")
    print(f"log:            {config.output_dir / FILE_NAME}")
    print(f"best weights:   {config.output_dir / BEST_WEIGHTS_NAME}")
    print(f"visualisations: {config.visual_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m tuner.search``: an Optuna search over segment-everything training, run by Ray Tune.

With no arguments it runs a small embedded search on a dataset it generates, which finishes on
a 2-core CPU machine. ``--config search.yaml`` runs a search file (see ``tuner.settings``),
and every setting also has a flag. ``--resume`` continues an interrupted search.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Each checkpoint forces an experiment snapshot (what --resume restarts from); Tune warns about
# that frequency, which is intended here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

from search_spaces import (SearchSpace, SearchSpaceError, base_values,  # noqa: E402
                           describe_space, get_space, parse_space, sample_configs, validate_space)
from trainable.config import ConfigError  # noqa: E402
from trainable.data import DatasetError, load_split  # noqa: E402
from tuner.settings import SearchSettings, SettingsError, build_settings, load_settings_file  # noqa: E402

logger = logging.getLogger("tuner.search")

SETTINGS_FILE = "search_settings.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tuner.search",
        description="Search the hyperparameters of segment-everything MobileSAM training with "
                    "Optuna on Ray Tune; every trial logs to MLflow. Without arguments, run a "
                    "small embedded search on generated data.")
    parser.add_argument("--config", help="search file (YAML or JSON) with the settings below")
    parser.add_argument("--base-config", help="training config (JSON) that trials start from")
    parser.add_argument("--space", help="named space (loss_weights, grid, lambda_schedule, "
                                        "full) or a YAML file of a space")
    parser.add_argument("--trials", type=int, help="number of trials in total")
    parser.add_argument("--epochs", type=int, help="training epochs per trial")
    parser.add_argument("--scheduler", choices=("asha", "fifo"), help="trial scheduler")
    parser.add_argument("--grace-period", type=int, help="ASHA: epochs before a trial can stop")
    parser.add_argument("--reduction-factor", type=float, help="ASHA: reduction factor")
    parser.add_argument("--metric", help="metric to optimise (default val_score)")
    parser.add_argument("--mode", choices=("max", "min"), help="optimisation direction")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs reserved per trial")
    parser.add_argument("--gpus-per-trial", type=float,
                        help="GPUs reserved per trial; fractions share a GPU")
    parser.add_argument("--max-concurrent-trials", type=int, help="trials running at once")
    parser.add_argument("--retries", type=int, help="restarts of a failed trial")
    parser.add_argument("--reuse-actors", action=argparse.BooleanOptionalAction,
                        help="run a new trial in the process of a finished one (default: yes)")
    parser.add_argument("--seed", type=int, help="seed of the Optuna sampler")
    parser.add_argument("--storage-path", help="folder (or s3:// URI) for results")
    parser.add_argument("--name", help="name of the search; its folder under the storage path")
    parser.add_argument("--mlflow-uri", help="MLflow tracking URI (default: SQLite file in the "
                                             "search folder)")
    parser.add_argument("--mlflow-experiment", help="MLflow experiment name")
    parser.add_argument("--address", help="address of a running Ray cluster to join")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster")
    parser.add_argument("--dashboard-port", type=int, help="port of the local Ray dashboard")
    parser.add_argument("--no-dashboard", action="store_true",
                        help="start the local Ray cluster without its dashboard")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted search of this storage path and name")
    parser.add_argument("--print-space", action="store_true",
                        help="print the resolved space and a few sampled configs, then exit")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser.parse_args(argv)


def collect_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the search file (or the embedded default) with the flags given."""
    flags_given = any(getattr(args, name) is not None for name in ("config", "base_config"))
    if args.config:
        raw = load_settings_file(args.config)
    elif args.resume:
        raw = {}
    elif flags_given:
        raw = {"_folder": str(Path.cwd())}
    else:
        from tuner.default_search import default_settings

        raw = default_settings(args.storage_path)

    def put(path: str, value: Any) -> None:
        if value is None:
            return
        *parents, last = path.split(".")
        target = raw
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value

    put("base_config", str(Path(args.base_config).resolve()) if args.base_config else None)
    if args.space:
        space_file = Path(args.space)
        put("space", str(space_file.resolve()) if space_file.suffix in (".yaml", ".yml", ".json")
            else args.space)
    put("trials", args.trials)
    put("epochs", args.epochs)
    put("scheduler.type", args.scheduler)
    put("scheduler.grace_period", args.grace_period)
    put("scheduler.reduction_factor", args.reduction_factor)
    put("metric", args.metric)
    put("mode", args.mode)
    put("resources_per_trial.cpu", args.cpus_per_trial)
    put("resources_per_trial.gpu", args.gpus_per_trial)
    put("max_concurrent_trials", args.max_concurrent_trials)
    put("retries", args.retries)
    put("reuse_actors", args.reuse_actors)
    put("seed", args.seed)
    put("storage_path", args.storage_path)
    put("name", args.name)
    put("mlflow.tracking_uri", args.mlflow_uri)
    put("mlflow.experiment", args.mlflow_experiment)
    put("ray.address", args.address)
    put("ray.num_cpus", args.num_cpus)
    put("ray.dashboard_port", args.dashboard_port)
    if args.no_dashboard:
        put("ray.include_dashboard", False)
    return raw


def resolve_space(spec: Any) -> SearchSpace:
    """Return the space of a setting: a named space, a YAML/JSON file, or an inline mapping."""
    if isinstance(spec, str) and Path(spec).suffix in (".yaml", ".yml", ".json"):
        from search_spaces import load_space

        return load_space(spec)
    if isinstance(spec, str):
        return get_space(spec)
    return parse_space(spec)


def prepare(settings: SearchSettings) -> tuple[SearchSpace, dict[str, Any]]:
    """Check the space against the base config; return the space and the trials' base config."""
    base = json.loads(json.dumps(settings.base_config))
    if settings.epochs is not None:
        base["train"]["epochs"] = settings.epochs
    space = resolve_space(settings.space)
    validate_space(space, base)
    return space, base


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        raw = collect_settings(args)
        if args.resume:
            raw = _saved_settings(raw)
        settings = build_settings(raw)
        space, base_config = prepare(settings)
    except (SettingsError, SearchSpaceError, ConfigError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if args.print_space:
        print(describe_space(space))
        for index, config in enumerate(sample_configs(space, base_config, 3, settings.seed)):
            sampled = {name: _lookup(config, name) for name in space.param_names()
                       if _lookup(config, name) is not None}
            print(f"sample {index}: {json.dumps(sampled)}")
        return 0

    # Every image is read here, before Ray starts, so a bad file fails the command at once.
    checkpoints = [("model.checkpoint_path", base_config["model"]["checkpoint_path"])]
    checkpoints += [(f"teacher {t['name']!r} checkpoint_path", t["checkpoint_path"])
                    for t in base_config["teachers"]]
    for label, checkpoint in checkpoints:
        if checkpoint and not Path(checkpoint).is_file():
            print(f"error: {label} not found: {checkpoint}", file=sys.stderr)
            return 2
    try:
        records = (load_split(base_config["dataset"]["train_dir"],
                              base_config["dataset"]["mask_threshold"]),
                   load_split(base_config["dataset"]["val_dir"],
                              base_config["dataset"]["mask_threshold"]))
        if sum(r.num_objects for r in records[1]) == 0:
            raise DatasetError(f"the validation split {base_config['dataset']['val_dir']} has "
                               "no object masks, so Dice and IoU cannot be computed")
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from tuner.driver import run_search

    summary = run_search(settings, space, base_config, records, resume=args.resume)
    return 0 if summary.best_trial_id is not None else 1


def _saved_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """Settings of the search to resume, from its folder; flags given now override them."""
    storage = Path(raw.get("storage_path", "search_results")).expanduser().resolve()
    name = raw.get("name", "segment-everything")
    saved_file = storage / name / SETTINGS_FILE
    if not saved_file.exists():
        raise SettingsError(f"no search to resume at {storage / name}: {saved_file} is missing")
    saved = json.loads(saved_file.read_text())
    for key in ("ray", "resources_per_trial", "max_concurrent_trials", "retries"):
        if key in raw:
            saved[key] = {**saved[key], **raw[key]} if isinstance(raw[key], dict) else raw[key]
    return saved


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


if __name__ == "__main__":
    sys.exit(main())

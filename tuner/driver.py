"""The search itself: Ray, the MLflow parent run, the Tuner, and the summary at the end."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from search_spaces import SearchSpace, base_values
from trainable.data import ImageRecord
from trainable.precompute import fill_cache_for_search
from tuner.mlflow_runs import (ChildRunFinaliser, TrialTracking, close_parent_run,
                               describe_error, open_parent_run)
from tuner.settings import SearchSettings
from tuner.summary import SearchSummary, format_table, summarise_search
from tuner.trial import run_trial

logger = logging.getLogger("tuner.search")

SETTINGS_FILE = "search_settings.json"
# Checkpoints kept per trial, ranked by the search metric; Tune also keeps the latest one.
CHECKPOINTS_PER_TRIAL = 1


def start_ray(settings: SearchSettings) -> str | None:
    """Join the cluster at ``ray.address`` or start a local one; return the dashboard URL."""
    env = {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}}
    if settings.ray.address:
        context = ray.init(address=settings.ray.address, runtime_env=env)
    else:
        context = ray.init(num_cpus=settings.ray.num_cpus,
                           include_dashboard=settings.ray.include_dashboard,
                           dashboard_host=settings.ray.dashboard_host,
                           dashboard_port=settings.ray.dashboard_port, runtime_env=env)
    url = context.dashboard_url
    return f"http://{url}" if url and not url.startswith("http") else url


def build_searcher(settings: SearchSettings, space: SearchSpace,
                   base_config: dict[str, Any]) -> OptunaSearch:
    """Seeded multivariate TPE, whose first trial is the base config's own values."""
    sampler = optuna.samplers.TPESampler(seed=settings.seed, multivariate=True, group=True)
    start = base_values(space, base_config)
    return OptunaSearch(space=space, metric=settings.metric, mode=settings.mode,
                        sampler=sampler, points_to_evaluate=[start] if start else None)


def build_scheduler(settings: SearchSettings, epochs: int):
    if settings.scheduler.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", max_t=epochs,
                         grace_period=min(settings.scheduler.grace_period, epochs),
                         reduction_factor=settings.scheduler.reduction_factor)


def build_trainable(settings: SearchSettings, base_config: dict[str, Any],
                    tracking: TrialTracking,
                    records: tuple[list[ImageRecord], list[ImageRecord]]):
    trainable = tune.with_parameters(run_trial, base_config=base_config, tracking=tracking,
                                     records=records)
    resources = {"cpu": settings.resources_per_trial.cpu}
    if settings.resources_per_trial.gpu > 0:
        resources["gpu"] = settings.resources_per_trial.gpu
    return tune.with_resources(trainable, resources)


def run_search(settings: SearchSettings, space: SearchSpace, base_config: dict[str, Any],
               records: tuple[list[ImageRecord], list[ImageRecord]],
               resume: bool = False) -> SearchSummary:
    """Run (or resume) the search to its end and write its summary."""
    experiment_dir = settings.experiment_dir
    experiment_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (experiment_dir / SETTINGS_FILE).write_text(json.dumps(settings.to_dict(), indent=2))

    dashboard = start_ray(settings)

    # Distillation: teacher outputs are computed once here and shared by every trial through
    # the cache folder that the returned config names.
    base_config = fill_cache_for_search(base_config, settings.storage_path, records[0],
                                        cpus=settings.resources_per_trial.cpu,
                                        gpus=settings.resources_per_trial.gpu)

    tracking_uri = settings.tracking_uri
    experiment_id, parent_run_id = open_parent_run(
        tracking_uri, settings.mlflow.experiment, experiment_dir, settings.name,
        params={"space": settings.space if isinstance(settings.space, str) else "custom",
                "trials": settings.trials, "epochs": base_config["train"]["epochs"],
                "scheduler": settings.scheduler.type, "metric": settings.metric,
                "mode": settings.mode, "seed": settings.seed,
                "grid_points": base_config["dataset"]["grid_points"],
                "train_dir": base_config["dataset"]["train_dir"],
                "checkpoint_path": base_config["model"]["checkpoint_path"]})
    tracking = TrialTracking(tracking_uri, experiment_id, parent_run_id)
    _print_locations(settings, dashboard, tracking_uri, parent_run_id)

    trainable = build_trainable(settings, base_config, tracking, records)
    if resume:
        logger.info("resuming the search in %s", experiment_dir)
        tuner = tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=settings.metric, mode=settings.mode,
                search_alg=build_searcher(settings, space, base_config),
                scheduler=build_scheduler(settings, base_config["train"]["epochs"]),
                num_samples=settings.trials,
                max_concurrent_trials=settings.max_concurrent_trials,
                reuse_actors=settings.reuse_actors,
                trial_dirname_creator=_trial_folder_name),
            run_config=tune.RunConfig(
                name=settings.name, storage_path=settings.storage_path,
                failure_config=tune.FailureConfig(max_failures=settings.retries),
                # With sync_artifacts Ray copies each trial's working folder (the current
                # folder of the trial's process) to the storage path at every checkpoint, from
                # whichever node runs the trial.
                sync_config=tune.SyncConfig(sync_artifacts=True),
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=CHECKPOINTS_PER_TRIAL,
                    checkpoint_score_attribute=settings.metric,
                    checkpoint_score_order=settings.mode),
                callbacks=[ChildRunFinaliser(tracking)],
                verbose=1),
        )

    status = "FAILED"
    try:
        results = tuner.fit()
        summary = summarise_search(results, base_config=base_config, space=space,
                                   metric=settings.metric, mode=settings.mode,
                                   out_dir=experiment_dir)
        status = "FINISHED" if summary.best_trial_id is not None else "FAILED"
    finally:
        metrics = {}
        artifacts: list[Path] = []
        if status == "FINISHED":
            metrics = {k if k == "best_epoch" else f"best_{k}": v
                       for k, v in summary.best_metrics.items()}
            metrics.update({f"importance.{k}": v for k, v in summary.importances.items()})
            artifacts = [p for k, p in summary.files.items() if k != "best_model"]
        close_parent_run(tracking_uri, parent_run_id, metrics, artifacts, status)

    _print_summary(settings, summary, results)
    return summary


def _trial_folder_name(trial) -> str:
    # Tune's default folder name repeats every sampled value and grows past path limits.
    return f"trial_{trial.trial_id}"


def _print_locations(settings: SearchSettings, dashboard: str | None, tracking_uri: str,
                     parent_run_id: str) -> None:
    print(f"search results: {settings.experiment_dir}", flush=True)
    print(f"Ray dashboard:  {dashboard or '(not running)'}", flush=True)
    print(f"MLflow:         {tracking_uri} (parent run {parent_run_id})", flush=True)
    if tracking_uri.startswith("sqlite:"):
        print(f"                view it with: {sys.executable} -m mlflow ui "
              f"--backend-store-uri {tracking_uri}", flush=True)


def _print_summary(settings: SearchSettings, summary: SearchSummary, results) -> None:
    errors = [r for r in results if r.error]
    print(f"\n{len(results)} trials, {len(errors)} failed. Best trials by {settings.metric}:")
    print(format_table(summary.table, settings.metric))
    for result in errors:
        print(f"failed trial {Path(result.path).name}: {describe_error(result.error)[:300]}")
    if summary.importances:
        print("\nparameter importances:")
        for name, value in summary.importances.items():
            print(f"  {name:45s} {value:.3f}")
    print()
    for label, path in summary.files.items():
        print(f"{label + ':':12s} {path}")
    if "best_config" in summary.files:
        print(f"rerun the best config: {sys.executable} -m trainable --config "
              f"{summary.files['best_config']}")

"""The end of a search: results table, best config, best weights and parameter importances.

Files written to the search folder:

- ``results.csv``: one row per trial with its sampled values, best and last metrics, status
  and error;
- ``best_config.json``: the best trial's complete training config, ready for
  ``python -m trainable --config``;
- ``best_model.pt``: the best trial's best weights as an official ``vit_t`` state dict;
- ``importances.json``: Optuna's parameter importances, once enough trials have finished.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch
from ray.tune import ResultGrid

from search_spaces import SearchSpace, apply_params
from trainable.config import load_config
from trainable.model import build_model, save_official_weights
from trainable.tune_trainable import STATE_FILE
from tuner.mlflow_runs import describe_error

logger = logging.getLogger(__name__)

# Importances need a spread of finished trials; below this count they are noise.
MIN_TRIALS_FOR_IMPORTANCE = 4


@dataclass
class SearchSummary:
    table: pd.DataFrame
    best_trial_id: str | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    importances: dict[str, float] = field(default_factory=dict)


def results_table(results: ResultGrid, metric: str, mode: str) -> pd.DataFrame:
    """Return one row per trial: id, status, epochs, best and last metrics, sampled values."""
    rows = []
    for result in results:
        history = result.metrics_dataframe
        row: dict[str, Any] = {
            "trial_id": result.metrics.get("trial_id") if result.metrics else None,
            "status": "ERROR" if result.error else "TERMINATED",
            "epochs": int(history["epoch"].max()) if history is not None and "epoch" in history else 0,
        }
        if row["trial_id"] is None:
            row["trial_id"] = Path(result.path).name
        if history is not None and metric in history and history[metric].notna().any():
            best_index = history[metric].idxmax() if mode == "max" else history[metric].idxmin()
            best = history.loc[best_index]
            row[f"best_{metric}"] = float(best[metric])
            row["best_epoch"] = int(best["epoch"])
            for name in ("val_dice", "val_iou", "val_score"):
                row[f"best_epoch_{name}"] = float(best[name])
        row["error"] = _one_line(result.error) if result.error else ""
        row.update({f"param.{k}": v for k, v in (result.config or {}).items()})
        row["path"] = result.path
        rows.append(row)
    table = pd.DataFrame(rows)
    key = f"best_{metric}"
    if key in table:
        table = table.sort_values(key, ascending=(mode == "min"), na_position="last")
    return table.reset_index(drop=True)


def summarise_search(results: ResultGrid, *, base_config: dict[str, Any], space: SearchSpace,
                     metric: str, mode: str, out_dir: Path) -> SearchSummary:
    """Write the summary files to ``out_dir`` and return what they contain."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = results_table(results, metric, mode)
    summary = SearchSummary(table=table)
    summary.files["results"] = out_dir / "results.csv"
    table.to_csv(summary.files["results"], index=False)

    best = _best_result(results, metric, mode)
    if best is None:
        logger.warning("no trial reported %s, so there is no best config", metric)
        return summary

    # The best config: complete, with the sampled values, and its own output folder.
    config = apply_params(base_config, best.config)
    config["model"]["save_dir"] = str(out_dir / "best_run")
    config["visual"]["save_path"] = None
    config = load_config(config).to_dict()
    summary.files["best_config"] = out_dir / "best_config.json"
    summary.files["best_config"].write_text(json.dumps(config, indent=2) + "\n")

    history = best.metrics_dataframe
    index = history[metric].idxmax() if mode == "max" else history[metric].idxmin()
    best_row = history.loc[index]
    summary.best_trial_id = str(best.metrics.get("trial_id", Path(best.path).name))
    summary.best_metrics = {name: float(best_row[name])
                            for name in ("val_dice", "val_iou", "val_score")}
    summary.best_metrics["best_epoch"] = float(best_row["epoch"])

    weights = _export_best_weights(best, metric, mode, out_dir / "best_model.pt")
    if weights is not None:
        summary.files["best_model"] = weights

    summary.importances = parameter_importances(results, space, metric, mode)
    if summary.importances:
        summary.files["importances"] = out_dir / "importances.json"
        summary.files["importances"].write_text(json.dumps(summary.importances, indent=2) + "\n")
    return summary


def format_table(table: pd.DataFrame, metric: str, rows: int = 10) -> str:
    """Return the best ``rows`` trials as aligned text for the console."""
    if table.empty:
        return "(no trials)"
    columns = ["trial_id", "status", "epochs", f"best_{metric}", "best_epoch_val_dice",
               "best_epoch_val_iou"]
    columns = [c for c in columns if c in table] + [c for c in table if c.startswith("param.")]
    shown = table[columns].head(rows).rename(columns=lambda c: c.removeprefix("param."))
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def parameter_importances(results: ResultGrid, space: SearchSpace, metric: str,
                          mode: str) -> dict[str, float]:
    """Return Optuna's importances of the searched values for the trials' best ``metric``.

    The study is rebuilt from the finished trials: replaying the space on each trial's values
    recovers the distributions Optuna sampled them from.
    """
    trials = []
    for result in results:
        history = result.metrics_dataframe
        if result.error or history is None or metric not in history or not result.config:
            continue
        value = float(history[metric].max() if mode == "max" else history[metric].min())
        if not math.isfinite(value):
            continue
        fixed = optuna.trial.FixedTrial(dict(result.config))
        space(fixed)
        trials.append(optuna.trial.create_trial(params=dict(result.config),
                                                distributions=fixed.distributions, value=value))
    if len(trials) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    study.add_trials(trials)
    try:
        return {name: float(v) for name, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError) as error:  # e.g. every trial sampled the same values
        logger.warning("parameter importances are not available: %s", error)
        return {}


def _best_result(results: ResultGrid, metric: str, mode: str):
    try:
        return results.get_best_result(metric, mode, scope="all")
    except RuntimeError:
        return None


def _export_best_weights(result, metric: str, mode: str, path: Path) -> Path | None:
    checkpoint = result.get_best_checkpoint(metric, mode)
    if checkpoint is None:
        logger.warning("the best trial kept no checkpoint, so no weights were exported")
        return None
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
    model = build_model("vit_t")
    model.load_state_dict(state["model"])
    save_official_weights(model, path)
    return path


def _one_line(error: BaseException) -> str:
    return describe_error(error)[:500]

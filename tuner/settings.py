"""Search settings: what to search, how long, on which resources, and where results go.

A search file (YAML or JSON) contains the settings below. Every setting also has a
command-line flag, and a flag given on the command line wins over the file::

    base_config: train.json          # a training config file, or the config itself inline
    space: loss_weights              # a named space, or an inline space (search_spaces YAML form)
    trials: 8                        # number of trials in total
    epochs: 3                        # training epochs of each trial (overrides train.epochs)
    scheduler: {type: asha, grace_period: 1, reduction_factor: 2}    # or {type: fifo}
    metric: val_score
    mode: max
    resources_per_trial: {cpu: 2, gpu: 0.5}
    max_concurrent_trials: 2
    retries: 0                       # restarts of a failed trial from its last checkpoint
    reuse_actors: true               # run the next trial in the finished trial's process
    seed: 0
    storage_path: search_results     # shared storage (NFS path or s3://) on a cluster
    name: segment-everything
    mlflow: {tracking_uri: null, experiment: segment-everything}
    ray: {address: null, dashboard_host: 127.0.0.1, dashboard_port: 8265, include_dashboard: true}

Relative paths in a file are resolved against the file's folder, and on the command line
against the current folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainable.config import load_config

METRICS = ("val_score", "val_dice", "val_iou")
SCHEDULERS = ("asha", "fifo")


class SettingsError(ValueError):
    """A search file or flag with an unknown key or an invalid value."""


@dataclass
class SchedulerSettings:
    type: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0


@dataclass
class ResourceSettings:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass
class MlflowSettings:
    tracking_uri: str | None = None
    experiment: str = "segment-everything"


@dataclass
class RaySettings:
    address: str | None = None
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    include_dashboard: bool = True
    num_cpus: int | None = None


@dataclass
class SearchSettings:
    """Every setting of one search. ``base_config`` is the training config as a nested dict."""

    base_config: dict[str, Any] = field(default_factory=dict)
    space: Any = "loss_weights"
    trials: int = 8
    epochs: int | None = None
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    metric: str = "val_score"
    mode: str = "max"
    resources_per_trial: ResourceSettings = field(default_factory=ResourceSettings)
    max_concurrent_trials: int = 1
    retries: int = 0
    # A new trial runs in the process of a finished one when their resources match, which saves
    # the start of a process that imports torch, Ray and MLflow (about 5 s per trial on 2 cores).
    reuse_actors: bool = True
    seed: int = 0
    storage_path: str = "search_results"
    name: str = "segment-everything"
    mlflow: MlflowSettings = field(default_factory=MlflowSettings)
    ray: RaySettings = field(default_factory=RaySettings)

    @property
    def experiment_dir(self) -> Path:
        return Path(self.storage_path) / self.name

    @property
    def tracking_uri(self) -> str:
        """The MLflow store: the given URI, or an SQLite file in the search's folder."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{self.experiment_dir / 'mlflow.db'}"

    def check(self) -> None:
        """Raise SettingsError for any value out of range."""
        _require(self.trials >= 1, "trials", self.trials, "must be >= 1")
        _require(self.epochs is None or self.epochs >= 1, "epochs", self.epochs, "must be >= 1")
        _require(self.scheduler.type in SCHEDULERS, "scheduler.type", self.scheduler.type,
                 f"must be one of {', '.join(SCHEDULERS)}")
        _require(self.scheduler.grace_period >= 1, "scheduler.grace_period",
                 self.scheduler.grace_period, "must be >= 1 epoch")
        _require(self.scheduler.reduction_factor > 1, "scheduler.reduction_factor",
                 self.scheduler.reduction_factor, "must be > 1")
        _require(self.metric in METRICS, "metric", self.metric,
                 f"must be one of {', '.join(METRICS)}")
        _require(self.mode in ("max", "min"), "mode", self.mode, 'must be "max" or "min"')
        _require(self.resources_per_trial.cpu > 0, "resources_per_trial.cpu",
                 self.resources_per_trial.cpu, "must be > 0")
        gpu = self.resources_per_trial.gpu
        _require(gpu >= 0 and (gpu <= 1 or gpu == int(gpu)), "resources_per_trial.gpu", gpu,
                 "must be >= 0, and a whole number when above 1")
        _require(self.max_concurrent_trials >= 1, "max_concurrent_trials",
                 self.max_concurrent_trials, "must be >= 1")
        _require(self.retries >= 0, "retries", self.retries, "must be >= 0")
        _require(isinstance(self.reuse_actors, bool), "reuse_actors", self.reuse_actors,
                 "must be true or false")
        _require(bool(self.name) and "/" not in self.name, "name", self.name,
                 "must be a non-empty folder name")
        _require(bool(self.base_config), "base_config", self.base_config,
                 "is missing: give a training config file or an inline config")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_settings_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON search file into a dict, resolving its relative paths."""
    path = Path(path)
    raw = _read_mapping(path, "search file")
    base = path.resolve().parent
    if isinstance(raw.get("base_config"), str):
        raw["base_config"] = str((base / raw["base_config"]).resolve())
    if isinstance(raw.get("storage_path"), str) and "://" not in raw["storage_path"]:
        raw["storage_path"] = str((base / raw["storage_path"]).resolve())
    raw["_folder"] = str(base)
    return raw


def build_settings(raw: dict[str, Any]) -> SearchSettings:
    """Create checked :class:`SearchSettings` from a dict in the search-file form."""
    raw = dict(raw)
    folder = Path(raw.pop("_folder", "."))
    base = raw.get("base_config")
    if isinstance(base, str):
        raw["base_config"] = _read_mapping(Path(base), "base training config")
        base_folder = Path(base).resolve().parent
    else:
        base_folder = folder.resolve()
    settings = _build(SearchSettings, raw, "")
    settings.base_config = _absolute_dataset_paths(settings.base_config, base_folder)
    if "://" not in settings.storage_path:
        settings.storage_path = str(Path(settings.storage_path).expanduser().resolve())
    settings.check()
    return settings


def _read_mapping(path: Path, kind: str) -> dict[str, Any]:
    """Read a JSON file (by its suffix) or else a YAML file that must contain a mapping.
    ``kind`` names the file in error messages."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SettingsError(f"{kind} not found: {path}") from None
    try:
        content = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SettingsError(f"{kind} {path} cannot be parsed: {error}") from None
    if not isinstance(content, dict):
        raise SettingsError(f"{kind} {path} must contain a mapping")
    return content


def _absolute_dataset_paths(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Check the training config and make its paths absolute, because trials run elsewhere."""
    return load_config(config, base_dir=folder).to_dict()


def _build(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise SettingsError(f"{path or 'search settings'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        key_path = f"{path}.{key}" if path else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.4)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(f"unknown search setting {key_path!r}{hint}")
        default = fields[key].default_factory() if callable(fields[key].default_factory) else None
        if dataclasses.is_dataclass(default) and value is not None:
            values[key] = _build(type(default), value, key_path)
        else:
            values[key] = value
    return cls(**values)


def _require(condition: bool, key: str, value: Any, rule: str) -> None:
    if not condition:
        raise SettingsError(f"search setting {key}={value!r} is invalid: {rule}")

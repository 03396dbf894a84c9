"""The training run of one trial: validate at epoch 0, then train and validate epoch by epoch.

:class:`TrainingRun` owns the model, the optimiser and every counter a resumed run needs;
:meth:`TrainingRun.state_dict` and :meth:`TrainingRun.load_state_dict` move all of it in and out
of a checkpoint. Each finished epoch is written to ``training_log.txt`` and handed to the
observers (the Ray Tune reporter, the MLflow child run).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from trainable.config import TrainingConfig
from trainable.data import ImageRecord, load_split
from trainable.distillation import Distiller, build_distiller
from trainable.evaluation import evaluate_image, summarise
from trainable.losses import TASK_TERMS
from trainable.model import (Sam, apply_freeze, build_model, frozen_parts,
                             save_official_weights)
from trainable.schedules import LambdaSchedule, learning_rate
from trainable.step import StepSettings, train_image
from trainable.training_log import TrainingLog
from trainable.visualisation import save_overlay

logger = logging.getLogger(__name__)

BEST_WEIGHTS_NAME = "best.pt"


@dataclass
class EpochResult:
    """What one epoch produced. Epoch 0 is the validation before training and has no losses."""

    epoch: int
    losses: dict[str, float]
    lr: float
    lambda_coef: float
    metrics: dict[str, float]
    seconds: float
    is_best: bool
    stop: bool = False
    visualisations: list[str] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        """Return the flat dict written to the log and reported to Tune and MLflow."""
        return {"epoch": self.epoch, **self.losses, "lr": self.lr, "lambda": self.lambda_coef,
                **self.metrics, "seconds": self.seconds}


EpochObserver = Callable[[EpochResult, "TrainingRun"], None]


def select_device(name: str) -> torch.device:
    """Return the torch device for a config's ``train.device`` (``auto`` prefers CUDA)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available on this machine")
    return torch.device(name)


class TrainingRun:
    """One segment-everything finetuning run, built from a checked :class:`TrainingConfig`.

    Args:
        config: the run's settings.
        train_records, val_records: decoded splits; loaded from the config's folders when None.
        sam: the model to train; built from ``model.type`` and ``model.checkpoint_path`` when
            None.

    With ``distillation.enable`` the teachers are loaded and their outputs for the training
    images cached (computed now for images missing from the cache) before the first epoch.
    """

    def __init__(self, config: TrainingConfig,
                 train_records: list[ImageRecord] | None = None,
                 val_records: list[ImageRecord] | None = None,
                 sam: Sam | None = None):
        self.config = config
        self.device = select_device(config.train.device)
        torch.manual_seed(config.train.seed)

        dataset = config.dataset
        self.train_records = train_records if train_records is not None else load_split(
            dataset.train_dir, dataset.mask_threshold)
        self.val_records = val_records if val_records is not None else load_split(
            dataset.val_dir, dataset.mask_threshold)

        if sam is None:
            sam = build_model(config.model.type, config.model.checkpoint_path)
        self.sam = sam.to(self.device)
        self.optimizer = torch.optim.AdamW(self.sam.parameters(), lr=config.train.lr,
                                           weight_decay=config.train.weight_decay)
        images_per_step = config.train.batch_size * config.train.gradient_accumulation
        self.steps_per_epoch = math.ceil(len(self.train_records) / images_per_step)
        self.total_steps = self.steps_per_epoch * config.train.epochs
        self.warmup_steps = min(round(config.train.warmup_epochs * self.steps_per_epoch),
                                self.total_steps)
        self.lambda_schedule = LambdaSchedule(config.distillation.lambda_schedule,
                                              config.distillation.lambda_coef,
                                              config.train.epochs)
        self.log = TrainingLog(config.output_dir)
        self.step_settings = StepSettings(
            loss_weights={name: getattr(config.train.loss_weights, name) for name in TASK_TERMS},
            match_iou_threshold=config.train.match_iou_threshold,
            focal_alpha=config.train.focal_alpha,
            focal_gamma=config.train.focal_gamma,
            chunk_size=config.model.decoder_chunk_size,
        )
        self.distiller: Distiller | None = None
        if config.distillation.enable:
            self.distiller = build_distiller(config, self.sam, self.train_records, self.device)

        # Counters that a checkpoint carries. ``epoch`` is the last finished epoch, -1 before
        # the epoch-0 validation.
        self.epoch = -1
        self.global_step = 0
        self.best_score = -math.inf
        self.epochs_since_best = 0

    # Checkpoint state.

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.sam.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lambda_schedule": self.lambda_schedule.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_score": self.best_score,
            "epochs_since_best": self.epochs_since_best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sam.load_state_dict(state["model"])
        apply_freeze(self.sam, frozen_parts(self.config.freeze, state["epoch"] + 1))
        self.optimizer.load_state_dict(state["optimizer"])
        self.lambda_schedule.load_state_dict(state["lambda_schedule"])
        self.epoch = state["epoch"]
        self.global_step = state["global_step"]
        self.best_score = state["best_score"]
        self.epochs_since_best = state["epochs_since_best"]
        self.log.truncate_after(self.epoch)

    # The loop.

    def run(self, observers: Iterable[EpochObserver] = ()) -> float:
        """Train until the last epoch or early stopping; return the best ``val_score``."""
        observers = list(observers)
        config = self.config
        logger.info("training on %s: %d train and %d validation images, %d prompts per image, "
                    "output in %s", self.device, len(self.train_records), len(self.val_records),
                    config.dataset.grid_points ** 2, config.output_dir)
        while self.epoch < config.train.epochs:
            result = self.run_epoch(self.epoch + 1)
            for observer in observers:
                observer(result, self)
            if result.stop:
                logger.info("early stop after epoch %d: no better val_score for %d epochs",
                            result.epoch, self.epochs_since_best)
                break
        logger.info("best val_score %.4f; weights in %s", self.best_score,
                    config.output_dir / BEST_WEIGHTS_NAME)
        return self.best_score

    def run_epoch(self, epoch: int) -> EpochResult:
        """Train epoch ``epoch`` (epoch 0 only validates), validate, and record the outcome."""
        try:
            return self._run_epoch(epoch)
        except Exception as error:
            self.log.append_error(error, epoch)
            raise

    def _run_epoch(self, epoch: int) -> EpochResult:
        started = time.perf_counter()
        lambda_coef = self.lambda_schedule.value(epoch)
        losses = self.train_epoch(epoch, lambda_coef) if epoch > 0 else {}
        evaluations = [self._evaluate(record) for record in self.val_records]
        metrics = summarise(evaluations)

        is_best = metrics["val_score"] > self.best_score
        if is_best:
            self.best_score = metrics["val_score"]
            self.epochs_since_best = 0
            save_official_weights(self.sam, self.config.output_dir / BEST_WEIGHTS_NAME)
        else:
            self.epochs_since_best += 1
        self.lambda_schedule.observe(metrics["val_score"])

        visualisations = []
        if self._should_visualise(epoch, is_best):
            visualisations = self._visualise(epoch, evaluations)

        self.epoch = epoch
        patience = self.config.train.early_stop_patience
        result = EpochResult(
            epoch=epoch,
            losses=losses,
            lr=self._current_lr() if epoch > 0 else 0.0,
            lambda_coef=lambda_coef,
            metrics=metrics,
            seconds=time.perf_counter() - started,
            is_best=is_best,
            stop=patience > 0 and self.epochs_since_best >= patience,
            visualisations=visualisations,
        )
        self.log.append(result.fields())
        logger.info("epoch %d: %s", epoch, " ".join(
            f"{k}={v:.4g}" for k, v in result.fields().items() if isinstance(v, float)))
        return result

    def train_epoch(self, epoch: int, lambda_coef: float | None = None) -> dict[str, float]:
        """Run the optimiser steps of one epoch; return the mean loss terms over its images.

        ``lambda_coef`` scales the distillation terms; by default it is the schedule's λ for
        ``epoch``.
        """
        if lambda_coef is None:
            lambda_coef = self.lambda_schedule.value(epoch)
        config = self.config.train
        apply_freeze(self.sam, frozen_parts(self.config.freeze, epoch))
        self.sam.train()
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(len(self.train_records), generator=generator).tolist()
        images_per_step = config.batch_size * config.gradient_accumulation

        distill_terms = self.distiller.term_names if self.distiller is not None else ()
        totals = {name: 0.0 for name in (*TASK_TERMS, *distill_terms, "loss")}
        for start in range(0, len(order), images_per_step):
            batch = order[start:start + images_per_step]
            self.optimizer.zero_grad(set_to_none=True)
            for index in batch:
                record = self.train_records[index]
                points = self._training_prompts(record, generator)
                result = train_image(self.sam, record, points, self.step_settings,
                                     loss_scale=1.0 / len(batch), autocast=self._autocast,
                                     distiller=self.distiller, lambda_coef=lambda_coef)
                for name, value in result.terms.items():
                    totals[name] += value
                totals["loss"] += result.total
            self._optimiser_step()
        return {name: value / len(order) for name, value in totals.items()}

    # Steps of an epoch.

    def _optimiser_step(self) -> None:
        config = self.config.train
        if config.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.sam.parameters(), config.grad_clip_norm)
        lr = learning_rate(self.global_step, self.total_steps, self.warmup_steps, config.lr,
                           config.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.global_step += 1

    def _current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _training_prompts(self, record: ImageRecord, generator: torch.Generator) -> torch.Tensor:
        points = record.prompt_points(self.config.dataset.grid_points)
        fraction = self.config.train.prompt_subset
        if fraction >= 1.0:
            return points
        keep = max(1, round(fraction * points.shape[0]))
        chosen = torch.randperm(points.shape[0], generator=generator)[:keep]
        return points[chosen.sort().values]

    def _evaluate(self, record: ImageRecord):
        self.sam.eval()
        points = record.prompt_points(self.config.dataset.grid_points)
        return evaluate_image(self.sam, record, points, self.config.model.decoder_chunk_size,
                              autocast=self._autocast)

    @functools.cached_property
    def _autocast(self) -> Callable[[], contextlib.AbstractContextManager]:
        if self.device.type == "cuda" and self.config.train.bf16:
            return functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext

    def _should_visualise(self, epoch: int, is_best: bool) -> bool:
        visual = self.config.visual
        every = visual.save_every_n_epochs
        return visual.enable and (is_best or (every > 0 and epoch % every == 0))

    def _visualise(self, epoch: int, evaluations: list) -> list[str]:
        folder = self.config.visual_dir / f"epoch_{epoch}"
        paths = []
        for evaluation in evaluations[:self.config.visual.max_images]:
            path = folder / f"{evaluation.record.image_id}.png"
            save_overlay(path, evaluation.record.image_path, evaluation.matched_masks,
                         self.config.dataset.grid_points)
            paths.append(str(path))
        return paths

"""Distillation from SAM teachers during one training run.

:class:`Distiller` keeps the teachers, the teacher cache and the enabled terms, and computes
each term of one image for the training step:

- ``distill_encoder``, ``distill_attention``, ``distill_rkd`` depend on the student's image
  encoder only. The step adds them to the loss once per image, and in the chunked step their
  gradient joins the embedding gradient of the decoder chunks before the single backward pass
  through the encoder.
- ``distill_decoder`` is a sum over candidates divided by the image's candidate count, computed
  chunk by chunk like the task terms, with the teacher's decoder run live on the same prompts.

Each term is the sum over teachers of the teacher's weight times the term's own loss. The
step's loss adds λ * sum over terms of ``distillation.<term>.weight`` * term.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import torch

from trainable.config import DistillationConfig, TrainingConfig
from trainable.data import ImageRecord
from trainable.distillation_attention import (attention_sites, block_mapping,
                                              capture_pooled_attention, teacher_blocks,
                                              window_support)
from trainable.distillation_losses import (attention_kl, embedding_channel_kl, embedding_mse,
                                           iou_prediction_sum, mask_logit_kl_sum, region_vectors,
                                           rkd_angle, rkd_distance)
from trainable.model import Sam
from trainable.prediction import decode_prompts
from trainable.teacher_cache import CacheContent, TeacherCache, TeacherTargets
from trainable.teachers import Teacher, load_teachers

logger = logging.getLogger(__name__)

ENCODER_TERMS = ("distill_encoder", "distill_attention", "distill_rkd")
DECODER_TERM = "distill_decoder"
# Config block of each logged term.
TERM_SECTIONS = {"distill_encoder": "encoder", "distill_decoder": "decoder",
                 "distill_attention": "attention", "distill_rkd": "rkd"}


def cache_folder(config: TrainingConfig) -> Path:
    """Return where a run keeps teacher outputs (``distillation.cache_dir`` and its defaults)."""
    if config.distillation.cache_dir:
        return Path(config.distillation.cache_dir)
    if config.dataset.cache_dir:
        return Path(config.dataset.cache_dir) / "teacher_outputs"
    return config.output_dir / "teacher_cache"


def cache_content(settings: DistillationConfig, teacher: Teacher) -> CacheContent:
    """Return what a teacher's cache entries hold for these settings."""
    if not settings.attention.enable:
        return CacheContent()
    return CacheContent(tuple(teacher_blocks(teacher.sam.image_encoder)),
                        settings.attention.grid_size)


class Distiller:
    """The teachers, their cache and the enabled distillation terms of one run.

    Args:
        settings: the ``distillation`` section of the config.
        teachers: frozen teachers, see :func:`trainable.teachers.load_teachers`.
        cache: where the teachers' image outputs are stored.
        student: the model being trained; attention distillation maps its blocks.
        device: where targets are placed.
    """

    def __init__(self, settings: DistillationConfig, teachers: list[Teacher],
                 cache: TeacherCache, student: Sam, device: torch.device):
        self.settings = settings
        self.teachers = teachers
        self.cache = cache
        self.device = device
        self.term_names = tuple(term for term, section in TERM_SECTIONS.items()
                                if getattr(settings, section).enable)
        self.term_weights = {term: getattr(settings, TERM_SECTIONS[term]).weight
                             for term in self.term_names}

        # Attention: which student block each teacher map is compared with, and the region
        # pairs each of those student blocks can reach.
        self.student_blocks: list[int] = []
        self.attention_pairs: dict[str, list[tuple[int, int]]] = {}
        self.supports: list[torch.Tensor] = []
        if settings.attention.enable:
            grid = settings.attention.grid_size
            student_sites = attention_sites(student.image_encoder)
            for teacher in teachers:
                pairs = block_mapping(student.image_encoder, teacher.sam.image_encoder)
                self.attention_pairs[teacher.name] = pairs
                for student_block, _ in pairs:
                    if student_block not in self.student_blocks:
                        self.student_blocks.append(student_block)
            self.student_blocks.sort()
            self._student_sites = [student_sites[index] for index in self.student_blocks]
            self.supports = [window_support(site, grid).to(device)
                             for site in self._student_sites]

        self._contents = {teacher.name: cache_content(settings, teacher) for teacher in teachers}

    def fill_cache(self, records: list[ImageRecord]) -> dict[str, int]:
        """Compute the cache entries of ``records`` whose files are missing; return the count
        per teacher. Stale entries are recomputed when a step reads them."""
        return {teacher.name: self.cache.fill(teacher, records, self._contents[teacher.name],
                                              self.device, verify=False)
                for teacher in self.teachers}

    # Per-image terms.

    def student_attention(self, student: Sam) -> ContextManager[list[torch.Tensor]]:
        """Capture the pooled attention maps of the mapped student blocks during encoding."""
        if not self.settings.attention.enable:
            return contextlib.nullcontext([])
        return capture_pooled_attention(self._student_sites, self.settings.attention.grid_size)

    def targets(self, record: ImageRecord) -> list[TeacherTargets]:
        """Return each teacher's cached outputs for ``record``, computing any that are missing."""
        return [self.cache.get(teacher, record, self._contents[teacher.name], self.device)
                for teacher in self.teachers]

    def encoder_terms(self, embedding: torch.Tensor, student_maps: list[torch.Tensor],
                      targets: list[TeacherTargets]) -> dict[str, torch.Tensor]:
        """Return the enabled encoder-side terms of one image, each summed over teachers."""
        terms: dict[str, torch.Tensor] = {}
        settings = self.settings
        for teacher, target in zip(self.teachers, targets):
            parts = {}
            if settings.encoder.enable:
                encoder = settings.encoder
                value = embedding.new_zeros((), dtype=torch.float32)
                if encoder.mse_weight > 0:
                    value = value + encoder.mse_weight * embedding_mse(embedding, target.embedding)
                if encoder.kl_weight > 0:
                    value = value + encoder.kl_weight * embedding_channel_kl(
                        embedding, target.embedding, encoder.temperature)
                parts["distill_encoder"] = value
            if settings.attention.enable:
                parts["distill_attention"] = self._attention_term(teacher, student_maps, target)
            if settings.rkd.enable:
                rkd = settings.rkd
                student = region_vectors(embedding, rkd.grid_size)
                reference = region_vectors(target.embedding, rkd.grid_size)
                value = embedding.new_zeros((), dtype=torch.float32)
                if rkd.distance_weight > 0:
                    value = value + rkd.distance_weight * rkd_distance(student, reference)
                if rkd.angle_weight > 0:
                    value = value + rkd.angle_weight * rkd_angle(student, reference)
                parts["distill_rkd"] = value
            for name, value in parts.items():
                terms[name] = terms.get(name, 0.0) + teacher.weight * value
        return terms

    def decoder_sum(self, logits: torch.Tensor, predicted_iou: torch.Tensor,
                    points: torch.Tensor, targets: list[TeacherTargets],
                    autocast: Callable[[], ContextManager]) -> torch.Tensor:
        """Return the decoder term summed over the given prompts' candidates and the teachers.

        The teacher's prompt encoder and mask decoder run here, without gradients, on its
        cached embedding with the same ``points``.
        """
        decoder = self.settings.decoder
        total = logits.new_zeros((), dtype=torch.float32)
        for teacher, target in zip(self.teachers, targets):
            with torch.no_grad(), autocast():
                teacher_logits, teacher_iou = decode_prompts(teacher.sam, target.embedding, points)
            value = logits.new_zeros((), dtype=torch.float32)
            if decoder.mask_weight > 0:
                value = value + decoder.mask_weight * mask_logit_kl_sum(
                    logits, teacher_logits, decoder.temperature)
            if decoder.iou_weight > 0:
                value = value + decoder.iou_weight * iou_prediction_sum(predicted_iou, teacher_iou)
            total = total + teacher.weight * value
        return total

    def weighted_total(self, terms: dict[str, torch.Tensor], lambda_coef: float) -> torch.Tensor:
        """Return λ * sum of ``weight * term`` over the distillation terms present in ``terms``."""
        total = 0.0
        for name, weight in self.term_weights.items():
            if name in terms:
                total = total + weight * terms[name]
        return lambda_coef * total

    def _attention_term(self, teacher: Teacher, student_maps: list[torch.Tensor],
                        target: TeacherTargets) -> torch.Tensor:
        values = []
        for layer, (student_block, _) in enumerate(self.attention_pairs[teacher.name]):
            position = self.student_blocks.index(student_block)
            values.append(attention_kl(student_maps[position], target.attention[layer],
                                       self.supports[position]))
        return torch.stack(values).mean()

    # Reporting.

    def describe_costs(self) -> Iterator[str]:
        """Yield lines on the cache's size and on what runs live in each training step."""
        yield (f"teacher cache {self.cache.root}: {self.cache.size_bytes() / 1e6:.1f} MB on "
               "disk in total")
        for teacher in self.teachers:
            entries = self.cache.entry_count(teacher)
            size = self.cache.size_bytes(teacher)
            per_entry = size / entries / 1e6 if entries else 0.0
            yield (f"teacher {teacher.name!r} ({teacher.model_type}, weight {teacher.weight:g}, "
                   f"{teacher.source}, weights sha256 {teacher.weights_sha256[:12]}): "
                   f"{entries} cached images, {size / 1e6:.1f} MB "
                   f"({per_entry:.2f} MB per image) in {self.cache.teacher_folder(teacher)}")
        live = ["the teachers' cached embeddings"
                + (" and pooled attention maps" if self.settings.attention.enable else "")
                + " are read from disk once per image"]
        if self.settings.attention.enable:
            live.append(f"attention of student blocks {self.student_blocks} is recomputed from "
                        "their inputs and pooled")
        if self.settings.decoder.enable:
            live.append(f"{len(self.teachers)} teacher prompt encoder(s) and mask decoder(s) "
                        "run on every decoder chunk, about one student decoder pass each")
        encoders = [t.name for t in self.teachers if t.has_image_encoder]
        live.append("teacher image encoders run only for images missing from the cache"
                    + (f" (kept loaded: {', '.join(encoders)})" if encoders
                       else " (released: every training image is cached)"))
        yield "per training step: " + "; ".join(live)


def build_distiller(config: TrainingConfig, student: Sam, train_records: list[ImageRecord],
                    device: torch.device) -> Distiller:
    """Load the teachers, fill the cache for ``train_records`` and log the costs.

    Once every training image is cached the teachers' image encoders are released, because
    the step only needs their decoders.
    """
    teachers = load_teachers(config.teachers, device)
    cache = TeacherCache(cache_folder(config), config.distillation.cache_dtype)
    if not (config.distillation.cache_dir or config.dataset.cache_dir):
        logger.info("distillation.cache_dir is not set, so teacher outputs are cached in %s "
                    "for this run only", cache.root)
    distiller = Distiller(config.distillation, teachers, cache, student, device)
    computed = distiller.fill_cache(train_records)
    for name, count in computed.items():
        if count:
            logger.info("teacher %r: computed %d of %d training images missing from the cache",
                        name, count, len(train_records))
    for teacher in teachers:
        teacher.release_image_encoder()
    for line in distiller.describe_costs():
        logger.info("%s", line)
    return distiller

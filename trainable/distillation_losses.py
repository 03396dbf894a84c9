"""Distillation losses between one student output and one teacher output.

Every function takes the student's tensor first and the teacher's second, treats the teacher's
as a constant (it is detached here, so no gradient can reach a teacher), and returns 0 when the
two are equal. Which blocks of the config turn them on, and how they are weighted, is in
``trainable.config``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainable.distillation_attention import LOG_EPS

# Keeps distances and norms differentiable where two region vectors coincide.
NORM_EPS = 1e-12


def embedding_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between image embeddings (1, 256, 64, 64)."""
    return F.mse_loss(student.float(), teacher.detach().float())


def embedding_channel_kl(student: torch.Tensor, teacher: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """KL(teacher || student) over the channels at each position, averaged over positions.

    Both embeddings (1, C, H, W) are softened by a softmax over C at ``temperature``; the
    result is multiplied by ``temperature ** 2`` (Hinton et al., 2015).
    """
    log_student = F.log_softmax(student.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.detach().float() / temperature, dim=1)
    per_position = (log_teacher.exp() * (log_teacher - log_student)).sum(1)
    return per_position.mean() * temperature ** 2


def mask_logit_kl_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Sum over candidates of the pixel-mean binary KL(teacher || student) of mask logits.

    Shapes (K, 3, 256, 256). Each pixel is a Bernoulli variable with probability
    sigmoid(logit / temperature); the sum is multiplied by ``temperature ** 2``.
    """
    student = student_logits.float() / temperature
    teacher = teacher_logits.detach().float() / temperature
    teacher_probability = torch.sigmoid(teacher)
    per_pixel = (teacher_probability * (F.logsigmoid(teacher) - F.logsigmoid(student))
                 + (1 - teacher_probability) * (F.logsigmoid(-teacher) - F.logsigmoid(-student)))
    return per_pixel.flatten(2).mean(2).sum() * temperature ** 2


def iou_prediction_sum(student_iou: torch.Tensor, teacher_iou: torch.Tensor) -> torch.Tensor:
    """Sum over candidates of the squared difference of the IoU head outputs (K, 3)."""
    return ((student_iou.float() - teacher_iou.detach().float()) ** 2).sum()


def attention_kl(student_map: torch.Tensor, teacher_map: torch.Tensor,
                 support: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of pooled attention rows, averaged over the rows.

    ``student_map`` and ``teacher_map`` are (R, R) region-to-region attention with rows
    summing to 1; ``support`` (R, R, bool) marks the region pairs the student block can
    connect. Each teacher row is restricted to the support and renormalised first, so a
    windowed student is compared within its reach (``trainable.distillation_attention``).
    """
    student = student_map.float()
    teacher = teacher_map.detach().float() * support.to(student.device)
    teacher = teacher / teacher.sum(-1, keepdim=True).clamp_min(LOG_EPS)
    per_row = (torch.xlogy(teacher, teacher)
               - teacher * torch.log(student.clamp_min(LOG_EPS))).sum(-1)
    return per_row.mean()


def region_vectors(embedding: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Average-pool an embedding (1, C, H, W) to (grid_size^2, C) region vectors."""
    pooled = F.adaptive_avg_pool2d(embedding.float(), grid_size)
    return pooled.flatten(2)[0].transpose(0, 1)


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 difference of the pairwise distance matrices of region vectors (N, C).

    Each matrix is divided by its mean distance between distinct regions (Park et al., 2019),
    so the loss compares the shape of the relations and not their scale.
    """
    return F.smooth_l1_loss(_normalised_distances(student), _normalised_distances(teacher.detach()))


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 difference of the angle tensors of region vectors (N, C).

    Entry (j, i, k) is the cosine of the angle at region j between regions i and k.
    """
    return F.smooth_l1_loss(_angles(student), _angles(teacher.detach()))


def _normalised_distances(vectors: torch.Tensor) -> torch.Tensor:
    differences = vectors[:, None, :] - vectors[None, :, :]
    distances = (differences ** 2).sum(-1).clamp_min(NORM_EPS).sqrt()
    count = vectors.shape[0]
    off_diagonal = ~torch.eye(count, dtype=torch.bool, device=vectors.device)
    distances = distances * off_diagonal
    mean = distances.sum() / max(count * (count - 1), 1)
    return distances / mean.clamp_min(NORM_EPS)


def _angles(vectors: torch.Tensor) -> torch.Tensor:
    # directions[j, i] is the unit vector from region j to region i (0 for i == j).
    differences = vectors[None, :, :] - vectors[:, None, :]
    lengths = (differences ** 2).sum(-1, keepdim=True).clamp_min(NORM_EPS).sqrt()
    directions = differences / lengths
    return directions @ directions.transpose(1, 2)

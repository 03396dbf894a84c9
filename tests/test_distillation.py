"""Distillation from SAM teachers: the losses, the attention mapping, the step and the run.

Expected values come from independent computations written out here with NumPy and loops.
"""

import copy
import logging
import math
import re
import warnings

import numpy as np
import pytest
import torch

from trainable.config import ConfigError, TeacherConfig, load_config
from trainable.data import load_split
from trainable.distillation import Distiller
from trainable.distillation_attention import (AttentionMappingError, AttentionSite,
                                              block_mapping, capture_pooled_attention,
                                              pool_attention_sums, teacher_blocks,
                                              tinyvit_attention, vit_attention_heads,
                                              window_support)
from trainable.distillation_losses import (attention_kl, embedding_channel_kl, embedding_mse,
                                           iou_prediction_sum, mask_logit_kl_sum, region_vectors,
                                           rkd_angle, rkd_distance)
from trainable.model import CheckpointError
from trainable.step import train_image
from trainable.teacher_cache import TeacherCache
from trainable.teachers import load_teacher, load_teachers
from trainable.training_log import TrainingLog

from conftest import build_small_sam
from distillation_helpers import distillation_settings, frozen_teacher
from step_helpers import WEIGHTS, step_settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from mobile_sam import sam_model_registry
    from mobile_sam.modeling.image_encoder import Attention as VitAttention
    from mobile_sam.modeling.tiny_vit_sam import Attention as TinyVitAttention


def random(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def softmax(values, axis=-1):
    shifted = np.exp(values - values.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def smooth_l1(a, b):
    difference = np.abs(a - b)
    return np.where(difference < 1.0, 0.5 * difference ** 2, difference - 0.5).mean()


# Losses against independent computations.

def test_embedding_mse_by_hand():
    student, teacher = random(1, 8, 4, 4, seed=1), random(1, 8, 4, 4, seed=2)
    expected = ((student.numpy().astype(np.float64) - teacher.numpy()) ** 2).mean()
    assert float(embedding_mse(student, teacher)) == pytest.approx(expected, rel=1e-5)
    assert float(embedding_mse(teacher, teacher)) == 0.0


def test_embedding_channel_kl_by_hand():
    student, teacher = random(1, 8, 3, 5, seed=1), random(1, 8, 3, 5, seed=2)
    temperature = 2.0
    s, t = student.numpy()[0].astype(np.float64), teacher.numpy()[0].astype(np.float64)
    values = []
    for y in range(3):
        for x in range(5):
            p = softmax(t[:, y, x] / temperature)
            q = softmax(s[:, y, x] / temperature)
            values.append((p * np.log(p / q)).sum())
    expected = np.mean(values) * temperature ** 2

    assert float(embedding_channel_kl(student, teacher, temperature)) == pytest.approx(expected,
                                                                                      rel=1e-5)
    assert expected > 0
    assert float(embedding_channel_kl(teacher, teacher, temperature)) == pytest.approx(0.0,
                                                                                      abs=1e-7)


def test_mask_logit_kl_by_hand():
    student, teacher = random(2, 3, 4, 4, seed=3) * 3, random(2, 3, 4, 4, seed=4) * 3
    temperature = 1.5
    s = student.numpy().astype(np.float64) / temperature
    t = teacher.numpy().astype(np.float64) / temperature
    p, q = 1 / (1 + np.exp(-t)), 1 / (1 + np.exp(-s))
    per_pixel = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    expected = per_pixel.reshape(2, 3, -1).mean(-1).sum() * temperature ** 2

    assert float(mask_logit_kl_sum(student, teacher, temperature)) == pytest.approx(expected,
                                                                                   rel=1e-5)
    assert expected > 0
    assert float(mask_logit_kl_sum(teacher, teacher, temperature)) == pytest.approx(0.0,
                                                                                   abs=1e-6)


def test_iou_prediction_sum_by_hand():
    student = torch.tensor([[0.9, 0.5, 0.1], [0.3, 0.3, 0.3]])
    teacher = torch.tensor([[0.8, 0.5, 0.3], [0.3, 0.0, 0.3]])
    # 0.1^2 + 0.2^2 + 0.3^2
    assert float(iou_prediction_sum(student, teacher)) == pytest.approx(0.14, rel=1e-5)
    assert float(iou_prediction_sum(teacher, teacher)) == 0.0


def test_attention_kl_by_hand():
    regions = 4
    support = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]],
                           dtype=torch.bool)
    # A windowed student puts no attention outside its support; the teacher attends anywhere.
    student = torch.softmax(random(regions, regions, seed=5), -1) * support
    student = student / student.sum(-1, keepdim=True)
    teacher = torch.softmax(random(regions, regions, seed=6), -1)

    s, t, m = student.numpy().astype(np.float64), teacher.numpy().astype(np.float64), support.numpy()
    rows = []
    for i in range(regions):
        restricted = np.where(m[i], t[i], 0.0)
        restricted = restricted / restricted.sum()
        rows.append(sum(restricted[j] * math.log(restricted[j] / s[i, j])
                        for j in range(regions) if m[i, j]))
    expected = np.mean(rows)

    assert float(attention_kl(student, teacher, support)) == pytest.approx(expected, rel=1e-5)
    assert expected > 0
    # Teacher attention outside the student's reach does not count.
    outside = torch.softmax(random(regions, regions, seed=7), -1) * ~support
    mixed = 0.4 * student + 0.6 * outside / outside.sum(-1, keepdim=True)
    assert float(attention_kl(student, mixed, support)) == pytest.approx(0.0, abs=1e-6)


def test_rkd_distance_and_angle_by_hand():
    student, teacher = random(5, 3, seed=8), random(5, 3, seed=9)

    def distances(x):
        d = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(5)] for i in range(5)])
        return d / (d.sum() / (5 * 4))

    def angles(x):
        out = np.zeros((5, 5, 5))
        for j in range(5):
            for i in range(5):
                for k in range(5):
                    if i == j or k == j:
                        continue
                    a, b = x[i] - x[j], x[k] - x[j]
                    out[j, i, k] = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        return out

    s, t = student.numpy().astype(np.float64), teacher.numpy().astype(np.float64)
    expected_distance = smooth_l1(distances(s), distances(t))
    expected_angle = smooth_l1(angles(s), angles(t))

    assert float(rkd_distance(student, teacher)) == pytest.approx(expected_distance, rel=1e-5)
    assert float(rkd_angle(student, teacher)) == pytest.approx(expected_angle, rel=1e-5)
    assert expected_distance > 0
    assert expected_angle > 0
    assert float(rkd_distance(teacher, teacher)) == 0.0
    assert float(rkd_angle(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)
    # Distances are compared after dividing by their mean, so a scaled copy matches.
    assert float(rkd_distance(teacher * 3.0, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_rkd_at_batch_size_one_is_positive():
    student, teacher = random(1, 256, 64, 64, seed=10), random(1, 256, 64, 64, seed=11)
    student_regions = region_vectors(student, 8)
    teacher_regions = region_vectors(teacher, 8)

    assert student_regions.shape == (64, 256)
    assert float(rkd_distance(student_regions, teacher_regions)) > 1e-3
    assert float(rkd_angle(student_regions, teacher_regions)) > 1e-3
    assert float(rkd_distance(teacher_regions, teacher_regions)) == 0.0


LOSSES = {
    "embedding_mse": lambda s, t: embedding_mse(s, t),
    "embedding_channel_kl": lambda s, t: embedding_channel_kl(s, t, 2.0),
    "mask_logit_kl": lambda s, t: mask_logit_kl_sum(s, t, 1.0),
    "iou_prediction": lambda s, t: iou_prediction_sum(s, t),
    "attention_kl": lambda s, t: attention_kl(torch.softmax(s[0, 0], -1),
                                              torch.softmax(t[0, 0], -1),
                                              torch.ones(4, 4, dtype=torch.bool)),
    "rkd_distance": lambda s, t: rkd_distance(region_vectors(s, 2), region_vectors(t, 2)),
    "rkd_angle": lambda s, t: rkd_angle(region_vectors(s, 2), region_vectors(t, 2)),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_gradient_reaches_student_only(name):
    student = random(1, 4, 4, 4, seed=12).requires_grad_(True)
    teacher = random(1, 4, 4, 4, seed=13).requires_grad_(True)
    loss = LOSSES[name](student, teacher)
    loss.backward()

    assert float(loss.detach()) > 0
    assert student.grad is not None
    assert float(student.grad.abs().sum()) > 0
    assert teacher.grad is None


# Attention maps: recomputation, pooling, mapping.

def test_tinyvit_attention_recomputation_matches_module():
    torch.manual_seed(0)
    attention = TinyVitAttention(16, 8, num_heads=2, attn_ratio=1, resolution=(3, 3))
    with torch.no_grad():
        attention.attention_biases.normal_()
    attention.train()
    tokens = torch.randn(4, 9, 16)
    probabilities = tinyvit_attention(attention, tokens)

    projected = attention.qkv(attention.norm(tokens)).view(4, 9, 2, -1)
    values = projected[..., 16:].transpose(1, 2)
    rebuilt = attention.proj((probabilities @ values).transpose(1, 2).reshape(4, 9, -1))
    torch.testing.assert_close(rebuilt, attention(tokens))


def test_vit_attention_recomputation_matches_module():
    torch.manual_seed(0)
    attention = VitAttention(32, num_heads=2, use_rel_pos=True, input_size=(6, 6))
    with torch.no_grad():
        attention.rel_pos_h.normal_()
        attention.rel_pos_w.normal_()
    tokens = torch.randn(1, 6, 6, 32)
    heads = list(vit_attention_heads(attention, tokens))

    values = attention.qkv(tokens).reshape(1, 36, 3, 2, -1)[:, :, 2]
    outputs = [heads[h] @ values[:, :, h] for h in range(2)]
    rebuilt = attention.proj(torch.stack(outputs, 2).reshape(1, 6, 6, -1))
    torch.testing.assert_close(rebuilt, attention(tokens))


def dense_pooled_attention(window_probabilities, height, width, window, grid):
    """Place every window's attention in a full (HW, HW) matrix, then pool it by region."""
    across = math.ceil(width / window)
    dense = np.zeros((height * width, height * width))
    for index, probabilities in enumerate(window_probabilities):
        top, left = (index // across) * window, (index % across) * window
        slots = [(top + i, left + j) for i in range(window) for j in range(window)]
        for a, (qy, qx) in enumerate(slots):
            for b, (ky, kx) in enumerate(slots):
                if qy < height and qx < width and ky < height and kx < width:
                    dense[qy * width + qx, ky * width + kx] += probabilities[a, b]
    region_of = [(y // (height // grid)) * grid + x // (width // grid)
                 for y in range(height) for x in range(width)]
    pooled = np.zeros((grid * grid, grid * grid))
    for q in range(height * width):
        for k in range(height * width):
            pooled[region_of[q], region_of[k]] += dense[q, k]
    return pooled


def test_window_pooling_matches_dense_reference():
    height = width = 8
    window, grid = 3, 4  # 3x3 windows over padding to 9x9, regions of 2x2 tokens
    probabilities = torch.softmax(random(9, 9, 9, seed=14), -1)
    site = AttentionSite(module=None, kind="tinyvit", height=height, width=width, window=window)

    sums = pool_attention_sums(probabilities, site, grid)
    expected = dense_pooled_attention(probabilities.numpy(), height, width, window, grid)
    np.testing.assert_allclose(sums.numpy(), expected, rtol=1e-5, atol=1e-6)

    reachable = dense_pooled_attention(np.ones((9, 9, 9)), height, width, window, grid) > 0
    assert np.array_equal(window_support(site, grid).numpy(), reachable)
    assert not reachable.all()


def test_global_pooling_matches_dense_reference():
    probabilities = torch.softmax(random(1, 16, 16, seed=15), -1)
    site = AttentionSite(module=None, kind="vit", height=4, width=4, window=0)

    sums = pool_attention_sums(probabilities, site, 2)
    expected = dense_pooled_attention(probabilities.numpy(), 4, 4, 4, 2)
    np.testing.assert_allclose(sums.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert window_support(site, 2).all()


def test_pooled_attention_gradient_reaches_attention_parameters():
    torch.manual_seed(0)
    attention = TinyVitAttention(16, 8, num_heads=2, attn_ratio=1, resolution=(3, 3))
    attention.train()
    site = AttentionSite(module=attention, kind="tinyvit", height=6, width=6, window=3)
    teacher_map = torch.softmax(random(9, 9, seed=16), -1)

    with capture_pooled_attention([site], grid_size=3) as maps:
        attention(torch.randn(4, 9, 16))
    loss = attention_kl(maps[0], teacher_map, window_support(site, 3))
    loss.backward()

    assert torch.allclose(maps[0].sum(-1), torch.ones(9))
    assert float(loss.detach()) > 0
    assert float(attention.qkv.weight.grad.abs().sum()) > 0
    assert float(attention.attention_biases.grad.abs().sum()) > 0


def test_block_mapping_for_every_teacher_type():
    torch.manual_seed(0)
    student = sam_model_registry["vit_t"]().image_encoder
    assert block_mapping(student, student) == [(i, i) for i in range(10)]
    expected_teacher_blocks = {"vit_b": [2, 5, 8, 11], "vit_l": [5, 11, 17, 23],
                               "vit_h": [7, 15, 23, 31]}
    for model_type, blocks in expected_teacher_blocks.items():
        with torch.device("meta"):
            teacher = sam_model_registry[model_type]().image_encoder
        assert teacher_blocks(teacher) == blocks, model_type
        assert block_mapping(student, teacher) == list(zip((1, 4, 7, 9), blocks)), model_type


def test_attention_needs_tinyvit_student():
    with torch.device("meta"):
        teacher = sam_model_registry["vit_b"]().image_encoder
    with pytest.raises(AttentionMappingError, match="PatchEncoder"):
        block_mapping(build_small_sam().image_encoder, teacher)


# The training step with a distiller.

@pytest.fixture
def record(synthetic_root):
    return load_split(synthetic_root / "train")[0]


def small_distiller(tmp_path, teacher_sam, **sections):
    settings = distillation_settings(cache_dtype="float32", **sections)
    teacher = frozen_teacher(teacher_sam)
    return Distiller(settings, [teacher], TeacherCache(tmp_path / "cache", "float32"),
                     student=build_small_sam(), device=torch.device("cpu"))


ALL_BUT_ATTENTION = {"encoder": {"kl_weight": 1.0, "temperature": 2.0},
                     "decoder": {"enable": True, "temperature": 2.0},
                     "rkd": {"enable": True}}


@pytest.mark.parametrize("schedule", ["two_pass", "matched_redecode"])
def test_chunked_step_with_distillation_equals_single_pass(small_sam, record, tmp_path,
                                                          schedule):
    distiller = small_distiller(tmp_path, build_small_sam(seed=5), **ALL_BUT_ATTENTION)
    points = record.prompt_points(3)  # 9 prompts
    whole, chunked = copy.deepcopy(small_sam), copy.deepcopy(small_sam)
    result_whole = train_image(whole, record, points, step_settings(9), 1.0,
                               distiller=distiller, lambda_coef=0.7)
    result_chunked = train_image(chunked, record, points, step_settings(2, schedule=schedule), 1.0,
                                 distiller=distiller, lambda_coef=0.7)

    for name in ("distill_encoder", "distill_decoder", "distill_rkd"):
        assert result_whole.terms[name] > 0, name
    assert result_chunked.terms.keys() == result_whole.terms.keys()
    for name, value in result_whole.terms.items():
        assert result_chunked.terms[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert result_chunked.total == pytest.approx(result_whole.total, rel=1e-5)
    for (name, expected), actual in zip(whole.named_parameters(), chunked.parameters()):
        if expected.grad is None:
            assert actual.grad is None, name
            continue
        # Chunks sum in another order; where a gradient nearly cancels that shows in single
        # elements, so the whole tensor is compared.
        error = float((actual.grad - expected.grad).norm())
        assert error <= 1e-3 * float(expected.grad.norm()) + 1e-7, name


def test_distillation_vanishes_when_teacher_is_student(small_sam, record, tmp_path):
    distiller = small_distiller(tmp_path, copy.deepcopy(small_sam), **ALL_BUT_ATTENTION)
    points = record.prompt_points(2)
    with_teacher = train_image(copy.deepcopy(small_sam), record, points, step_settings(2), 1.0,
                               distiller=distiller, lambda_coef=1.0)
    plain = train_image(copy.deepcopy(small_sam), record, points, step_settings(2), 1.0)

    for name in ("distill_encoder", "distill_decoder", "distill_rkd"):
        assert with_teacher.terms[name] == pytest.approx(0.0, abs=1e-6), name
    assert with_teacher.total == pytest.approx(plain.total, rel=1e-5)


def test_lambda_scales_the_distillation_terms(small_sam, record, tmp_path):
    sections = {"encoder": {"weight": 2.0}, "rkd": {"enable": True, "weight": 0.5}}
    distiller = small_distiller(tmp_path, build_small_sam(seed=5), **sections)
    points = record.prompt_points(2)
    results = {lam: train_image(copy.deepcopy(small_sam), record, points, step_settings(4), 1.0,
                                distiller=distiller, lambda_coef=lam)
               for lam in (0.0, 3.0)}

    task = sum(WEIGHTS[name] * results[0.0].terms[name] for name in WEIGHTS)
    assert results[0.0].total == pytest.approx(task, rel=1e-6)
    terms = results[3.0].terms
    expected = task + 3.0 * (2.0 * terms["distill_encoder"] + 0.5 * terms["distill_rkd"])
    assert results[3.0].total == pytest.approx(expected, rel=1e-6)


def test_step_leaves_teacher_without_gradients(small_sam, record, tmp_path):
    distiller = small_distiller(tmp_path, build_small_sam(seed=5), **ALL_BUT_ATTENTION)
    train_image(small_sam, record, record.prompt_points(3), step_settings(4), 1.0,
                distiller=distiller, lambda_coef=1.0)

    teacher = distiller.teachers[0].sam
    assert not teacher.training
    for name, parameter in teacher.named_parameters():
        assert not parameter.requires_grad, name
        assert parameter.grad is None, name
    assert small_sam.image_encoder.project.weight.grad is not None
    assert small_sam.mask_decoder.iou_token.weight.grad is not None


def test_vit_b_teacher_trains_student(record, tmp_path):
    """The real pair: every term, with the attention mapping of TinyViT onto ViT-B."""
    device = torch.device("cpu")
    teacher = load_teacher(TeacherConfig(name="sam_b", type="vit_b", allow_random_weights=True),
                           1.0, device)
    torch.manual_seed(0)
    student = sam_model_registry["vit_t"]()
    student.train()
    settings = distillation_settings(
        cache_dtype="float32", encoder={"kl_weight": 1.0}, decoder={"enable": True},
        attention={"enable": True}, rkd={"enable": True})
    distiller = Distiller(settings, [teacher], TeacherCache(tmp_path / "cache", "float32"),
                          student, device)
    before = {name: p.detach().clone() for name, p in student.named_parameters()}
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-3)

    result = train_image(student, record, record.prompt_points(2), step_settings(2), 1.0,
                         distiller=distiller, lambda_coef=1.0)
    optimizer.step()

    assert distiller.attention_pairs["sam_b"] == [(1, 2), (4, 5), (7, 8), (9, 11)]
    for name in ("distill_encoder", "distill_decoder", "distill_attention", "distill_rkd"):
        assert math.isfinite(result.terms[name]), name
        assert result.terms[name] > 0, name
    assert student.image_encoder.layers[1].blocks[1].attn.qkv.weight.grad is not None
    changed = [name for name, p in student.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("image_encoder.") for name in changed)
    assert any(name.startswith("mask_decoder.") for name in changed)
    assert all(p.grad is None and not p.requires_grad for p in teacher.sam.parameters())


# The training run.

def test_run_logs_distillation_terms_and_costs(synthetic_root, tmp_path, caplog):
    from trainable.run import TrainingRun

    config = load_config({
        "dataset": {"train_dir": str(synthetic_root / "train"),
                    "val_dir": str(synthetic_root / "val"), "grid_points": 2},
        "model": {"save_dir": str(tmp_path / "out"), "decoder_chunk_size": 3},
        "train": {"epochs": 1, "lr": 1e-3, "match_iou_threshold": 0.05},
        "visual": {"enable": False},
        "distillation": {"enable": True, "lambda_coef": 0.5, **ALL_BUT_ATTENTION,
                         "cache_dir": str(tmp_path / "cache")},
        "teachers": [{"name": "mobile_sam", "type": "vit_t", "allow_random_weights": True}],
    })
    with caplog.at_level(logging.INFO):
        run = TrainingRun(config, sam=build_small_sam(seed=1))
        run.run()

    lines = TrainingLog(tmp_path / "out").read()
    assert [line["epoch"] for line in lines] == [0, 1]
    for name in ("distill_encoder", "distill_decoder", "distill_rkd"):
        assert lines[1][name] > 0, name
    assert "distill_attention" not in lines[1]
    assert lines[1]["lambda"] == 0.5
    messages = [record.getMessage() for record in caplog.records]
    assert any("random weights" in m for m in messages if "mobile_sam" in m)
    assert any(m.startswith("teacher cache ") and "MB on disk" in m for m in messages)
    assert any(m.startswith("per training step:") and "mask decoder" in m for m in messages)
    assert not run.distiller.teachers[0].has_image_encoder


# Config and teachers.

def config_with(**distillation):
    return {"dataset": {"train_dir": "/d/train", "val_dir": "/d/val"},
            "distillation": {"enable": True, **distillation},
            "teachers": [{"name": "t", "type": "vit_b", "allow_random_weights": True}]}


def test_distillation_defaults():
    settings = load_config(config_with()).distillation
    assert settings.encoder.enable
    assert settings.encoder.mse_weight == 1.0
    assert settings.encoder.kl_weight == 0.0
    assert not settings.decoder.enable
    assert not settings.attention.enable
    assert settings.attention.grid_size == 16
    assert not settings.rkd.enable
    assert settings.rkd.angle_weight == 2.0
    assert settings.cache_dtype == "float16"


@pytest.mark.parametrize("distillation, message", [
    ({"encoder": {"mse": 1.0}}, r"unknown key 'distillation\.encoder\.mse' \(did you mean"),
    ({"encoder": {"temperature": 0}}, r"distillation\.encoder\.temperature=0\.0 is invalid"),
    ({"encoder": {"mse_weight": 0, "kl_weight": 0}}, r"at least one of these weights"),
    ({"decoder": {"weight": -1}}, r"distillation\.decoder\.weight=-1\.0 is invalid: must be >= 0"),
    ({"attention": {"grid_size": 12}}, r"distillation\.attention\.grid_size=12 is invalid"),
    ({"rkd": {"grid_size": 32}}, r"distillation\.rkd\.grid_size=32 is invalid"),
    ({"encoder": {"enable": False}}, r"needs at least one of encoder, decoder, attention, rkd"),
    ({"cache_dtype": "bfloat16"}, r"distillation\.cache_dtype='bfloat16' is invalid"),
])
def test_distillation_config_errors(distillation, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config_with(**distillation))


def test_teacher_weights_all_or_none():
    raw = config_with()
    raw["teachers"] = [{"name": "a", "type": "vit_b", "weight": 0.7, "allow_random_weights": True},
                       {"name": "b", "type": "vit_l", "allow_random_weights": True}]
    with pytest.raises(ConfigError, match=r"teachers=\['a'\] is invalid: only these teachers"):
        load_config(raw)


def test_missing_teacher_checkpoint_names_teacher_and_path(tmp_path):
    path = tmp_path / "sam_vit_b.pth"
    with pytest.raises(CheckpointError, match=f"teacher 'sam_b'.*{re.escape(str(path))}"):
        load_teacher(TeacherConfig(name="sam_b", type="vit_b", checkpoint_path=str(path)), 1.0,
                     torch.device("cpu"))


def test_unreadable_teacher_checkpoint_names_teacher_and_path(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"teacher 'sam_t'.*{re.escape(str(path))}"):
        load_teacher(TeacherConfig(name="sam_t", type="vit_t", checkpoint_path=str(path)), 1.0,
                     torch.device("cpu"))


def test_random_teachers_are_frozen_reproducible_and_logged(caplog):
    configs = [TeacherConfig(name=name, type="vit_t", allow_random_weights=True)
               for name in ("first", "second")]
    with caplog.at_level(logging.WARNING):
        teachers = load_teachers(configs, torch.device("cpu"))
        again = load_teacher(configs[0], 1.0, torch.device("cpu"))

    assert [t.weight for t in teachers] == [0.5, 0.5]
    assert again.weights_sha256 == teachers[0].weights_sha256
    assert teachers[1].weights_sha256 != teachers[0].weights_sha256
    for teacher in teachers:
        assert not teacher.sam.training
        assert not any(p.requires_grad for p in teacher.sam.parameters())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("random weights" in message for message in warned) == 3


def test_teacher_from_checkpoint_is_hashed_by_file(tmp_path):
    from trainable.model import save_official_weights
    from trainable.teachers import file_sha256

    torch.manual_seed(1)
    model = sam_model_registry["vit_t"]()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("attention_biases"):
                parameter.normal_()
    path = tmp_path / "mobile_sam.pt"
    save_official_weights(model, path)
    teacher = load_teacher(TeacherConfig(name="t", type="vit_t", checkpoint_path=str(path)), 1.0,
                           torch.device("cpu"))
    assert teacher.weights_sha256 == file_sha256(path)
    assert teacher.source == str(path)
    # The TinyViT attention biases used in eval mode follow the loaded weights.
    block = teacher.sam.image_encoder.layers[1].blocks[0].attn
    assert float(block.attention_biases.abs().sum()) > 0
    assert torch.equal(block.ab, block.attention_biases[:, block.attention_bias_idxs])

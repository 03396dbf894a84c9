"""A train step decoded in chunks gives the losses and gradients of the plain computation, in
both chunked schedules."""

import copy

import pytest
import torch
import torch.nn.functional as F

from trainable.data import load_split
from trainable.prediction import decode_prompts, encode_image
from trainable.step import StepSettings, train_image

WEIGHTS = {"bce": 1.0, "focal": 20.0, "dice": 1.0, "iou": 1.0, "cls": 1.0}


SCHEDULES = ["two_pass", "matched_redecode"]


def settings(chunk_size, threshold=0.0, schedule="auto"):
    # Threshold 0 makes every Hungarian pair foreground, so every loss term carries gradient.
    return StepSettings(loss_weights=WEIGHTS, match_iou_threshold=threshold, focal_alpha=0.25,
                        focal_gamma=2.0, chunk_size=chunk_size, schedule=schedule)


def gradients(sam):
    return {name: p.grad.clone() for name, p in sam.named_parameters() if p.grad is not None}


def assert_gradients_close(actual, expected, schedule):
    for name, grad in expected.items():
        atol = 1e-7
        if schedule == "matched_redecode":
            # A foreground candidate's classification gradient arrives in two parts of opposite
            # sign, 1/(1-p) from the first pass and -1/p - 1/(1-p) from the re-decode, so its
            # rounding error scales with the tensor's largest gradient, not with each element.
            atol += 1e-6 * float(grad.abs().max())
        torch.testing.assert_close(actual[name], grad, rtol=1e-4, atol=atol,
                                   msg=f"gradient of {name}")


def straightforward_loss(sam, record, points, threshold):
    """The guide's step written plainly: one decoder batch, IoU by broadcasting, pair loops."""
    from scipy.optimize import linear_sum_assignment

    embedding = encode_image(sam, record.image)
    logits, predicted_iou = decode_prompts(sam, embedding, points)
    logits = logits.flatten(0, 1)
    predicted_iou = predicted_iou.flatten()
    gt = record.gt_low_res.float()
    binary = (logits.detach() > 0).float()
    inter = (binary[:, None] * gt[None]).sum((2, 3))
    union = ((binary[:, None] + gt[None]) > 0).float().sum((2, 3))
    ious = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))
    rows, cols = linear_sum_assignment(ious.numpy(), maximize=True)

    pairs = [(r, c) for r, c in zip(rows, cols) if ious[r, c] >= threshold]
    mask_terms = {"bce": 0.0, "focal": 0.0, "dice": 0.0, "iou": 0.0}
    for r, c in pairs:
        x, t = logits[r], gt[c]
        p = torch.sigmoid(x)
        mask_terms["bce"] = mask_terms["bce"] + F.binary_cross_entropy_with_logits(x, t)
        p_t = p * t + (1 - p) * (1 - t)
        alpha_t = 0.25 * t + 0.75 * (1 - t)
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        mask_terms["focal"] = mask_terms["focal"] + (alpha_t * (1 - p_t) ** 2 * ce).mean()
        mask_terms["dice"] = mask_terms["dice"] + 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
        mask_terms["iou"] = mask_terms["iou"] + (predicted_iou[r] - ious[r, c]) ** 2
    count = max(len(pairs), 1)
    terms = {k: v / count for k, v in mask_terms.items()}
    labels = torch.zeros_like(predicted_iou)
    for r, _ in pairs:
        labels[r] = 1.0
    terms["cls"] = F.binary_cross_entropy(predicted_iou.clamp(1e-6, 1 - 1e-6), labels)
    return sum(WEIGHTS[k] * terms[k] for k in WEIGHTS), terms


@pytest.fixture
def record(synthetic_root):
    return load_split(synthetic_root / "train")[0]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_chunked_gradients_equal_single_pass(small_sam, record, schedule):
    points = record.prompt_points(3)  # 9 prompts
    whole = copy.deepcopy(small_sam)
    chunked = copy.deepcopy(small_sam)
    result_whole = train_image(whole, record, points, settings(chunk_size=9), loss_scale=1.0)
    result_chunked = train_image(chunked, record, points,
                                 settings(chunk_size=2, schedule=schedule), loss_scale=1.0)

    assert result_whole.num_foreground > 0
    assert result_chunked.num_foreground == result_whole.num_foreground
    for name, value in result_whole.terms.items():
        assert result_chunked.terms[name] == pytest.approx(value, rel=1e-5, abs=1e-7)
    grads_whole, grads_chunked = gradients(whole), gradients(chunked)
    assert grads_whole.keys() == grads_chunked.keys()
    assert "image_encoder.project.weight" in grads_whole
    assert_gradients_close(grads_chunked, grads_whole, schedule)


@pytest.mark.parametrize("chunk_size, schedule",
                         [(9, "auto"), (4, "two_pass"), (4, "matched_redecode")])
def test_step_equals_straightforward_computation(small_sam, record, chunk_size, schedule):
    points = record.prompt_points(3)
    reference = copy.deepcopy(small_sam)
    total, terms = straightforward_loss(reference, record, points, threshold=0.3)
    total.backward()
    result = train_image(small_sam, record, points,
                         settings(chunk_size, threshold=0.3, schedule=schedule), loss_scale=1.0)

    assert result.total == pytest.approx(float(total), rel=1e-5)
    for name, value in terms.items():
        assert result.terms[name] == pytest.approx(float(value), rel=1e-5, abs=1e-7)
    assert_gradients_close(gradients(small_sam), gradients(reference), schedule)


def test_matched_redecode_repeats_foreground_prompts_only(small_sam, record):
    points = record.prompt_points(4)  # 16 prompts in chunks of 2
    stages = []
    result = train_image(small_sam, record, points,
                         settings(2, threshold=0.0, schedule="matched_redecode"), 1.0,
                         lap=stages.append)
    # Threshold 0: every ground-truth mask has a foreground pair, each in some prompt.
    assert result.num_foreground == record.num_objects
    assert stages.count("decoder_pass1") == 8
    assert 1 <= stages.count("decoder_pass2") <= -(-record.num_objects // 2)


@pytest.mark.parametrize("num_gt, num_prompts, expected", [
    (10, 16, "two_pass"), (10, 24, "two_pass"), (10, 25, "matched_redecode"),
    (10, 64, "matched_redecode"), (0, 16, "matched_redecode"),
])
def test_auto_schedule_follows_ground_truth_share(num_gt, num_prompts, expected):
    # Matched re-decode while the masks are at most 0.4 of the prompts: 10 <= 0.4 * 25.
    chosen = settings(8).uses_matched_redecode(num_prompts, num_gt)
    assert chosen == (expected == "matched_redecode")


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="invalid step schedule 'fast'"):
        settings(8, schedule="fast").uses_matched_redecode(16, 2)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_image_without_objects_gives_finite_loss(small_sam, synthetic_root, schedule):
    record = load_split(synthetic_root / "train")[0]
    record.gt_masks = record.gt_masks[:0]
    record.gt_low_res = record.gt_low_res[:0]
    result = train_image(small_sam, record, record.prompt_points(2),
                         settings(3, 0.5, schedule), 1.0)
    assert result.num_foreground == 0
    assert result.terms["bce"] == 0.0
    assert result.terms["dice"] == 0.0
    assert 0.0 < result.terms["cls"] < 100.0

"""Matching and every task loss against slow, obvious computations written here."""

import itertools
import math

import numpy as np
import pytest
import torch

from trainable.losses import (LossNormaliser, bce_sum, cls_sum, dice_sum, focal_sum, iou_sum,
                              weighted_total)
from trainable.matching import hungarian_match, iou_matrix


def slow_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = sum(1 for x, y in zip(a.ravel(), b.ravel()) if x and y)
    union = sum(1 for x, y in zip(a.ravel(), b.ravel()) if x or y)
    return inter / union if union else 0.0


def random_masks(count, size=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((count, size, size)) < 0.4


def test_iou_matrix_equals_pairwise_loop():
    candidates = random_masks(7, seed=1)
    gt = random_masks(3, seed=2)
    gt[2] = False  # an empty ground-truth mask: every union with an empty candidate is 0
    candidates[4] = False
    result = iou_matrix(torch.from_numpy(candidates), torch.from_numpy(gt)).numpy()
    for i in range(7):
        for j in range(3):
            assert result[i, j] == pytest.approx(slow_iou(candidates[i], gt[j]), abs=1e-6)


def test_hungarian_matches_brute_force_over_assignments():
    rng = np.random.default_rng(5)
    ious = rng.random((5, 3))
    best_total, best_pairs = -1.0, None
    for rows in itertools.permutations(range(5), 3):
        total = sum(ious[r, c] for c, r in enumerate(rows))
        if total > best_total:
            best_total, best_pairs = total, {(r, c) for c, r in enumerate(rows)}
    matching = hungarian_match(torch.from_numpy(ious).float(), threshold=0.5)
    pairs = set(zip(matching.candidate_index.tolist(), matching.gt_index.tolist()))
    assert pairs == best_pairs
    for r, c, iou, fg in zip(matching.candidate_index, matching.gt_index, matching.iou,
                             matching.foreground):
        assert float(iou) == pytest.approx(ious[r, c], abs=1e-6)
        assert bool(fg) == (ious[r, c] >= 0.5)


def test_hungarian_threshold_is_inclusive():
    ious = torch.tensor([[0.5, 0.1], [0.2, 0.49]])
    matching = hungarian_match(ious, threshold=0.5)
    by_gt = dict(zip(matching.gt_index.tolist(), matching.foreground.tolist()))
    assert by_gt == {0: True, 1: False}


def test_hungarian_without_ground_truth_has_no_pairs():
    matching = hungarian_match(torch.zeros(6, 0), threshold=0.5)
    assert matching.candidate_index.numel() == 0
    assert matching.foreground.numel() == 0


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def pixel_pairs(logits, targets):
    for pair in range(logits.shape[0]):
        yield [(float(x), float(t)) for x, t in zip(logits[pair].ravel(), targets[pair].ravel())]


@pytest.fixture
def logits_targets():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 4, generator=generator) * 3
    targets = (torch.rand(3, 4, 4, generator=generator) < 0.5).float()
    return logits, targets


def test_bce_sum_equals_per_pixel_formula(logits_targets):
    logits, targets = logits_targets
    expected = 0.0
    for pixels in pixel_pairs(logits, targets):
        expected += sum(-(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)))
                        for x, t in pixels) / len(pixels)
    assert float(bce_sum(logits, targets)) == pytest.approx(expected, rel=1e-5)


def test_focal_sum_equals_per_pixel_formula(logits_targets):
    logits, targets = logits_targets
    alpha, gamma = 0.25, 2.0
    expected = 0.0
    for pixels in pixel_pairs(logits, targets):
        total = 0.0
        for x, t in pixels:
            p = sigmoid(x)
            p_t = p if t == 1 else 1 - p
            a_t = alpha if t == 1 else 1 - alpha
            total += -a_t * (1 - p_t) ** gamma * math.log(p_t)
        expected += total / len(pixels)
    assert float(focal_sum(logits, targets, alpha, gamma)) == pytest.approx(expected, rel=1e-5)


def test_dice_sum_equals_formula(logits_targets):
    logits, targets = logits_targets
    expected = 0.0
    for pixels in pixel_pairs(logits, targets):
        overlap = sum(sigmoid(x) * t for x, t in pixels)
        predicted = sum(sigmoid(x) for x, _ in pixels)
        truth = sum(t for _, t in pixels)
        expected += 1 - (2 * overlap + 1) / (predicted + truth + 1)
    assert float(dice_sum(logits, targets)) == pytest.approx(expected, rel=1e-5)


def test_iou_and_cls_sums_equal_formulas():
    predicted = torch.tensor([0.9, 0.2, 1.3, -0.1])
    actual = torch.tensor([0.8, 0.5, 1.0, 0.0])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert float(iou_sum(predicted, actual)) == pytest.approx(0.01 + 0.09 + 0.09 + 0.01, rel=1e-5)
    # Outputs beyond [0, 1] are clamped to 1e-6 from the ends before the log.
    expected = -(math.log(0.9) + math.log(0.8) + math.log(1 - 1e-6) + math.log(1 - 1e-6))
    assert float(cls_sum(predicted, labels)) == pytest.approx(expected, rel=1e-5)


def test_normaliser_divides_mask_terms_by_foreground_and_cls_by_candidates():
    sums = {"bce": torch.tensor(6.0), "focal": torch.tensor(3.0), "dice": torch.tensor(1.5),
            "iou": torch.tensor(0.3), "cls": torch.tensor(12.0)}
    terms = LossNormaliser(num_foreground=3, num_candidates=24)(sums)
    assert {k: round(float(v), 6) for k, v in terms.items()} == {
        "bce": 2.0, "focal": 1.0, "dice": 0.5, "iou": 0.1, "cls": 0.5}
    weights = {"bce": 1.0, "focal": 20.0, "dice": 1.0, "iou": 2.0, "cls": 0.5}
    assert float(weighted_total(terms, weights)) == pytest.approx(2 + 20 + 0.5 + 0.2 + 0.25)


def test_normaliser_without_foreground_gives_zero_not_nan():
    empty = torch.zeros(0, 4, 4)
    sums = {"bce": bce_sum(empty, empty), "focal": focal_sum(empty, empty, 0.25, 2.0),
            "dice": dice_sum(empty, empty), "iou": iou_sum(torch.zeros(0), torch.zeros(0)),
            "cls": cls_sum(torch.tensor([0.3, 0.1]), torch.zeros(2))}
    terms = LossNormaliser(num_foreground=0, num_candidates=2)(sums)
    for name in ("bce", "focal", "dice", "iou"):
        assert float(terms[name]) == 0.0
    assert float(terms["cls"]) == pytest.approx(-(math.log(0.7) + math.log(0.9)) / 2, rel=1e-5)

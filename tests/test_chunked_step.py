"""A train step decoded in chunks gives the losses and gradients of the plain computation, in
both chunked schedules. The plain computation is ``benchmarks.straightforward``: one decoder
batch, the IoU matrix by broadcasting, the losses pair by pair."""

import copy

import pytest

from benchmarks.straightforward import straightforward_step
from trainable.data import load_split
from trainable.step import train_image

from step_helpers import SCHEDULES, assert_gradients_close, gradients, step_settings

@pytest.fixture
def record(synthetic_root):
    return load_split(synthetic_root / "train")[0]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_chunked_gradients_equal_single_pass(small_sam, record, schedule):
    points = record.prompt_points(3)  # 9 prompts
    whole = copy.deepcopy(small_sam)
    chunked = copy.deepcopy(small_sam)
    result_whole = train_image(whole, record, points, step_settings(9), loss_scale=1.0)
    result_chunked = train_image(chunked, record, points, step_settings(2, schedule=schedule),
                                 loss_scale=1.0)

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
    terms, total = straightforward_step(reference, record, points, step_settings(1, 0.3))
    result = train_image(small_sam, record, points, step_settings(chunk_size, 0.3, schedule),
                         loss_scale=1.0)

    assert result.total == pytest.approx(total, rel=1e-5)
    for name, value in terms.items():
        assert result.terms[name] == pytest.approx(value, rel=1e-5, abs=1e-7)
    assert_gradients_close(gradients(small_sam), gradients(reference), schedule)


def test_matched_redecode_repeats_foreground_prompts_only(small_sam, record):
    points = record.prompt_points(4)  # 16 prompts in chunks of 2
    stages = []
    result = train_image(small_sam, record, points,
                         step_settings(2, schedule="matched_redecode"), 1.0,
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
    chosen = step_settings(8).uses_matched_redecode(num_prompts, num_gt)
    assert chosen == (expected == "matched_redecode")


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="invalid step schedule 'fast'"):
        step_settings(8, schedule="fast").uses_matched_redecode(16, 2)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_image_without_objects_gives_finite_loss(small_sam, synthetic_root, schedule):
    record = load_split(synthetic_root / "train")[0]
    record.gt_masks = record.gt_masks[:0]
    record.gt_low_res = record.gt_low_res[:0]
    result = train_image(small_sam, record, record.prompt_points(2),
                         step_settings(3, 0.5, schedule), 1.0)
    assert result.num_foreground == 0
    assert result.terms["bce"] == 0.0
    assert result.terms["dice"] == 0.0
    assert 0.0 < result.terms["cls"] < 100.0

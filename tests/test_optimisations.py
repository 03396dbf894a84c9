"""Each shortcut of the training and validation code gives what the plain computation gives.

Chunked decoding has its own tests in ``test_chunked_step.py``. Here: validation that matches
at 256x256 and upsamples only the matched masks, the prompt subset, decoded splits shared
between trials, the stage-timing hook of the step, and the straightforward step that
``benchmarks/step.py`` compares against.
"""

import importlib
import pickle

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from benchmarks.step import prompt_subset, with_gt_masks
from benchmarks.straightforward import straightforward_step
from trainable.config import load_config
from trainable.data import load_split
from trainable.evaluation import evaluate_image
from trainable.run import TrainingRun
from trainable.step import train_image
from trainable.training_log import TrainingLog

from conftest import build_small_sam
from step_helpers import assert_gradients_close, gradients, step_settings

class ShiftedMaskDecoder:
    """Replaces ``decode_prompts``: prompt ``p`` of the grid gets the low-resolution mask
    of object ``p % G`` shifted right by ``p // G`` pixels, an empty mask and a full one.

    Each object's best candidate is then its unshifted mask at 256x256 and at the original
    size alike, so matching at either resolution must pick the same pairs.
    """

    def __init__(self, record, grid_points):
        self.gt = record.gt_low_res
        self.index = {tuple(point.tolist()): i for i, point in enumerate(grid_points)}

    def __call__(self, sam, embedding, points):
        num_objects = self.gt.shape[0]
        logits = []
        for point in points:
            prompt = self.index[tuple(point.tolist())]
            shifted = torch.roll(self.gt[prompt % num_objects], prompt // num_objects, dims=1)
            candidates = torch.stack([shifted, torch.zeros_like(shifted),
                                      torch.ones_like(shifted)])
            logits.append(torch.where(candidates, 8.0, -8.0))
        return torch.stack(logits), torch.full((points.shape[0], 3), 0.5)


def full_resolution_evaluation(sam, record, points, decode):
    """Validation done the long way: every candidate upsampled to the original size, the IoU
    matrix and the Hungarian pairs computed there."""
    logits, _ = decode(sam, None, points)
    masks = sam.postprocess_masks(logits, record.input_size, record.original_size)
    candidates = (masks > 0).flatten(0, 1).flatten(1).double()
    gt = record.gt_masks.flatten(1).double()
    intersection = candidates @ gt.T
    union = candidates.sum(1)[:, None] + gt.sum(1)[None, :] - intersection
    ious = torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
    rows, cols = linear_sum_assignment(ious.numpy(), maximize=True)
    dice = np.zeros(record.num_objects)
    iou = np.zeros(record.num_objects)
    for row, col in zip(rows, cols):
        dice[col] = float(2 * intersection[row, col] / (candidates[row].sum() + gt[col].sum()))
        iou[col] = float(ious[row, col])
    return dice, iou


def test_low_res_validation_equals_full_resolution(synthetic_root, monkeypatch):
    import trainable.evaluation
    import trainable.prediction

    sam = build_small_sam(seed=2)
    sam.eval()
    record = load_split(synthetic_root / "val")[0]
    points = record.prompt_points(4)
    decode = ShiftedMaskDecoder(record, points)
    monkeypatch.setattr(trainable.evaluation, "decode_prompts", decode)
    monkeypatch.setattr(trainable.prediction, "decode_prompts", decode)

    evaluation = evaluate_image(sam, record, points, chunk_size=5)
    dice, iou = full_resolution_evaluation(sam, record, points, decode)

    assert record.num_objects >= 2
    assert evaluation.matched_masks.shape == (record.num_objects, *record.original_size)
    assert dice.min() > 0.8  # the unshifted masks were matched
    np.testing.assert_allclose(evaluation.dice, dice, rtol=1e-12)
    np.testing.assert_allclose(evaluation.iou, iou, rtol=1e-12)


@pytest.fixture
def train_record(synthetic_root):
    return load_split(synthetic_root / "train")[0]


def small_config(root, out, grid_points=2, **train):
    return load_config({
        "dataset": {"train_dir": str(root / "train"), "val_dir": str(root / "val"),
                    "grid_points": grid_points},
        "model": {"save_dir": str(out), "decoder_chunk_size": 8},
        "train": {"epochs": 1, "lr": 1e-3, "warmup_epochs": 0.0, "early_stop_patience": 0,
                  "match_iou_threshold": 0.05, **train},
        "visual": {"enable": False},
    })


def small_run(root, out, grid_points=2, **train):
    return TrainingRun(small_config(root, out, grid_points, **train), sam=build_small_sam(seed=1))


def log_without_seconds(folder):
    return [{k: v for k, v in line.items() if k != "seconds"}
            for line in TrainingLog(folder).read()]


def test_prompt_subset_validates_full_grid(synthetic_root, tmp_path, monkeypatch):
    import trainable.run as run_module

    trained, validated = [], []
    real_train, real_evaluate = run_module.train_image, run_module.evaluate_image

    def spy_train(sam, record, points, *args, **kwargs):
        trained.append(points.clone())
        return real_train(sam, record, points, *args, **kwargs)

    def spy_evaluate(sam, record, points, *args, **kwargs):
        validated.append(points.shape[0])
        return real_evaluate(sam, record, points, *args, **kwargs)

    monkeypatch.setattr(run_module, "train_image", spy_train)
    monkeypatch.setattr(run_module, "evaluate_image", spy_evaluate)
    run = small_run(synthetic_root, tmp_path / "out", grid_points=4, prompt_subset=0.25)
    run.run_epoch(1)

    grid = run.train_records[0].prompt_points(4)
    assert [points.shape[0] for points in trained] == [4, 4]  # a quarter of 16, per image
    for points in trained:
        # Every chosen prompt is a grid prompt, each at most once, in grid order.
        index = [int(torch.nonzero((grid == point).all(1))[0]) for point in points]
        assert index == sorted(set(index))
    assert validated == [16]  # the one validation image, on the whole grid


def test_prompt_subset_is_reproducible(synthetic_root, tmp_path):
    runs = [small_run(synthetic_root, tmp_path / name, grid_points=3, prompt_subset=0.5, **seed)
            for name, seed in (("a", {}), ("b", {}), ("c", {"seed": 5}))]
    first, second, other_seed = (run.train_epoch(1) for run in runs)

    assert first == second
    assert first != other_seed


def test_shared_records_equal_records_decoded_in_trial(synthetic_root, tmp_path):
    # A trial receives the driver's decoded splits through Ray's object store, which pickles
    # them, so a pickle round trip plays that part here.
    shared = pickle.loads(pickle.dumps((load_split(synthetic_root / "train"),
                                        load_split(synthetic_root / "val"))))
    with_shared = TrainingRun(small_config(synthetic_root, tmp_path / "shared"), *shared,
                              sam=build_small_sam(seed=1))
    with_shared.run()
    decoded = small_run(synthetic_root, tmp_path / "decoded")
    decoded.run()

    assert log_without_seconds(tmp_path / "shared") == log_without_seconds(tmp_path / "decoded")


@pytest.mark.parametrize("chunk_size, schedule",
                         [(4, "auto"), (2, "two_pass"), (2, "matched_redecode")])
def test_stage_timing_hook_changes_nothing(train_record, chunk_size, schedule):
    points = train_record.prompt_points(2)
    settings = step_settings(chunk_size, schedule=schedule)
    plain, timed = build_small_sam(), build_small_sam()
    stages = []
    expected = train_image(plain, train_record, points, settings, 1.0)
    actual = train_image(timed, train_record, points, settings, 1.0, lap=stages.append)

    assert actual.terms == expected.terms
    for name, grad in gradients(plain).items():
        assert torch.equal(gradients(timed)[name], grad), name
    assert stages[0] == "encoder_forward"
    assert stages[-1] == "encoder_backward"
    chunk_stages = ["losses", "decoder_backward"]
    if chunk_size == 4:  # one chunk: a single decoder pass
        assert stages[1:] == ["decoder_pass1", "matching", *chunk_stages, "encoder_backward"]
    elif schedule == "two_pass":  # two chunks of 2 prompts, decoded twice
        assert stages[1:3] == ["decoder_pass1", "matching"]
        assert stages[3:-1] == ["decoder_pass2", *chunk_stages] * 2
    else:  # two chunks with gradients, then the chunks of the foreground prompts
        assert stages[1:8] == ["decoder_pass1", *chunk_stages] * 2 + ["matching"]
        redecoded_chunks = len(stages[8:-1]) // 3
        assert 1 <= redecoded_chunks <= 2
        assert stages[8:-1] == ["decoder_pass2", *chunk_stages] * redecoded_chunks


@pytest.mark.parametrize("chunk_size", [3, 2])
def test_benchmark_reference_step_equals_train_image(train_record, chunk_size):
    record = with_gt_masks(train_record, train_record.num_objects + 2)
    points = prompt_subset(record.prompt_points(2), 0.75, seed=0)
    reference, chunked = build_small_sam(), build_small_sam()
    terms, total = straightforward_step(reference, record, points, step_settings(3))
    result = train_image(chunked, record, points, step_settings(chunk_size), 1.0)

    assert points.shape[0] == 3
    assert result.num_foreground == record.num_objects
    assert result.total == pytest.approx(total, rel=1e-5)
    for name, value in terms.items():
        assert result.terms[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert_gradients_close(gradients(chunked), gradients(reference))


def test_extra_ground_truth_masks_are_mirrored(train_record):
    own = train_record.num_objects
    padded = with_gt_masks(train_record, own + 1)

    assert padded.num_objects == own + 1
    assert torch.equal(padded.gt_masks[:own], train_record.gt_masks)
    assert torch.equal(padded.gt_masks[own], train_record.gt_masks[0].flip(-1))
    assert padded.gt_low_res.shape == (own + 1, 256, 256)
    assert with_gt_masks(train_record, 0) is train_record


@pytest.mark.parametrize("module", ["benchmarks.step", "benchmarks.search"])
def test_benchmark_help_prints(module, capsys):
    parse_args = importlib.import_module(module).parse_args
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "--json" in capsys.readouterr().out

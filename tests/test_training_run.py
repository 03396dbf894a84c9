"""The training loop: epoch-0 validation, log lines, best weights, freezing, exact resume."""

import copy
import math

import pytest
import torch

from trainable.config import load_config
from trainable.data import load_split
from trainable.model import frozen_parts
from trainable.run import TrainingRun
from trainable.schedules import learning_rate
from trainable.training_log import TrainingLog

from conftest import build_small_sam


def small_config(root, out, **train):
    return load_config({
        "dataset": {"train_dir": str(root / "train"), "val_dir": str(root / "val"),
                    "grid_points": 2},
        "model": {"save_dir": str(out), "decoder_chunk_size": 3},
        "train": {"epochs": 3, "lr": 1e-3, "warmup_epochs": 1.0, "early_stop_patience": 0,
                  "match_iou_threshold": 0.05, **train},
        "visual": {"save_every_n_epochs": 1, "max_images": 1},
    })


def make_run(root, out, **train):
    config = small_config(root, out, **train)
    return TrainingRun(config, load_split(root / "train"), load_split(root / "val"),
                       sam=build_small_sam(seed=1))


def test_run_writes_epoch_lines_weights_and_visualisations(synthetic_root, tmp_path):
    run = make_run(synthetic_root, tmp_path / "out", epochs=2)
    seen = []
    run.run([lambda result, _: seen.append(result.epoch)])

    assert seen == [0, 1, 2]
    lines = TrainingLog(tmp_path / "out").read()
    assert [line["epoch"] for line in lines] == [0, 1, 2]
    assert "loss" not in lines[0]
    for line in lines[1:]:
        for key in ("bce", "focal", "dice", "iou", "cls", "lr", "lambda", "val_dice",
                    "val_iou", "val_score", "seconds"):
            assert key in line, key
    for line in lines:
        assert 0.0 <= line["val_dice"] <= 1.0
        assert 0.0 <= line["val_iou"] <= 1.0
        assert line["val_score"] == pytest.approx((line["val_dice"] + line["val_iou"]) / 2,
                                                  abs=1e-5)
    assert (tmp_path / "out" / "best.pt").is_file()
    assert sorted(p.name for p in (tmp_path / "out" / "visual").iterdir()) == [
        "epoch_0", "epoch_1", "epoch_2"]


def test_resume_after_epoch_one_equals_uninterrupted_run(synthetic_root, tmp_path):
    uninterrupted = make_run(synthetic_root, tmp_path / "a")
    uninterrupted.run()
    expected = TrainingLog(tmp_path / "a").read()

    first = make_run(synthetic_root, tmp_path / "b")
    first.run_epoch(0)
    first.run_epoch(1)
    state = copy.deepcopy(first.state_dict())
    del first

    resumed = make_run(synthetic_root, tmp_path / "b")
    resumed.load_state_dict(state)
    resumed.run()
    actual = TrainingLog(tmp_path / "b").read()

    assert [line["epoch"] for line in actual] == [0, 1, 2, 3]
    for before, after in zip(expected, actual):
        for key, value in before.items():
            if key != "seconds":
                assert after[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (before["epoch"], key)


def test_resume_drops_log_lines_after_the_checkpoint(synthetic_root, tmp_path):
    run = make_run(synthetic_root, tmp_path / "out", epochs=2)
    run.run_epoch(0)
    state = copy.deepcopy(run.state_dict())
    run.run_epoch(1)
    resumed = make_run(synthetic_root, tmp_path / "out", epochs=2)
    resumed.load_state_dict(state)
    assert [line["epoch"] for line in TrainingLog(tmp_path / "out").read()] == [0]


def test_frozen_encoder_keeps_its_weights_until_unfreeze(synthetic_root, tmp_path):
    config = small_config(synthetic_root, tmp_path / "out", epochs=2)
    config.freeze.image_encoder = True
    config.freeze.unfreeze_epoch = 2
    run = TrainingRun(config, load_split(synthetic_root / "train"),
                      load_split(synthetic_root / "val"), sam=build_small_sam(seed=1))
    encoder = run.sam.image_encoder.project.weight.detach().clone()
    decoder = run.sam.mask_decoder.iou_token.weight.detach().clone()
    run.run_epoch(0)
    run.run_epoch(1)
    assert torch.equal(run.sam.image_encoder.project.weight, encoder)
    assert not torch.equal(run.sam.mask_decoder.iou_token.weight, decoder)
    run.run_epoch(2)
    assert not torch.equal(run.sam.image_encoder.project.weight, encoder)


def test_frozen_parts_by_epoch():
    config = load_config({"dataset": {"train_dir": "t", "val_dir": "v"},
                          "freeze": {"prompt_encoder": True, "unfreeze_epoch": 3}})
    assert frozen_parts(config.freeze, 2) == ["prompt_encoder"]
    assert frozen_parts(config.freeze, 3) == []
    config.freeze.unfreeze_epoch = 0
    assert frozen_parts(config.freeze, 50) == ["prompt_encoder"]


def test_early_stop_after_patience(synthetic_root, tmp_path):
    # With every part frozen until epoch 5 the model never changes, so no epoch beats epoch 0.
    config = small_config(synthetic_root, tmp_path / "out", epochs=5, early_stop_patience=2)
    config.freeze.image_encoder = config.freeze.prompt_encoder = True
    config.freeze.mask_decoder = True
    config.freeze.unfreeze_epoch = 5
    run = TrainingRun(config, load_split(synthetic_root / "train"),
                      load_split(synthetic_root / "val"), sam=build_small_sam(seed=1))
    run.run()
    assert [line["epoch"] for line in TrainingLog(tmp_path / "out").read()] == [0, 1, 2]


def test_learning_rate_warmup_then_cosine_by_hand():
    # 10 steps, 2 of warmup, base 1.0, floor 0.1: 0.5, 1.0, then cosine over steps 2..9.
    rates = [learning_rate(step, 10, 2, 1.0, 0.1) for step in range(10)]
    assert rates[0] == pytest.approx(0.5)
    assert rates[1] == pytest.approx(1.0)
    assert rates[2] == pytest.approx(1.0)
    # Step 2 + 3.5 is the middle of the 7-step decay: 0.1 + 0.9 * 0.5.
    assert learning_rate(5.5, 10, 2, 1.0, 0.1) == pytest.approx(0.55)
    assert rates[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(rates[1:], rates[2:]))


def test_nan_loss_stops_with_the_image_named(synthetic_root, tmp_path):
    from trainable.step import NonFiniteLossError

    run = make_run(synthetic_root, tmp_path / "out", epochs=1)
    with torch.no_grad():
        run.sam.mask_decoder.iou_prediction_head.layers[-1].bias.fill_(math.nan)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss on image .*train_00"):
        run.run_epoch(1)
    assert "# failed in epoch 1: NonFiniteLossError" in (tmp_path / "out" / "training_log.txt").read_text()

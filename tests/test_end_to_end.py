"""The real MobileSAM (vit_t, 1024x1024) trained for one epoch on coco-mini from the command line."""

import json
import subprocess
import sys

import cv2

from trainable.training_log import TrainingLog


def test_one_epoch_on_coco_mini(coco_mini, tmp_path):
    config = {
        "dataset": {"train_dir": str(coco_mini / "train"), "val_dir": str(coco_mini / "val"),
                    "grid_points": 2},
        "model": {"save_dir": str(tmp_path / "run")},
        "train": {"epochs": 1},
        "visual": {"save_every_n_epochs": 1},
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(config))
    completed = subprocess.run([sys.executable, "-m", "trainable", "--config", str(path)],
                               capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "best val_score:" in completed.stdout

    lines = TrainingLog(tmp_path / "run").read()
    assert [line["epoch"] for line in lines] == [0, 1]
    for line in lines:
        for metric in ("val_dice", "val_iou", "val_score"):
            assert 0.0 <= line[metric] <= 1.0
    assert lines[1]["loss"] > 0.0

    for epoch in (0, 1):
        overlays = sorted((tmp_path / "run" / "visual" / f"epoch_{epoch}").glob("*.png"))
        assert [p.stem for p in overlays] == sorted(p.stem for p in (coco_mini / "val" / "image").iterdir())
        image = cv2.imread(str(overlays[0]))
        original = cv2.imread(str(coco_mini / "val" / "image" / f"{overlays[0].stem}.jpg"))
        assert image.shape == original.shape

    from trainable.model import sam_model_registry
    model = sam_model_registry["vit_t"](checkpoint=str(tmp_path / "run" / "best.pt"))
    assert sum(p.numel() for p in model.parameters()) > 5_000_000

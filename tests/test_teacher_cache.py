"""The teacher cache: computed once per image, shared by runs and trials, never stale."""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from trainable.config import TeacherConfig
from trainable.data import load_split
from trainable.distillation_attention import attention_sites, capture_pooled_attention
from trainable.prediction import encode_image
from trainable.synthetic import generate_dataset
from trainable.teacher_cache import COMPUTATIONS_LOG, CacheContent, TeacherCache
from trainable.teachers import load_teacher
from trainable.training_log import TrainingLog

from conftest import build_small_sam
from distillation_helpers import frozen_teacher

CPU = torch.device("cpu")
SEARCH_TIMEOUT_S = 900


@pytest.fixture
def records(synthetic_root):
    return load_split(synthetic_root / "train")


def test_cached_targets_equal_fresh_computation(records, tmp_path):
    teacher = frozen_teacher(build_small_sam(seed=2))
    with torch.no_grad():
        fresh = encode_image(teacher.sam, records[0].image)

    exact = TeacherCache(tmp_path / "float32", "float32")
    computed = exact.compute(teacher, records[0], CacheContent(), CPU)
    loaded = exact.load(teacher, records[0], CacheContent(), CPU)
    assert torch.equal(computed.embedding, fresh)
    assert torch.equal(loaded.embedding, fresh)
    assert loaded.attention is None

    half = TeacherCache(tmp_path / "float16", "float16")
    computed = half.compute(teacher, records[0], CacheContent(), CPU)
    loaded = half.load(teacher, records[0], CacheContent(), CPU)
    assert torch.equal(loaded.embedding, fresh.half().float())
    assert torch.equal(computed.embedding, loaded.embedding)


def test_fill_computes_each_image_once(records, tmp_path):
    teacher = frozen_teacher(build_small_sam(seed=2))
    cache = TeacherCache(tmp_path / "cache")

    assert cache.fill(teacher, records, CacheContent(), CPU) == 2
    assert cache.fill(teacher, records, CacheContent(), CPU) == 0
    lines = cache.computations()
    assert len(lines) == 2
    assert {line["image"] for line in lines} == {r.image_path for r in records}
    assert {line["weights_sha256"] for line in lines} == {teacher.weights_sha256}
    assert cache.entry_count(teacher) == 2
    assert json.loads((cache.teacher_folder(teacher) / "teacher.json").read_text())["name"] == \
        "teacher"


def test_entries_of_other_weights_are_not_used(records, tmp_path, caplog):
    first = frozen_teacher(build_small_sam(seed=2), name="sam")
    second = frozen_teacher(build_small_sam(seed=3), name="sam")
    cache = TeacherCache(tmp_path / "cache")
    cache.fill(first, records, CacheContent(), CPU)

    with caplog.at_level(logging.INFO):
        assert cache.fill(second, records, CacheContent(), CPU) == 2
    with torch.no_grad():
        fresh = encode_image(second.sam, records[0].image).half().float()
    loaded = cache.load(second, records[0], CacheContent(), CPU)
    assert torch.equal(loaded.embedding, fresh)
    assert not torch.equal(loaded.embedding,
                           cache.load(first, records[0], CacheContent(), CPU).embedding)
    assert len(cache.computations()) == 4
    reported = [r.getMessage() for r in caplog.records if "other weights" in r.getMessage()]
    assert reported
    assert "not used" in reported[0]


def test_stale_entry_is_logged_and_recomputed(records, tmp_path, caplog):
    first = frozen_teacher(build_small_sam(seed=2), name="sam")
    second = frozen_teacher(build_small_sam(seed=3), name="sam")
    cache = TeacherCache(tmp_path / "cache")
    cache.fill(first, records[:1], CacheContent(), CPU)
    # An entry of the first teacher's weights where the second teacher looks for its own.
    target = cache.entry_path(second, records[0], CacheContent())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(cache.entry_path(first, records[0], CacheContent()).read_bytes())

    with caplog.at_level(logging.WARNING):
        assert cache.load(second, records[0], CacheContent(), CPU) is None
        targets = cache.get(second, records[0], CacheContent(), CPU)
    with torch.no_grad():
        fresh = encode_image(second.sam, records[0].image).half().float()
    assert torch.equal(targets.embedding, fresh)
    assert len(cache.computations()) == 2
    stale = [r.getMessage() for r in caplog.records if "stale" in r.getMessage()]
    assert stale
    assert "weights_sha256" in stale[0]
    assert str(target) in stale[0]


def test_damaged_entry_is_logged_and_recomputed(records, tmp_path, caplog):
    teacher = frozen_teacher(build_small_sam(seed=2))
    cache = TeacherCache(tmp_path / "cache")
    path = cache.entry_path(teacher, records[0], CacheContent())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half-written")

    with caplog.at_level(logging.WARNING):
        assert cache.fill(teacher, records[:1], CacheContent(), CPU) == 1
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert cache.load(teacher, records[0], CacheContent(), CPU) is not None


def test_attention_settings_are_part_of_the_key(records, tmp_path):
    teacher = frozen_teacher(build_small_sam(seed=2))
    cache = TeacherCache(tmp_path / "cache")
    plain = cache.entry_path(teacher, records[0], CacheContent())
    grid_16 = cache.entry_path(teacher, records[0], CacheContent((2, 5, 8, 11), 16))
    grid_8 = cache.entry_path(teacher, records[0], CacheContent((2, 5, 8, 11), 8))
    assert len({plain, grid_16, grid_8}) == 3
    assert plain.parent == grid_8.parent


def write_config(path, data_root, cache_dir, teacher):
    path.write_text(json.dumps({
        "dataset": {"train_dir": str(data_root / "train"), "val_dir": str(data_root / "val"),
                    "grid_points": 1},
        "model": {"save_dir": str(path.parent / "run")},
        "distillation": {"enable": True, "cache_dir": str(cache_dir)},
        "teachers": [teacher],
    }))
    return path


def precompute(config):
    completed = subprocess.run([sys.executable, "-m", "trainable.precompute", "--config",
                                str(config)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def test_precompute_command_fills_once_and_ignores_other_weights(tmp_path):
    from mobile_sam import sam_model_registry
    from trainable.model import save_official_weights

    data = generate_dataset(tmp_path / "data", train_images=1, val_images=1, seed=4)
    cache_dir = tmp_path / "cache"
    random_teacher = {"name": "mobile_sam", "type": "vit_t", "allow_random_weights": True}
    config = write_config(tmp_path / "random.json", data, cache_dir, random_teacher)

    first = precompute(config)
    second = precompute(config)
    assert "1 of 1 images computed" in first.stdout
    assert "0 of 1 images computed" in second.stdout
    assert len(TeacherCache(cache_dir).computations()) == 1

    # The same teacher name with weights from a checkpoint: the random entries are not used.
    torch.manual_seed(5)
    checkpoint = tmp_path / "mobile_sam.pt"
    save_official_weights(sam_model_registry["vit_t"](), checkpoint)
    config = write_config(tmp_path / "trained.json", data, cache_dir,
                          {"name": "mobile_sam", "type": "vit_t",
                           "checkpoint_path": str(checkpoint)})
    third = precompute(config)
    assert "1 of 1 images computed" in third.stdout
    assert "other weights" in third.stderr
    lines = TeacherCache(cache_dir).computations()
    assert len(lines) == 2
    assert lines[0]["weights_sha256"] != lines[1]["weights_sha256"]


def test_precompute_command_rejects_missing_checkpoint(tmp_path):
    data = generate_dataset(tmp_path / "data", train_images=1, val_images=1, seed=4)
    missing = tmp_path / "sam_vit_b_01ec64.pth"
    config = write_config(tmp_path / "train.json", data, tmp_path / "cache",
                          {"name": "sam_b", "type": "vit_b", "checkpoint_path": str(missing)})
    completed = subprocess.run([sys.executable, "-m", "trainable.precompute", "--config",
                                str(config)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 2
    assert "teacher 'sam_b'" in completed.stderr
    assert str(missing) in completed.stderr


def link_subset(source, target, train_images=2, val_images=1):
    """A smaller copy of a dataset made of symbolic links, to keep the search short."""
    for split, count in (("train", train_images), ("val", val_images)):
        images = sorted((source / split / "image").iterdir())[:count]
        (target / split / "image").mkdir(parents=True)
        (target / split / "mask").mkdir(parents=True)
        for image in images:
            os.symlink(image, target / split / "image" / image.name)
            os.symlink(source / split / "mask" / image.stem, target / split / "mask" / image.stem)
    return target


def test_search_computes_teacher_outputs_once_per_image(coco_mini, tmp_path):
    data = link_subset(coco_mini, tmp_path / "data")
    teacher = {"name": "mobile_sam", "type": "vit_t", "allow_random_weights": True}
    base = tmp_path / "train.json"
    base.write_text(json.dumps({
        "dataset": {"train_dir": str(data / "train"), "val_dir": str(data / "val"),
                    "grid_points": 1},
        "train": {"warmup_epochs": 0.0},
        "visual": {"enable": False},
        # A frozen student encoder keeps the search short; the cache is what is tested here.
        "freeze": {"image_encoder": True},
        "distillation": {"enable": True, "cache_dtype": "float32",
                         "encoder": {"kl_weight": 1.0}, "decoder": {"enable": True},
                         "attention": {"enable": True}, "rkd": {"enable": True}},
        "teachers": [teacher],
    }))
    storage = tmp_path / "results"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "tuner.search", "--base-config", str(base),
         "--space", "lambda_schedule", "--trials", "2", "--epochs", "2", "--scheduler", "fifo",
         "--storage-path", str(storage), "--name", "distill", "--no-dashboard",
         "--num-cpus", "2", "--cpus-per-trial", "2"],
        capture_output=True, text=True, env=env, timeout=SEARCH_TIMEOUT_S)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    # The teacher's image encoder ran once per training image, in all processes together.
    cache = TeacherCache(storage / "teacher_cache", "float32")
    lines = cache.computations()
    train_paths = sorted(str(p) for p in (data / "train" / "image").iterdir())
    assert sorted(line["image"] for line in lines) == train_paths
    assert len({line["image_sha256"] for line in lines}) == 2
    assert (storage / "teacher_cache" / COMPUTATIONS_LOG).is_file()

    trials = sorted((storage / "distill").glob("trial_*"))
    assert len(trials) == 2
    for trial in trials:
        log = TrainingLog(trial / "output").read()
        assert [line["epoch"] for line in log] == [0, 1, 2]
        for line in log[1:]:
            for name in ("distill_encoder", "distill_decoder", "distill_attention",
                         "distill_rkd"):
                assert line[name] > 0, (trial.name, name)

    # The cached tensors equal a fresh computation by the same teacher.
    fresh_teacher = load_teacher(TeacherConfig(**teacher), 1.0, CPU)
    assert {line["weights_sha256"] for line in lines} == {fresh_teacher.weights_sha256}
    record = load_split(data / "train")[0]
    blocks = tuple(range(10))  # a vit_t teacher is mapped block to block
    sites = attention_sites(fresh_teacher.sam.image_encoder)
    with torch.no_grad(), capture_pooled_attention(sites, 16) as maps:
        embedding = encode_image(fresh_teacher.sam, record.image)
    cached = cache.load(fresh_teacher, record, CacheContent(blocks, 16), CPU)
    assert cached is not None
    torch.testing.assert_close(cached.embedding, embedding, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cached.attention, torch.stack(maps), rtol=1e-4, atol=1e-6)

"""Official state dicts in and out: mobile_sam's registry reads what the trainer writes."""

import pytest
import torch

from trainable.model import CheckpointError, build_model, save_official_weights, sam_model_registry


def test_registry_state_dict_loads_as_checkpoint_and_saved_weights_load_back(tmp_path):
    torch.manual_seed(0)
    original = sam_model_registry["vit_t"]()
    path = tmp_path / "mobile_sam.pt"
    torch.save(original.state_dict(), path)

    loaded = build_model("vit_t", str(path))
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name

    with torch.no_grad():
        loaded.mask_decoder.iou_token.weight.add_(1.0)
    exported = tmp_path / "best.pt"
    save_official_weights(loaded, exported)
    reread = sam_model_registry["vit_t"](checkpoint=str(exported))
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(reread.state_dict()[name], tensor), name


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint not found: {tmp_path / 'nope.pt'}"):
        build_model("vit_t", str(tmp_path / "nope.pt"))


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} does not fit a vit_t model"):
        build_model("vit_t", str(path))

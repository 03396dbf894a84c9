"""Dataset reading: mask encodings, empty and missing folders, size mismatches, bad files."""

from pathlib import Path

import numpy as np
import pytest

from trainable.data import DatasetError, list_images, load_record, load_split, read_mask, to_low_res
from trainable.geometry import grid_points, resized_shape

from conftest import write_png


def make_split(root: Path, masks: dict[str, np.ndarray], size=(40, 60)) -> Path:
    image = np.full((*size, 3), 120, dtype=np.uint8)
    write_png(root / "image" / "a.png", image)
    (root / "mask" / "a").mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        write_png(root / "mask" / "a" / name, mask)
    return root


def square(value, dtype=np.uint8, size=(40, 60)):
    mask = np.zeros(size, dtype=dtype)
    mask[10:20, 5:25] = value
    return mask


def test_zero_one_and_zero_255_masks_read_the_same(tmp_path):
    split = make_split(tmp_path, {"o1.png": square(1), "o2.png": square(255)})
    record = load_split(split)[0]
    assert record.gt_masks.shape == (2, 40, 60)
    assert record.gt_masks.dtype.is_floating_point is False
    assert int(record.gt_masks[0].sum()) == 200
    assert bool((record.gt_masks[0] == record.gt_masks[1]).all())


def test_sixteen_bit_mask_reads_as_binary(tmp_path):
    path = write_png(tmp_path / "m.png", square(65535, np.uint16))
    assert int(read_mask(path).sum()) == 200


def test_antialiased_edges_are_binarised_at_half_scale(tmp_path):
    mask = square(255)
    mask[9, 5:25] = 200   # above 127.5: foreground
    mask[20, 5:25] = 60   # below: background
    path = write_png(tmp_path / "m.png", mask)
    assert int(read_mask(path, threshold=0.5).sum()) == 220


@pytest.mark.parametrize("values", [(0, 1, 2, 3), (0, 128)])
def test_label_maps_and_half_grey_masks_are_rejected(tmp_path, values):
    mask = np.zeros((40, 60), dtype=np.uint8)
    for index, value in enumerate(values):
        mask[index * 5:(index + 1) * 5] = value
    path = write_png(tmp_path / "m.png", mask)
    with pytest.raises(DatasetError, match=r"m\.png has values .*expected a binary mask"):
        read_mask(path)


def test_colour_mask_is_rejected(tmp_path):
    mask = np.zeros((40, 60, 3), dtype=np.uint8)
    mask[5:10, 5:10] = (255, 0, 0)
    path = write_png(tmp_path / "m.png", mask)
    with pytest.raises(DatasetError, match="colour image"):
        read_mask(path)


def test_empty_mask_folder_gives_an_image_without_objects(tmp_path):
    record = load_split(make_split(tmp_path, {}))[0]
    assert record.num_objects == 0
    assert tuple(record.gt_low_res.shape) == (0, 256, 256)


def test_mask_of_wrong_size_names_both_paths(tmp_path):
    split = make_split(tmp_path, {"o1.png": square(255, size=(41, 60))})
    with pytest.raises(DatasetError) as caught:
        load_split(split)
    message = str(caught.value)
    assert str(split / "mask" / "a" / "o1.png") in message
    assert str(split / "image" / "a.png") in message
    assert "60x41" in message
    assert "60x40" in message


def test_unreadable_image_names_its_path(tmp_path):
    split = make_split(tmp_path, {"o1.png": square(255)})
    (split / "image" / "a.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=f"cannot read image {split / 'image' / 'a.png'}"):
        load_split(split)


def test_missing_mask_folder_is_named(tmp_path):
    write_png(tmp_path / "image" / "b.jpg", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "mask").mkdir()
    with pytest.raises(DatasetError, match=r"mask folder not found .*b\.jpg"):
        list_images(tmp_path)


def test_geometry_by_hand():
    # 480x640 scales by 1.6 to 768x1024.
    assert resized_shape(480, 640) == (768, 1024)
    # Two points per side on a 100x200 image sit at the cell centres 50/150 and 25/75.
    assert grid_points(2, 100, 200).tolist() == [[50, 25], [150, 25], [50, 75], [150, 75]]


def test_low_res_mask_covers_the_matching_blocks():
    # A 512x512 image is resized to 1024x1024, so pixel block (y 100..149, x 0..99) becomes
    # input rows 200..299, columns 0..199, which is low-res rows 50..74, columns 0..49.
    mask = np.zeros((1, 512, 512), dtype=bool)
    mask[0, 100:150, 0:100] = True
    low = to_low_res(mask, (1024, 1024))[0]
    expected = np.zeros((256, 256), dtype=bool)
    expected[50:75, 0:50] = True
    assert np.array_equal(low, expected)


def test_prompt_points_map_into_the_encoder_frame(tmp_path):
    split = make_split(tmp_path, {}, size=(40, 80))
    record = load_record(split / "image" / "a.png", split / "mask" / "a")
    # 40x80 scales by 12.8 to 512x1024; the single grid point (40, 20) maps to (512, 256).
    assert record.input_size == (512, 1024)
    assert record.prompt_points(1).tolist() == [[512.0, 256.0]]

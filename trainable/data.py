"""The segment-everything dataset: images, one binary mask per object, and the prompt grid.

Layout of a split folder::

    image/<id>.jpg | image/<id>.png
    mask/<id>/<anything>.png        one single-channel mask per object

Masks may be stored as 0/255 or 0/1, in 8 or 16 bits. A mask whose other values look like the
anti-aliased edges of a 0/255 mask (it contains the full-scale value) is binarised at
``mask_threshold`` times full scale. Any other mask (a label map, 0/128, colour) is rejected
with its path, because reading it either way could silently drop objects.

Every image is decoded, resized and its masks converted once, when the split is loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from trainable.geometry import (ENCODER_SIZE, LOW_RES_SIZE, grid_points, pad_to_square,
                                resized_shape, to_encoder_frame)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetError(ValueError):
    """A dataset folder or file that cannot be used for training."""


@dataclass
class ImageRecord:
    """One decoded image and its ground-truth masks in the frames a run needs.

    Attributes:
        image_id: file stem of the image.
        image_path: absolute path of the image file.
        original_size: (height, width) of the image file.
        input_size: (height, width) after resizing the longest side to 1024, before padding.
        image: uint8 RGB tensor of shape (3, *input_size), not padded and not normalised.
        gt_masks: bool tensor (G, *original_size), the masks as stored.
        gt_low_res: bool tensor (G, 256, 256), the masks in the decoder's logit frame.
    """

    image_id: str
    image_path: str
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    image: torch.Tensor
    gt_masks: torch.Tensor
    gt_low_res: torch.Tensor

    @property
    def num_objects(self) -> int:
        return int(self.gt_masks.shape[0])

    def prompt_points(self, points_per_side: int) -> torch.Tensor:
        """Return the grid prompts as a float tensor (n*n, 2) of (x, y) in the encoder frame."""
        points = grid_points(points_per_side, *self.original_size)
        points = to_encoder_frame(points, self.original_size, self.input_size)
        return torch.from_numpy(points).float()


def list_images(split_dir: str | Path) -> list[tuple[Path, Path]]:
    """Return (image path, mask folder) pairs of a split folder, sorted by image id.

    Raises:
        DatasetError: when the folder, its ``image`` or ``mask`` folder, or an image's mask
            folder is missing, or the split contains no image.
    """
    split_dir = Path(split_dir)
    image_dir = split_dir / "image"
    mask_root = split_dir / "mask"
    for folder in (split_dir, image_dir, mask_root):
        if not folder.is_dir():
            raise DatasetError(f"dataset folder not found: {folder}")

    pairs = []
    for image_path in sorted(image_dir.iterdir()):
        if image_path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        mask_dir = mask_root / image_path.stem
        if not mask_dir.is_dir():
            raise DatasetError(f"mask folder not found for image {image_path}: expected "
                               f"{mask_dir} (create it empty if the image has no objects)")
        pairs.append((image_path, mask_dir))
    if not pairs:
        raise DatasetError(f"no .jpg or .png image in {image_dir}")
    return pairs


def load_split(split_dir: str | Path, mask_threshold: float = 0.5) -> list[ImageRecord]:
    """Decode every image of a split folder with its masks."""
    records = [load_record(image_path, mask_dir, mask_threshold)
               for image_path, mask_dir in list_images(split_dir)]
    objects = sum(r.num_objects for r in records)
    logger.info("loaded %d images with %d object masks from %s", len(records), objects, split_dir)
    return records


def load_record(image_path: Path, mask_dir: Path, mask_threshold: float = 0.5) -> ImageRecord:
    """Decode one image and its masks, checking that every mask matches the image's size."""
    image = read_image(image_path)
    original_size = (image.shape[0], image.shape[1])
    input_size = resized_shape(*original_size)
    resized = cv2.resize(image, (input_size[1], input_size[0]), interpolation=cv2.INTER_LINEAR)

    masks = []
    for mask_path in sorted(mask_dir.glob("*.png")):
        mask = read_mask(mask_path, mask_threshold)
        if mask.shape != original_size:
            raise DatasetError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{image_path} is {original_size[1]}x{original_size[0]} (width x height); "
                "each mask must have its image's size")
        masks.append(mask)

    if masks:
        gt_masks = np.stack(masks)
    else:
        gt_masks = np.zeros((0, *original_size), dtype=bool)
    return ImageRecord(
        image_id=image_path.stem,
        image_path=str(image_path),
        original_size=original_size,
        input_size=input_size,
        image=torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))),
        gt_masks=torch.from_numpy(gt_masks),
        gt_low_res=torch.from_numpy(to_low_res(gt_masks, input_size)),
    )


def read_image(path: Path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); greyscale images are expanded to RGB."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path}: the file is missing, empty or not a "
                           "JPEG/PNG image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: Path, threshold: float = 0.5) -> np.ndarray:
    """Read one object mask as a bool array (H, W) by the rules in this module's docstring."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DatasetError(f"cannot read mask {path}: the file is missing, empty or not a PNG")
    if mask.ndim == 3:
        channels = mask[..., :3]
        if not (np.array_equal(channels[..., 0], channels[..., 1])
                and np.array_equal(channels[..., 0], channels[..., 2])):
            raise DatasetError(f"mask {path} is a colour image; expected one single-channel "
                               "binary mask per object (0/255 or 0/1)")
        mask = channels[..., 0]
    if mask.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"mask {path} has pixel type {mask.dtype}; expected 8- or 16-bit")

    full_scale = int(np.iinfo(mask.dtype).max)
    values = np.unique(mask)
    if set(values.tolist()) <= {0, 1}:
        return mask == 1
    if set(values.tolist()) <= {0, full_scale}:
        return mask == full_scale
    if values[-1] == full_scale:
        # Grey values beside full-scale foreground are anti-aliased edges.
        return mask >= threshold * full_scale
    shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
    raise DatasetError(
        f"mask {path} has values {shown}; expected a binary mask (0/{full_scale} or 0/1). "
        "Split label maps into one file per object.")


def to_low_res(masks: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Map masks (G, H, W) to the decoder's 256x256 logit frame as bool (G, 256, 256).

    Each mask is resized to the encoder input with nearest neighbour and padded, as the image
    is; a low-resolution pixel is foreground when at least half of its 4x4 input block is.
    """
    factor = ENCODER_SIZE // LOW_RES_SIZE
    out = np.zeros((masks.shape[0], LOW_RES_SIZE, LOW_RES_SIZE), dtype=bool)
    for index, mask in enumerate(masks):
        resized = cv2.resize(mask.astype(np.uint8), (input_size[1], input_size[0]),
                             interpolation=cv2.INTER_NEAREST)
        padded = pad_to_square(resized).astype(np.float32)
        blocks = padded.reshape(LOW_RES_SIZE, factor, LOW_RES_SIZE, factor).mean(axis=(1, 3))
        out[index] = blocks >= 0.5
    return out

"""A small generated dataset: coloured shapes with exact masks on varied backgrounds.

It lets the embedded default search and the tests run on real image files without shipping
photographs. Objects are ellipses, rectangles and triangles; a later object hides what it
covers of earlier ones, and each mask is exactly the object's visible pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

BACKGROUNDS = ("gradient", "noise", "stripes", "checker")


def generate_dataset(root: str | Path, train_images: int = 4, val_images: int = 2,
                     size: tuple[int, int] = (240, 320), max_objects: int = 4,
                     seed: int = 0) -> Path:
    """Write ``train/`` and ``val/`` split folders under ``root`` and return ``root``.

    ``size`` is (height, width) of every image. Each image has 1 to ``max_objects`` objects.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_images), ("val", val_images)):
        for index in range(count):
            image, masks = draw_scene(rng, size, max_objects)
            image_id = f"{split}_{index:03d}"
            write_sample(root / split, image_id, image, masks)
    return root


def write_sample(split_dir: Path, image_id: str, image: np.ndarray, masks: list[np.ndarray]) -> None:
    """Write one RGB image as PNG and its masks as 0/255 PNGs in the dataset layout."""
    (split_dir / "image").mkdir(parents=True, exist_ok=True)
    mask_dir = split_dir / "mask" / image_id
    mask_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(split_dir / "image" / f"{image_id}.png"),
                cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    for index, mask in enumerate(masks):
        cv2.imwrite(str(mask_dir / f"object_{index}.png"), mask.astype(np.uint8) * 255)


def draw_scene(rng: np.random.Generator, size: tuple[int, int],
               max_objects: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return an RGB image and the visible mask of each of its objects."""
    height, width = size
    image = draw_background(rng, size, BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    visible: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        shape = draw_shape(rng, size)
        colour = rng.integers(0, 256, size=3)
        image[shape] = colour
        visible = [mask & ~shape for mask in visible]
        visible.append(shape)
    # Objects hidden almost entirely by later ones would be unmatchable noise.
    minimum_area = 0.002 * height * width
    return image, [mask for mask in visible if mask.sum() >= minimum_area]


def draw_background(rng: np.random.Generator, size: tuple[int, int], kind: str) -> np.ndarray:
    height, width = size
    if kind == "gradient":
        start, end = rng.integers(0, 256, size=(2, 3))
        ramp = np.linspace(0.0, 1.0, width)[None, :, None]
        image = start + (end - start) * ramp
        return np.broadcast_to(image, (height, width, 3)).astype(np.uint8).copy()
    if kind == "noise":
        base = rng.integers(40, 216, size=3)
        noise = rng.normal(0, 25, size=(height, width, 3))
        return np.clip(base + noise, 0, 255).astype(np.uint8)
    period = int(rng.integers(8, 32))
    first, second = rng.integers(0, 256, size=(2, 3))
    ys, xs = np.mgrid[:height, :width]
    if kind == "stripes":
        pattern = (xs + ys) // period % 2 == 0
    else:
        pattern = (xs // period + ys // period) % 2 == 0
    return np.where(pattern[..., None], first, second).astype(np.uint8)


def draw_shape(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Return the bool mask of one random ellipse, rectangle or triangle."""
    height, width = size
    canvas = np.zeros(size, dtype=np.uint8)
    scale = min(height, width)
    centre = (int(rng.integers(width // 8, width - width // 8)),
              int(rng.integers(height // 8, height - height // 8)))
    kind = rng.integers(3)
    if kind == 0:
        axes = (int(rng.integers(scale // 12, scale // 4)), int(rng.integers(scale // 12, scale // 4)))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 1:
        half = (int(rng.integers(scale // 12, scale // 4)), int(rng.integers(scale // 12, scale // 4)))
        cv2.rectangle(canvas, (centre[0] - half[0], centre[1] - half[1]),
                      (centre[0] + half[0], centre[1] + half[1]), 1, -1)
    else:
        radius = rng.integers(scale // 10, scale // 3.5)
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        corners = np.stack([centre[0] + radius * np.cos(angles),
                            centre[1] + radius * np.sin(angles)], axis=1).astype(np.int32)
        cv2.fillPoly(canvas, [corners], 1)
    return canvas.astype(bool)

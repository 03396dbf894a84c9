"""Overlays of matched predictions, each in its own colour, with the prompt grid."""

from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np

from trainable.geometry import grid_points

# Consecutive hues a golden-ratio turn apart stay distinct for any number of masks.
GOLDEN_RATIO_CONJUGATE = 0.618033988749895
MASK_OPACITY = 0.5
POINT_COLOUR = (255, 255, 255)
POINT_OUTLINE = (0, 0, 0)


def distinct_colours(count: int) -> np.ndarray:
    """Return ``count`` saturated RGB colours (uint8, shape (count, 3)) with well-spread hues."""
    colours = []
    for index in range(count):
        hue = (index * GOLDEN_RATIO_CONJUGATE) % 1.0
        colours.append(colorsys.hsv_to_rgb(hue, 0.85, 0.95))
    return (np.array(colours).reshape(count, 3) * 255).astype(np.uint8)


def overlay_masks_on_image(image: np.ndarray, masks: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Draw binary ``masks`` (P, H, W) over an RGB ``image`` (H, W, 3) and mark ``points`` (K, 2).

    Each mask is blended at ``MASK_OPACITY`` in its own colour, with its outline drawn solid.
    """
    canvas = image.astype(np.float32)
    colours = distinct_colours(len(masks))
    for mask, colour in zip(masks, colours):
        canvas[mask] = (1 - MASK_OPACITY) * canvas[mask] + MASK_OPACITY * colour
    canvas = canvas.astype(np.uint8)
    for mask, colour in zip(masks, colours):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in colour), 2)

    radius = max(2, round(max(image.shape[:2]) / 250))
    for x, y in np.round(points).astype(int):
        cv2.circle(canvas, (int(x), int(y)), radius + 1, POINT_OUTLINE, -1)
        cv2.circle(canvas, (int(x), int(y)), radius, POINT_COLOUR, -1)
    return canvas


def save_overlay(path: Path, image_path: str, masks: np.ndarray, points_per_side: int) -> None:
    """Write the overlay of one validation image as a PNG at ``path``."""
    image = cv2.cvtColor(cv2.imread(image_path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    points = grid_points(points_per_side, image.shape[0], image.shape[1])
    overlay = overlay_masks_on_image(image, masks, points)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write visualisation {path}")

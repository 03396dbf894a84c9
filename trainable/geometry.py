"""SAM's input geometry: longest side resized to the encoder's size, padding at bottom and right.

Three frames appear in a run: the original image (H x W), the encoder input (the image resized
so its longest side is 1024, then padded to 1024 x 1024) and the decoder's low-resolution logits
(256 x 256, a 4x downsampling of the padded input).
"""

from __future__ import annotations

import numpy as np

ENCODER_SIZE = 1024
LOW_RES_SIZE = 256


def resized_shape(height: int, width: int, longest_side: int = ENCODER_SIZE) -> tuple[int, int]:
    """Return (height, width) after scaling the longest side to ``longest_side``, rounding half up."""
    scale = longest_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def grid_points(points_per_side: int, height: int, width: int) -> np.ndarray:
    """Return the prompt grid as an (n*n, 2) array of (x, y) pixel positions on the image.

    Points sit at cell centres, so ``points_per_side`` = 1 gives the image centre and no point
    lies on the border. Rows run top to bottom, and within a row x grows.
    """
    offsets = (np.arange(points_per_side, dtype=np.float64) + 0.5) / points_per_side
    xs = offsets * width
    ys = offsets * height
    grid_x, grid_y = np.meshgrid(xs, ys)
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def to_encoder_frame(points: np.ndarray, original: tuple[int, int],
                     resized: tuple[int, int]) -> np.ndarray:
    """Map (x, y) points from the original image to the resized encoder input."""
    scale = np.array([resized[1] / original[1], resized[0] / original[0]])
    return points * scale


def pad_to_square(array: np.ndarray, size: int = ENCODER_SIZE) -> np.ndarray:
    """Zero-pad the last two axes at the bottom and right to ``size`` x ``size``."""
    pad_h = size - array.shape[-2]
    pad_w = size - array.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"array of shape {array.shape} is larger than {size}x{size}")
    padding = [(0, 0)] * (array.ndim - 2) + [(0, pad_h), (0, pad_w)]
    return np.pad(array, padding)

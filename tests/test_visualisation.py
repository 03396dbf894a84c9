"""Overlays: each matched mask in its own colour, untouched pixels elsewhere, grid points drawn."""

import numpy as np

from trainable.visualisation import distinct_colours, overlay_masks_on_image


def test_overlay_blends_each_mask_in_its_colour_and_marks_points():
    image = np.full((60, 80, 3), 100, dtype=np.uint8)
    masks = np.zeros((2, 60, 80), dtype=bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 35:55, 45:75] = True
    points = np.array([[5.0, 55.0]])
    overlay = overlay_masks_on_image(image, masks, points)

    colours = distinct_colours(2)
    assert not np.array_equal(colours[0], colours[1])
    # Inside a mask, away from its outline: half image, half colour.
    expected = (0.5 * 100 + 0.5 * colours[0].astype(float)).astype(np.uint8)
    assert np.array_equal(overlay[20, 20], expected)
    expected = (0.5 * 100 + 0.5 * colours[1].astype(float)).astype(np.uint8)
    assert np.array_equal(overlay[45, 60], expected)
    # Outside every mask and away from the point, the image is unchanged.
    assert np.array_equal(overlay[5, 60], [100, 100, 100])
    # The grid point is drawn in white.
    assert np.array_equal(overlay[55, 5], [255, 255, 255])


def test_distinct_colours_are_all_different():
    colours = distinct_colours(40)
    assert len({tuple(c) for c in colours}) == 40

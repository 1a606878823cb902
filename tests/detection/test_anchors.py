"""Anchor counts, order, centres and sizes."""

import numpy as np
import pytest

from nucjax.detection import anchors

STRIDES = (4, 8, 16, 32, 64)
SIZES = (8.0, 16.0, 32.0, 64.0, 128.0)
RATIOS = (0.5, 1.0, 2.0)


def test_counts_per_level_for_a_non_square_image():
    boxes, counts = anchors.multilevel_anchors((64, 96), STRIDES, SIZES, RATIOS)
    grid = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]  # ceil(H / s), ceil(W / s)
    assert anchors.feature_shapes((64, 96), STRIDES) == grid
    assert counts == tuple(h * w * 3 for h, w in grid)
    assert boxes.shape == (sum(counts), 4) and boxes.dtype == np.float32


def test_order_centres_and_sizes():
    boxes, counts = anchors.multilevel_anchors((64, 96), STRIDES, SIZES, RATIOS)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    heights = boxes[:, 2] - boxes[:, 0]
    widths = boxes[:, 3] - boxes[:, 1]
    # Level 2 (stride 8) starts after level 1; location (i, j), anchor k is row (i*W + j)*K + k.
    start, width, stride, k = counts[0], 12, 8, 3
    i, j = 3, 5
    row = start + (i * width + j) * k
    np.testing.assert_allclose(
        centres[row : row + k], [[(i + 0.5) * stride, (j + 0.5) * stride]] * k
    )
    np.testing.assert_allclose(heights[row : row + k] * widths[row : row + k], 16.0**2, rtol=1e-5)
    np.testing.assert_allclose(
        heights[row : row + k] / widths[row : row + k], [0.5, 1.0, 2.0], rtol=1e-5
    )
    np.testing.assert_allclose(centres[0], [2.0, 2.0])  # first cell of stride 4
    sides = np.sqrt(heights * widths)
    per_level = np.split(sides, np.cumsum(counts)[:-1])
    for side, expected in zip(per_level, SIZES, strict=True):
        np.testing.assert_allclose(side, expected, rtol=1e-5)


def test_scales_per_octave_and_offset():
    cell = anchors.cell_anchors(8.0, aspect_ratios=(1.0,), scales_per_octave=2)
    np.testing.assert_allclose(cell[:, 2] - cell[:, 0], [8.0, 8.0 * np.sqrt(2)], rtol=1e-6)
    assert anchors.anchors_per_location((0.5, 1.0, 2.0), 2) == 6
    level = anchors.level_anchors((2, 2), 4, 8.0, (1.0,), offset=0.0)
    np.testing.assert_allclose(level[:, :2] + 4.0, [[0, 0], [0, 4], [4, 0], [4, 4]])


def test_mismatched_sizes_raise():
    with pytest.raises(ValueError):
        anchors.multilevel_anchors((64, 64), strides=(4, 8), sizes=(8.0,), aspect_ratios=RATIOS)

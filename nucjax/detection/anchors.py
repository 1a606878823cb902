"""Anchor boxes over the levels of a feature pyramid, for a static image size.

Boxes are float32 [y0, x0, y1, x1] in pixel coordinates of the (padded) input image, continuous
coordinates where pixel (i, j) covers [i, i+1) x [j, j+1). Feature cell (i, j) of a level with
stride s covers pixels [i*s, (i+1)*s) x [j*s, (j+1)*s); its anchors are centred on the cell
centre ((i + 0.5) * s, (j + 0.5) * s) (offset 0.5, as in TF Model Garden; detectron2 uses 0).

Anchors depend only on static shapes, so they are computed once with numpy and enter a jitted
function as constants. Order: level by level (finest first), then row-major over the level's
(H_l, W_l) grid, then the K anchors of a location (scales outer, aspect ratios inner). This is the
order of an RPN head output of shape (H_l, W_l, K) flattened and concatenated over levels.

Sizes, strides and aspect ratios are arguments: Mask R-CNN takes them from configs/mask_rcnn.py
(config.model.anchor_sizes, aspect_ratios), which says why they suit nuclei.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def anchors_per_location(aspect_ratios: Sequence[float], scales_per_octave: int = 1) -> int:
    """K, the number of anchors at each feature cell (the RPN head's output channels)."""
    return len(aspect_ratios) * scales_per_octave


def cell_anchors(
    size: float,
    aspect_ratios: Sequence[float],
    scales_per_octave: int = 1,
) -> np.ndarray:
    """(K, 4) float32 anchors centred on (0, 0); size: sqrt(area) px, ratios: height / width.

    Scale k of n has side size * 2**(k / n) (RetinaNet's scales per octave); an aspect ratio r
    = h / w keeps the area: h = side * sqrt(r), w = side / sqrt(r).
    """
    out = []
    for k in range(scales_per_octave):
        side = size * 2.0 ** (k / scales_per_octave)
        for ratio in aspect_ratios:
            h, w = side * math.sqrt(ratio), side / math.sqrt(ratio)
            out.append([-h / 2, -w / 2, h / 2, w / 2])
    return np.asarray(out, np.float32).reshape(-1, 4)


def feature_shapes(image_shape: Sequence[int], strides: Sequence[int]):
    """[(H_l, W_l)] per level: ceil(H / stride), ceil(W / stride) (exact for padded inputs)."""
    height, width = int(image_shape[0]), int(image_shape[1])
    return [(-(-height // s), -(-width // s)) for s in strides]


def level_anchors(
    feature_shape: Sequence[int],
    stride: int,
    size: float,
    aspect_ratios: Sequence[float],
    scales_per_octave: int = 1,
    offset: float = 0.5,
) -> np.ndarray:
    """(H_l * W_l * K, 4) float32 anchors of one level, row-major over (H_l, W_l, K)."""
    rows, cols = int(feature_shape[0]), int(feature_shape[1])
    centre_y = (np.arange(rows, dtype=np.float32) + offset) * stride
    centre_x = (np.arange(cols, dtype=np.float32) + offset) * stride
    cy, cx = np.meshgrid(centre_y, centre_x, indexing="ij")
    centres = np.stack([cy, cx, cy, cx], axis=-1)  # (H_l, W_l, 4)
    base = cell_anchors(size, aspect_ratios, scales_per_octave)  # (K, 4)
    return (centres[:, :, None, :] + base[None, None]).reshape(-1, 4).astype(np.float32)


def multilevel_anchors(
    image_shape: Sequence[int],
    strides: Sequence[int],
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
    scales_per_octave: int = 1,
    offset: float = 0.5,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """All anchors of an image of static size (H, W) (the padded model input).

    Returns anchors (A, 4) float32 [y0, x0, y1, x1] pixels, A = sum_l H_l * W_l * K, and the
    per-level counts (A_l,) as a tuple of Python ints (static, for splitting per-level outputs).
    """
    if len(strides) != len(sizes):
        raise ValueError(f"one size per stride: got strides {strides} and sizes {sizes}")
    shapes = feature_shapes(image_shape, strides)
    per_level = [
        level_anchors(shape, stride, size, aspect_ratios, scales_per_octave, offset)
        for shape, stride, size in zip(shapes, strides, sizes, strict=True)
    ]
    counts = tuple(int(a.shape[0]) for a in per_level)
    return np.concatenate(per_level, axis=0), counts

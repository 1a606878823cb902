"""Box coding: boxes <-> regression deltas relative to anchors, an exact inverse pair.

Boxes are float32 [y0, x0, y1, x1] in pixel coordinates of the (padded) input image, continuous
coordinates where pixel (i, j) covers [i, i+1) x [j, j+1). Deltas follow detectron2's
Box2BoxTransform (and TF Model Garden's), in [dy, dx, dh, dw] order:

  dy = wy * (cy - cy_a) / h_a      dh = wh * log(h / h_a)
  dx = wx * (cx - cx_a) / w_a      dw = ww * log(w / w_a)

with (wy, wx, wh, ww) the weights. decode(encode(b, a), a) == b up to float rounding for every
box with positive height and width. On decode, dh / wh and dw / ww are clamped at
log(1000 / 16) so that exp() cannot overflow (detectron2's scale clamp).

Any leading shape works, as long as deltas and anchors broadcast: (N, 4) with (N, 4), or
(B, N, 4) with (N, 4) under vmap or directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # detectron2's RPN default
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # detectron2's box-head default
SCALE_CLAMP = math.log(1000.0 / 16)
# Target boxes are clamped to this size before log(): a degenerate or padded ground-truth box
# (which only reaches encode() for anchors whose loss weight is 0) gives finite deltas.
_MIN_SIZE = 1e-3


def _centres_sizes(boxes: jax.Array):
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * height, boxes[..., 1] + 0.5 * width, height, width


def encode(
    boxes: jax.Array, anchors: jax.Array, weights: Sequence[float] = ROI_BOX_WEIGHTS
) -> jax.Array:
    """Deltas that turn `anchors` into `boxes`.

    boxes: (..., 4) target boxes, anchors: (..., 4) reference boxes (positive size), both
    float32 [y0, x0, y1, x1] pixels. Returns (..., 4) float32 [dy, dx, dh, dw].
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    anchors = jnp.asarray(anchors, jnp.float32)
    wy, wx, wh, ww = weights
    cy_a, cx_a, h_a, w_a = _centres_sizes(anchors)
    cy, cx, h, w = _centres_sizes(boxes)
    h = jnp.maximum(h, _MIN_SIZE)
    w = jnp.maximum(w, _MIN_SIZE)
    dy = wy * (cy - cy_a) / h_a
    dx = wx * (cx - cx_a) / w_a
    dh = wh * jnp.log(h / h_a)
    dw = ww * jnp.log(w / w_a)
    return jnp.stack([dy, dx, dh, dw], axis=-1)


def decode(
    deltas: jax.Array,
    anchors: jax.Array,
    weights: Sequence[float] = ROI_BOX_WEIGHTS,
    scale_clamp: float = SCALE_CLAMP,
) -> jax.Array:
    """Boxes from deltas: the inverse of encode().

    deltas: (..., 4) [dy, dx, dh, dw]; anchors: (..., 4) float32 [y0, x0, y1, x1] pixels.
    Returns (..., 4) float32 boxes [y0, x0, y1, x1] pixels (not clipped to the image; see
    boxes.clip_boxes). dh / wh and dw / ww are clamped at `scale_clamp` before exp().
    """
    deltas = jnp.asarray(deltas, jnp.float32)
    anchors = jnp.asarray(anchors, jnp.float32)
    wy, wx, wh, ww = weights
    cy_a, cx_a, h_a, w_a = _centres_sizes(anchors)
    cy = deltas[..., 0] / wy * h_a + cy_a
    cx = deltas[..., 1] / wx * w_a + cx_a
    h = jnp.exp(jnp.minimum(deltas[..., 2] / wh, scale_clamp)) * h_a
    w = jnp.exp(jnp.minimum(deltas[..., 3] / ww, scale_clamp)) * w_a
    return jnp.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)

"""Box geometry: area, pairwise IoU, clipping, degenerate boxes.

Boxes are float32 [y0, x0, y1, x1] in pixel coordinates of the (padded) input image, continuous
coordinates where pixel (i, j) covers [i, i+1) x [j, j+1): the box of a mask whose rows are
y0..y1-1 is [y0, x0, y1, x1], and its area is the number of pixels of that rectangle. Shapes are
static; padded entries carry a `valid` bool mask.

Degenerate boxes (y1 <= y0 or x1 <= x0) have area 0 and IoU 0 with everything, themselves
included; no function here returns NaN for them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# IoU given to pairs that involve a padded (invalid) box. Below every real IoU (>= 0), so a
# max over a row never picks a padded column unless all columns are padded, and below any
# negative threshold of a matcher.
INVALID_IOU = -1.0


def heights_widths(boxes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """boxes: (..., 4) [y0, x0, y1, x1] -> (height, width), each (...,), clamped at 0."""
    boxes = jnp.asarray(boxes, jnp.float32)
    height = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    width = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return height, width


def area(boxes: jax.Array) -> jax.Array:
    """boxes: (..., 4) [y0, x0, y1, x1] pixels -> (...,) float32 area, 0 for degenerate boxes."""
    height, width = heights_widths(boxes)
    return height * width


def pairwise_iou(
    boxes_a: jax.Array,
    boxes_b: jax.Array,
    valid_a: jax.Array | None = None,
    valid_b: jax.Array | None = None,
    invalid_value: float = INVALID_IOU,
) -> jax.Array:
    """Intersection over union of every pair.

    boxes_a: (N, 4), boxes_b: (M, 4) float32 [y0, x0, y1, x1] pixels.
    valid_a: (N,) bool, valid_b: (M,) bool, or None (all valid).
    Returns (N, M) float32 in [0, 1] for valid pairs; `invalid_value` (default -1) where either
    box is padding. A pair with zero union (two degenerate boxes) has IoU 0, never NaN.
    """
    boxes_a = jnp.asarray(boxes_a, jnp.float32)
    boxes_b = jnp.asarray(boxes_b, jnp.float32)
    a = boxes_a[:, None, :]
    b = boxes_b[None, :, :]
    inter_h = jnp.maximum(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0)
    inter_w = jnp.maximum(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0)
    # A crossed box (y1 < y0) gives a negative overlap extent, clamped to 0 above, so the
    # intersection never exceeds either area.
    inter = inter_h * inter_w
    union = area(boxes_a)[:, None] + area(boxes_b)[None, :] - inter
    iou = jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)
    valid = jnp.ones(iou.shape, bool)
    if valid_a is not None:
        valid = valid & jnp.asarray(valid_a, bool)[:, None]
    if valid_b is not None:
        valid = valid & jnp.asarray(valid_b, bool)[None, :]
    return jnp.where(valid, iou, invalid_value)


def clip_boxes(boxes: jax.Array, image_shape) -> jax.Array:
    """Clip boxes to the image [0, H] x [0, W].

    boxes: (..., 4) [y0, x0, y1, x1] pixels; image_shape: (H, W) ints, or a (2,) array (for
    example the true size of each image inside a padded batch, under vmap).
    Returns (..., 4) float32. A box entirely outside the image becomes degenerate (area 0).
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    height = jnp.asarray(image_shape[0], jnp.float32)
    width = jnp.asarray(image_shape[1], jnp.float32)
    upper = jnp.stack([height, width, height, width])
    return jnp.clip(boxes, 0.0, upper)


def nondegenerate(boxes: jax.Array, min_size: float = 0.0) -> jax.Array:
    """boxes: (..., 4) -> (...,) bool, True where height > min_size and width > min_size.

    Non-finite boxes (for example decoded from an overflowing delta) count as degenerate.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    finite = jnp.all(jnp.isfinite(boxes), axis=-1)
    return finite & (height > min_size) & (width > min_size)

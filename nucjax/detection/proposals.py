"""RPN outputs -> a fixed number of region proposals (detectron2's find_top_rpn_proposals).

Boxes are float32 [y0, x0, y1, x1] in pixel coordinates of the (padded) input image, continuous
coordinates where pixel (i, j) covers [i, i+1) x [j, j+1). One image at a time (vmap over the
batch); every shape is static, so fewer surviving proposals means more padding (valid False).

Per level: the pre_nms_top_k anchors by objectness are decoded and clipped to the image, and
boxes with a side <= min_size (or non-finite) are dropped. NMS then runs per level (boxes of
different levels never suppress each other, as in detectron2) in one batched pass, keeping the
post_nms_top_k best over all levels. Proposals carry no gradient (detectron2 detaches them).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from nucjax.detection import box_coding, nms
from nucjax.detection import boxes as box_ops


def generate_proposals(
    anchors: jax.Array,
    objectness_logits: jax.Array,
    deltas: jax.Array,
    level_counts: Sequence[int],
    image_shape,
    pre_nms_top_k: int,
    post_nms_top_k: int,
    nms_threshold: float,
    min_size: float = 0.0,
    weights: Sequence[float] = box_coding.RPN_BOX_WEIGHTS,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Top RPN proposals of one image.

    anchors: (A, 4) float32 (anchors.multilevel_anchors); objectness_logits: (A,) float;
    deltas: (A, 4) [dy, dx, dh, dw]; level_counts: per-level anchor counts (static ints, sum A);
    image_shape: (H, W) ints or a (2,) array (the true image size inside padding), for clipping.
    Returns boxes (K, 4) float32, logits (K,) float32 in descending order, valid (K,) bool,
    with K = post_nms_top_k.
    """
    if sum(level_counts) != anchors.shape[0]:
        raise ValueError(f"level counts {tuple(level_counts)} do not sum to {anchors.shape[0]}")
    logits = jax.lax.stop_gradient(jnp.asarray(objectness_logits, jnp.float32))
    deltas = jax.lax.stop_gradient(jnp.asarray(deltas, jnp.float32))
    anchors = jnp.asarray(anchors, jnp.float32)
    boxes, scores, levels = [], [], []
    start = 0
    for level, count in enumerate(level_counts):
        top = min(pre_nms_top_k, count)
        level_logits, index = jax.lax.top_k(logits[start : start + count], top)
        index = index + start
        boxes.append(box_coding.decode(deltas[index], anchors[index], weights))
        scores.append(level_logits)
        levels.append(jnp.full((top,), level, jnp.int32))
        start += count
    boxes = box_ops.clip_boxes(jnp.concatenate(boxes), image_shape)
    scores = jnp.concatenate(scores)
    levels = jnp.concatenate(levels)
    valid = box_ops.nondegenerate(boxes, min_size) & jnp.isfinite(scores)
    keep, keep_valid = nms.batched_nms(boxes, scores, levels, valid, nms_threshold, post_nms_top_k)
    out_boxes = jnp.where(keep_valid[:, None], boxes[keep], 0.0)
    out_scores = jnp.where(keep_valid, scores[keep], -jnp.inf)
    return out_boxes, out_scores, keep_valid

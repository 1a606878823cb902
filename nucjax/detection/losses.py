"""The five Mask R-CNN losses, each a (sum, count) pair for one image.

Boxes are float32 [y0, x0, y1, x1] in pixel coordinates of the (padded) input image, pixel (i, j)
covering [i, i+1) x [j, j+1); losses see them only as box_coding deltas. Shapes are static and
padded entries are masked, never sliced away.

Every loss returns (sum, count), float32 scalars, so the trainer sums both over images and
devices and divides once: loss = sum(sums) / max(sum(counts), 1). A count can be 0 (no sampled
anchors, no positive ROI); the sum is then 0 and the loss 0 after the max(count, 1), never NaN.
Normalisers follow detectron2:
  RPN objectness, RPN box:    count = sampled anchors (positives and negatives). The box loss
                              sums over positives only but divides by all sampled anchors, so
                              that each positive weighs the same whatever the positive share.
  box classification, box regression: count = sampled ROIs (valid slots), for the same reason.
  mask:                       count = positive ROIs * M * M: the mean per-pixel BCE over the
                              positive ROIs' M x M masks (detectron2's reduction="mean").
Masked entries go through jnp.where, not a multiplication, so garbage (even inf) in padded
targets cannot reach the sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SumCount = tuple[jax.Array, jax.Array]


def smooth_l1(diff: jax.Array, beta: float) -> jax.Array:
    """Elementwise smooth L1 (Huber / beta): 0.5 d^2 / beta for |d| < beta, else |d| - beta / 2.
    beta = 0 is plain L1 (detectron2's default for both box losses)."""
    absolute = jnp.abs(diff)
    if beta <= 0:
        return absolute
    return jnp.where(absolute < beta, 0.5 * diff * diff / beta, absolute - 0.5 * beta)


def sigmoid_bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Elementwise binary cross-entropy on logits, stable for large |logits|."""
    logits = jnp.asarray(logits, jnp.float32)
    return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def _masked_sum(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask, values, 0.0))


def rpn_objectness_loss(logits: jax.Array, objectness: jax.Array, sampled: jax.Array) -> SumCount:
    """Sigmoid BCE over sampled anchors.

    logits: (A,) float; objectness: (A,) float32 targets in {0, 1}; sampled: (A,) bool.
    Returns (sum of BCE over sampled anchors, number of sampled anchors).
    """
    sampled = jnp.asarray(sampled, bool)
    targets = jnp.where(sampled, objectness, 0.0)
    total = _masked_sum(sigmoid_bce(logits, targets), sampled)
    return total, jnp.sum(sampled).astype(jnp.float32)


def _box_loss(pred, target, positive, counted, beta) -> SumCount:
    positive = jnp.asarray(positive, bool)
    target = jnp.where(positive[:, None], target, 0.0)
    per_box = jnp.sum(smooth_l1(jnp.asarray(pred, jnp.float32) - target, beta), axis=-1)
    return _masked_sum(per_box, positive), jnp.sum(jnp.asarray(counted, bool)).astype(jnp.float32)


def rpn_box_loss(
    pred_deltas: jax.Array,
    target_deltas: jax.Array,
    positive: jax.Array,
    sampled: jax.Array,
    beta: float = 0.0,
) -> SumCount:
    """Smooth L1 (L1 at beta=0) of RPN deltas on positive sampled anchors.

    pred_deltas, target_deltas: (A, 4) [dy, dx, dh, dw]; positive, sampled: (A,) bool.
    Returns (sum over positives of the 4 coordinates' loss, number of sampled anchors).
    """
    return _box_loss(pred_deltas, target_deltas, positive, sampled, beta)


def box_classification_loss(logits: jax.Array, classes: jax.Array, valid: jax.Array) -> SumCount:
    """Softmax cross-entropy of the box head over sampled ROIs.

    logits: (S, K) float, K = 2 (0 background, 1 nucleus); classes: (S,) int32; valid: (S,)
    bool. Returns (sum of CE over valid ROIs, number of valid ROIs).
    """
    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    valid = jnp.asarray(valid, bool)
    classes = jnp.where(valid, classes, 0)
    picked = jnp.take_along_axis(log_probs, classes[:, None], axis=-1)[:, 0]
    return _masked_sum(-picked, valid), jnp.sum(valid).astype(jnp.float32)


def box_regression_loss(
    pred_deltas: jax.Array,
    target_deltas: jax.Array,
    positive: jax.Array,
    valid: jax.Array,
    beta: float = 0.0,
) -> SumCount:
    """Smooth L1 (L1 at beta=0) of box-head deltas on positive ROIs.

    pred_deltas, target_deltas: (S, 4) (class-agnostic: one foreground class); positive,
    valid: (S,) bool. Returns (sum over positives, number of valid sampled ROIs).
    """
    return _box_loss(pred_deltas, target_deltas, positive, valid, beta)


def mask_loss(logits: jax.Array, targets: jax.Array, positive: jax.Array) -> SumCount:
    """Per-pixel sigmoid BCE of the mask head on positive ROIs.

    logits: (R, M, M) float (the nucleus-class mask); targets: (R, M, M) float32 in [0, 1]
    (targets.mask_targets); positive: (R,) bool. Returns (sum over positive ROIs' pixels,
    number of positive ROIs * M * M).
    """
    positive = jnp.asarray(positive, bool)
    mask = jnp.broadcast_to(positive[:, None, None], jnp.shape(logits))
    targets = jnp.where(mask, targets, 0.0)
    total = _masked_sum(sigmoid_bce(logits, targets), mask)
    return total, jnp.sum(mask).astype(jnp.float32)

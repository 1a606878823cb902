"""Training targets for Mask R-CNN: ground truth from a label image, RPN, box-head and mask
targets, each with static shapes.

Boxes are float32 [y0, x0, y1, x1] in pixel coordinates of the (padded) input image, continuous
coordinates where pixel (i, j) covers [i, i+1) x [j, j+1): the box of a mask whose rows are
y0..y1-1 and columns x0..x1-1 is [y0, x0, y1, x1]. Variable-length sets are padded with a
`valid` mask; one image at a time (vmap over the batch); randomness through explicit keys.

Ground truth comes straight from the (H, W) int32 instance label image (0 background, 1..N
nuclei, -1 unlabelled): instance id k occupies slot k - 1 of G = max_instances padded slots, so
no (G, H, W) mask stack is ever built. Ids > G are dropped (relabel ids to 1..N upstream if an
image may hold more than G); slots whose id is absent (for example cropped away) are invalid.
Unlabelled pixels (-1) belong to no instance, so they read as background in mask targets.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nucjax.detection import box_coding, matching, sampling
from nucjax.detection.roi_align import roi_align_masks

MASK_SIZE = 28


def instance_boxes(label: jax.Array, max_instances: int) -> tuple[jax.Array, jax.Array]:
    """Tight boxes of the instances of a label image.

    label: (H, W) int, id k in 1..max_instances -> slot k - 1. Returns boxes (G, 4) float32
    [y0, x0, y1, x1] pixels (y1, x1 one past the last row/column; zeros for empty slots) and
    valid (G,) bool. Cost O(H * W), not O(G * H * W).
    """
    label = jnp.asarray(label)
    height, width = label.shape
    inside = (label >= 1) & (label <= max_instances)
    segment = jnp.where(inside, label - 1, max_instances).reshape(-1)  # slot G: everything else
    rows = jnp.broadcast_to(jnp.arange(height)[:, None], label.shape).reshape(-1)
    cols = jnp.broadcast_to(jnp.arange(width)[None, :], label.shape).reshape(-1)
    num = max_instances + 1
    y0 = jax.ops.segment_min(rows, segment, num)[:max_instances]
    x0 = jax.ops.segment_min(cols, segment, num)[:max_instances]
    y1 = jax.ops.segment_max(rows, segment, num)[:max_instances] + 1
    x1 = jax.ops.segment_max(cols, segment, num)[:max_instances] + 1
    count = jax.ops.segment_sum(jnp.ones_like(rows), segment, num)[:max_instances]
    valid = count > 0
    boxes = jnp.stack([y0, x0, y1, x1], axis=1).astype(jnp.float32)
    return jnp.where(valid[:, None], boxes, 0.0), valid


class RpnTargets(NamedTuple):
    """Dense per-anchor RPN targets, A anchors.

    objectness: (A,) float32, 1 for positive anchors, 0 otherwise.
    sampled: (A,) bool, the anchors that carry objectness loss (positives + negatives drawn).
    positive: (A,) bool, the sampled positives: the anchors that carry box loss.
    deltas: (A, 4) float32 box_coding.encode(matched gt, anchor) (meaningful where positive).
    """

    objectness: jax.Array
    sampled: jax.Array
    positive: jax.Array
    deltas: jax.Array


def rpn_targets(
    key: jax.Array,
    anchors: jax.Array,
    gt_boxes: jax.Array,
    gt_valid: jax.Array,
    num_samples: int,
    positive_fraction: float,
    weights=box_coding.RPN_BOX_WEIGHTS,
    anchor_valid: jax.Array | None = None,
) -> RpnTargets:
    """Match anchors to ground truth (0.7 / 0.3, low-quality matches), sample, encode.

    key: PRNG key; anchors: (A, 4); gt_boxes: (G, 4); gt_valid: (G,) bool; anchor_valid:
    (A,) bool or None. Zero valid gt -> every sampled anchor is negative.
    """
    anchors = jnp.asarray(anchors, jnp.float32)
    matched, labels = matching.match_anchors(anchors, gt_boxes, gt_valid, anchor_valid)
    index, valid = sampling.sample_balanced(key, labels, num_samples, positive_fraction)
    sampled = jnp.zeros(labels.shape, bool).at[index].max(valid)
    positive = sampled & (labels == matching.POSITIVE)
    deltas = box_coding.encode(jnp.asarray(gt_boxes, jnp.float32)[matched], anchors, weights)
    return RpnTargets(positive.astype(jnp.float32), sampled, positive, deltas)


class RoiTargets(NamedTuple):
    """S sampled regions of interest for the box and mask heads (positives first).

    rois: (S, 4) float32 boxes to pool features from (no gradient).
    valid: (S,) bool, False for padding slots (too few candidates).
    positive: (S,) bool, foreground ROIs (all within the first sampling.max_positives slots).
    classes: (S,) int32, 1 nucleus for positives, 0 background otherwise.
    deltas: (S, 4) float32 encode(matched gt, roi) with ROI weights (meaningful where positive).
    gt_index: (S,) int32 matched gt slot; the instance id in the label image is gt_index + 1.
    """

    rois: jax.Array
    valid: jax.Array
    positive: jax.Array
    classes: jax.Array
    deltas: jax.Array
    gt_index: jax.Array


def roi_targets(
    key: jax.Array,
    proposals: jax.Array,
    proposal_valid: jax.Array,
    gt_boxes: jax.Array,
    gt_valid: jax.Array,
    num_samples: int,
    positive_fraction: float,
    weights=box_coding.ROI_BOX_WEIGHTS,
    append_gt_boxes: bool = True,
) -> RoiTargets:
    """Match proposals to ground truth (IoU >= 0.5 foreground, else background) and sample.

    key: PRNG key; proposals: (P, 4) with proposal_valid (P,) bool; gt_boxes: (G, 4) with
    gt_valid (G,) bool. With append_gt_boxes the valid gt boxes join the candidates (as in
    detectron2), so early in training, when proposals are poor, the heads still see
    positives. Returns RoiTargets with S = num_samples.
    """
    proposals = jax.lax.stop_gradient(jnp.asarray(proposals, jnp.float32))
    gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
    proposal_valid = jnp.asarray(proposal_valid, bool)
    if append_gt_boxes:
        proposals = jnp.concatenate([proposals, gt_boxes], axis=0)
        proposal_valid = jnp.concatenate([proposal_valid, jnp.asarray(gt_valid, bool)])
    matched, labels = matching.match_proposals(proposals, gt_boxes, gt_valid, proposal_valid)
    index, valid = sampling.sample_balanced(key, labels, num_samples, positive_fraction)
    rois = proposals[index]
    gt_index = matched[index]
    positive = valid & (labels[index] == matching.POSITIVE)
    deltas = box_coding.encode(gt_boxes[gt_index], rois, weights)
    classes = positive.astype(jnp.int32)
    return RoiTargets(rois, valid, positive, classes, deltas, gt_index)


def mask_targets(
    label: jax.Array,
    rois: jax.Array,
    gt_index: jax.Array,
    mask_size: int = MASK_SIZE,
    sampling_ratio: int = 2,
    threshold: float | None = 0.5,
) -> jax.Array:
    """Mask-head targets: the matched instance's mask, ROI-aligned into each ROI.

    label: (H, W) int instance ids; rois: (R, 4) float32 [y0, x0, y1, x1] pixels; gt_index:
    (R,) int32 gt slot (instance id gt_index + 1). The binary mask of that instance is
    resampled by ROI Align (aligned=True, stride 1) to mask_size x mask_size and, with a
    threshold, binarised (>= threshold -> 1), as detectron2 does; threshold=None keeps the
    soft fraction. Returns (R, mask_size, mask_size) float32.
    With the half-pixel offset, an instance that fills its own box of side h reads
    0.5 + h / (2 M) (when below 1) on the outer ring of cells, per axis; the corner cells of
    small nuclei (h < 0.41 M, 11.6 px at M = 28) therefore fall below 0.5 and are dropped,
    exactly as with detectron2's BitMasks.crop_and_resize.
    """
    ids = jnp.asarray(gt_index, jnp.int32) + 1
    soft = roi_align_masks(label, rois, ids, mask_size, sampling_ratio)
    if threshold is None:
        return soft
    return (soft >= threshold).astype(jnp.float32)

"""Decoding Mask R-CNN outputs: box-head outputs -> detections, masks -> instance labels.

Boxes are float32 [y0, x0, y1, x1] in pixel coordinates of the (padded) input image, continuous
coordinates where pixel (i, j) covers [i, i+1) x [j, j+1): pixel (i, j) has its centre at
(i + 0.5, j + 0.5). Detections are padded to a static max_detections with a `valid` mask.

Mask pasting follows detectron2's paste_masks_in_image (grid_sample, align_corners=False, zero
padding): an M x M mask spans its box exactly, mask cell (a, b) centred at
(y0 + (a + 0.5) h / M, x0 + (b + 0.5) w / M), and image pixel centres are bilinearly
interpolated with zeros beyond the mask's edge. Bilinear interpolation with zero padding is
separable, so pasting is two small matrix products: Wy (H, M) @ mask (M, M) @ Wx (M, W)^T, with
Wy[y, a] = max(0, 1 - |u(y) - a|), u(y) = (y + 0.5 - y0) * M / h - 0.5. An all-ones mask
thresholded at 0.5 gives exactly the pixels whose centre lies in the box (edges included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nucjax.detection import box_coding, nms
from nucjax.detection import boxes as box_ops


class Detections(NamedTuple):
    """D = max_detections detections, in descending score order, padded.

    boxes: (D, 4) float32; scores: (D,) float32 (0 in padding); index: (D,) int32 into the
    candidates; valid: (D,) bool.
    """

    boxes: jax.Array
    scores: jax.Array
    index: jax.Array
    valid: jax.Array


def select_detections(
    boxes: jax.Array,
    scores: jax.Array,
    valid: jax.Array,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> Detections:
    """Score threshold (score > threshold), class-agnostic NMS, cap at max_detections.

    boxes: (N, 4) float32 pixels; scores: (N,) float32 probabilities; valid: (N,) bool.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    scores = jnp.asarray(scores, jnp.float32)
    keep = jnp.asarray(valid, bool) & (scores > score_threshold) & box_ops.nondegenerate(boxes)
    index, out_valid = nms.nms(boxes, scores, keep, iou_threshold, max_detections)
    return Detections(
        jnp.where(out_valid[:, None], boxes[index], 0.0),
        jnp.where(out_valid, scores[index], 0.0),
        index,
        out_valid,
    )


def box_head_detections(
    rois: jax.Array,
    roi_valid: jax.Array,
    class_logits: jax.Array,
    box_deltas: jax.Array,
    image_shape,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    weights: Sequence[float] = box_coding.ROI_BOX_WEIGHTS,
) -> Detections:
    """Box-head outputs -> final detections of one image.

    rois: (R, 4) proposals; roi_valid: (R,) bool; class_logits: (R, 2) (background, nucleus);
    box_deltas: (R, 4) class-agnostic; image_shape: (H, W) or (2,) array, for clipping.
    The nucleus probability softmax(logits)[:, 1] is the score.
    """
    boxes = box_coding.decode(box_deltas, rois, weights)
    boxes = box_ops.clip_boxes(boxes, image_shape)
    scores = jax.nn.softmax(jnp.asarray(class_logits, jnp.float32), axis=-1)[:, 1]
    return select_detections(
        boxes, scores, roi_valid, score_threshold, iou_threshold, max_detections
    )


def _paste_weights(start, extent, mask_size: int, length: int, xp):
    """(..., length, M) bilinear weights of the M mask cells at pixel centres 0.5 .. length-0.5."""
    extent = xp.maximum(extent, 1e-6)  # a degenerate box pastes to nothing
    centres = xp.arange(length, dtype=np.float32) + 0.5
    u = (centres - start[..., None]) * (mask_size / extent[..., None]) - 0.5  # (..., length)
    cells = xp.arange(mask_size, dtype=np.float32)
    return xp.maximum(0.0, 1.0 - xp.abs(u[..., None] - cells))


def paste_masks(
    masks: jax.Array, boxes: jax.Array, valid: jax.Array, image_shape: Sequence[int]
) -> jax.Array:
    """Paste M x M mask probabilities back into the full image.

    masks: (N, M, M) float probabilities; boxes: (N, 4) float32 pixels; valid: (N,) bool;
    image_shape: (H, W) static ints. Returns (N, H, W) float32 probabilities, 0 for invalid
    detections. Memory is N * H * W floats: for 1000 detections on a 1024^2 image prefer
    instances_from_detections, which pastes box by box.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    masks = jnp.asarray(masks, jnp.float32)
    boxes = jnp.asarray(boxes, jnp.float32)
    size = masks.shape[-1]
    wy = _paste_weights(boxes[:, 0], boxes[:, 2] - boxes[:, 0], size, height, jnp)
    wx = _paste_weights(boxes[:, 1], boxes[:, 3] - boxes[:, 1], size, width, jnp)
    pasted = jnp.einsum("nya,nab,nxb->nyx", wy, masks, wx)
    return jnp.where(jnp.asarray(valid, bool)[:, None, None], pasted, 0.0)


def instances_from_detections(
    masks: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    valid: np.ndarray,
    image_shape: Sequence[int],
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping instances from detections: numpy, box by box, in O(H * W) memory.

    masks: (N, M, M) probabilities; boxes: (N, 4) pixels; scores, valid: (N,); image_shape
    (H, W). Detections are visited in descending score (stable), each claiming the pixels of
    its pasted mask (paste_masks) that are >= threshold and not already claimed: a pixel goes
    to the highest-scoring detection that covers it. Returns label
    (H, W) int32 with ids 1..K in descending score order (detections left with no pixel are
    dropped) and scores (K,) float32: the nucjax.models.spec.Instances contract.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    label = np.zeros((height, width), np.int32)
    kept: list[float] = []
    for n in np.argsort(-scores, kind="stable"):
        if not valid[n]:
            continue
        wy = _paste_weights(boxes[n, 0], boxes[n, 2] - boxes[n, 0], masks.shape[-1], height, np)
        wx = _paste_weights(boxes[n, 1], boxes[n, 3] - boxes[n, 1], masks.shape[-1], width, np)
        rows = np.flatnonzero(wy.any(axis=1))
        cols = np.flatnonzero(wx.any(axis=1))
        if rows.size == 0 or cols.size == 0:
            continue
        rs = slice(rows[0], rows[-1] + 1)
        cs = slice(cols[0], cols[-1] + 1)
        window = (wy[rs] @ masks[n] @ wx[cs].T) >= threshold
        claim = window & (label[rs, cs] == 0)
        if claim.any():
            kept.append(float(scores[n]))
            label[rs, cs][claim] = len(kept)
    return label, np.asarray(kept, np.float32)

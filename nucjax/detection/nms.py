"""Greedy non-maximum suppression with a static maximum output, jit- and vmap-compatible.

Boxes are float32 [y0, x0, y1, x1] in pixel coordinates of the (padded) input image, continuous
coordinates where pixel (i, j) covers [i, i+1) x [j, j+1). Inputs are padded to N with a
`valid` mask; the output is padded to max_output with its own `valid` mask.

Algorithm: a while_loop of at most max_output steps. Each step takes the highest-scoring
candidate still alive (argmax; ties go to the lower index, as a stable sort would), records it,
and kills every candidate whose IoU with it is > iou_threshold (torchvision's strict >) together
with itself. The loop stops early once no candidate is alive. Cost O(max_output * N), memory
O(N): no N x N IoU matrix, so N ~ 10k candidates with max_output ~ 1000 is cheap on a CPU.
The result is exactly that of the textbook greedy NMS over candidates sorted by score.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nucjax.detection import boxes as box_ops


def _iou_one_to_many(box: jax.Array, boxes: jax.Array, areas: jax.Array) -> jax.Array:
    inter_h = jnp.maximum(jnp.minimum(box[2], boxes[:, 2]) - jnp.maximum(box[0], boxes[:, 0]), 0)
    inter_w = jnp.maximum(jnp.minimum(box[3], boxes[:, 3]) - jnp.maximum(box[1], boxes[:, 1]), 0)
    inter = inter_h * inter_w
    union = box_ops.area(box) + areas - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def nms(
    boxes: jax.Array,
    scores: jax.Array,
    valid: jax.Array,
    iou_threshold: float,
    max_output: int,
) -> tuple[jax.Array, jax.Array]:
    """Class-agnostic greedy NMS.

    boxes: (N, 4) float32 [y0, x0, y1, x1] pixels; scores: (N,) float32 (logits or
    probabilities); valid: (N,) bool. Padded candidates, and those scored -inf or NaN, are
    never selected.
    Returns selected (max_output,) int32 indices into [0, N) in descending score order (0 in
    padding slots) and valid (max_output,) bool.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    scores = jnp.asarray(scores, jnp.float32)
    num = boxes.shape[0]
    if num == 0 or max_output == 0:
        return jnp.zeros((max_output,), jnp.int32), jnp.zeros((max_output,), bool)
    dead = -jnp.inf
    alive = jnp.asarray(valid, bool) & ~jnp.isnan(scores)
    alive_scores = jnp.where(alive, scores, dead)
    areas = box_ops.area(boxes)
    positions = jnp.arange(num)

    # The loop carries the argmax of the alive scores, so each step scans the N scores once
    # for the IoU update and once for the next argmax, and the stop test is one lookup.
    def cond(state):
        step, alive_scores, _, best = state
        return (step < max_output) & (alive_scores[best] > dead)

    def body(state):
        step, alive_scores, selected, best = state
        selected = selected.at[step].set(best)
        suppressed = _iou_one_to_many(boxes[best], boxes, areas) > iou_threshold
        alive_scores = jnp.where(suppressed | (positions == best), dead, alive_scores)
        return step + 1, alive_scores, selected, jnp.argmax(alive_scores).astype(jnp.int32)

    # zeros_like, not zeros: under shard_map the carry must vary over the mesh axes as the
    # scores do, or while_loop rejects the body's (varying) output as a different type.
    init = (
        jnp.int32(0),
        alive_scores,
        jnp.zeros_like(alive_scores, jnp.int32, shape=(max_output,)),
        jnp.argmax(alive_scores).astype(jnp.int32),
    )
    count, _, selected, _ = jax.lax.while_loop(cond, body, init)
    out_valid = jnp.arange(max_output) < count
    return jnp.where(out_valid, selected, 0), out_valid


def batched_nms(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array,
    valid: jax.Array,
    iou_threshold: float,
    max_output: int,
) -> tuple[jax.Array, jax.Array]:
    """Per-class NMS in one pass: boxes of different classes never suppress each other.

    Same as nms() with classes: (N,) int32 (a class, or an FPN level for per-level proposal
    NMS). Boxes are shifted by class * (extent of all boxes + 1) so that boxes of different
    classes cannot overlap (torchvision's trick); the selection is the union of per-class NMS,
    in descending score order, cut at max_output.
    Returns selected (max_output,) int32 and valid (max_output,) bool.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    valid = jnp.asarray(valid, bool)
    finite = jnp.where(valid[:, None] & jnp.isfinite(boxes), boxes, 0.0)
    span = jnp.max(finite) - jnp.min(finite) + 1.0
    shifted = boxes + (jnp.asarray(classes).astype(jnp.float32) * span)[:, None]
    return nms(shifted, scores, valid, iou_threshold, max_output)

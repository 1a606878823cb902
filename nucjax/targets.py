"""Instance labels -> the targets each network learns: three-class, binary + weights, instances.

Every function here is pure jax.numpy with static shapes, so it runs inside the jitted training
step, under vmap, and on numpy input. Labels follow the host batch contract
(nucjax.models.spec): int32 instance ids, 0 background, > 0 nuclei (ids need not be
contiguous: crops keep arbitrary ids), -1 "not labelled" (padding, tiles past an edge).

Neighbourhoods are the 8-connected 3x3 window. Pixels outside the image and pixels labelled -1
are "unknown": they never make a pixel a border, because we cannot tell what lies there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

BACKGROUND, INTERIOR, BORDER = 0, 1, 2
UNLABELLED = -1
_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def _neighbours(label: jax.Array, fill: int) -> list[jax.Array]:
    """The 8 shifted copies of label (..., H, W); positions outside the image read `fill`."""
    pad = [(0, 0)] * (label.ndim - 2) + [(1, 1), (1, 1)]
    padded = jnp.pad(label, pad, constant_values=fill)
    h, w = label.shape[-2:]
    return [padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _OFFSETS]


def nucleus_border(label: jax.Array) -> jax.Array:
    """(..., H, W) bool: nucleus pixels with a differently labelled, known 3x3 neighbour.

    "Differently labelled" is background or another nucleus; a neighbour labelled -1 or outside
    the image does not count.
    """
    label = jnp.asarray(label, jnp.int32)
    border = jnp.zeros(label.shape, bool)
    for neighbour in _neighbours(label, UNLABELLED):
        border |= (neighbour != UNLABELLED) & (neighbour != label)
    return border & (label > 0)


def separating_gap(label: jax.Array) -> jax.Array:
    """(..., H, W) bool: background pixels whose 3x3 neighbourhood holds two different nuclei.

    These are the thin background lines between touching nuclei that a binary network must
    learn to keep, or touching nuclei merge into one.
    """
    label = jnp.asarray(label, jnp.int32)
    big = jnp.iinfo(jnp.int32).max
    smallest = jnp.full(label.shape, big, jnp.int32)
    largest = jnp.zeros(label.shape, jnp.int32)
    for neighbour in _neighbours(label, UNLABELLED):
        nucleus = neighbour > 0
        smallest = jnp.minimum(smallest, jnp.where(nucleus, neighbour, big))
        largest = jnp.maximum(largest, jnp.where(nucleus, neighbour, 0))
    return (label == 0) & (largest > 0) & (smallest < largest)


def three_class_targets(label: jax.Array) -> jax.Array:
    """Classes for the three-class network: 0 background, 1 nucleus interior, 2 nucleus border.

    label: (..., H, W) int instance ids. Returns (..., H, W) int32. A nucleus pixel is border
    when any pixel of its 3x3 neighbourhood inside the image has a different label (background
    or another nucleus); -1 neighbours do not make a border. Pixels labelled -1 get class 0;
    pixel_weights masks them out of the loss.
    """
    label = jnp.asarray(label, jnp.int32)
    classes = jnp.where(label > 0, INTERIOR, BACKGROUND)
    return jnp.where(nucleus_border(label), BORDER, classes).astype(jnp.int32)


def pixel_weights(label: jax.Array) -> jax.Array:
    """(..., H, W) float32: 1 where the pixel is labelled (label >= 0), else 0."""
    return (jnp.asarray(label) >= 0).astype(jnp.float32)


def binary_targets(label: jax.Array, border_weight: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """Foreground targets and per-pixel loss weights for the binary (nucleus vs not) network.

    label: (..., H, W) int instance ids. Returns (foreground, weight), both (..., H, W) float32:
      foreground = 1 where label > 0;
      weight = pixel_weights(label) * (1 + border_weight * (nucleus_border | separating_gap)),
    i.e. nucleus pixels on their nucleus's edge and background pixels touching two different
    nuclei weigh 1 + border_weight, other labelled pixels 1, unlabelled pixels 0. This stands in
    for the U-Net paper's distance-based weight map at the cost of a few 3x3 comparisons.
    """
    label = jnp.asarray(label, jnp.int32)
    foreground = (label > 0).astype(jnp.float32)
    emphasised = (nucleus_border(label) | separating_gap(label)).astype(jnp.float32)
    weight = pixel_weights(label) * (1.0 + border_weight * emphasised)
    return foreground, weight


def padded_instances(label: jax.Array, max_instances: int) -> dict[str, jax.Array]:
    """The nuclei of one label image as a fixed number K = max_instances of boxes and masks.

    label: (H, W) int instance ids (any positive ids; 0 and -1 are not instances; ids below
        2**31 - 1). vmap it for a batch.
    Returns a dict:
      boxes: (K, 4) float32, y0 x0 y1 x1 in pixels, y1 and x1 exclusive (rows y0..y1-1);
             zeros for invalid slots
      masks: (K, H, W) bool
      valid: (K,) bool
      num_instances: () int32, the number of distinct nuclei before truncation
      num_truncated: () int32, max(num_instances - K, 0)
    Slots are filled in increasing id order; when there are more than K nuclei the ones with the
    largest ids are dropped (for a crop that is arbitrary but deterministic) and counted in
    num_truncated; log it on the host with log_truncation, truncation is never silent.
    """
    label = jnp.asarray(label, jnp.int32)
    height, width = label.shape
    none = jnp.iinfo(jnp.int32).max
    # One sort gives both the distinct ids in order and their count (jnp.unique with a size
    # would sort again to count what it truncated).
    ordered = jnp.sort(jnp.where(label > 0, label, none).ravel())
    first = jnp.concatenate([jnp.ones(1, bool), ordered[1:] != ordered[:-1]]) & (ordered != none)
    rank = jnp.cumsum(first) - 1
    slot = jnp.where(first & (rank < max_instances), rank, max_instances)
    ids = jnp.full(max_instances, none, jnp.int32).at[slot].set(ordered, mode="drop")
    valid = ids != none
    masks = (label[None] == ids[:, None, None]) & valid[:, None, None]
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    y0 = jnp.argmax(rows, axis=1)
    y1 = height - jnp.argmax(rows[:, ::-1], axis=1)
    x0 = jnp.argmax(cols, axis=1)
    x1 = width - jnp.argmax(cols[:, ::-1], axis=1)
    boxes = jnp.stack([y0, x0, y1, x1], axis=1).astype(jnp.float32)
    num_instances = jnp.sum(first, dtype=jnp.int32)
    return {
        "boxes": jnp.where(valid[:, None], boxes, 0.0),
        "masks": masks,
        "valid": valid,
        "num_instances": num_instances,
        "num_truncated": jnp.maximum(num_instances - max_instances, 0),
    }


def log_truncation(num_truncated, *, where: str = "") -> int:
    """Host side: log a warning when any nucleus was dropped by padded_instances.

    num_truncated: scalar or array (per example, per device) of counts, numpy or jax.
    Returns the total number dropped.
    """
    total = int(np.sum(np.asarray(jax.device_get(num_truncated))))
    if total > 0:
        suffix = f" ({where})" if where else ""
        logging.warning(
            "padded_instances dropped %d nuclei beyond max_instances%s; raise "
            "config.data.max_instances to keep them",
            total,
            suffix,
        )
    return total

"""Instance labels -> the per-pixel targets each semantic network learns: three-class, binary.

Every function here is pure jax.numpy with static shapes, so it runs inside the jitted training
step, under vmap, and on numpy input. Labels follow the host batch contract
(nucjax.models.spec): int32 instance ids, 0 background, > 0 nuclei (ids need not be
contiguous: crops keep arbitrary ids), -1 "not labelled" (padding around small images).

Neighbourhoods are the 8-connected 3x3 window. Pixels outside the image and pixels labelled -1
are "unknown": they never make a pixel a border, because we cannot tell what lies there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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

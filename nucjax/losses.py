"""Pixel losses as (sum, count) pairs, so means over devices and padded batches are exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy_sums(
    logits: jax.Array, classes: jax.Array, weight: jax.Array, count: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Weighted softmax cross-entropy.

    logits: (..., C) float; classes: (...) int in [0, C); weight: (...) float, 0 where the pixel
    carries no loss; count: () the normaliser (usually the number of labelled pixels).
    Returns (sum of weight * CE, count).
    """
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), classes)
    return jnp.sum(ce * weight), count


def sigmoid_cross_entropy_sums(
    logits: jax.Array, targets: jax.Array, weight: jax.Array, count: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Weighted per-channel sigmoid (binary) cross-entropy, averaged over channels.

    logits, targets: (..., C) float, targets in [0, 1]; weight: (...) float; count: ().
    Returns (sum of weight * mean_C BCE, count).
    """
    bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets)
    return jnp.sum(jnp.mean(bce, axis=-1) * weight), count

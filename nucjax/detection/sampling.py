"""Balanced random sampling of positive and negative anchors/proposals with fixed counts.

Works on matcher labels (matching.py): 1 positive, 0 negative, -1 ignore (ignored and padded
entries are never sampled). Boxes elsewhere are float32 [y0, x0, y1, x1] in pixel coordinates
of the (padded) input image, pixel (i, j) covering [i, i+1) x [j, j+1); shapes are static.

Randomness comes only from the PRNG key: each entry gets a uniform random score, and top_k of
the scores within positives (and within negatives) picks a uniform random subset without
replacement. Same key, same labels -> same sample.

Output order: the sampled positives first (slots 0 .. num_pos-1), then negatives, then padding.
Since at most floor(num_samples * positive_fraction) positives are drawn, every positive lies
in the first `max_positives(num_samples, positive_fraction)` slots: the mask head can run on
that fixed-size prefix only (detectron2 runs it on positives only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def max_positives(num_samples: int, positive_fraction: float) -> int:
    """The static cap on sampled positives: floor(num_samples * positive_fraction)."""
    return int(num_samples * positive_fraction)


def _random_top(scores: jax.Array, eligible: jax.Array, k: int) -> jax.Array:
    """k indices of eligible entries in random order, eligible ones before the others."""
    k = min(k, eligible.shape[0])
    if k == 0:
        return jnp.zeros((0,), jnp.int32)
    return jax.lax.top_k(jnp.where(eligible, scores, -1.0), k)[1].astype(jnp.int32)


def _pad_to(indices: jax.Array, size: int) -> jax.Array:
    return jnp.pad(indices, (0, max(size - indices.shape[0], 0)))


def sample_balanced(
    key: jax.Array, labels: jax.Array, num_samples: int, positive_fraction: float
) -> tuple[jax.Array, jax.Array]:
    """Draw up to num_samples entries, at most a fraction positive, the rest negative.

    key: PRNG key. labels: (N,) int32 in {1, 0, -1}.
    num_pos = min(#positives, floor(num_samples * positive_fraction)); the remaining slots go to
    negatives: num_neg = min(#negatives, num_samples - num_pos) (too few positives -> more
    negatives, as in detectron2). Slots beyond num_pos + num_neg are padding.
    Returns indices (num_samples,) int32 into [0, N) (0 in padding slots) and valid
    (num_samples,) bool.
    """
    labels = jnp.asarray(labels, jnp.int32)
    positive = labels == 1
    negative = labels == 0
    cap = max_positives(num_samples, positive_fraction)
    num_pos = jnp.minimum(jnp.sum(positive), cap)
    num_neg = jnp.minimum(jnp.sum(negative), num_samples - num_pos)

    # One score per entry serves both draws: positives and negatives are disjoint sets.
    scores = jax.random.uniform(key, labels.shape)
    pos_idx = _pad_to(_random_top(scores, positive, cap), num_samples)
    neg_idx = _pad_to(_random_top(scores, negative, num_samples), num_samples)
    slot = jnp.arange(num_samples)
    from_neg = jnp.take(neg_idx, jnp.clip(slot - num_pos, 0, num_samples - 1))
    indices = jnp.where(slot < num_pos, pos_idx, from_neg)
    valid = slot < num_pos + num_neg
    return jnp.where(valid, indices, 0).astype(jnp.int32), valid

"""Balanced sampling: counts, positives first, never ignored, deterministic per key."""

import jax
import numpy as np
import pytest

from nucjax.detection import sampling

sample_balanced = jax.jit(sampling.sample_balanced, static_argnums=(2, 3))


def make_labels(num_pos, num_neg, num_ignore, seed=0):
    labels = np.array([1] * num_pos + [0] * num_neg + [-1] * num_ignore, np.int32)
    return np.random.default_rng(seed).permutation(labels)


@pytest.mark.parametrize(
    "num_pos, num_neg, want_pos, want_neg",
    [(300, 1000, 128, 384), (10, 1000, 10, 502), (10, 20, 10, 20), (0, 600, 0, 512)],
)
def test_counts(num_pos, num_neg, want_pos, want_neg):
    labels = make_labels(num_pos, num_neg, 400)
    index, valid = sample_balanced(jax.random.key(0), labels, 512, 0.25)
    index, valid = np.asarray(index), np.asarray(valid)
    assert index.shape == valid.shape == (512,)
    picked = labels[index[valid]]
    assert (picked == 1).sum() == want_pos and (picked == 0).sum() == want_neg
    assert len(set(index[valid].tolist())) == valid.sum()  # without replacement
    assert np.all(picked[:want_pos] == 1)  # positives first
    assert np.all(valid[: want_pos + want_neg]) and not np.any(valid[want_pos + want_neg :])
    assert np.all(index[~valid] == 0)


def test_never_picks_ignored_and_fewer_entries_than_samples():
    labels = np.array([-1, 1, -1, 0, 0, -1], np.int32)
    index, valid = sample_balanced(jax.random.key(3), labels, 256, 0.5)
    assert sorted(np.asarray(index)[np.asarray(valid)].tolist()) == [1, 3, 4]


def test_deterministic_per_key_and_random_across_keys():
    labels = make_labels(200, 2000, 100)
    a = sample_balanced(jax.random.key(7), labels, 256, 0.5)
    b = sample_balanced(jax.random.key(7), labels, 256, 0.5)
    c = sample_balanced(jax.random.key(8), labels, 256, 0.5)
    np.testing.assert_array_equal(a[0], b[0])
    assert set(np.asarray(a[0]).tolist()) != set(np.asarray(c[0]).tolist())


def test_vmap_over_images():
    labels = np.stack([make_labels(5, 50, 10, seed=s) for s in range(4)])
    keys = jax.random.split(jax.random.key(0), 4)
    run = jax.vmap(lambda key, label: sampling.sample_balanced(key, label, 32, 0.5))
    index, valid = jax.jit(run)(keys, labels)
    for b in range(4):
        picked = labels[b][np.asarray(index[b])[np.asarray(valid[b])]]
        assert (picked == 1).sum() == 5 and (picked == 0).sum() == 27
    assert sampling.max_positives(512, 0.25) == 128

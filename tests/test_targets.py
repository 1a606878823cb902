"""Targets against hand-drawn labels whose answers are written out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging

from nucjax import targets

# Two touching nuclei: 1 is 3 wide, 2 is 2 wide (so all of 2 is border).
TOUCHING = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [1, 1, 1, 2, 2, 0],
        [1, 1, 1, 2, 2, 0],
        [1, 1, 1, 2, 2, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ],
    np.int32,
)
TOUCHING_CLASSES = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [2, 2, 2, 2, 2, 0],
        [1, 1, 2, 2, 2, 0],
        [1, 1, 2, 2, 2, 0],
        [2, 2, 2, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ],
    np.int32,
)

# Two nuclei three wide, separated by a one-pixel background column; the last row unlabelled.
SEPARATED = np.array(
    [
        [1, 1, 1, 0, 2, 2, 2],
        [1, 1, 1, 0, 2, 2, 2],
        [1, 1, 1, 0, 2, 2, 2],
        [0, 0, 0, 0, 0, 0, 0],
        [-1, -1, -1, -1, -1, -1, -1],
    ],
    np.int32,
)


def test_three_class_touching_nuclei():
    np.testing.assert_array_equal(targets.three_class_targets(TOUCHING), TOUCHING_CLASSES)


def test_three_class_unlabelled_neighbours_do_not_make_borders():
    label = np.full((4, 4), -1, np.int32)
    label[1:, 1:] = 3
    expected = np.zeros((4, 4), np.int32)
    expected[1:, 1:] = 1  # image edge and -1 on every side: no border at all
    np.testing.assert_array_equal(targets.three_class_targets(label), expected)
    # The same nucleus with background instead of -1 is border on those sides.
    label[label == -1] = 0
    expected[1, 1:] = expected[1:, 1] = 2
    np.testing.assert_array_equal(targets.three_class_targets(label), expected)


def test_three_class_batched_and_jitted():
    batch = np.stack([TOUCHING, TOUCHING.T])
    got = jax.jit(targets.three_class_targets)(jnp.asarray(batch))
    assert got.dtype == jnp.int32 and got.shape == (2, 6, 6)
    np.testing.assert_array_equal(got, np.stack([TOUCHING_CLASSES, TOUCHING_CLASSES.T]))


def test_pixel_weights():
    np.testing.assert_array_equal(
        targets.pixel_weights(SEPARATED), np.where(SEPARATED >= 0, 1.0, 0.0).astype(np.float32)
    )


def test_binary_targets_emphasise_borders_and_gaps():
    foreground, weight = targets.binary_targets(SEPARATED, border_weight=2.0)
    np.testing.assert_array_equal(foreground, (SEPARATED > 0).astype(np.float32))
    expected = np.array(
        [
            [1, 1, 3, 3, 3, 1, 1],
            [1, 1, 3, 3, 3, 1, 1],
            [3, 3, 3, 3, 3, 3, 3],
            [1, 1, 1, 3, 1, 1, 1],  # (3, 3) touches both nuclei diagonally: gap
            [0, 0, 0, 0, 0, 0, 0],
        ],
        np.float32,
    )
    assert weight.dtype == jnp.float32
    np.testing.assert_array_equal(weight, expected)
    _, plain = targets.binary_targets(SEPARATED)
    np.testing.assert_array_equal(plain, targets.pixel_weights(SEPARATED))


def test_gap_needs_two_different_nuclei():
    label = np.zeros((3, 5), np.int32)
    label[:, :2] = 4
    label[:, 3:] = 4  # the same id on both sides: not a separating gap
    assert not np.asarray(targets.separating_gap(label)).any()
    label[:, 3:] = 5
    np.testing.assert_array_equal(targets.separating_gap(label)[:, 2], [True, True, True])


# Ids 42, 3 and 7 (7 in two pieces), non-contiguous, with an unlabelled corner.
INSTANCES = np.array(
    [
        [42, 42, 0, 0, 0, 0],
        [42, 42, 0, 7, 7, 0],
        [0, 0, 0, 0, 0, 0],
        [3, 0, 0, 0, 0, 0],
        [3, 0, 0, 0, 7, -1],
    ],
    np.int32,
)


def _check_instances(got, label, ids, num_slots):
    boxes = {3: [3, 0, 5, 1], 7: [1, 3, 5, 5], 42: [0, 0, 2, 2]}
    expected_boxes = np.zeros((num_slots, 4), np.float32)
    for slot, i in enumerate(ids):
        expected_boxes[slot] = boxes[i]
        np.testing.assert_array_equal(got["masks"][slot], label == i)
    np.testing.assert_array_equal(got["boxes"], expected_boxes)
    np.testing.assert_array_equal(got["valid"], np.arange(num_slots) < len(ids))
    assert not np.asarray(got["masks"][len(ids) :]).any()


def test_padded_instances_sorted_by_id_and_padded():
    got = targets.padded_instances(INSTANCES, max_instances=5)
    assert got["boxes"].dtype == jnp.float32 and got["masks"].shape == (5, 5, 6)
    _check_instances(got, INSTANCES, [3, 7, 42], 5)
    assert int(got["num_instances"]) == 3 and int(got["num_truncated"]) == 0


def test_padded_instances_truncates_and_counts():
    got = jax.jit(targets.padded_instances, static_argnums=1)(INSTANCES, 2)
    _check_instances(got, INSTANCES, [3, 7], 2)
    assert int(got["num_instances"]) == 3 and int(got["num_truncated"]) == 1


def test_padded_instances_vmap_empty_and_full():
    empty = np.where(INSTANCES < 0, -1, 0).astype(np.int32)
    full = np.full_like(INSTANCES, 9)  # one nucleus covering the whole crop, no background
    batch = jnp.asarray(np.stack([INSTANCES, empty, full]))
    got = jax.jit(jax.vmap(lambda x: targets.padded_instances(x, 3)))(batch)
    assert got["boxes"].shape == (3, 3, 4) and got["masks"].shape == (3, 3, 5, 6)
    np.testing.assert_array_equal(got["num_instances"], [3, 0, 1])
    np.testing.assert_array_equal(got["valid"], [[1, 1, 1], [0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(got["boxes"][2], [[0, 0, 5, 6], [0, 0, 0, 0], [0, 0, 0, 0]])
    _check_instances(jax.tree.map(lambda x: x[0], got), INSTANCES, [3, 7, 42], 3)


@pytest.mark.parametrize("counts, total", [(0, 0), (np.array([0, 2, 1]), 3)])
def test_log_truncation(counts, total, monkeypatch):
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda *args: warnings.append(args))
    assert targets.log_truncation(counts, where="step 5") == total
    assert len(warnings) == (1 if total else 0)

"""Targets against hand-drawn labels whose answers are written out by hand."""

import jax
import jax.numpy as jnp
import numpy as np

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

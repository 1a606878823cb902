"""Box geometry against hand-computed values and a numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np

from nucjax.detection import boxes as box_ops

pairwise_iou = jax.jit(box_ops.pairwise_iou, static_argnames="invalid_value")
area = jax.jit(box_ops.area)


def numpy_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((len(a), len(b)), np.float64)
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            ih = max(min(p[2], q[2]) - max(p[0], q[0]), 0)
            iw = max(min(p[3], q[3]) - max(p[1], q[1]), 0)
            area_p = max(p[2] - p[0], 0) * max(p[3] - p[1], 0)
            area_q = max(q[2] - q[0], 0) * max(q[3] - q[1], 0)
            union = area_p + area_q - ih * iw
            out[i, j] = ih * iw / union if union > 0 else 0.0
    return out


def random_boxes(rng, n, extent=100.0):
    corner = rng.uniform(0, extent, (n, 2))
    size = rng.uniform(0, 30, (n, 2))
    return np.concatenate([corner, corner + size], 1).astype(np.float32)


def test_area_hand_boxes():
    boxes = np.array([[0, 0, 2, 3], [1, 1, 1, 5], [2, 2, 1, 1], [5, 5, 6, 6]], np.float32)
    np.testing.assert_array_equal(area(boxes), [6, 0, 0, 1])


def test_iou_hand_boxes():
    a = np.array([[0, 0, 2, 2], [0, 0, 4, 4], [0, 0, 2, 2]], np.float32)
    b = np.array([[1, 1, 3, 3], [1, 1, 2, 2], [2, 0, 4, 2], [0, 0, 2, 2]], np.float32)
    expected = [
        [1 / 7, 1 / 4, 0.0, 1.0],  # overlap, contains, touches (edge only), identical
        [4 / 16, 1 / 16, 4 / 16, 4 / 16],
        [1 / 7, 1 / 4, 0.0, 1.0],
    ]
    np.testing.assert_allclose(pairwise_iou(a, b), expected, rtol=1e-6)


def test_iou_degenerate_boxes_are_zero_not_nan():
    boxes = np.array([[3, 3, 3, 3], [1, 1, 1, 5], [2, 2, 1, 1], [0, 0, 4, 4]], np.float32)
    iou = np.asarray(pairwise_iou(boxes, boxes))
    assert np.all(np.isfinite(iou))
    np.testing.assert_array_equal(iou[:3], 0.0)
    np.testing.assert_array_equal(iou[:, :3], 0.0)
    assert iou[3, 3] == 1.0


def test_iou_invalid_entries():
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2]], np.float32)
    b = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1]], np.float32)
    iou = pairwise_iou(a, b, np.array([True, False]), np.array([True, False, True]))
    np.testing.assert_allclose(iou, [[1.0, -1.0, 0.25], [-1.0, -1.0, -1.0]])
    iou0 = pairwise_iou(a, b, None, np.array([True, False, True]), invalid_value=0.0)
    np.testing.assert_allclose(iou0, [[1.0, 0.0, 0.25], [1.0, 0.0, 0.25]])


def test_iou_matches_numpy_on_random_boxes():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 40), random_boxes(rng, 30)
    b[::7, 2] = b[::7, 0]  # some zero-height boxes
    got = pairwise_iou(a, b)
    np.testing.assert_allclose(got, numpy_iou(a, b), atol=1e-6)


def test_clip_boxes_static_and_traced_shape():
    boxes = np.array([[-5, 3, 10, 50], [40, 40, 60, 70]], np.float32)
    np.testing.assert_array_equal(
        box_ops.clip_boxes(boxes, (32, 48)), [[0, 3, 10, 48], [32, 40, 32, 48]]
    )
    batch = np.stack([boxes, boxes])
    shapes = jnp.array([[32, 48], [64, 64]])
    clipped = jax.jit(jax.vmap(box_ops.clip_boxes))(batch, shapes)
    np.testing.assert_array_equal(clipped[1], [[0, 3, 10, 50], [40, 40, 60, 64]])
    assert area(clipped[0])[1] == 0  # outside the image -> degenerate


def test_nondegenerate():
    boxes = np.array([[0, 0, 2, 2], [0, 0, 0, 2], [0, 0, 1, 3], [np.nan, 0, 4, 4]], np.float32)
    np.testing.assert_array_equal(box_ops.nondegenerate(boxes), [True, False, True, False])
    np.testing.assert_array_equal(box_ops.nondegenerate(boxes, 1.0), [True, False, False, False])

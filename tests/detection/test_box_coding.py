"""encode/decode: exact inverse, hand values, clamp, batching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nucjax.detection import box_coding

encode = jax.jit(box_coding.encode, static_argnums=2)
decode = jax.jit(box_coding.decode, static_argnums=2)


def random_boxes(rng, n):
    corner = rng.uniform(-20, 200, (n, 2))
    size = rng.uniform(2, 120, (n, 2))
    return np.concatenate([corner, corner + size], 1).astype(np.float32)


def numpy_encode(boxes, anchors, weights):
    b = boxes.astype(np.float64)
    a = anchors.astype(np.float64)
    ha, wa = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    hb, wb = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    dy = (b[:, 0] + hb / 2 - a[:, 0] - ha / 2) / ha
    dx = (b[:, 1] + wb / 2 - a[:, 1] - wa / 2) / wa
    deltas = np.stack([dy, dx, np.log(hb / ha), np.log(wb / wa)], 1)
    return deltas * np.asarray(weights)


@pytest.mark.parametrize("weights", [box_coding.ROI_BOX_WEIGHTS, box_coding.RPN_BOX_WEIGHTS])
def test_decode_inverts_encode(weights):
    rng = np.random.default_rng(0)
    boxes, anchors = random_boxes(rng, 500), random_boxes(rng, 500)
    deltas = encode(boxes, anchors, weights)
    np.testing.assert_allclose(deltas, numpy_encode(boxes, anchors, weights), rtol=1e-4, atol=1e-4)
    back = decode(deltas, anchors, weights)
    np.testing.assert_allclose(back, boxes, rtol=1e-5, atol=1e-3)


def test_encode_hand_values():
    anchor = np.array([[10, 20, 30, 60]], np.float32)  # h 20, w 40, centre (20, 40)
    same = encode(anchor, anchor)
    np.testing.assert_allclose(same, 0.0, atol=1e-7)
    moved = np.array([[20, 20, 40, 60]], np.float32)  # centre down by h / 2
    np.testing.assert_allclose(encode(moved, anchor), [[5.0, 0, 0, 0]], atol=1e-6)
    taller = np.array([[0, 20, 40, 60]], np.float32)  # height doubled
    np.testing.assert_allclose(encode(taller, anchor), [[0, 0, 5 * np.log(2), 0]], atol=1e-6)


def test_decode_clamps_the_log_scale():
    anchor = np.array([[0, 0, 16, 16]], np.float32)
    deltas = np.array([[0, 0, 100.0, -100.0]], np.float32)
    box = np.asarray(decode(deltas, anchor, (1, 1, 1, 1)))
    assert np.all(np.isfinite(box))
    np.testing.assert_allclose(box[0, 2] - box[0, 0], 1000.0, rtol=1e-5)  # 16 * 1000 / 16
    assert 0 <= box[0, 3] - box[0, 1] < 1e-6  # no lower clamp: a vanishing width


def test_degenerate_target_gives_finite_deltas():
    anchor = np.array([[0, 0, 16, 16], [0, 0, 8, 8]], np.float32)
    target = np.zeros((2, 4), np.float32)  # padded gt
    assert np.all(np.isfinite(encode(target, anchor)))


def test_batched_and_vmapped():
    rng = np.random.default_rng(1)
    anchors = random_boxes(rng, 50)
    boxes = np.stack([random_boxes(rng, 50) for _ in range(3)])
    direct = encode(boxes, anchors)  # (B, N, 4) with (N, 4)
    mapped = jax.jit(jax.vmap(box_coding.encode, in_axes=(0, None)))(boxes, anchors)
    np.testing.assert_allclose(direct, mapped, rtol=1e-6)
    back = jax.jit(jax.vmap(box_coding.decode, in_axes=(0, None)))(mapped, jnp.asarray(anchors))
    np.testing.assert_allclose(back, boxes, rtol=1e-5, atol=1e-3)

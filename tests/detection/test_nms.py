"""NMS against a textbook greedy numpy NMS, hand boxes, padding and batching."""

import jax
import numpy as np
import pytest

from nucjax.detection import nms

run_nms = jax.jit(nms.nms, static_argnums=(3, 4))


def numpy_nms(boxes, scores, valid, threshold, max_output):
    def iou(a, b):
        ih = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
        iw = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ih * iw
        return ih * iw / union if union > 0 else 0.0

    order = [i for i in np.argsort(-scores, kind="stable") if valid[i]]
    keep = []
    while order and len(keep) < max_output:
        best = order.pop(0)
        keep.append(best)
        order = [i for i in order if iou(boxes[best], boxes[i]) <= threshold]
    return keep


def random_boxes(rng, n):
    centre = rng.uniform(0, 100, (n, 2))
    size = rng.uniform(5, 30, (n, 2))
    return np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)


@pytest.mark.parametrize("threshold, max_output", [(0.3, 50), (0.5, 400), (0.7, 100)])
def test_matches_numpy_greedy_nms(threshold, max_output):
    rng = np.random.default_rng(int(threshold * 10))
    boxes = random_boxes(rng, 300)
    scores = rng.uniform(size=300).astype(np.float32)
    valid = rng.uniform(size=300) < 0.9
    index, out_valid = run_nms(boxes, scores, valid, threshold, max_output)
    want = numpy_nms(boxes, scores, valid, threshold, max_output)
    assert int(out_valid.sum()) == len(want)
    np.testing.assert_array_equal(np.asarray(index)[: len(want)], want)
    assert np.all(np.asarray(index)[len(want) :] == 0)


def test_hand_boxes_chain_and_padding():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # A
            [0, 3, 10, 13],  # B: IoU(A, B) = 70 / 130 > 0.5
            [0, 7, 10, 17],  # C: IoU(B, C) > 0.5, IoU(A, C) = 30 / 170
            [0, 0, 10, 5],  # D: IoU(A, D) = 0.5 exactly: not suppressed (strict >)
            [50, 50, 60, 60],  # E: padding, never selected
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 1.0], np.float32)
    valid = np.array([True, True, True, True, False])
    index, out_valid = run_nms(boxes, scores, valid, 0.5, 6)
    np.testing.assert_array_equal(index, [0, 2, 3, 0, 0, 0])
    np.testing.assert_array_equal(out_valid, [True, True, True, False, False, False])
    index, out_valid = run_nms(boxes, scores, valid, 0.5, 2)  # capped
    np.testing.assert_array_equal(index, [0, 2])


def test_degenerate_and_all_invalid():
    boxes = np.array([[0, 0, 0, 10], [0, 0, 0, 10], [0, 0, 5, 5]], np.float32)
    scores = np.array([0.5, 0.4, 0.3], np.float32)
    index, valid = run_nms(boxes, scores, np.ones(3, bool), 0.5, 3)
    np.testing.assert_array_equal(index, [0, 1, 2])  # zero-area boxes suppress nothing
    index, valid = run_nms(boxes, scores, np.zeros(3, bool), 0.5, 3)
    assert not np.any(valid)


def test_batched_nms_keeps_classes_apart():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    batched = jax.jit(nms.batched_nms, static_argnums=(4, 5))
    index, valid = batched(boxes, scores, np.array([0, 1, 0]), np.ones(3, bool), 0.5, 3)
    np.testing.assert_array_equal(np.asarray(index)[np.asarray(valid)], [0, 1])


def test_vmap_over_images():
    rng = np.random.default_rng(5)
    boxes = np.stack([random_boxes(rng, 100) for _ in range(3)])
    scores = rng.uniform(size=(3, 100)).astype(np.float32)
    valid = np.ones((3, 100), bool)
    batched = jax.jit(jax.vmap(lambda b, s, v: nms.nms(b, s, v, 0.5, 60)))
    index, out_valid = batched(boxes, scores, valid)
    for b in range(3):
        want = numpy_nms(boxes[b], scores[b], valid[b], 0.5, 60)
        np.testing.assert_array_equal(np.asarray(index[b])[: len(want)], want)
        assert int(out_valid[b].sum()) == len(want)


def test_inside_shard_map_over_a_device_axis():
    """Per-device NMS in the trainer's shard_map: the loop carry varies over the mesh axis."""
    from jax.sharding import PartitionSpec as P

    from nucjax import parallel

    rng = np.random.default_rng(6)
    devices = jax.devices()[:2]
    boxes = np.stack([random_boxes(rng, 50) for _ in devices])
    scores = rng.uniform(size=(len(devices), 50)).astype(np.float32)
    valid = np.ones(scores.shape, bool)
    per_device = jax.vmap(lambda b, s, v: nms.nms(b, s, v, 0.5, 20))
    mesh = parallel.make_mesh(devices)
    spec = P(parallel.AXIS)
    sharded = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=spec, out_specs=spec))
    index, out_valid = sharded(boxes, scores, valid)
    for b in range(len(devices)):
        want = numpy_nms(boxes[b], scores[b], valid[b], 0.5, 20)
        np.testing.assert_array_equal(np.asarray(index[b])[: len(want)], want)
        assert int(out_valid[b].sum()) == len(want)

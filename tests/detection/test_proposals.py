"""RPN proposals against a numpy reference of detectron2's find_top_rpn_proposals."""

import functools

import jax
import numpy as np

from nucjax.detection import anchors as anchor_ops
from nucjax.detection import proposals


def numpy_iou(a, b):
    ih = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    iw = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ih * iw
    return ih * iw / union if union > 0 else 0.0


def numpy_proposals(anchors, logits, deltas, counts, shape, pre, post, threshold, min_size):
    candidates, start = [], 0
    for count in counts:
        order = np.argsort(-logits[start : start + count], kind="stable")[:pre] + start
        a = anchors[order].astype(np.float64)
        h, w = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        cy = a[:, 0] + h / 2 + deltas[order, 0] * h
        cx = a[:, 1] + w / 2 + deltas[order, 1] * w
        h, w = h * np.exp(deltas[order, 2]), w * np.exp(deltas[order, 3])
        boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], 1)
        boxes = np.clip(boxes, 0, [shape[0], shape[1], shape[0], shape[1]])
        alive = [
            i
            for i in range(len(order))
            if boxes[i, 2] - boxes[i, 0] > min_size and boxes[i, 3] - boxes[i, 1] > min_size
        ]
        while alive:  # already in descending score order
            best = alive.pop(0)
            candidates.append((logits[order[best]], boxes[best]))
            alive = [i for i in alive if numpy_iou(boxes[best], boxes[i]) <= threshold]
        start += count
    candidates.sort(key=lambda c: -c[0])
    return candidates[:post]


def test_matches_numpy_reference():
    shape = (48, 64)
    anchors, counts = anchor_ops.multilevel_anchors(
        shape, strides=(8, 16), sizes=(16.0, 32.0), aspect_ratios=(0.5, 1.0, 2.0)
    )
    rng = np.random.default_rng(0)
    logits = rng.normal(size=len(anchors)).astype(np.float32)
    deltas = (0.3 * rng.normal(size=(len(anchors), 4))).astype(np.float32)
    run = functools.partial(
        proposals.generate_proposals,
        level_counts=counts,
        image_shape=shape,
        pre_nms_top_k=50,
        post_nms_top_k=90,
        nms_threshold=0.7,
        min_size=2.0,
    )
    boxes, scores, valid = jax.jit(run)(anchors, logits, deltas)
    want = numpy_proposals(anchors, logits, deltas, counts, shape, 50, 90, 0.7, 2.0)
    assert 0 < len(want) < 90 and int(valid.sum()) == len(want)  # some padding at the end
    np.testing.assert_allclose(scores[: len(want)], [s for s, _ in want], rtol=1e-6)
    np.testing.assert_allclose(boxes[: len(want)], [b for _, b in want], atol=1e-3)
    assert np.all(np.asarray(boxes)[len(want) :] == 0)


def test_vmap_with_per_image_true_size():
    shape = (32, 32)
    anchors, counts = anchor_ops.multilevel_anchors(
        shape, strides=(8,), sizes=(16.0,), aspect_ratios=(0.5, 1.0, 2.0)
    )
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, len(anchors))).astype(np.float32)
    deltas = np.zeros((2, len(anchors), 4), np.float32)
    sizes = np.array([[32, 32], [20, 24]])

    def run(logit, delta, size):
        return proposals.generate_proposals(
            anchors,
            logit,
            delta,
            counts,
            size,
            pre_nms_top_k=16,
            post_nms_top_k=16,
            nms_threshold=0.7,
        )

    boxes, _, valid = jax.jit(jax.vmap(run))(logits, deltas, sizes)
    assert boxes.shape == (2, 16, 4)
    kept = np.asarray(boxes[1])[np.asarray(valid[1])]
    assert kept[:, 2].max() <= 20 and kept[:, 3].max() <= 24

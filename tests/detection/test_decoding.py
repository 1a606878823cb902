"""Detections, mask pasting (round trip, numpy reference) and non-overlapping instances."""

import jax
import numpy as np

from nucjax.detection import decoding


def numpy_paste(mask, box, shape):
    """grid_sample(align_corners=False, zeros padding) of one mask at every pixel centre."""
    size = mask.shape[0]
    out = np.zeros(shape)
    for y in range(shape[0]):
        u = (y + 0.5 - box[0]) * size / (box[2] - box[0]) - 0.5
        for x in range(shape[1]):
            v = (x + 0.5 - box[1]) * size / (box[3] - box[1]) - 0.5
            total = 0.0
            for a in (int(np.floor(u)), int(np.floor(u)) + 1):
                for b in (int(np.floor(v)), int(np.floor(v)) + 1):
                    if 0 <= a < size and 0 <= b < size:
                        total += (1 - abs(u - a)) * (1 - abs(v - b)) * mask[a, b]
            out[y, x] = total
    return out


paste = jax.jit(decoding.paste_masks, static_argnums=3)


def test_paste_round_trip_of_a_box_filling_mask():
    boxes = np.array([[3, 5, 13, 20], [0, 0, 24, 32]], np.float32)
    pasted = np.asarray(paste(np.ones((2, 28, 28), np.float32), boxes, np.ones(2, bool), (24, 32)))
    want = np.zeros((24, 32), bool)
    want[3:13, 5:20] = True  # rows 3..12, cols 5..19
    np.testing.assert_array_equal(pasted[0] >= 0.5, want)
    np.testing.assert_allclose(pasted[0, 4:12, 6:19], 1.0, rtol=1e-6)  # away from the edges
    np.testing.assert_array_equal(pasted[1] >= 0.5, True)


def test_paste_matches_numpy_reference():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(3, 6, 6)).astype(np.float32)
    boxes = np.array([[2.3, 1.5, 9.8, 12.1], [-3, 8, 5, 20], [10, 10, 10, 14]], np.float32)
    valid = np.array([True, True, True])
    got = np.asarray(paste(masks, boxes, valid, (12, 16)))
    for n in range(2):
        np.testing.assert_allclose(got[n], numpy_paste(masks[n], boxes[n], (12, 16)), atol=1e-5)
    np.testing.assert_array_equal(got[2], 0.0)  # degenerate box pastes nothing
    got = paste(masks, boxes, np.array([True, False, True]), (12, 16))
    np.testing.assert_array_equal(got[1], 0.0)


def test_instances_from_detections_gives_each_pixel_to_the_best_covering_detection():
    rng = np.random.default_rng(1)
    n, shape = 12, (40, 48)
    centre = rng.uniform(0, 44, (n, 2))
    size = rng.uniform(4, 16, (n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)
    masks = rng.uniform(size=(n, 7, 7)).astype(np.float32)
    scores = rng.uniform(size=n).astype(np.float32)
    valid = rng.uniform(size=n) < 0.8
    # Reference: on all pasted masks at once, the best-scoring valid detection >= 0.5 wins.
    covered = (np.asarray(paste(masks, boxes, valid, shape)) >= 0.5) & valid[:, None, None]
    winner = np.argmax(np.where(covered, scores[:, None, None], -np.inf), axis=0)
    label = np.where(covered.any(axis=0), winner + 1, 0)
    got_label, got_scores = decoding.instances_from_detections(
        masks, boxes, scores, valid, shape, 0.5
    )
    # Compact the reference labels: ids in descending score, detections without pixels dropped.
    present = [d for d in np.argsort(-scores, kind="stable") if (label == d + 1).any()]
    want = np.zeros_like(label)
    for new_id, d in enumerate(present, start=1):
        want[label == d + 1] = new_id
    np.testing.assert_array_equal(got_label, want)
    np.testing.assert_allclose(got_scores, scores[present])
    assert got_label.max() == len(got_scores) > 3


def test_select_detections_threshold_nms_cap():
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 0, 0, 0]],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.04, 0.7, 0.95], np.float32)
    valid = np.array([True, True, True, True, True])  # the last box is degenerate
    select = jax.jit(decoding.select_detections, static_argnums=(3, 4, 5))
    out = select(boxes, scores, valid, 0.05, 0.5, 4)
    np.testing.assert_array_equal(out.index, [0, 3, 0, 0])
    np.testing.assert_array_equal(out.valid, [True, True, False, False])
    np.testing.assert_allclose(out.scores, [0.9, 0.7, 0, 0])
    np.testing.assert_array_equal(out.boxes[1], boxes[3])
    out = select(boxes, scores, valid, 0.05, 0.5, 1)
    np.testing.assert_array_equal(out.index, [0])


def test_box_head_detections_decode_and_score():
    rois = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    logits = np.array([[0.0, 2.0], [1.0, 0.0]], np.float32)
    deltas = np.array([[0, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    run = jax.jit(decoding.box_head_detections, static_argnums=(4, 5, 6, 7))
    out = run(rois, np.ones(2, bool), logits, deltas, (32, 32), 0.05, 0.5, 10)
    np.testing.assert_allclose(out.boxes[0], rois[0])
    np.testing.assert_allclose(
        out.scores[:2], [1 / (1 + np.exp(-2)), 1 / (1 + np.exp(1))], rtol=1e-5
    )
    assert out.boxes.shape == (10, 4)

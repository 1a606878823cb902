"""Matching thresholds, low-quality matches, padding, against hand cases and numpy."""

import functools

import jax
import numpy as np

from nucjax.detection import anchors as anchor_ops
from nucjax.detection import boxes as box_ops
from nucjax.detection import matching

rpn_match = jax.jit(
    functools.partial(
        matching.match,
        positive_threshold=0.7,
        negative_threshold=0.3,
        allow_low_quality_matches=True,
    )
)


def numpy_match(iou, gt_valid, pos, neg, low_quality, anchor_valid):
    iou = np.where(anchor_valid[:, None] & gt_valid[None, :], iou, -1.0)
    matched = iou.argmax(1)
    best = iou.max(1)
    labels = np.full(len(iou), -1)
    labels[best >= pos] = 1
    labels[best < neg] = 0
    if low_quality:
        for g in np.flatnonzero(gt_valid):
            column = iou[:, g]
            if column.max() > 0:
                labels[column >= column.max() - matching.TIE_TOLERANCE] = 1
    labels[~anchor_valid] = -1
    return matched, labels


def test_rpn_thresholds_and_low_quality_matches_by_hand():
    iou = np.array(
        [
            [0.80, 0.10, 0.00],  # >= 0.7 -> positive, gt 0
            [0.50, 0.20, 0.00],  # between -> ignore
            [0.10, 0.29, 0.00],  # < 0.3 -> negative
            [0.20, 0.60, 0.00],  # gt 1's best (0.6) -> low-quality positive
            [0.30, 0.60, 0.00],  # tie for gt 1's best -> positive too
            [0.10, 0.10, 0.95],  # gt 2 is padding: its IoU does not count
        ],
        np.float32,
    )
    gt_valid = np.array([True, True, False])
    matched, labels = rpn_match(iou, gt_valid)
    np.testing.assert_array_equal(labels, [1, -1, 0, 1, 1, 0])
    np.testing.assert_array_equal(matched, [0, 0, 1, 1, 1, 0])
    strict = jax.jit(matching.match, static_argnums=(2, 3, 4))(iou, gt_valid, 0.7, 0.3, False)
    np.testing.assert_array_equal(strict[1], [1, -1, 0, -1, -1, 0])


def test_gt_with_zero_best_iou_promotes_nothing():
    iou = np.array([[0.0, 0.1], [0.0, 0.05]], np.float32)
    _, labels = rpn_match(iou, np.array([True, True]))
    np.testing.assert_array_equal(labels, [1, 0])  # gt 1's best (0.1) is promoted; gt 0 none


def test_roi_thresholds_half_is_positive():
    proposals = np.array([[0, 0, 10, 10], [0, 0, 10, 10.01], [0, 0, 10, 5.5]], np.float32)
    gt = np.array([[0, 0, 10, 5]], np.float32)  # IoU 0.5, just below 0.5, 5 / 5.5
    _, labels = jax.jit(matching.match_proposals)(proposals, gt, np.array([True]))
    np.testing.assert_array_equal(labels, [1, 0, 1])


def test_zero_valid_gt_and_invalid_anchors():
    iou = np.full((4, 3), 0.9, np.float32)
    matched, labels = rpn_match(iou, np.zeros(3, bool))
    np.testing.assert_array_equal(labels, 0)
    np.testing.assert_array_equal(matched, 0)
    anchor_valid = np.array([True, False, True, False])
    _, labels = rpn_match(iou, np.zeros(3, bool), anchor_valid=anchor_valid)
    np.testing.assert_array_equal(labels, [0, -1, 0, -1])
    _, labels = rpn_match(iou, np.ones(3, bool), anchor_valid=np.zeros(4, bool))
    np.testing.assert_array_equal(labels, -1)
    _, labels = rpn_match(np.zeros((4, 0), np.float32), np.zeros(0, bool))
    np.testing.assert_array_equal(labels, 0)
    boxes = np.tile(np.array([[0, 0, 8, 8]], np.float32), (4, 1))
    _, labels = jax.jit(matching.match_anchors)(boxes, boxes[:3], np.zeros(3, bool))
    np.testing.assert_array_equal(labels, 0)


def test_matches_numpy_on_random_iou_under_vmap():
    rng = np.random.default_rng(0)
    iou = np.round(rng.uniform(0, 1, (3, 60, 8)) ** 3, 2).astype(np.float32)  # ties likely
    gt_valid = rng.uniform(size=(3, 8)) < 0.7
    anchor_valid = rng.uniform(size=(3, 60)) < 0.9
    run = jax.vmap(lambda i, g, a: rpn_match(i, g, anchor_valid=a))
    matched, labels = jax.jit(run)(iou, gt_valid, anchor_valid)
    for b in range(3):
        want_matched, want_labels = numpy_match(
            iou[b], gt_valid[b], 0.7, 0.3, True, anchor_valid[b]
        )
        np.testing.assert_array_equal(labels[b], want_labels)
        has_gt = anchor_valid[b] & gt_valid[b].any()
        np.testing.assert_array_equal(np.asarray(matched[b])[has_gt], want_matched[has_gt])


def test_match_boxes_equals_match_on_the_iou_matrix():
    # Grid anchors and gt boxes centred between anchors give IoU ties, exact or up to float
    # rounding (mirror-image anchors of aspect ratio 0.5 and 2).
    anchors, _ = anchor_ops.multilevel_anchors(
        (64, 64), strides=(4, 8), sizes=(8.0, 16.0), aspect_ratios=(0.5, 1.0, 2.0)
    )
    rng = np.random.default_rng(1)
    corner = rng.integers(0, 56, (10, 2)).astype(np.float32)
    gt = np.concatenate([corner, corner + rng.integers(3, 20, (10, 2))], 1).astype(np.float32)
    gt_valid = np.arange(10) < 8
    anchor_valid = rng.uniform(size=len(anchors)) < 0.95
    iou = box_ops.pairwise_iou(anchors, gt)
    want = rpn_match(iou, gt_valid, anchor_valid=anchor_valid)
    run = jax.jit(matching.match_boxes, static_argnums=(3, 4, 5, 7))
    got = run(anchors, gt, gt_valid, 0.7, 0.3, True, anchor_valid, 100)  # 100: ragged chunks
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(
        np.asarray(got[0])[anchor_valid], np.asarray(want[0])[anchor_valid]
    )
    assert np.sum(np.asarray(want[1]) == 1) > 5

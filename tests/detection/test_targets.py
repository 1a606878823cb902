"""Ground truth from a label image, RPN / box-head / mask targets on hand cases."""

import functools

import jax
import numpy as np

from nucjax.detection import anchors as anchor_ops
from nucjax.detection import box_coding, sampling, targets
from nucjax.detection import boxes as box_ops


def hand_label():
    label = np.zeros((20, 24), np.int32)
    label[4:12, 6:14] = 1  # rows 4..11, cols 6..13 -> box [4, 6, 12, 14]
    label[4:12, 14:18] = 3  # touching instance 1 on its right; id 2 absent
    label[15:18, 0:2] = 5  # id 5 > max_instances = 4: dropped
    label[0:2, :] = -1  # unlabelled
    return label


def test_instance_boxes_from_label():
    boxes, valid = jax.jit(targets.instance_boxes, static_argnums=1)(hand_label(), 4)
    np.testing.assert_array_equal(valid, [True, False, True, False])
    np.testing.assert_array_equal(boxes, [[4, 6, 12, 14], [0] * 4, [4, 14, 12, 18], [0] * 4])


def test_mask_targets_on_hand_mask():
    label = hand_label()
    rois = np.array([[4, 6, 12, 14], [0, 2, 16, 18], [4, 6, 12, 14]], np.float32)
    gt_index = np.array([0, 0, 2], np.int32)  # instances 1, 1, 3
    make = jax.jit(functools.partial(targets.mask_targets, mask_size=28))
    masks = np.asarray(make(label, rois, gt_index))
    assert masks.shape == (3, 28, 28)
    # The instance's own box: foreground but for the 4 corner cells, where the half-pixel
    # offset leaves 0.64 * 0.64 < 0.5 of foreground (detectron2 does the same).
    corners = np.zeros((28, 28), bool)
    corners[::27, ::27] = True
    np.testing.assert_array_equal(masks[0], np.where(corners, 0.0, 1.0))
    # A box twice the size, same centre: the instance fills the central half.
    want = np.zeros((28, 28))
    want[7:21, 7:21] = 1.0
    np.testing.assert_array_equal(masks[1], want)
    np.testing.assert_array_equal(masks[2], 0.0)  # instance 3 does not reach into that box
    soft = jax.jit(functools.partial(targets.mask_targets, threshold=None))(label, rois, gt_index)
    np.testing.assert_allclose(soft[0, 0, 0], (9 / 14) ** 2, rtol=1e-5)  # corner: 0.64^2
    assert float(soft.max()) == 1.0


def test_rpn_targets():
    anchors, _ = anchor_ops.multilevel_anchors(
        (64, 64), strides=(4, 8), sizes=(8.0, 16.0), aspect_ratios=(0.5, 1.0, 2.0)
    )
    gt = np.array([[10, 10, 26, 26], [40, 36, 48, 44], [0, 0, 0, 0]], np.float32)
    gt_valid = np.array([True, True, False])
    # Two images under vmap (anchors shared): this gt, and the same gt all padding.
    rpn_targets = functools.partial(targets.rpn_targets, num_samples=256, positive_fraction=0.5)
    make = jax.jit(jax.vmap(rpn_targets, in_axes=(0, None, None, 0)))
    keys = jax.random.split(jax.random.key(0), 2)
    both = make(keys, anchors, gt, np.stack([gt_valid, np.zeros(3, bool)]))
    out = jax.tree.map(lambda x: x[0], both)
    empty = jax.tree.map(lambda x: x[1], both)
    positive, sampled = np.asarray(out.positive), np.asarray(out.sampled)
    assert 0 < positive.sum() <= 128 and sampled.sum() == 256
    assert np.all(sampled[positive])
    np.testing.assert_array_equal(out.objectness, positive.astype(np.float32))
    iou = np.asarray(jax.jit(box_ops.pairwise_iou)(anchors, gt, None, gt_valid))
    best = iou.max(1)
    # Every positive is >= 0.7 or some gt's best anchor; every sampled negative is < 0.3.
    is_best = (iou == iou.max(0)[None]) & gt_valid[None]
    assert np.all((best[positive] >= 0.7) | is_best[positive].any(1))
    assert np.all(best[sampled & ~positive] < 0.3)
    decoded = np.asarray(box_coding.decode(out.deltas, anchors, box_coding.RPN_BOX_WEIGHTS))
    decoded = decoded[positive]
    matched = iou[positive].argmax(1)
    np.testing.assert_allclose(decoded, gt[matched], atol=1e-3)

    assert not np.any(empty.positive) and int(empty.sampled.sum()) == 256


def test_roi_targets_with_gt_boxes_appended_under_vmap():
    gt = np.array([[[10, 10, 30, 30], [40, 40, 60, 70]], [[5, 5, 15, 15], [0, 0, 0, 0]]])
    gt = gt.astype(np.float32)
    gt_valid = np.array([[True, True], [False, False]])
    proposals = np.tile(np.array([[11, 11, 30, 30], [0, 0, 50, 50], [70, 70, 80, 80]]), (2, 1, 1))
    proposal_valid = np.array([[True, True, False], [True, True, True]])
    keys = jax.random.split(jax.random.key(1), 2)
    make = functools.partial(targets.roi_targets, num_samples=16, positive_fraction=0.25)
    out = jax.jit(jax.vmap(make))(keys, proposals.astype(np.float32), proposal_valid, gt, gt_valid)
    # Image 0: candidates = 2 valid proposals + 2 gt boxes. Positives: the gt boxes and the
    # proposal with IoU 361/400 with gt 0; negatives: the big proposal. 4 samples in all.
    valid, positive = np.asarray(out.valid[0]), np.asarray(out.positive[0])
    assert valid.sum() == 4 and positive.sum() == 3
    assert np.all(positive[:3]) and not positive[3]  # positives first
    assert sampling.max_positives(16, 0.25) >= positive.sum()
    np.testing.assert_array_equal(out.classes[0], positive.astype(np.int32))
    rois, gt_index = np.asarray(out.rois[0]), np.asarray(out.gt_index[0])
    decoded = box_coding.decode(out.deltas[0][positive], rois[positive])
    np.testing.assert_allclose(decoded, gt[0][gt_index[positive]], atol=1e-3)
    # Image 1: no valid gt -> the 3 valid proposals, all background.
    assert int(out.valid[1].sum()) == 3 and not np.any(out.positive[1])


def test_label_to_losses_pipeline_under_jit_and_vmap():
    """Label image -> gt boxes -> RPN / ROI / mask targets -> the five losses, batched."""
    from nucjax.detection import losses

    label = np.zeros((2, 32, 32), np.int32)
    label[0, 4:12, 4:14] = 1
    label[0, 18:28, 16:24] = 2
    label[1, 10:20, 10:20] = 3  # second image: one nucleus, id 3
    anchors, _ = anchor_ops.multilevel_anchors(
        (32, 32), strides=(4, 8), sizes=(8.0, 16.0), aspect_ratios=(0.5, 1.0, 2.0)
    )
    rng = np.random.default_rng(0)
    predictions = {
        "rpn_logits": rng.normal(size=(2, len(anchors))).astype(np.float32),
        "rpn_deltas": rng.normal(size=(2, len(anchors), 4)).astype(np.float32),
        "proposals": np.tile(np.array([[4, 4, 12, 14], [0, 0, 32, 32]], np.float32), (2, 4, 1)),
        "class_logits": rng.normal(size=(2, 16, 2)).astype(np.float32),
        "box_deltas": rng.normal(size=(2, 16, 4)).astype(np.float32),
        "mask_logits": rng.normal(size=(2, 4, 28, 28)).astype(np.float32),
    }

    def one_image(key, label, pred):
        key_rpn, key_roi = jax.random.split(key)
        gt_boxes, gt_valid = targets.instance_boxes(label, 4)
        rpn = targets.rpn_targets(key_rpn, anchors, gt_boxes, gt_valid, 256, 0.5)
        valid = np.ones(8, bool)
        roi = targets.roi_targets(key_roi, pred["proposals"], valid, gt_boxes, gt_valid, 16, 0.25)
        head = slice(0, sampling.max_positives(16, 0.25))  # every positive lies in this prefix
        masks = targets.mask_targets(label, roi.rois[head], roi.gt_index[head])
        return {
            "rpn_objectness": losses.rpn_objectness_loss(
                pred["rpn_logits"], rpn.objectness, rpn.sampled
            ),
            "rpn_box": losses.rpn_box_loss(
                pred["rpn_deltas"], rpn.deltas, rpn.positive, rpn.sampled
            ),
            "box_class": losses.box_classification_loss(
                pred["class_logits"], roi.classes, roi.valid
            ),
            "box_reg": losses.box_regression_loss(
                pred["box_deltas"], roi.deltas, roi.positive, roi.valid
            ),
            "mask": losses.mask_loss(pred["mask_logits"], masks, roi.positive[head]),
        }

    keys = jax.random.split(jax.random.key(0), 2)
    terms = jax.jit(jax.vmap(one_image))(keys, label, predictions)
    for name, (total, count) in terms.items():
        assert total.shape == count.shape == (2,), name
        assert np.all(np.isfinite(total)) and np.all(np.asarray(count) > 0), name
    # Image 1's only nucleus is id 3 -> gt slot 2; 1 positive ROI from gt + none from proposals.
    assert float(terms["mask"][1][1]) == 28 * 28

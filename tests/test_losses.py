"""Per-pixel losses against numpy references: the (sum, count) pairs, not just their ratio.

The references are written here in float64 with the numerically stable formulas, and the
logits include +-100, where a naive exp / log in float32 overflows to inf or NaN. The semantic
loss (what Simple CNN, U-Net and ResNet train on) is checked on a hand-made 5 x 6 label image
whose three-class map is spelled out literally below, with "not labelled" pixels and a padding
example (valid = 0) that carry large wrong logits: counting either would change the sums.
"""

import numpy as np
import pytest

from configs import simple_cnn
from nucjax import losses, models


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)  # log(1 / (1 + e^-x)) without overflow, float64


def _bce(logits, targets):
    x = np.asarray(logits, np.float64)
    return -(targets * _log_sigmoid(x) + (1 - targets) * _log_sigmoid(-x))


def _softmax_ce(logits, classes):
    x = np.asarray(logits, np.float64)
    top = x.max(-1, keepdims=True)
    log_z = top[..., 0] + np.log(np.exp(x - top).sum(-1))
    return log_z - np.take_along_axis(x, classes[..., None], -1)[..., 0]


EXTREME = np.array(
    [[100.0, -100.0, 0.0], [-100.0, 100.0, 3.0], [0.5, -0.25, 2.0], [100.0, 100.0, -100.0]],
    np.float32,
)


def test_softmax_cross_entropy_sums_matches_numpy_at_extreme_logits():
    classes = np.array([1, 0, 2, 2], np.int32)  # the first two are confidently wrong: CE = 200
    weight = np.array([1.0, 0.5, 2.0, 0.0], np.float32)
    total, count = losses.softmax_cross_entropy_sums(EXTREME, classes, weight, np.float32(7.0))
    want = np.sum(weight * _softmax_ce(EXTREME, classes))
    # By hand: 200 and 0.5 * 200 for the wrong ones, 2 * (log(e^.5 + e^-.25 + e^2) - 2).
    assert want == pytest.approx(300 + 2 * (np.log(np.exp([0.5, -0.25, 2.0]).sum()) - 2))
    np.testing.assert_allclose(float(total), want, rtol=1e-6)
    assert float(count) == 7.0  # the normaliser is passed through, never recomputed


def test_sigmoid_cross_entropy_sums_averages_channels_and_survives_extremes():
    targets = np.array([[0, 1, 0], [1, 0, 1], [1, 1, 0], [0, 0, 1]], np.float32)
    weight = np.array([2.0, 1.0, 0.0, 3.0], np.float32)
    total, count = losses.sigmoid_cross_entropy_sums(EXTREME, targets, weight, np.float32(4.0))
    per_pixel = _bce(EXTREME, targets).mean(-1)
    # Pixel 0: BCE(100, 0) = 100, BCE(-100, 1) = 100, BCE(0, 0) = log 2.
    assert per_pixel[0] == pytest.approx((200 + np.log(2)) / 3)
    np.testing.assert_allclose(float(total), np.sum(weight * per_pixel), rtol=1e-6)
    assert np.isfinite(float(total)) and float(count) == 4.0


def test_sigmoid_cross_entropy_of_soft_targets():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (3, 4, 2)).astype(np.float32)
    targets = rng.random((3, 4, 2)).astype(np.float32)
    weight = rng.random((3, 4)).astype(np.float32)
    total, _ = losses.sigmoid_cross_entropy_sums(logits, targets, weight, np.float32(1))
    np.testing.assert_allclose(float(total), np.sum(weight * _bce(logits, targets).mean(-1)), 1e-5)


# A hand-made label image: nucleus 1 (3 x 3) touches nucleus 2 (3 x 2, on the right edge);
# two pixels at the bottom right are not labelled (-1).
LABEL = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 2, 2],
        [0, 1, 1, 1, 2, 2],
        [0, 1, 1, 1, 2, 2],
        [0, 0, 0, 0, -1, -1],
    ],
    np.int32,
)
# 0 background, 1 interior, 2 border. (2, 5) and (3, 5) are interior: outside the image and
# -1 pixels are unknown, so they never make a border. A -1 pixel is class 0, weight 0.
THREE_CLASS = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 2, 2, 2, 2, 2],
        [0, 2, 1, 2, 2, 1],
        [0, 2, 2, 2, 2, 1],
        [0, 0, 0, 0, 0, 0],
    ]
)
# Background pixels whose 3 x 3 window holds both nuclei: binary training emphasises them.
GAP = np.zeros(LABEL.shape, bool)
GAP[0, 3] = GAP[0, 4] = GAP[4, 3] = True
LABELLED = 28  # 30 pixels minus the two -1 in the valid example; the padding example: none


def _batch_and_logits(channels, seed=0):
    """Example 0: LABEL (valid); example 1: all nucleus, valid = 0 (padding), wrong logits."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (2, *LABEL.shape, channels)).astype(np.float32)
    # Unlabelled pixels and the padding example get confident wrong answers (nucleus where
    # the label reads background, background where it reads nucleus): each such pixel would
    # add >= 60 to the sum.
    logits[0, 4, 4:] = 100.0
    logits[1] = -100.0
    if channels == 3:
        logits[0, 4, 4:, 0] = -100.0
        logits[1, ..., 0] = 100.0
    logits[0, 2, 2, 0] = -100.0  # an interior pixel, confidently not background: extreme
    batch = {
        "image": np.zeros((2, *LABEL.shape, 3), np.float32),
        "label": np.stack([LABEL, np.ones_like(LABEL)]),
        "valid": np.array([1.0, 0.0], np.float32),
    }
    return batch, logits


def _loss(target, activation, logits, batch, border_weight=0.0):
    config = simple_cnn.get_config("tiny")
    config.model.target = target
    config.model.output_activation = activation
    config.model.border_weight = border_weight
    terms, pixel_metrics = models.build(config).loss(logits, batch)
    assert list(terms) == ["pixel_ce"]
    return tuple(float(x) for x in terms["pixel_ce"]), pixel_metrics


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_three_class_semantic_loss_matches_numpy(activation):
    batch, logits = _batch_and_logits(3)
    (total, count), _ = _loss("three_class", activation, logits, batch)
    x, keep = logits[0], LABEL >= 0
    if activation == "softmax":
        per_pixel = _softmax_ce(x, THREE_CLASS)
    else:
        per_pixel = _bce(x, np.eye(3)[THREE_CLASS]).mean(-1)
    assert count == LABELLED
    np.testing.assert_allclose(total, per_pixel[keep].sum(), rtol=1e-5)
    assert total < 1000  # neither the -1 pixels nor the padding example (>= 1800) leaked in


@pytest.mark.parametrize("border_weight", [0.0, 4.0])
def test_binary_semantic_loss_matches_numpy(border_weight):
    batch, logits = _batch_and_logits(1)
    (total, count), pixel_metrics = _loss("binary", "sigmoid", logits, batch, border_weight)
    x, keep = logits[0, ..., 0], LABEL >= 0
    emphasised = (THREE_CLASS == 2) | GAP
    weight = np.where(emphasised, 1.0 + border_weight, 1.0) * keep
    np.testing.assert_allclose(total, np.sum(weight * _bce(x, LABEL > 0)), rtol=1e-5)
    assert total < 1000  # the -1 pixels (200) and the padding example (3000) stayed out
    # The normaliser counts labelled pixels, not their weights: border_weight raises the loss.
    assert count == LABELLED
    predicted, true = (x > 0) & keep, (LABEL > 0) & keep
    iou = pixel_metrics["foreground_iou"]
    assert (float(iou[0]), float(iou[1])) == ((predicted & true).sum(), (predicted | true).sum())


def test_dice_term_matches_numpy_per_image():
    """BCE + Dice: the Dice pair is (weight * sum over valid images of 1 - Dice, images)."""
    batch, logits = _batch_and_logits(1)
    config = simple_cnn.get_config("tiny")
    config.model.target, config.model.dice_weight = "binary", 0.5
    terms, _ = models.build(config).loss(logits, batch)
    assert list(terms) == ["pixel_ce", "dice"]
    p, keep, truth = 1 / (1 + np.exp(-logits[0, ..., 0].astype(np.float64))), LABEL >= 0, LABEL > 0
    dice = (2 * (p * truth)[keep].sum() + 1) / ((p + truth)[keep].sum() + 1)
    total, count = (float(x) for x in terms["dice"])
    assert count == 1.0  # the padding example counts nowhere
    np.testing.assert_allclose(total, 0.5 * (1 - dice), rtol=1e-5)

"""Metrics against hand-computed answers and brute-force numpy references."""

import jax
import numpy as np
import pytest

from nucjax import metrics


def _boxes(shape, boxes):
    """Label image with each box {id: (y0, x0, y1, x1)} painted with its id."""
    label = np.zeros(shape, np.int32)
    for i, (y0, x0, y1, x1) in boxes.items():
        label[y0:y1, x0:x1] = i
    return label


def _partial(label, nucleus_id, n_pixels, new_id):
    """Prediction covering the first n_pixels (raster order) of one true nucleus."""
    pred = np.zeros_like(label)
    ys, xs = np.nonzero(label == nucleus_id)
    pred[ys[:n_pixels], xs[:n_pixels]] = new_id
    return pred


TRUTH = _boxes((20, 20), {1: (0, 0, 5, 5), 2: (0, 10, 4, 15), 3: (10, 10, 15, 15)})


def test_perfect_prediction_scores_one_with_any_ids():
    pred = np.where(TRUTH > 0, TRUTH * 7 + 100, 0)  # other, non-contiguous ids
    assert metrics.dsb_image_score(TRUTH, pred) == 1.0
    result = metrics.evaluate_instances([TRUTH], [pred])
    assert result["pq"] == result["f1@0.50"] == result["foreground_iou_pooled"] == 1.0


def test_empty_cases():
    empty = np.zeros_like(TRUTH)
    assert metrics.dsb_image_score(TRUTH, empty) == 0.0  # nothing found
    assert metrics.dsb_image_score(empty, TRUTH) == 0.0  # only false positives
    assert metrics.dsb_image_score(empty, empty) == 1.0  # chosen convention: perfect
    assert metrics.panoptic_quality(TRUTH, empty) == (0.0, 0.0, 0.0)


def test_iou_just_above_half_counts_only_at_050():
    # Nucleus 1 (5x5 = 25 px) predicted by 13 of its pixels: IoU 13/25 = 0.52; 2 and 3 exact.
    pred = _partial(TRUTH, 1, 13, 1) + np.where(TRUTH > 1, TRUTH, 0)
    np.testing.assert_allclose(metrics.iou_matrix(TRUTH, pred), np.diag([0.52, 1, 1]))
    counts = metrics.matching_counts(TRUTH, pred)
    np.testing.assert_array_equal(counts["tp"], [3] + [2] * 9)
    np.testing.assert_array_equal(counts["fp"], [0] + [1] * 9)
    # t = 0.50: 3/3; t >= 0.55: 2 / (2 + 1 + 1).
    assert metrics.dsb_image_score(TRUTH, pred) == pytest.approx((1 + 9 * 0.5) / 10)


def test_thresholds_are_strict():
    truth = _boxes((8, 8), {1: (0, 0, 4, 5)})  # 20 px
    # IoU exactly 0.55 (11/20) is no hit at 0.55; exactly 0.5 (10/20) is no hit at all.
    at_055 = metrics.matching_counts(truth, _partial(truth, 1, 11, 1))["tp"]
    np.testing.assert_array_equal(at_055, [1] + [0] * 9)
    assert metrics.dsb_image_score(truth, _partial(truth, 1, 11, 1)) == pytest.approx(0.1)
    assert metrics.dsb_image_score(truth, _partial(truth, 1, 10, 1)) == 0.0


def test_false_positives_and_negatives_by_hand():
    # 1 exact; 2 predicted by 8 of its 20 px (IoU 0.4: FP + FN); 3 missed (FN); one spurious
    # prediction far away (FP). TP 1, FP 2, FN 2 at every threshold -> 1/5.
    pred = np.where(TRUTH == 1, 5, 0) + _partial(TRUTH, 2, 8, 9)
    pred[18:20, 0:3] = 4
    counts = metrics.matching_counts(TRUTH, pred)
    assert counts["tp"].tolist() == [1] * 10
    assert counts["fp"].tolist() == [2] * 10
    assert counts["fn"].tolist() == [2] * 10
    result = metrics.evaluate_instances([TRUTH], [pred])
    assert result["dsb_score"] == pytest.approx(0.2)
    assert result["precision@0.50"] == pytest.approx(1 / 3)
    assert result["recall@0.50"] == pytest.approx(1 / 3)
    assert result["f1@0.50"] == pytest.approx(1 / 3)
    row = result["images"][0]
    assert (row["tp@0.50"], row["fp@0.50"], row["fn@0.50"]) == (1, 2, 2)


def test_panoptic_quality_by_hand():
    # Pairs: IoU 0.52 and 1.0 (TP 2), nucleus 3 missed (FN 1), one spurious (FP 1).
    pred = _partial(TRUTH, 1, 13, 1) + np.where(TRUTH == 2, 2, 0)
    pred[18:20, 0:3] = 3
    pq, sq, rq = metrics.panoptic_quality(TRUTH, pred)
    assert sq == pytest.approx((0.52 + 1.0) / 2)
    assert rq == pytest.approx(2 / (2 + 0.5 + 0.5))
    assert pq == pytest.approx(sq * rq)


def _random_labels(rng, shape, ids):
    """Random blocky labels (4x4 cells) drawn from ids, upsampled so nuclei span pixels."""
    cells = rng.choice(ids, size=(shape[0] // 4, shape[1] // 4))
    label = np.kron(cells, np.ones((4, 4), np.int64))
    shift = rng.integers(0, 4, 2)
    return np.roll(label, shift, axis=(0, 1))


def _brute_iou(true, pred):
    t_ids = [i for i in np.unique(true) if i > 0]
    p_ids = [i for i in np.unique(pred) if i > 0]
    keep = true >= 0
    out = np.zeros((len(t_ids), len(p_ids)))
    for a, i in enumerate(t_ids):
        for b, j in enumerate(p_ids):
            ti, pj = (true == i) & keep, (pred == j) & keep
            out[a, b] = (ti & pj).sum() / max((ti | pj).sum(), 1)
    return out


@pytest.mark.parametrize(
    "true_ids,pred_ids",
    [
        ([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6]),
        ([0, 3, 17, 200], [0, 5, 9, 40000]),  # non-contiguous
        ([0, 7, 2**40], [0, 3, 10**12, 10**12 + 5]),  # huge ids: the sort path
        ([-1, 0, 2, 5], [0, 1, 2]),  # true -1 = not labelled
        ([1, 2, 3], [4, 5]),  # no background at all
    ],
)
def test_iou_matrix_matches_brute_force(true_ids, pred_ids):
    rng = np.random.default_rng(len(true_ids) * 10 + len(pred_ids))
    true = _random_labels(rng, (48, 40), true_ids)
    pred = _random_labels(rng, (48, 40), pred_ids)
    np.testing.assert_allclose(metrics.iou_matrix(true, pred), _brute_iou(true, pred))


def test_ignored_pixels_do_not_count():
    truth = TRUTH.copy()
    truth[15:, :] = -1  # the false positive below lies in the unlabelled area
    pred = np.where(TRUTH > 0, TRUTH, 0)
    pred[18:20, 0:3] = 4
    assert metrics.dsb_image_score(truth, pred) == 1.0
    result = metrics.evaluate_instances([truth], [pred])
    assert result["pixel_accuracy"] == 1.0


def test_pixel_metrics_and_set_means_by_hand():
    truth = [TRUTH, np.zeros_like(TRUTH)]
    pred = [np.where(TRUTH == 1, 1, 0), np.zeros_like(TRUTH)]
    result = metrics.evaluate_instances(truth, pred)
    # Image 1: fg 25 + 20 + 25 = 70 true px, 25 predicted, all inside: IoU 25/70.
    assert result["images"][0]["foreground_iou"] == pytest.approx(25 / 70)
    assert result["images"][1]["foreground_iou"] == 1.0  # both empty
    assert result["foreground_iou_pooled"] == pytest.approx(25 / 70)
    assert result["foreground_iou_mean"] == pytest.approx((25 / 70 + 1) / 2)
    assert result["pixel_accuracy"] == pytest.approx((800 - 45) / 800)
    assert result["dsb_score"] == pytest.approx((1 / 3 + 1) / 2)
    np.testing.assert_allclose(
        metrics.average_precision_by_threshold(truth, pred), np.full(10, (1 / 3 + 1) / 2)
    )
    assert metrics.dsb_score(truth, pred) == pytest.approx((1 / 3 + 1) / 2)
    assert result["pq"] == pytest.approx((1 / (1 + 1) + 1) / 2)  # RQ 1/(1 + 0 + 2/2), SQ 1
    assert result["pq_pooled"] == pytest.approx(0.5)


KERAS_PROB = np.array([[0.9, 0.6], [0.3, 0.0]], np.float32)
KERAS_LABEL = np.array([[1, 2], [0, 0]], np.int32)
# t in {0.50, 0.55}: perfect (1); t in 0.60..0.85 (six): fg 1/2, bg 2/3, mean 7/12;
# t in {0.90, 0.95}: nothing predicted: fg 0, bg 2/4, mean 1/4 (0.9 > 0.9 is false).
KERAS_EXPECTED = (2 * 1 + 6 * 7 / 12 + 2 * 0.25) / 10


def test_keras_mean_iou_by_hand():
    assert metrics.keras_mean_iou(KERAS_PROB, KERAS_LABEL) == pytest.approx(KERAS_EXPECTED)
    # Unlabelled pixels are ignored; an all-background image with no prediction is perfect.
    padded = np.pad(KERAS_LABEL, ((0, 1), (0, 0)), constant_values=-1)
    padded_prob = np.pad(KERAS_PROB, ((0, 1), (0, 0)), constant_values=0.99)
    assert metrics.keras_mean_iou(padded_prob, padded) == pytest.approx(KERAS_EXPECTED)
    assert metrics.keras_mean_iou(np.zeros((3, 3)), np.zeros((3, 3), int)) == 1.0
    # Pixels are pooled over images, not averaged per image.
    pooled = metrics.keras_mean_iou([KERAS_PROB, KERAS_PROB], [KERAS_LABEL, KERAS_LABEL])
    assert pooled == pytest.approx(KERAS_EXPECTED)


def test_summarize_subsets_add_up_like_the_whole_set():
    """By-modality reports summarise subsets of per-image records: a subset's set metrics must
    equal evaluate_instances on just those images, and keras_mean_iou must pool pixels."""
    rng = np.random.default_rng(1)
    truths = [rng.integers(-1, 4, (9, 11)) for _ in range(4)]
    preds = [rng.integers(0, 5, (9, 11)) for _ in range(4)]
    probs = [rng.uniform(size=(9, 11)).astype(np.float32) for _ in range(4)]
    records = [metrics.image_record(t, p, f) for t, p, f in zip(truths, preds, probs, strict=True)]
    subset = metrics.summarize(records[1:3])
    direct = metrics.evaluate_instances(truths[1:3], preds[1:3], probs[1:3])
    for key, value in subset.items():
        assert value == pytest.approx(direct[key]), key
    assert subset["keras_mean_iou"] == pytest.approx(
        metrics.keras_mean_iou(probs[1:3], truths[1:3])
    )
    keep = [(t >= 0) for t in truths[1:3]]
    correct = sum(
        ((f > 0.5) == (t > 0))[k].sum()
        for f, t, k in zip(probs[1:3], truths[1:3], keep, strict=True)
    )
    assert subset["map_pixel_accuracy"] == pytest.approx(correct / sum(k.sum() for k in keep))


def _reference_pixel_sums(prob, label, valid, threshold):
    keep = (label >= 0) & (valid[:, None, None] > 0)
    pred, true = prob > threshold, label > 0
    accuracy = ((pred == true) & keep).sum(), keep.sum()
    iou = (pred & true & keep).sum(), ((pred | true) & keep).sum()
    return accuracy, iou


def test_pixel_sums_against_numpy():
    rng = np.random.default_rng(0)
    prob = rng.uniform(size=(3, 6, 7)).astype(np.float32)
    label = rng.integers(-1, 4, size=(3, 6, 7)).astype(np.int32)
    valid = np.array([1.0, 1.0, 0.0], np.float32)
    sums = jax.jit(metrics.pixel_sums, static_argnames="threshold")(
        prob, label, valid, threshold=0.4
    )
    accuracy, iou = _reference_pixel_sums(prob, label, valid, 0.4)
    np.testing.assert_allclose(sums["pixel_accuracy"], accuracy)
    np.testing.assert_allclose(sums["foreground_iou"], iou)
    # The invalid example and the -1 pixels really are excluded: changing them changes nothing.
    prob2 = prob.copy()
    prob2[2] = 1 - prob2[2]
    prob2[label == -1] = 1 - prob2[label == -1]
    sums2 = jax.jit(metrics.pixel_sums)(prob2, label, valid, 0.4)
    np.testing.assert_allclose(sums2["foreground_iou"], sums["foreground_iou"])
    np.testing.assert_allclose(sums2["pixel_accuracy"], sums["pixel_accuracy"])


def test_pixel_sums_by_hand():
    prob = np.array([[[0.9, 0.9], [0.1, 0.9]]], np.float32)
    label = np.array([[[1, 0], [2, -1]]], np.int32)
    sums = metrics.pixel_sums(prob, label, np.ones(1, np.float32))
    # labelled: 3 px; correct: (0,0) only; fg pred {(0,0),(0,1)}, true {(0,0),(1,0)}.
    np.testing.assert_allclose(sums["pixel_accuracy"], (1, 3))
    np.testing.assert_allclose(sums["foreground_iou"], (1, 3))


def test_very_many_nuclei_use_the_sparse_histogram():
    # 128 * 128 one-pixel nuclei: a dense (n_true + 1) x (n_pred + 1) table would be too big.
    truth = np.arange(1, 128 * 128 + 1).reshape(128, 128) * 3
    assert metrics.dsb_image_score(truth, truth + 10) == 1.0
    pairs = np.arange(128 * 128).reshape(128, 128) // 2 + 1  # 2-pixel nuclei: IoU exactly 0.5
    counts = metrics.matching_counts(truth, pairs)
    assert counts["tp"].max() == 0
    assert counts["fn"].min() == 128 * 128 and counts["fp"].min() == 128 * 64

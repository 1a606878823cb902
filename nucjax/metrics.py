"""Segmentation metrics: in-step pixel sums (jax) and the instance metrics of DSB 2018 (numpy).

In-step metrics travel as (sum, count) pairs (nucjax.models.spec): mean = sum / count, summed
over devices and batches first. Pixels labelled -1 and examples with valid = 0 count in none.

Host-side metrics take instance label images, (H, W) ints, 0 background, 1..N nuclei (ids may
be non-contiguous). Pixels whose true label is negative (-1, not labelled) are left out of every
host metric too, from the predicted nuclei as well as the true ones. All of them come from one
joint histogram of (true id, predicted id) per image, so a set of 65 images of 1040 x 1388 with
375 nuclei each scores in about 4 s on 2 CPU cores (experiments/bench_metrics.py).

Ratios with an empty denominator: an image with neither true nor predicted nuclei scores 1 (a
perfect, empty answer; Kaggle's stage-1 test images all contain nuclei, so Kaggle never had to
decide); any other ratio x / 0 is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# IoU thresholds of the DSB 2018 score: 0.50, 0.55, ..., 0.95 (= k / 20, k = 10..19).
IOU_THRESHOLDS = np.round(np.arange(10, 20) / 20, 2)
# The Keras U-Net starter's thresholds on the probability map: np.arange(0.5, 1.0, 0.05).
KERAS_THRESHOLDS = np.arange(0.5, 1.0, 0.05).astype(np.float32)


# --------------------------------------------------------------------------------------------
# In-step pixel metrics (jax, jittable)


def _labelled(label: jax.Array, valid: jax.Array) -> jax.Array:
    return (label >= 0) & (valid[:, None, None] > 0)


def pixel_sums(
    foreground_prob: jax.Array, label: jax.Array, valid: jax.Array, threshold: float = 0.5
) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Pixel accuracy and pooled foreground IoU as (sum, count) pairs.

    foreground_prob: (B, H, W) float; label: (B, H, W) int32 (-1 = not labelled); valid: (B,).
    A pixel is predicted nucleus when foreground_prob > threshold and is truly one when label > 0.
    pixel_accuracy = (correctly classified pixels, labelled pixels); foreground_iou =
    (|predicted & true|, |predicted | true|) pooled over all labelled pixels of valid examples.
    """
    keep = _labelled(label, valid)
    pred = foreground_prob > threshold
    true = label > 0
    f32 = jnp.float32
    return {
        "pixel_accuracy": (
            jnp.sum((pred == true) & keep, dtype=f32),
            jnp.sum(keep, dtype=f32),
        ),
        "foreground_iou": (
            jnp.sum(pred & true & keep, dtype=f32),
            jnp.sum((pred | true) & keep, dtype=f32),
        ),
    }


def jaccard_sums(
    foreground_prob: jax.Array, label: jax.Array, valid: jax.Array, threshold: float = 0.5
) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Mean per-image foreground IoU as a (sum, count) pair: (sum of image IoUs, valid images).

    Each valid image's IoU of (foreground_prob > threshold) with (label > 0) over its labelled
    pixels; an image with neither predicted nor true foreground scores 1.
    """
    keep = _labelled(label, valid)
    pred = foreground_prob > threshold
    true = label > 0
    inter = jnp.sum(pred & true & keep, axis=(1, 2), dtype=jnp.float32)
    union = jnp.sum((pred | true) & keep, axis=(1, 2), dtype=jnp.float32)
    iou = jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)
    weight = (valid > 0).astype(jnp.float32)
    return {"jaccard": (jnp.sum(iou * weight), jnp.sum(weight))}


def keras_iou_sums(
    foreground_prob: jax.Array, label: jax.Array, valid: jax.Array
) -> dict[str, tuple[jax.Array, jax.Array]]:
    """The Keras-starter mean IoU's ingredients as (intersection, union) pairs, pooled.

    Keys `keras_iou/{t:.2f}/{bg|fg}`, one per threshold t of KERAS_THRESHOLDS and class; sum the
    pairs over batches, then keras_mean_iou_from_sums. Same definition as keras_mean_iou.
    """
    keep = _labelled(label, valid)[..., None]
    pred = foreground_prob[..., None] > jnp.asarray(KERAS_THRESHOLDS)  # (B, H, W, T)
    true = (label > 0)[..., None]
    f32 = jnp.float32
    inter = {"fg": jnp.sum(pred & true & keep, (0, 1, 2), dtype=f32)}
    union = {"fg": jnp.sum((pred | true) & keep, (0, 1, 2), dtype=f32)}
    inter["bg"] = jnp.sum(~pred & ~true & keep, (0, 1, 2), dtype=f32)
    union["bg"] = jnp.sum((~pred | ~true) & keep, (0, 1, 2), dtype=f32)
    return {
        f"keras_iou/{t:.2f}/{c}": (inter[c][i], union[c][i])
        for i, t in enumerate(KERAS_THRESHOLDS)
        for c in ("bg", "fg")
    }


def keras_mean_iou_from_sums(sums: dict[str, tuple[float, float]]) -> float:
    """Keras-starter mean IoU from keras_iou_sums' pairs (summed over batches): host side."""
    per_threshold = []
    for t in KERAS_THRESHOLDS:
        pairs = [sums[f"keras_iou/{t:.2f}/{c}"] for c in ("bg", "fg")]
        ious = [float(s) / float(n) for s, n in pairs if float(n) > 0]
        per_threshold.append(np.mean(ious) if ious else 0.0)
    return float(np.mean(per_threshold))


# --------------------------------------------------------------------------------------------
# Host-side instance metrics (numpy)


def _compact(label: np.ndarray) -> tuple[np.ndarray, int]:
    """Ids 0, a < b < ... -> 0, 1, 2, ... (same order), and the number of nuclei."""
    label = label.astype(np.int64, copy=False)
    if label.size == 0:
        return label, 0
    if label.min() < 0:
        raise ValueError("predicted labels must be >= 0")
    top = int(label.max())
    if top <= max(4 * label.size, 1 << 16):  # a lookup table: linear time, no sort
        present = np.bincount(label, minlength=top + 1) > 0
        if present[1:].all():  # already 1..N, the usual case: nothing to do
            return label, top
        present[0] = False
        lut = np.zeros(top + 1, np.int64)
        lut[present] = np.arange(1, int(present.sum()) + 1)
        return lut[label], int(present.sum())
    ids, inverse = np.unique(label, return_inverse=True)
    inverse = inverse.astype(np.int64) + (0 if ids[0] == 0 else 1)
    return inverse, int(np.count_nonzero(ids))


def _joint_histogram(true_label: np.ndarray, pred_label: np.ndarray):
    """Sparse joint histogram of (true index, predicted index), index 0 = background.

    Returns (ti, pi, count) over the non-empty pairs, n_true and n_pred. Pixels with a negative
    true label are dropped first.
    """
    true_label = np.asarray(true_label).ravel()
    pred_label = np.asarray(pred_label).ravel()
    if true_label.shape != pred_label.shape:
        raise ValueError(f"shapes differ: {true_label.shape} vs {pred_label.shape}")
    if true_label.size and true_label.min() < 0:
        keep = true_label >= 0
        true_label, pred_label = true_label[keep], pred_label[keep]
    t, n_true = _compact(true_label)
    p, n_pred = _compact(pred_label)
    codes = t * (n_pred + 1) + p
    size = (n_true + 1) * (n_pred + 1)
    if size <= (1 << 24):
        hist = np.bincount(codes, minlength=size)
        nonzero = np.flatnonzero(hist)
        count = hist[nonzero]
    else:  # very many predicted specks (an untrained net): sort instead of a dense table
        nonzero, count = np.unique(codes, return_counts=True)
    ti, pi = np.divmod(nonzero, n_pred + 1)
    return ti, pi, count.astype(np.int64), n_true, n_pred


def iou_matrix(true_label: np.ndarray, pred_label: np.ndarray) -> np.ndarray:
    """IoU of every true nucleus (rows, ascending id) with every predicted one (columns).

    true_label, pred_label: (H, W) int instance ids, 0 background, any non-contiguous ids.
    Returns (n_true, n_pred) float64.
    """
    ti, pi, count, n_true, n_pred = _joint_histogram(true_label, pred_label)
    area_t = np.bincount(ti, count, minlength=n_true + 1)
    area_p = np.bincount(pi, count, minlength=n_pred + 1)
    both = (ti > 0) & (pi > 0)
    ti, pi, inter = ti[both], pi[both], count[both]
    iou = np.zeros((n_true, n_pred))
    iou[ti - 1, pi - 1] = inter / (area_t[ti] + area_p[pi] - inter)
    return iou


def _image_counts(true_label: np.ndarray, pred_label: np.ndarray) -> dict[str, np.ndarray]:
    """Everything the set metrics need from one image, read off one joint histogram."""
    ti, pi, count, n_true, n_pred = _joint_histogram(true_label, pred_label)
    area_t = np.bincount(ti, count, minlength=n_true + 1).astype(np.int64)
    area_p = np.bincount(pi, count, minlength=n_pred + 1).astype(np.int64)
    both = (ti > 0) & (pi > 0)
    inter = count[both]
    union = area_t[ti[both]] + area_p[pi[both]] - inter
    # IoU > k/20 exactly in integers; for IoU > 0.5 a pair is the only match of both nuclei.
    k = np.round(IOU_THRESHOLDS * 20).astype(np.int64)
    tp = np.sum(20 * inter[None, :] > k[:, None] * union[None, :], axis=1)
    matched = 2 * inter > union
    fg_inter = int(inter.sum())
    return {
        "n_true": n_true,
        "n_pred": n_pred,
        "tp": tp,
        "matched_iou_sum": float(np.sum(inter[matched] / union[matched])),
        "fg_intersection": fg_inter,
        "fg_union": int(count.sum() - count[(ti == 0) & (pi == 0)].sum()),
        "pixels_correct": int(count[(ti == 0) & (pi == 0)].sum()) + fg_inter,
        "pixels": int(count.sum()),
    }


def _ratio(num, den, both_empty: bool):
    """num / den elementwise; x / 0 is 1 for an image with no nuclei at all, else 0."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.where(den > 0, num / np.maximum(den, 1), 1.0 if both_empty else 0.0)


def _image_row(c: dict) -> dict[str, float]:
    empty = c["n_true"] == 0 and c["n_pred"] == 0
    tp = c["tp"]
    fp, fn = c["n_pred"] - tp, c["n_true"] - tp
    ap = _ratio(tp, tp + fp + fn, empty)
    tp5, fp5, fn5 = int(tp[0]), int(fp[0]), int(fn[0])
    rq = float(_ratio(tp5, tp5 + 0.5 * fp5 + 0.5 * fn5, empty))
    sq = float(_ratio(c["matched_iou_sum"], tp5, empty))
    return {
        "n_true": c["n_true"],
        "n_pred": c["n_pred"],
        "dsb_score": float(ap.mean()),
        **{f"ap@{t:.2f}": float(a) for t, a in zip(IOU_THRESHOLDS, ap, strict=True)},
        "tp@0.50": tp5,
        "fp@0.50": fp5,
        "fn@0.50": fn5,
        "precision@0.50": float(_ratio(tp5, tp5 + fp5, empty)),
        "recall@0.50": float(_ratio(tp5, tp5 + fn5, empty)),
        "f1@0.50": float(_ratio(2 * tp5, 2 * tp5 + fp5 + fn5, empty)),
        "pq": sq * rq,
        "sq": sq,
        "rq": rq,
        "foreground_iou": float(_ratio(c["fg_intersection"], c["fg_union"], True)),
        "pixel_accuracy": float(_ratio(c["pixels_correct"], c["pixels"], True)),
    }


def matching_counts(true_label: np.ndarray, pred_label: np.ndarray) -> dict[str, np.ndarray]:
    """TP, FP, FN of one image at each IoU threshold of IOU_THRESHOLDS, (10,) int arrays each.

    TP at t: predictions whose IoU with a true nucleus is > t; FP = n_pred - TP; FN = n_true - TP.
    """
    c = _image_counts(true_label, pred_label)
    tp = c["tp"]
    return {"tp": tp, "fp": c["n_pred"] - tp, "fn": c["n_true"] - tp}


def dsb_image_score(true_label: np.ndarray, pred_label: np.ndarray) -> float:
    """DSB 2018 score of one image: mean over t = 0.50, 0.55, ..., 0.95 of TP / (TP + FP + FN).

    A prediction is a TP at t when its IoU with a true nucleus is > t (strictly); FP are
    unmatched predictions, FN unmatched true nuclei. No true and no predicted nuclei: 1.
    """
    return _image_row(_image_counts(true_label, pred_label))["dsb_score"]


def dsb_score(true_labels: Sequence[np.ndarray], pred_labels: Sequence[np.ndarray]) -> float:
    """DSB 2018 score of a set: the mean over images of dsb_image_score."""
    return evaluate_instances(true_labels, pred_labels)["dsb_score"]


def average_precision_by_threshold(
    true_labels: Sequence[np.ndarray], pred_labels: Sequence[np.ndarray]
) -> np.ndarray:
    """(10,) the mean over images of TP / (TP + FP + FN) at each t of IOU_THRESHOLDS."""
    result = evaluate_instances(true_labels, pred_labels)
    return np.array([result[f"ap@{t:.2f}"] for t in IOU_THRESHOLDS])


def panoptic_quality(true_label: np.ndarray, pred_label: np.ndarray) -> tuple[float, float, float]:
    """(PQ, SQ, RQ) of one image, matching at IoU > 0.5 (Kirillov et al. 2019).

    SQ = mean IoU of matched pairs, RQ = TP / (TP + FP/2 + FN/2), PQ = SQ * RQ.
    """
    row = _image_row(_image_counts(true_label, pred_label))
    return row["pq"], row["sq"], row["rq"]


def keras_mean_iou(
    foreground_probs: Sequence[np.ndarray] | np.ndarray,
    true_labels: Sequence[np.ndarray] | np.ndarray,
) -> float:
    """The "mean IoU" of the Keras U-Net starter kernel (K. Amdal-Saevik, DSB 2018).

    For each t in np.arange(0.5, 1.0, 0.05), binarise the probability map at prob > t and take
    tf.metrics.mean_iou with 2 classes: the mean of background IoU and foreground IoU (a class
    absent from both truth and prediction is left out) over the pooled pixels of all images;
    then average over the 10 thresholds. Truth: label > 0; pixels with label < 0 are ignored.
    """
    if isinstance(foreground_probs, np.ndarray) and foreground_probs.ndim == 2:
        foreground_probs, true_labels = [foreground_probs], [true_labels]
    n = len(KERAS_THRESHOLDS)
    pos = np.zeros(n + 1)  # pixels by how many thresholds they exceed, truly foreground
    allpix = np.zeros(n + 1)
    for prob, label in zip(foreground_probs, true_labels, strict=True):
        prob, label = np.asarray(prob, np.float32).ravel(), np.asarray(label).ravel()
        keep = label >= 0
        above = np.searchsorted(KERAS_THRESHOLDS, prob[keep], side="left")  # #{t: prob > t}
        allpix += np.bincount(above, minlength=n + 1)
        pos += np.bincount(above, (label[keep] > 0).astype(np.float64), minlength=n + 1)
    # Predicted positive at threshold k <=> prob exceeds thresholds 0..k <=> above > k.
    pred_pos = np.cumsum(allpix[::-1])[::-1][1:]
    tp = np.cumsum(pos[::-1])[::-1][1:]
    true_pos, total = pos.sum(), allpix.sum()
    fp, fn = pred_pos - tp, true_pos - tp
    tn = total - tp - fp - fn
    ious = np.stack([tp / np.maximum(tp + fp + fn, 1), tn / np.maximum(tn + fp + fn, 1)])
    present = np.stack([tp + fp + fn > 0, tn + fp + fn > 0])
    per_t = np.where(present.any(0), (ious * present).sum(0) / np.maximum(present.sum(0), 1), 0)
    return float(per_t.mean())


def evaluate_instances(
    true_labels: Sequence[np.ndarray],
    pred_labels: Sequence[np.ndarray],
    foreground_probs: Sequence[np.ndarray] | None = None,
) -> dict:
    """All instance and pixel metrics of a set of images, and one row per image.

    true_labels, pred_labels: lists of (H, W) int instance ids (true -1 = not labelled);
    foreground_probs: optional (H, W) probability maps, for keras_mean_iou.
    Set values: dsb_score and ap@t are means over images; precision/recall/f1@0.50 come from TP,
    FP, FN pooled over images; pq/sq/rq are means over images (the nuclei convention), and
    pq/sq/rq_pooled from pooled counts; foreground_iou_pooled and pixel_accuracy pool pixels,
    foreground_iou_mean averages per-image IoUs. "images" holds the per-image rows.
    """
    if len(true_labels) != len(pred_labels):
        raise ValueError(f"{len(true_labels)} true vs {len(pred_labels)} predicted images")
    counts = [_image_counts(t, p) for t, p in zip(true_labels, pred_labels, strict=True)]
    rows = [_image_row(c) for c in counts]

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows])) if rows else float("nan")

    tp, fp, fn = (sum(r[f"{k}@0.50"] for r in rows) for k in ("tp", "fp", "fn"))
    empty = tp + fp + fn == 0
    rq = float(_ratio(tp, tp + 0.5 * fp + 0.5 * fn, empty))
    sq = float(_ratio(sum(c["matched_iou_sum"] for c in counts), tp, empty))
    total = {k: sum(c[k] for c in counts) for k in ("fg_intersection", "fg_union")}
    result = {
        "num_images": len(rows),
        "dsb_score": mean("dsb_score"),
        **{f"ap@{t:.2f}": mean(f"ap@{t:.2f}") for t in IOU_THRESHOLDS},
        "precision@0.50": float(_ratio(tp, tp + fp, empty)),
        "recall@0.50": float(_ratio(tp, tp + fn, empty)),
        "f1@0.50": float(_ratio(2 * tp, 2 * tp + fp + fn, empty)),
        "pq": mean("pq"),
        "sq": mean("sq"),
        "rq": mean("rq"),
        "pq_pooled": sq * rq,
        "sq_pooled": sq,
        "rq_pooled": rq,
        "foreground_iou_pooled": float(_ratio(total["fg_intersection"], total["fg_union"], True)),
        "foreground_iou_mean": mean("foreground_iou"),
        "pixel_accuracy": float(
            _ratio(sum(c["pixels_correct"] for c in counts), sum(c["pixels"] for c in counts), True)
        ),
    }
    if foreground_probs is not None:
        result["keras_mean_iou"] = keras_mean_iou(foreground_probs, true_labels)
    result["images"] = rows
    return result

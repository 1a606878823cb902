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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nucjax.postprocess import relabel_sequential

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


# --------------------------------------------------------------------------------------------
# Host-side instance metrics (numpy)


def _compact(label: np.ndarray) -> tuple[np.ndarray, int]:
    """Ids 0, a < b < ... -> 0, 1, 2, ... (same order) as int64, and the number of nuclei."""
    compact = relabel_sequential(label).astype(np.int64)
    return compact, int(compact.max()) if compact.size else 0


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


def _image_counts(true_label: np.ndarray, pred_label: np.ndarray) -> dict:
    """The matching counts of one image, read off one joint histogram (additive over images
    except n_true/n_pred per-image use)."""
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
    return {
        "n_true": n_true,
        "n_pred": n_pred,
        "tp": tp,
        "matched_iou_sum": float(np.sum(inter[matched] / union[matched])),
    }


def _ratio(num, den, both_empty: bool):
    """num / den elementwise; x / 0 is 1 for an image with no nuclei at all, else 0."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.where(den > 0, num / np.maximum(den, 1), 1.0 if both_empty else 0.0)


def _matching_summary(tp, n_true, n_pred, matched_iou_sum) -> dict[str, float]:
    """Scores from matching counts (of one image, or pooled over images)."""
    empty = n_true == 0 and n_pred == 0
    fp, fn = n_pred - tp, n_true - tp
    ap = _ratio(tp, tp + fp + fn, empty)
    tp5, fp5, fn5 = int(tp[0]), int(fp[0]), int(fn[0])
    rq = float(_ratio(tp5, tp5 + 0.5 * fp5 + 0.5 * fn5, empty))
    sq = float(_ratio(matched_iou_sum, tp5, empty))
    return {
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
    }


def pixel_counts(foreground: np.ndarray, true_label: np.ndarray, threshold: float = 0.5):
    """pixel_sums (the trainer's definition) of one (H, W) map as {name: (sum, count)} floats.

    foreground: probability map, or a predicted label image read as (label > 0) > threshold.
    """
    sums = pixel_sums(
        jnp.asarray(foreground, jnp.float32)[None],
        jnp.asarray(true_label, jnp.int32)[None],
        jnp.ones(1, jnp.float32),
        threshold,
    )
    return {k: (float(a), float(b)) for k, (a, b) in jax.device_get(sums).items()}


def image_record(
    true_label: np.ndarray,
    pred_label: np.ndarray | None = None,
    foreground_prob: np.ndarray | None = None,
) -> dict:
    """One image's metrics: {"row": per-image values, "sums": what set metrics add up}.

    true_label: (H, W) int, -1 = not labelled; pred_label: (H, W) int >= 0 predicted nuclei
    (instance and pixel metrics of the nuclei); foreground_prob: (H, W) probability map (the
    map_* pixel metrics and the Keras-starter mean IoU). Either may be None. summarize() turns
    any list of records into set metrics, so subsets (one modality) cost nothing extra.
    """
    row: dict[str, Any] = {}
    sums: dict[str, Any] = {}
    if pred_label is not None:
        c = _image_counts(true_label, pred_label)
        sums["counts"] = c
        sums["pixels"] = pixel_counts(np.asarray(pred_label) > 0, true_label)
        row.update(n_true=c["n_true"], n_pred=c["n_pred"], **_matching_summary(**c))
    if foreground_prob is not None:
        sums["map_pixels"] = pixel_counts(foreground_prob, true_label)
        sums["keras"] = _keras_histograms(foreground_prob, true_label)
    for prefix in ("", "map_"):
        for name, (num, den) in sums.get(f"{prefix}pixels", {}).items():
            row[prefix + name] = float(_ratio(num, den, True))
    return {"row": row, "sums": sums}


def additive_sums(record: dict) -> dict[str, Any]:
    """The pixel parts of an image_record's "sums" as JSON lists: {"pixels" / "map_pixels":
    {name: [sum, count]}, "keras": [all (11,), positive (11,)]} (those present).

    The evaluators keep it in each image's row, so that pooled pixel metrics can be recomputed
    (pooled_from_sums) or resampled over images from a report alone.
    """
    sums = record["sums"]
    out: dict[str, Any] = {
        key: {name: [float(a), float(b)] for name, (a, b) in sums[key].items()}
        for key in ("pixels", "map_pixels")
        if key in sums
    }
    if "keras" in sums:
        out["keras"] = [np.asarray(h, np.float64).tolist() for h in sums["keras"]]
    return out


def pooled_from_sums(key: str, name: str, sums: np.ndarray) -> float:
    """A pooled pixel metric from additive_sums parts added over images.

    key "pixels" / "map_pixels" with name "foreground_iou" / "pixel_accuracy": sums (2,) =
    [sum, count]; key "keras" (name ignored): sums (2, 11) = [all, positive] histograms.
    Equals summarize()'s value for the same images.
    """
    sums = np.asarray(sums, np.float64)
    if key == "keras":
        return _keras_from_histograms(sums[0], sums[1])
    return float(_ratio(sums[0], sums[1], True))


def _instance_summary(records: Sequence[dict]) -> dict[str, float]:
    rows = [r["row"] for r in records]

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    counts = [r["sums"]["counts"] for r in records]
    pooled = _matching_summary(
        tp=sum((c["tp"] for c in counts), np.zeros(len(IOU_THRESHOLDS), np.int64)),
        n_true=sum(c["n_true"] for c in counts),
        n_pred=sum(c["n_pred"] for c in counts),
        matched_iou_sum=sum(c["matched_iou_sum"] for c in counts),
    )
    return {
        "true_nuclei": int(sum(c["n_true"] for c in counts)),
        "predicted_nuclei": int(sum(c["n_pred"] for c in counts)),
        "dsb_score": mean("dsb_score"),
        **{f"ap@{t:.2f}": mean(f"ap@{t:.2f}") for t in IOU_THRESHOLDS},
        **{k: pooled[k] for k in ("precision@0.50", "recall@0.50", "f1@0.50")},
        "pq": mean("pq"),
        "sq": mean("sq"),
        "rq": mean("rq"),
        "pq_pooled": pooled["pq"],
        "sq_pooled": pooled["sq"],
        "rq_pooled": pooled["rq"],
        "foreground_iou_mean": mean("foreground_iou"),
    }


def summarize(records: Sequence[dict]) -> dict[str, float]:
    """Set metrics of image_record()s (see evaluate_instances for the conventions)."""
    result: dict[str, float] = {"num_images": len(records)}
    if records and all("counts" in r["sums"] for r in records):
        result.update(_instance_summary(records))
    for prefix in ("", "map_"):
        parts = [r["sums"][f"{prefix}pixels"] for r in records if f"{prefix}pixels" in r["sums"]]
        for name in ("foreground_iou", "pixel_accuracy") if parts else ():
            num, den = (sum(p[name][i] for p in parts) for i in (0, 1))
            key = "foreground_iou_pooled" if (prefix, name) == ("", "foreground_iou") else name
            result[prefix + key] = float(_ratio(num, den, True))
    keras = [r["sums"]["keras"] for r in records if "keras" in r["sums"]]
    if keras:
        result["keras_mean_iou"] = _keras_from_histograms(*map(sum, zip(*keras, strict=True)))
    return result


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
    return _matching_summary(**_image_counts(true_label, pred_label))["dsb_score"]


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
    row = _matching_summary(**_image_counts(true_label, pred_label))
    return row["pq"], row["sq"], row["rq"]


def _keras_histograms(prob: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(all, positive): labelled pixels by how many KERAS_THRESHOLDS their prob exceeds, (11,)
    each; positive counts the truly-nucleus ones. Additive over images."""
    n = len(KERAS_THRESHOLDS)
    prob, label = np.asarray(prob, np.float32).ravel(), np.asarray(label).ravel()
    keep = label >= 0
    above = np.searchsorted(KERAS_THRESHOLDS, prob[keep], side="left")  # #{t: prob > t}
    everything = np.bincount(above, minlength=n + 1).astype(np.float64)
    positive = np.bincount(above, (label[keep] > 0).astype(np.float64), minlength=n + 1)
    return everything, positive


def _keras_from_histograms(allpix: np.ndarray, pos: np.ndarray) -> float:
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
    parts = [_keras_histograms(p, t) for p, t in zip(foreground_probs, true_labels, strict=True)]
    return _keras_from_histograms(*map(sum, zip(*parts, strict=True)))


def evaluate_instances(
    true_labels: Sequence[np.ndarray],
    pred_labels: Sequence[np.ndarray],
    foreground_probs: Sequence[np.ndarray] | None = None,
) -> dict:
    """All instance and pixel metrics of a set of images, and one row per image.

    true_labels, pred_labels: lists of (H, W) int instance ids (true -1 = not labelled);
    foreground_probs: optional (H, W) probability maps, for keras_mean_iou and map_* metrics.
    Set values: dsb_score and ap@t are means over images; precision/recall/f1@0.50 come from TP,
    FP, FN pooled over images; pq/sq/rq are means over images (the nuclei convention), and
    pq/sq/rq_pooled from pooled counts; foreground_iou_pooled and pixel_accuracy pool pixels,
    foreground_iou_mean averages per-image IoUs. "images" holds the per-image rows.
    """
    if len(true_labels) != len(pred_labels):
        raise ValueError(f"{len(true_labels)} true vs {len(pred_labels)} predicted images")
    probs = foreground_probs if foreground_probs is not None else [None] * len(true_labels)
    records = [
        image_record(t, p, f) for t, p, f in zip(true_labels, pred_labels, probs, strict=True)
    ]
    return {**summarize(records), "images": [r["row"] for r in records]}

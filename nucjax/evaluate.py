"""Score a trained workdir on a labelled split, whole images, with every DSB 2018 metric.

  python -m nucjax.main --mode=evaluate --config=configs/unet.py --workdir=runs/unet
  python -m nucjax.main --mode=evaluate --config=configs/unet.py --workdir=runs/unet \
      --config.eval.split=test --checkpoint_step=2000    # test: only with stage1_solution.csv

Each image of the split is predicted whole (nucjax.inference: never resized, tiled with
overlap when large), decoded into nuclei by the model's own post-processing and scored by
nucjax.metrics.evaluate_instances. Writes, atomically:
  workdir/eval/<split>_step<k>.json  every set metric, settings, timings, one row per image
  workdir/eval/<split>_step<k>.md    a table: each metric, its value, its one-line definition
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from nucjax import data, inference, metrics
from nucjax.data.images import input_view
from nucjax.data.pipeline import normalize_image

# (key, name, one-line definition) of the metrics the markdown table shows, in order.
DEFINITIONS = (
    (
        "dsb_score",
        "DSB 2018 score",
        "mean over images of the mean over t = 0.50, 0.55, ..., 0.95 of TP / (TP + FP + FN); a "
        "TP is a predicted nucleus whose IoU with a true one is > t (the Kaggle metric)",
    ),
    ("ap@0.50", "AP at IoU 0.50", "mean over images of TP / (TP + FP + FN) at IoU > 0.50"),
    ("ap@0.75", "AP at IoU 0.75", "mean over images of TP / (TP + FP + FN) at IoU > 0.75"),
    ("precision@0.50", "precision", "TP / (TP + FP) at IoU > 0.5, counts pooled over images"),
    ("recall@0.50", "recall", "TP / (TP + FN) at IoU > 0.5, counts pooled over images"),
    ("f1@0.50", "F1", "2 TP / (2 TP + FP + FN) at IoU > 0.5, counts pooled over images"),
    ("pq", "panoptic quality", "SQ x RQ per image (Kirillov et al. 2019), mean over images"),
    ("sq", "segmentation quality", "mean IoU of the matched (IoU > 0.5) pairs, mean over images"),
    ("rq", "recognition quality", "TP / (TP + FP/2 + FN/2) at IoU > 0.5, mean over images"),
    (
        "foreground_iou_pooled",
        "foreground IoU",
        "one reading of the paper's 'mean IoU': pixels that are nucleus in both prediction "
        "and truth / pixels that are nucleus in either, whatever the ids, pooled over images",
    ),
    (
        "foreground_iou_mean",
        "foreground IoU, image mean",
        "the same ratio per image, averaged over images",
    ),
    (
        "keras_mean_iou",
        "Keras-starter mean IoU",
        "the other reading: at each probability threshold 0.50, 0.55, ..., 0.95 the mean of "
        "background IoU and foreground IoU over pooled pixels, averaged over the thresholds",
    ),
    (
        "pixel_accuracy",
        "pixel accuracy",
        "share of labelled pixels whose nucleus / background call by the nuclei is right",
    ),
    (
        "map_foreground_iou",
        "probability-map foreground IoU",
        "foreground IoU of probability > 0.5 before post-processing, pooled (the trainer's)",
    ),
    (
        "map_pixel_accuracy",
        "probability-map pixel accuracy",
        "pixel accuracy of probability > 0.5 before post-processing (the trainer's)",
    ),
)


def map_pixel_counts(foreground: np.ndarray, label: np.ndarray) -> dict[str, int]:
    """Counts behind the trainer's pixel metrics: prediction prob > 0.5, truth label > 0.

    foreground: (H, W) float; label: (H, W) int, pixels < 0 left out.
    """
    keep = label >= 0
    pred, true = (foreground > 0.5) & keep, (label > 0) & keep
    return {
        "map_correct": int(np.sum((pred == true) & keep)),
        "map_pixels": int(np.sum(keep)),
        "map_intersection": int(np.sum(pred & true)),
        "map_union": int(np.sum(pred | true)),
    }


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 1.0


def labelled_examples(config, split: str):
    """(id, image (H, W, 3) uint8, label (H, W) int32) for every image of a labelled split."""
    for example in data.raw_dataset(config.data, split).as_numpy_iterator():
        image_id = example["id"].decode() if isinstance(example["id"], bytes) else example["id"]
        label = np.asarray(example["label"], np.int32)
        if not (label >= 0).any():
            raise ValueError(
                f"split {split!r} has no labels (image {image_id} is all 'not labelled'): "
                "evaluate needs a labelled split (train, validation, or test with "
                "stage1_solution.csv); for a Kaggle submission use "
                "--mode=predict --input=split:test"
            )
        yield str(image_id), np.asarray(example["image"]), label


def evaluate(
    config, workdir: str, *, split: str | None = None, step: int | None = None, model=None
):
    """Score the checkpoint `step` (default latest) of `workdir` on `split` (config.eval.split).

    model: (spec, variables, step) from inference.load_model, to reuse a loaded model.
    Returns the report written to JSON: {"metrics": {...}, "images": [rows], settings, paths}.
    """
    split = split or config.eval.split
    if split not in data.SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {data.SPLITS}")
    spec, variables, step = model or inference.load_model(config, workdir, step)
    ev = config.eval
    progress = inference.ImageProgress(data.num_examples(config.data, split), f"evaluate {split}")
    trues, preds, probs, rows = [], [], [], []
    t0 = time.perf_counter()
    for image_id, image, label in labelled_examples(config, split):
        p = inference.segment_image(
            spec,
            variables,
            normalize_image(input_view(image, config.data.input_view)),
            tile_size=ev.tile_size,
            overlap=ev.tile_overlap,
        )
        trues.append(label)
        preds.append(p.instances.label)
        probs.append(p.foreground)
        rows.append(
            {
                "id": image_id,
                "height": int(label.shape[0]),
                "width": int(label.shape[1]),
                "predict_s": p.predict_s,
                "postprocess_s": p.postprocess_s,
                **map_pixel_counts(p.foreground, label),
            }
        )
        progress.update(len(rows), image_id)
    if not rows:
        raise ValueError(f"split {split!r} of config.data.source={config.data.source!r} is empty")
    result = metrics.evaluate_instances(trues, preds, probs)
    images = [{**extra, **row} for extra, row in zip(rows, result.pop("images"), strict=True)]
    for row in images:
        row["map_foreground_iou"] = _ratio(row["map_intersection"], row["map_union"])
        row["map_pixel_accuracy"] = _ratio(row["map_correct"], row["map_pixels"])
    total = {k: sum(r[k] for r in rows) for k in map_pixel_counts(probs[0], trues[0])}
    result["map_foreground_iou"] = _ratio(total["map_intersection"], total["map_union"])
    result["map_pixel_accuracy"] = _ratio(total["map_correct"], total["map_pixels"])
    result["true_nuclei"] = int(sum(r["n_true"] for r in images))
    result["predicted_nuclei"] = int(sum(r["n_pred"] for r in images))
    out = os.path.join(os.path.abspath(workdir), "eval", f"{split}_step{step}")
    report = {
        "model": config.model.name,
        "workdir": os.path.abspath(workdir),
        "split": split,
        "data_source": config.data.source,
        "step": step,
        "settings": {k: ev[k] for k in ev.keys()},
        "seconds": {
            "total": time.perf_counter() - t0,
            "predict": float(sum(r["predict_s"] for r in rows)),
            "postprocess": float(sum(r["postprocess_s"] for r in rows)),
        },
        "metrics": result,
        "images": images,
        "json": out + ".json",
        "markdown": out + ".md",
    }
    inference.write_text(report["json"], json.dumps(report, indent=2) + "\n")
    inference.write_text(report["markdown"], markdown_report(report))
    return report


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def markdown_report(report: dict) -> str:
    """A short table: each metric's name, value and one-line definition, with the settings."""
    m, s = report["metrics"], report["settings"]
    lines = [
        f"# {report['model']} on {report['split']} ({report['data_source']}), "
        f"checkpoint step {report['step']}",
        "",
        f"{m['num_images']} images predicted whole (tiles of {s['tile_size']} px overlapping "
        f"{s['tile_overlap']} px), {m['true_nuclei']} true and {m['predicted_nuclei']} "
        f"predicted nuclei. Post-processing: foreground > {s['foreground_threshold']}, seeds > "
        f"{s['seed_threshold']}, seed depth {s['seed_depth']}, min size {s['min_size']} px, "
        f"fill holes {s['fill_holes']}. Workdir: `{report['workdir']}`.",
        "",
        "The paper's 'mean IoU' is ambiguous; both readings are given below: foreground IoU "
        "and the Keras-starter mean IoU.",
        "",
        "| metric | value | definition |",
        "|---|---|---|",
    ]
    for key, name, definition in DEFINITIONS:
        if key in m:  # definitions hold no "|", which would end a markdown cell
            lines.append(f"| {name} (`{key}`) | {_fmt(m[key])} | {definition} |")
    sec = report["seconds"]
    lines += [
        "",
        f"Time: {sec['total']:.1f} s in all, {sec['predict']:.1f} s network, "
        f"{sec['postprocess']:.1f} s post-processing. Per-image rows: `{report['json']}`.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["DEFINITIONS", "evaluate", "labelled_examples", "markdown_report"]

"""--mode=evaluate: score a trained workdir on a labelled split and write the report.

  python -m nucjax.main --mode=evaluate --workdir=runs/unet
  python -m nucjax.main --mode=evaluate --workdir=runs/unet --config=configs/unet.py \
      --config.eval.split=test --checkpoint_step=2000    # test: only with stage1_solution.csv

The scoring is nucjax.evaluators (the very evaluator the trainer runs, on every image of the
split). Writes, atomically:
  workdir/eval/<split>_step<k>.json  every set metric, per modality, settings, one row per image
  workdir/eval/<split>_step<k>.md    a table: each metric, its value, its one-line definition,
                                     and the main metrics per modality
  (<split>_step<k>_seeds_<name>.* when config.eval.seeds_from=.../<name> seeds the decoding)
(For a model bundle DIR/NAME.nucjax given as --workdir: DIR/NAME_eval/ instead of workdir/eval/.)
"""

from __future__ import annotations

import json
import math
import os

import jax

from nucjax import data, evaluators, outputs
from nucjax import workdir as workdirs

# The metrics of the by-modality table.
BY_MODALITY = ("dsb_score", "f1@0.50", "pq", "foreground_iou_pooled", "pixel_accuracy")
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


def evaluate(
    config, workdir: str, *, split: str | None = None, step: int | None = None, model=None
):
    """Score checkpoint `step` (default latest) of `workdir` on `split` (config.eval.split).

    config: None = the config the workdir saved. model: a workdir.TrainedModel to reuse.
    Returns the report written to JSON: {"metrics", "by_modality", "images", settings, paths}.
    """
    if split is not None:
        data.check_split(split)  # before any restore
    model = model or workdirs.load(workdir, config, step)
    config = model.config
    evaluator = evaluators.for_split(config, split)
    result = evaluator.run(
        config, model.spec, model.variables, show_progress=True, seeds=model.seeds
    )
    name = f"{evaluator.split}_step{model.step}"
    if model.seeds is not None:  # beside, not over, the model's own report
        name += "_seeds_" + os.path.basename(os.path.normpath(config.eval.seeds_from))
    out = os.path.join(workdirs.output_dir(workdir, "eval"), name)
    report = {
        "model": config.model.name,
        "workdir": os.path.abspath(workdir),
        "split": evaluator.split,
        "data_source": config.data.source,
        "step": model.step,
        "settings": {k: config.eval[k] for k in config.eval.keys()},
        "input_view": config.data.input_view,
        "seconds": result["seconds"],
        "metrics": result["metrics"],
        "by_modality": result["by_modality"],
        "images": result["images"],
        "json": out + ".json",
        "markdown": out + ".md",
    }
    if jax.process_index() == 0:  # every process scored the same images; one writes
        outputs.write_text(report["json"], json.dumps(report, indent=2) + "\n")
        outputs.write_text(report["markdown"], markdown_report(report))
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
        f"{m['num_images']} images predicted whole (input view {report['input_view']}, tiles "
        f"of {s['tile_size']} px overlapping {s['tile_overlap']} px), {m['true_nuclei']} true "
        f"and {m['predicted_nuclei']} predicted nuclei. Post-processing settings: "
        + ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("tile_size", "tile_overlap"))
        + f". Workdir: `{report['workdir']}`.",
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
    lines += ["", "By modality:", "", "| modality | images | " + " | ".join(BY_MODALITY) + " |"]
    lines.append("|---|---|" + "---|" * len(BY_MODALITY))
    for modality, values in report["by_modality"].items():
        cells = " | ".join(_fmt(values.get(k, float("nan"))) for k in BY_MODALITY)
        lines.append(f"| {modality} | {values['num_images']} | {cells} |")
    sec = report["seconds"]
    lines += [
        "",
        f"Time: {sec['total']:.1f} s in all, {sec['predict']:.1f} s network, "
        f"{sec['postprocess']:.1f} s post-processing. Per-image rows: `{report['json']}`.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["DEFINITIONS", "evaluate", "markdown_report"]

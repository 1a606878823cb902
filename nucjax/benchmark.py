"""The paper's Table 1 reproduced: budgets, runs, when a run is finished, intervals, the table.

experiments/table1.py runs the trainings and evaluations as `python -m nucjax.main`
subprocesses; everything here is pure (file reads aside), so it is tested on fabricated
reports. A row's nucjax scores come from the evaluators' reports (WORKDIR/eval/*.json: set
metrics plus one row per image with its additive sums), each with a 95 % bootstrap interval
over images.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.stats

from nucjax import metrics

NETWORKS = ("simple_cnn", "resnet", "unet", "mask_rcnn")
BASELINE = "classical"  # experiments/classical_baseline.py: Otsu + watershed, no training
# The paper's Table 1: train and test accuracy (%), mean IoU (%), training minutes on one T4.
PAPER = {
    "simple_cnn": {
        "name": "Simple CNN",
        "train_acc": 93.10,
        "test_acc": 93.70,
        "iou": 62,
        "min": 135,
    },
    "resnet": {"name": "ResNet-152", "train_acc": 96.30, "test_acc": 96.10, "iou": 77, "min": 632},
    "unet": {"name": "U-Net", "train_acc": 99.75, "test_acc": 98.00, "iou": 83, "min": 238},
    "mask_rcnn": {
        "name": "Mask R-CNN",
        "train_acc": 99.68,
        "test_acc": 99.20,
        "iou": 88,
        "min": 312,
    },
    BASELINE: {"name": "Otsu + watershed (baseline)"},
}
MODALITIES = ("fluorescence", "histology", "brightfield")
# Table metric -> (what the per-image parts are, name inside them); see image_parts.
METRICS = {
    "pixel_accuracy": ("map_pixels", "pixel_accuracy"),  # probability map > 0.5: Keras' accuracy
    "foreground_iou": ("pixels", "foreground_iou"),  # nuclei vs truth, pooled
    "keras_mean_iou": ("keras", ""),
    "dsb_score": ("mean", "dsb_score"),
}
# Which report field holds each table metric's set value.
REPORT_KEYS = {
    "pixel_accuracy": "map_pixel_accuracy",
    "foreground_iou": "foreground_iou_pooled",
    "keras_mean_iou": "keras_mean_iou",
    "dsb_score": "dsb_score",
}


# ------------------------------------------------------------------------ budgets and runs


@dataclasses.dataclass(frozen=True)
class Budget:
    """name: as given; variant: the config variant trained; max_minutes: 0 = no time budget."""

    name: str
    variant: str
    max_minutes: float = 0.0

    @property
    def folder(self) -> str:
        """The folder of this budget's runs: paper, best, minutes_30, ..."""
        return f"minutes_{self.max_minutes:g}" if self.max_minutes > 0 else self.name


def parse_budget(text: str) -> Budget:
    """--budget: "paper" (Table 2 exactly), "best" (the tuned variants) or "minutes=N" (the
    best variants, each stopped after N minutes of training, N > 0)."""
    text = text.strip()
    if text in ("paper", "best"):
        return Budget(text, text)
    if text.startswith("minutes="):
        try:
            minutes = float(text.removeprefix("minutes="))
        except ValueError:
            minutes = float("nan")
        if math.isfinite(minutes) and minutes > 0:
            return Budget(text, "best", minutes)
    raise ValueError(f"--budget={text!r}: use paper, best or minutes=N with a number N > 0")


def parse_networks(text: str) -> tuple[str, ...]:
    """--networks: comma-separated names of NETWORKS and BASELINE ("" = all), in table order."""
    known = (*NETWORKS, BASELINE)
    names = [n.strip() for n in text.split(",") if n.strip()] or list(known)
    if unknown := [n for n in names if n not in known]:
        raise ValueError(f"--networks: unknown {', '.join(unknown)}; use {', '.join(known)}")
    return tuple(n for n in known if n in names)


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in `path`, or None when the file does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def finished_training(workdir: str, budget: Budget) -> dict | None:
    """The run's summary.json when training finished under `budget`, else None.

    The trainer writes summary.json only when its loop ends (all steps, or the time budget);
    one written under another max_minutes does not count.
    """
    summary = read_json(os.path.join(workdir, "summary.json"))
    if summary is None or float(summary.get("max_minutes", 0.0)) != budget.max_minutes:
        return None
    return summary


def eval_path(workdir: str, split: str, step: int) -> str:
    """Where `--mode=evaluate` writes its report of checkpoint `step` (nucjax.evaluate)."""
    return os.path.join(os.path.abspath(workdir), "eval", f"{split}_step{step}.json")


def test_split_labelled(data: dict) -> bool:
    """Whether the test split carries labels: synthetic data always; DSB 2018 when
    stage1_solution.csv is in the local source folder or among the fetched files
    (nucjax.data.dsb2018_fetch). data: the saved config's "data" section."""
    if data.get("source") != "dsb2018":
        return True
    from nucjax.data import dsb2018_fetch

    folders = [dsb2018_fetch.resolve_data_dir(data.get("data_dir", "")) / "downloads" / "dsb2018"]
    source = dsb2018_fetch.resolve_source(data.get("download_source", ""))
    if "://" not in source or source.startswith("file://"):
        folders.append(pathlib.Path(source.removeprefix("file://")).expanduser())
    return any((folder / "stage1_solution.csv").is_file() for folder in folders)


# ------------------------------------------------------------------ intervals over images


def bootstrap_interval(
    parts: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic of images resampled with replacement.

    parts: (N, ...) one additive part per image; statistic: the parts summed over a
    resample's images, (...), -> the score (a mean: parts [value, 1]; a pooled ratio:
    [sum, count]). Seeded (scipy.stats.bootstrap with default_rng(seed)). Fewer than two
    images: (value, value).
    """
    parts = np.asarray(parts, np.float64)
    if len(parts) < 2:
        value = float(statistic(parts.sum(0)))
        return value, value
    with warnings.catch_warnings():  # identical resamples (every image alike) warn only
        warnings.simplefilter("ignore")
        result = scipy.stats.bootstrap(
            (np.arange(len(parts)),),
            lambda index: statistic(parts[index.astype(np.int64)].sum(0)),
            vectorized=False,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def image_parts(rows: Sequence[dict], metric: str) -> np.ndarray:
    """(N, ...) additive parts of a table metric (METRICS) from a report's image rows."""
    kind, name = METRICS[metric]
    if kind == "mean":
        return np.array([[r[name], 1.0] for r in rows], np.float64)
    if kind == "keras":
        return np.array([r["sums"]["keras"] for r in rows], np.float64)
    return np.array([r["sums"][kind][name] for r in rows], np.float64)


def metric_statistic(metric: str) -> Callable[[np.ndarray], float]:
    """The table metric (METRICS) from its parts summed over images."""
    kind, name = METRICS[metric]
    if kind == "mean":
        return lambda s: float(s[0] / s[1])
    return lambda s: metrics.pooled_from_sums(kind, name, s)


def score(rows: Sequence[dict], metric: str, seed: int = 0, n_resamples: int = 2000) -> dict:
    """{"value", "low", "high", "images"} of a table metric over report rows; value is the
    metric of all the rows (equal to the evaluator's set metric). Empty rows: None."""
    rows = [r for r in rows if METRICS[metric][0] == "mean" or METRICS[metric][0] in r["sums"]]
    if not rows:
        return None
    parts, statistic = image_parts(rows, metric), metric_statistic(metric)
    low, high = bootstrap_interval(parts, statistic, n_resamples=n_resamples, seed=seed)
    return {"value": statistic(parts.sum(0)), "low": low, "high": high, "images": len(rows)}


# --------------------------------------------------------------------------- the table


def table_row(
    network: str, reports: dict[str, dict], summary: dict | None, config: dict | None, **kw
) -> dict[str, Any]:
    """One row: the paper's values and nucjax's, each nucjax score with its interval.

    reports: {split: evaluate report} of "train", "validation", "test" (those run); the test
    column uses "test" when present, else "validation". summary: the trainer's summary.json
    (None for the baseline); config: the run's saved config.json. kw: score()'s seed and
    n_resamples.
    """
    held_out = "test" if "test" in reports else "validation"
    row: dict[str, Any] = {
        "network": network,
        "name": PAPER[network]["name"],
        "paper": {k: v for k, v in PAPER[network].items() if k != "name"},
        "test_split": held_out if held_out in reports else None,
        "scores": {},
    }
    if "train" in reports:
        row["scores"]["train_pixel_accuracy"] = score(
            reports["train"]["images"], "pixel_accuracy", **kw
        )
    if held_out in reports:
        rows = reports[held_out]["images"]
        for metric in METRICS:
            row["scores"][metric] = score(rows, metric, **kw)
        for modality in MODALITIES:
            subset = [r for r in rows if r["modality"] == modality]
            row["scores"][f"dsb_score/{modality}"] = score(subset, "dsb_score", **kw)
    if summary is not None:
        seconds = float(summary.get("train_seconds", 0.0))
        batch = (config or {}).get("train", {}).get("batch_size", 0)
        steps = int(summary.get("final_step", summary.get("steps", 0)))
        row["training"] = {
            "minutes": seconds / 60.0,
            "steps": steps,
            "schedule_steps": int(summary.get("steps", steps)),
            "parameters": summary.get("parameters"),
            "images_per_s": steps * batch / seconds if seconds > 0 else None,
            "stopped_by_budget": bool(summary.get("stopped_by_budget", False)),
            "device": summary.get("device", f"{summary.get('devices', '?')} devices"),
        }
    return row


def _pct(s: dict | None) -> str:
    return (
        "-"
        if s is None
        else f"{100 * s['value']:.2f} [{100 * s['low']:.2f}, {100 * s['high']:.2f}]"
    )


def _dsb(s: dict | None) -> str:
    return "-" if s is None else f"{s['value']:.3f} [{s['low']:.3f}, {s['high']:.3f}]"


def _paper(row: dict, key: str) -> str:
    value = row["paper"].get(key)
    return "-" if value is None else f"{value:g}"


def _model(training: dict | None) -> str:
    """ "1.23M params, 2,594 of 3,600 steps": the network nucjax trained, whatever the paper's
    name for it (a `:best` ResNet is not the paper's ResNet-152)."""
    if training is None:
        return "-"
    params = training.get("parameters")
    size = "" if params is None else f"{params / 1e6:.2f}M params, "
    return f"{size}{training['steps']:,} of {training['schedule_steps']:,} steps"


COLUMNS = (
    "network",
    "nucjax model",
    "train acc % (paper)",
    "train acc % (nucjax)",
    "test acc % (paper)",
    "test acc % (nucjax)",
    "mean IoU % (paper)",
    "foreground IoU % (nucjax)",
    "Keras mean IoU % (nucjax)",
    "DSB score",
    *(f"DSB {m}" for m in MODALITIES),
    "train min (paper, T4)",
    "train min (nucjax)",
    "images/s",
    "device",
)


def markdown_row(row: dict) -> list[str]:
    """The cells of one row, in COLUMNS order."""
    s, t = row["scores"], row.get("training")
    return [
        row["name"],
        _model(t),
        _paper(row, "train_acc"),
        _pct(s.get("train_pixel_accuracy")),
        _paper(row, "test_acc"),
        _pct(s.get("pixel_accuracy")),
        _paper(row, "iou"),
        _pct(s.get("foreground_iou")),
        _pct(s.get("keras_mean_iou")),
        _dsb(s.get("dsb_score")),
        *(_dsb(s.get(f"dsb_score/{m}")) for m in MODALITIES),
        _paper(row, "min"),
        "-"
        if t is None
        else f"{t['minutes']:.1f}" + (" (budget)" if t["stopped_by_budget"] else ""),
        "-" if t is None or t["images_per_s"] is None else f"{t['images_per_s']:.1f}",
        "none (no training)" if t is None else str(t["device"]),
    ]


def markdown_table(table: dict) -> str:
    """The whole experiments/table1.md: a short header, then the table."""
    budget, rows = table["budget"], table["rows"]
    splits = sorted({r["test_split"] for r in rows if r["test_split"]})
    lines = [
        f"# Table 1, reproduced (budget {budget['name']}: config variant `{budget['variant']}`"
        + (f", {budget['max_minutes']:g} training minutes each" if budget["max_minutes"] else "")
        + ")",
        "",
        "Paper values beside nucjax's. nucjax's 'test' columns are the "
        + (" / ".join(splits) or "-")
        + " split; 'train acc' is every image of the training split. Each score is "
        "whole-image, with a 95 % percentile bootstrap interval over images "
        f"({table['n_resamples']} resamples, seed {table['seed']}). Accuracy: pixels whose "
        "probability map > 0.5 call is right (Keras' accuracy). Foreground IoU: predicted "
        "nuclei vs true nuclei, pooled pixels; Keras mean IoU: mean of background and "
        "foreground IoU over thresholds 0.50..0.95 (the two readings of the paper's 'mean "
        "IoU'). DSB: the Kaggle score, overall and per modality. Training minutes count "
        "training only (first-step compilation included, evaluation excluded); images/s = "
        "steps x batch / training seconds.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(markdown_row(r)) + " |" for r in rows]
    if table.get("failed"):
        lines += ["", "Failed: " + "; ".join(f"{k}: {v}" for k, v in table["failed"].items())]
    return "\n".join(lines) + "\n"


__all__ = [
    "BASELINE",
    "NETWORKS",
    "PAPER",
    "Budget",
    "bootstrap_interval",
    "finished_training",
    "markdown_table",
    "parse_budget",
    "parse_networks",
    "score",
    "table_row",
]

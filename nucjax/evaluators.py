"""Evaluators: one way to score a model on a split, used by the trainer and --mode=evaluate.

  evaluators.run_for_training(config, spec, variables, step, writer)   # the trainer, every
      # eval_every_steps: each of for_training(config), scalars to metrics.jsonl, TensorBoard
  evaluators.for_split(config, "validation").run(config, spec, variables)   # evaluate mode

Every evaluator runs whole images through the one tiling definition (nucjax.whole_image, with
config.eval.tile_size / tile_overlap) after the one input transform (images.network_input):
  pixel     the probability map > 0.5 against the truth: map_pixel_accuracy,
            map_foreground_iou (the trainer's in-step pixel_sums definition) and the
            Keras-starter mean IoU. No post-processing: cheap, for the training split.
  instance  the above, plus the model's post-processing into nuclei and every instance
            metric (DSB score, AP by threshold, F1/P/R, PQ) and the pixel metrics of the nuclei.
Each result holds set metrics, the same per modality (fluorescence / brightfield /
histology, from the data set's `modality` feature) and one row per image; on request
(`run(num_figures=N)`, the trainer's TensorBoard images) the outline figures of its first N
images, truth beside prediction.

Instance evaluators post-process each image while the network runs on the next
(whole_image.segment_images). Evaluation is host-driven on one device, identical on every
process (each holds the replicated parameters); only process 0 writes what it returns.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from absl import logging

from nucjax import data, figures, metrics, reporting, whole_image
from nucjax.data.images import MODALITIES, network_input
from nucjax.models.spec import ModelSpec

KINDS = ("pixel", "instance")


class UnlabelledSplitError(ValueError):
    """Evaluation asked of a split whose images carry no labels."""


# The set metrics also logged per modality during training ("dsb_score/histology", ...).
BY_MODALITY_LOGGED = ("dsb_score", "f1@0.50", "map_foreground_iou", "map_pixel_accuracy")


def labelled_images(data_config, split: str, max_images: int = 0) -> Iterator[tuple]:
    """(id, image (H, W, 3) uint8, label (H, W) int32, modality name) of a labelled split.

    max_images > 0 keeps the split's first max_images images (its fixed order). Raises
    ValueError for a split without labels (the DSB test split without stage1_solution.csv).
    """
    for index, example in enumerate(data.examples(data_config, split)):
        if 0 < max_images <= index:
            break
        image_id, label = example["id"], np.asarray(example["label"], np.int32)
        if not (label >= 0).any():
            raise UnlabelledSplitError(
                f"split {split!r} has no labels (image {image_id} is all 'not labelled'): "
                "evaluation needs a labelled split (train, validation, or test with "
                "stage1_solution.csv); for a Kaggle submission use --mode=predict "
                "--input=split:test"
            )
        modality = MODALITIES[int(example["modality"])]
        yield image_id, np.asarray(example["image"]), label, modality


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """Scores whole images of `split` (its first max_images; 0 = all) by `kind` (KINDS)."""

    name: str
    split: str
    kind: str = "instance"
    max_images: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"evaluator kind {self.kind!r}; choose one of {KINDS}")
        data.check_split(self.split)

    def num_images(self, data_config) -> int:
        total = data.num_examples(data_config, self.split)
        return min(total, self.max_images) if self.max_images > 0 else total

    def _instance_records(
        self, config, spec: ModelSpec, variables, pairs, shown: list, num_figures: int, seeds
    ):
        """(image (H, W, 3) uint8, label) pairs -> their metrics.image_records with timings in
        the row, in order, through whole_image.segment_images (the network runs on the next
        image while this one is post-processed). Appends the outline figures of the first
        num_figures images to `shown`. seeds: as in whole_image.segment_images."""
        waiting = collections.deque()

        def images():
            for image, label in pairs:
                waiting.append((image, label))
                yield network_input(image, config.data.input_view)

        for p in whole_image.segment_images(spec, variables, images(), config.eval, seeds):
            image, label = waiting.popleft()
            record = metrics.image_record(label, p.instances.label, p.foreground)
            record["row"].update(
                predict_s=p.predict_s, postprocess_s=p.postprocess_s, scale=p.scale
            )
            if len(shown) < num_figures:
                shown.append(figures.outline_comparison(image, label, p.instances.label))
            yield record

    def _pixel_record(self, config, spec: ModelSpec, variables, image, label) -> dict:
        """One image -> metrics.image_record of its foreground map, predict_s in its row."""
        t0 = time.perf_counter()
        x = network_input(image, config.data.input_view)
        outputs = whole_image.predict_image(spec, variables, x, config.eval)
        foreground = whole_image.foreground(spec, outputs, *label.shape)
        record = metrics.image_record(label, None, foreground)
        record["row"]["predict_s"] = time.perf_counter() - t0
        return record

    def run(
        self,
        config,
        spec: ModelSpec,
        variables,
        *,
        show_progress: bool = False,
        num_figures: int = 0,
        seeds=None,
    ) -> dict:
        """Score `variables` ({"params", "batch_stats"} on one device) of `spec` (see score).

        num_figures > 0 (instance evaluators): the result also holds "figures", the
        figures.outline_comparison of its first num_figures images, (H, 2 W + 4, 3) uint8.
        seeds: a trained model whose nuclei seed spec's post-processing (whole_image).
        """
        shown: list[np.ndarray] = []
        if self.kind == "instance":

            def records_of(pairs):
                return self._instance_records(
                    config, spec, variables, pairs, shown, num_figures, seeds
                )
        else:

            def records_of(pairs):
                return (self._pixel_record(config, spec, variables, *pair) for pair in pairs)

        result = self.score_all(config.data, records_of, show_progress=show_progress)
        return {**result, "figures": shown} if shown else result

    def score(self, data_config, record: Callable, *, show_progress: bool = False) -> dict:
        """Score any segmenter: record(image (H, W, 3) uint8, label) -> metrics.image_record.

        Returns {"name", "split", "kind", "metrics": set metrics, "by_modality": {modality:
        set metrics}, "images": one row per image (id, modality, size, metrics, seconds),
        "seconds"}.
        """

        def records_of(pairs):
            return (record(image, label) for image, label in pairs)

        return self.score_all(data_config, records_of, show_progress=show_progress)

    def score_all(self, data_config, records_of: Callable, *, show_progress: bool = False) -> dict:
        """score, for a segmenter that takes the images as a stream: records_of(iterator of
        (image (H, W, 3) uint8, label) pairs) -> iterator of their image_records, in order
        (it may read ahead)."""
        total = self.num_images(data_config)
        bar = reporting.progress(total, self.name, "img") if show_progress else None
        rows, records, t0 = [], [], time.perf_counter()

        def pairs():
            for image_id, image, label, modality in labelled_images(
                data_config, self.split, self.max_images
            ):
                h, w = label.shape
                rows.append({"id": image_id, "modality": modality, "height": h, "width": w})
                yield image, label

        for result in records_of(pairs()):
            sums = metrics.additive_sums(result)
            result["row"] = {**rows[len(records)], **result["row"], "sums": sums}
            records.append(result)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        if not records:
            raise ValueError(f"split {self.split!r} of {data_config.source!r} data is empty")
        return self._result(records, time.perf_counter() - t0)

    def _result(self, records: list[dict], seconds: float) -> dict:
        by_modality = {
            m: metrics.summarize([r for r in records if r["row"]["modality"] == m])
            for m in MODALITIES
            if any(r["row"]["modality"] == m for r in records)
        }
        rows = [r["row"] for r in records]
        return {
            "name": self.name,
            "split": self.split,
            "kind": self.kind,
            "metrics": metrics.summarize(records),
            "by_modality": by_modality,
            "images": rows,
            "seconds": {
                "total": seconds,
                "predict": float(sum(r.get("predict_s", 0.0) for r in rows)),
                "postprocess": float(sum(r.get("postprocess_s", 0.0) for r in rows)),
            },
        }


def for_training(config) -> list[Evaluator]:
    """What the trainer runs: pixel metrics on the first config.eval.train_images training
    images (0 = none), and every metric on config.eval.max_images images of config.eval.split."""
    ev = config.eval
    found = [Evaluator("train", "train", "pixel", ev.train_images)] if ev.train_images > 0 else []
    return found + [Evaluator(ev.split, ev.split, "instance", ev.max_images)]


def run_for_training(config, spec: ModelSpec, variables, step: int, writer) -> dict[str, dict]:
    """Every evaluator of for_training at training step `step`; writes their scalars and the
    figures of their first config.eval.summary_images images (truth beside prediction) to
    writer (a nucjax.reporting.MetricWriter), returns {evaluator name: scalars}."""
    results = {}
    for evaluator in for_training(config):
        result = evaluator.run(config, spec, variables, num_figures=config.eval.summary_images)
        flat = scalars(result)
        writer.write(step, f"eval_{evaluator.name}", flat)
        writer.write_images(step, f"eval_{evaluator.name}/outlines", result.get("figures", []))
        results[evaluator.name] = flat
    shown = {n: {k: round(v, 4) for k, v in r.items() if "/" not in k} for n, r in results.items()}
    logging.info("step %d evaluation: %s", step, json.dumps(shown))
    return results


def for_split(config, split: str | None = None) -> Evaluator:
    """What --mode=evaluate runs: every metric on every image of `split` (config.eval.split)."""
    split = split or config.eval.split
    return Evaluator(split, split, "instance", 0)


def scalars(result: dict) -> dict[str, float]:
    """An evaluator's result as flat scalars for metrics.jsonl and TensorBoard: every set
    metric, and BY_MODALITY_LOGGED per modality as "<metric>/<modality>"."""
    flat: dict[str, Any] = dict(result["metrics"])
    for modality, values in result["by_modality"].items():
        for key in BY_MODALITY_LOGGED:
            if key in values:
                flat[f"{key}/{modality}"] = values[key]
        flat[f"num_images/{modality}"] = values["num_images"]
    return {k: float(v) for k, v in flat.items()}


__all__ = [
    "Evaluator",
    "for_split",
    "for_training",
    "labelled_images",
    "run_for_training",
    "scalars",
]

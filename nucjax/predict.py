"""Segment the nuclei of your own images (or of a data set split) with a trained workdir.

  python -m nucjax.main --mode=predict --workdir=runs/unet --input=images/,extra.tif --output=out/
  python -m nucjax.main --mode=predict --workdir=runs/unet \
      --input=split:test --output=out/test    # the 65 stage-1 test images: a Kaggle CSV

The workdir's saved config builds the network; nothing of the optimizer is read.

Files are read by nucjax.image_io (PNG, JPEG, BMP, TIFF; any size up to its MAX_PIXELS,
tiled; resized only when config.eval.nucleus_area asks). A TIFF stack (z-slices, time points,
pages) is segmented plane by plane into a label stack; a multi-channel image needs `channel`
(--channel), the nuclear stain. Writes, for every image with stem S:
  S_labels.tif   instance labels, uint16 (int32 past 65535 nuclei), 0 background: opens as a
                 label image in napari and Fiji
  S_prob.tif     float32 foreground probability
  S_overlay.png  the image, contrast-stretched (outputs.display_rgb), every nucleus outlined
  S_nuclei.csv   one row per nucleus: id, area, centroid, bounding box, shape (perimeter,
                 eccentricity, solidity, axis lengths), mean intensity (of the original image,
                 its own units, averaged over colour channels), score
  S_rois.zip     with rois=True (--rois): one Fiji/ImageJ polygon ROI per nucleus
(a stack: (N, H, W) TIFFs, S_overlay.tif, a `plane` column; nucjax.outputs) and, for the
whole set, submission.csv (Kaggle DSB 2018: ImageId = stem (stem_z0, stem_z1, ... for a
stack's planes), EncodedPixels = run-length encoding, column-major, 1-indexed; an image
without nuclei gets one empty row) and summary.json (files processed, files skipped and why).
Writers: nucjax.outputs (atomic: a crash never leaves a half-written output).

A file that cannot be used (not an image, a hyperstack of more than one stack axis, several
channels and no `channel`, smaller than image_io.MIN_SIDE pixels, NaN values, a stem already
taken; in an input folder also a broken symbolic link or a subfolder, which are not searched) is
skipped with a warning and listed in the summary (skipped_files); the others are still
written. An image whose outputs cannot be written (OSError: disk full, permission denied) is
reported with a warning, its partly written files are removed, and it is listed under
failed_files and left out of submission.csv; the others are still written, and
`python -m nucjax.main` exits with WRITE_FAILED_EXIT_CODE (4). No input images at all, or a
checkpoint of another model, is an error.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence

import jax
import numpy as np
from absl import logging

from nucjax import figures, outputs, reporting, whole_image
from nucjax import workdir as workdirs
from nucjax.data.images import network_input, to_rgb
from nucjax.image_io import Planes, UnsupportedImageError, gather_inputs, read_planes
from nucjax.models.spec import Instances

# Exit code of `nucjax.main --mode=predict` when the outputs of some images could not be
# written: the rest are complete, but the job did not do all it was asked (0 done, 1 error).
WRITE_FAILED_EXIT_CODE = 4


# --------------------------------------------------------------------------------------------
# The loop


def _load_raw(stem: str, source: str, load, taken: dict[str, str]) -> Planes:
    """The Planes of one input, or UnsupportedImageError / ValueError to skip it."""
    if stem in taken:
        raise UnsupportedImageError(
            f"{os.path.basename(source)}: its outputs would overwrite those of "
            f"{taken[stem]} (same name {stem!r})"
        )
    planes = load()
    for plane in planes.pixels:
        to_rgb(plane)  # raises ValueError for a layout the network cannot take
    return planes


def segment(model: workdirs.TrainedModel, rgb: np.ndarray) -> whole_image.ImagePrediction:
    """One (H, W, 3) uint8 image (to_rgb) through `model`: its input view, whole-image
    prediction and post-processing (the instances: (H, W) int32 ids and (N,) scores)."""
    image = network_input(rgb, model.config.data.input_view)
    return whole_image.segment_image(
        model.spec, model.variables, image, model.config.eval, model.seeds
    )


def segment_each(
    model: workdirs.TrainedModel, rgbs: Iterable[np.ndarray]
) -> Iterator[whole_image.ImagePrediction]:
    """segment of every (H, W, 3) uint8 image of `rgbs`, in order, through
    whole_image.segment_images: the network runs on the next image while this one is
    post-processed. `rgbs` is read one image ahead of what has been yielded."""
    view = model.config.data.input_view
    images = (network_input(rgb, view) for rgb in rgbs)
    return whole_image.segment_images(
        model.spec, model.variables, images, model.config.eval, model.seeds
    )


def _segmented(model, loaded: Iterator[tuple]) -> Iterator[tuple]:
    """(stem, source, Planes) items -> (stem, source, Planes, one prediction per plane), in
    order, through segment_each: the network runs on the next plane (of this item or the
    next) while this one is post-processed. `loaded` is read one plane ahead."""
    waiting = collections.deque()  # items whose planes went to the network, oldest first

    def planes():
        for item in loaded:
            waiting.append((item, []))
            for plane in item[2].pixels:
                yield to_rgb(plane)

    for prediction in segment_each(model, planes()):
        item, done = waiting[0]
        done.append(prediction)
        if len(done) == len(item[2].pixels):
            waiting.popleft()
            yield (*item, done)


def _stacked(predictions) -> tuple[Instances, np.ndarray]:
    """Per-plane predictions -> (Instances with (N, H, W) labels whose ids run on across the
    planes, and every score; (N, H, W) foreground)."""
    labels, offset = [], 0
    for p in predictions:
        labels.append(np.where(p.instances.label > 0, p.instances.label + offset, 0))
        offset += len(p.instances.scores)
    scores = np.concatenate([p.instances.scores for p in predictions])
    return Instances(np.stack(labels), scores), np.stack([p.foreground for p in predictions])


def _submission_rows(stem: str, axis: str, labels: Sequence[np.ndarray]) -> list:
    """Kaggle rows: ImageId = stem for one image, stem_z0, stem_z1, ... for a stack's planes."""
    if not axis:
        return outputs.submission_rows(stem, labels[0])
    return [
        r
        for k, lab in enumerate(labels)
        for r in outputs.submission_rows(f"{stem}_{axis.lower()}{k}", lab)
    ]


def _write_one(output_dir, stem, source, planes, predictions, wanted, image_outputs, rois) -> dict:
    """Write the files of one segmented image or stack (one prediction per plane); returns its
    summary row (with its submission rows). Raises OSError when a file cannot be written,
    after removing those of its files that were."""
    first = predictions[0]
    if planes.axis:
        instances, foreground = _stacked(predictions)
        raw = planes.pixels
    else:
        instances, foreground, raw = first.instances, first.foreground, planes.pixels[0]
    files = {}
    try:
        if image_outputs:
            files = outputs.write_image_outputs(
                output_dir, stem, raw, instances, foreground, rois=rois
            )
        if {stem, os.path.basename(source)} & wanted:  # a stack's first plane
            files["figure"] = figures.save_confidence_figure(
                os.path.join(output_dir, f"{stem}_figure.png"),
                outputs.display_rgb(planes.pixels[0]),
                first.foreground,
                first.instances,
                title=f"{stem}: foreground probability, per-nucleus confidence",
            )
    except OSError:
        outputs.remove_image_outputs(output_dir, stem)
        raise
    return {
        "file": source,
        "image_id": stem,
        "height": int(foreground.shape[-2]),
        "width": int(foreground.shape[-1]),
        "planes": len(predictions),
        "plane_axis": planes.axis,
        "nuclei": len(instances.scores),
        "predict_s": sum(p.predict_s for p in predictions),
        "postprocess_s": sum(p.postprocess_s for p in predictions),
        "scale": first.scale,  # the nucleus_area rescale (1.0: none), of the first plane
        "outputs": files,
        "submission": _submission_rows(stem, planes.axis, [p.instances.label for p in predictions]),
    }


def _run(
    model,
    items: Iterator,
    total: int,
    output_dir,
    *,
    figure_images,
    image_outputs=True,
    rois=False,
    extra=None,
    skipped=(),
) -> dict:
    """Predict every (stem, source, load) of `items`; load() -> Planes or raises.

    skipped: {file, reason} of inputs already found unusable, reported with the others.
    """
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    wanted = {str(n) for n in figure_images}
    primary = jax.process_index() == 0
    images, failed, taken = [], [], {}
    skipped = list(skipped)
    for item in skipped:
        logging.warning("skipped %s: %s", item["file"], item["reason"])
    bar = reporting.progress(total, "predict", "img")
    t0 = time.perf_counter()

    def loaded():
        for stem, source, load in items:
            bar.update()
            try:
                planes = _load_raw(stem, source, load, taken)
            except ValueError as e:  # UnsupportedImageError, or to_rgb refusing the array
                logging.warning("skipped %s: %s", source, e)
                skipped.append({"file": source, "reason": str(e)})
                continue
            taken[stem] = source
            yield stem, source, planes

    write = image_outputs and primary
    for stem, source, planes, predictions in _segmented(model, loaded()):
        try:
            row = _write_one(output_dir, stem, source, planes, predictions, wanted, write, rois)
        except OSError as e:  # disk full, permission denied: the other images may still fit
            logging.warning("could not write the outputs of %s: %s", source, e)
            failed.append({"file": source, "image_id": stem, "reason": str(e)})
            continue
        images.append(row)
    bar.close()
    found = {n for row in images for n in (row["image_id"], os.path.basename(row["file"]))}
    summary = {
        "model": model.config.model.name,
        "step": model.step,
        "output_dir": output_dir,
        **(extra or {}),
        "processed": len(images),
        "skipped": len(skipped),
        "skipped_files": skipped,
        "failed": len(failed),
        "failed_files": failed,  # segmented, but its outputs could not be written
        "figures_not_found": sorted(wanted - found),
        "seconds": time.perf_counter() - t0,
        "images": images,
        "submission": os.path.join(output_dir, "submission.csv"),
        "summary": os.path.join(output_dir, "summary.json"),
    }
    rows = [r for row in images for r in row.pop("submission")]
    if primary:  # every process segmented the same images; one writes
        outputs.write_csv(summary["submission"], ("ImageId", "EncodedPixels"), rows)
        outputs.write_text(summary["summary"], json.dumps(summary, indent=2) + "\n")
    return summary


def predict_folder(
    model: workdirs.TrainedModel,
    inputs: Sequence[str],
    output_dir: str,
    *,
    figure_images: Sequence[str] = (),
    channel: int | None = None,
    rois: bool = False,
) -> dict:
    """Segment image files and folders of them with a trained model (nucjax.workdir.load).

    inputs: files and/or folders; figure_images: stems or file names to draw the confidence
    figure (nucjax.figures) for; channel: the nuclear channel (0-based) of multi-channel
    images; rois: also write Fiji ROI zips. Returns the summary also written to
    output_dir/summary.json.
    """
    files, ignored, unusable = gather_inputs(inputs)
    items = (
        (os.path.splitext(os.path.basename(f))[0], f, lambda f=f: read_planes(f, channel))
        for f in files
    )
    extra = {"inputs": list(inputs), "ignored_files": ignored, "channel": channel}
    return _run(
        model,
        items,
        len(files),
        output_dir,
        figure_images=figure_images,
        rois=rois,
        extra=extra,
        skipped=unusable,
    )


def predict_split(
    model: workdirs.TrainedModel,
    split: str,
    output_dir: str,
    *,
    figure_images: Sequence[str] = (),
    image_outputs: bool = True,
    rois: bool = False,
) -> dict:
    """predict_folder for a split of the model's config.data (e.g. the 65 DSB stage-1 `test`
    images). ImageIds are the data set's ids, so submission.csv is what Kaggle scores."""
    from nucjax import data

    data_config = model.config.data

    def items():
        for example in data.examples(data_config, split):
            image_id, image = example["id"], example["image"]
            yield image_id, f"{split}:{image_id}", lambda im=image: Planes(np.asarray(im)[None], "")

    return _run(
        model,
        items(),
        data.num_examples(data_config, split),
        output_dir,
        figure_images=figure_images,
        image_outputs=image_outputs,
        rois=rois,
        extra={"inputs": [f"split:{split}"], "data_source": data_config.source},
    )


__all__ = ["WRITE_FAILED_EXIT_CODE", "predict_folder", "predict_split", "segment", "segment_each"]

"""Segment the nuclei of your own images (or of a data set split) with a trained workdir.

  python -m nucjax.main --mode=predict --workdir=runs/unet --input=images/,extra.tif --output=out/
  python -m nucjax.main --mode=predict --workdir=runs/unet \
      --input=split:test --output=out/test    # the 65 stage-1 test images: a Kaggle CSV

The workdir's saved config builds the network; nothing of the optimizer is read.

Reads PNG, JPEG, BMP (pillow) and TIFF (tifffile): grey, grey + alpha, RGB or RGBA, 8- or
16-bit or float, any size up to MAX_PIXELS (tiled; resized only when config.eval.nucleus_area
asks). A TIFF is read by its axes (tifffile series): a z-stack, time series or plain
multi-page TIFF is segmented plane by plane into a label stack; a multi-channel image (axis C)
needs `channel` (--channel), the nuclear stain. Writes, for every image with stem S:
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
channels and no `channel`, smaller than MIN_SIDE pixels, NaN values, a stem already taken; in
an input folder also a broken symbolic link or a subfolder, which are not searched) is
skipped with a warning and listed in the summary (skipped_files); the others are still
written. An image whose outputs cannot be written (OSError: disk full, permission denied) is
reported with a warning, its partly written files are removed, and it is listed under
failed_files and left out of submission.csv; the others are still written, and
`python -m nucjax.main` exits with WRITE_FAILED_EXIT_CODE (4). No input images at all, or a
checkpoint of another model, is an error.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import jax
import numpy as np
import tifffile
from absl import logging
from PIL import Image

from nucjax import figures, outputs, reporting, whole_image
from nucjax import workdir as workdirs
from nucjax.data.images import network_input, to_rgb
from nucjax.models.spec import Instances

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MIN_SIDE = 8  # pixels; smaller images hold no nucleus worth finding
# Pillow's own limit (it refuses images over twice Image.MAX_IMAGE_PIXELS, ~179 million pixels,
# about 13000 x 13000), applied to TIFFs too: a damaged header can declare gigabytes that
# tifffile would allocate and fill before finding the data missing. Larger images: tile first.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
# Exit code of `nucjax.main --mode=predict` when the outputs of some images could not be
# written: the rest are complete, but the job did not do all it was asked (0 done, 1 error).
WRITE_FAILED_EXIT_CODE = 4


class UnsupportedImageError(ValueError):
    """An input file that is not one usable 2-D image."""


# --------------------------------------------------------------------------------------------
# Inputs


def _unusable_entry(full: str) -> str | None:
    """Why an entry of an input folder cannot be an input (None: it can)."""
    if os.path.islink(full) and not os.path.exists(full):
        return f"a broken symbolic link (to {os.readlink(full)}, which does not exist)"
    if os.path.isdir(full):
        return "a folder: folders are not searched recursively; pass it as an input of its own"
    if not os.path.isfile(full):
        return "not a regular file"
    return None


def gather_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str], list[dict]]:
    """Files and folders -> (image files in order, files in those folders that were ignored,
    folder entries that could not be inputs as {file, reason}).

    Folders contribute their files with an image suffix (not recursive), sorted; files given
    by name are always tried. Hidden entries are passed over; broken symbolic links and
    subfolders are returned with the reason, to be reported (they may be images the user
    meant). Raises FileNotFoundError for a missing path, no inputs, or a folder holding no
    images.
    """
    if not inputs:
        raise FileNotFoundError("no inputs given: pass image files or folders")
    files, ignored, unusable = [], [], []
    for path in inputs:
        if os.path.isdir(path):
            found = []
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                if name.startswith("."):  # hidden, or the temporary file of a write
                    continue
                if (reason := _unusable_entry(full)) is not None:
                    unusable.append({"file": full, "reason": f"{name}: {reason}"})
                    continue
                wanted = name.lower().endswith(IMAGE_SUFFIXES)
                ours = name.endswith(outputs.OUTPUT_SUFFIXES)
                (found if wanted and not ours else ignored).append(full)
            if not found:
                raise FileNotFoundError(
                    f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})"
                )
            files += found
        elif os.path.isfile(path):
            files.append(path)
        elif os.path.islink(path):
            raise FileNotFoundError(
                f"input {path} is a broken symbolic link (to {os.readlink(path)})"
            )
        else:
            raise FileNotFoundError(f"input {path} does not exist")
    return files, ignored, unusable


class Planes(NamedTuple):
    """The image(s) of one file.

    pixels: (N, H, W) grey or (N, H, W, C) colour, C in 1..4, in the file's own dtype;
    axis: "" for one image (N = 1), else the TIFF axis the N planes run along ("Z" slices,
    "T" time points, "I" or "Q" pages of unknown meaning).
    """

    pixels: np.ndarray
    axis: str


def _pil_array(path: str) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif im.mode == "PA":
            im = im.convert("RGBA")
        return np.asarray(im)


def _tiff_array(path: str) -> tuple[np.ndarray, str]:
    """(array, axes) of the file's first series, tifffile's axis letters (Y, X; S samples of a
    colour pixel; C channels; Z, T, I pages, Q unknown, ...), axes of length 1 dropped.
    Refused before reading when its header declares over 4 * MAX_PIXELS values."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        if math.prod(series.shape) > 4 * MAX_PIXELS:
            raise UnsupportedImageError(
                f"{os.path.basename(path)}: declares {series.shape} values, over the "
                f"{MAX_PIXELS} pixels (of up to 4 channels) predict reads; crop or tile it first"
            )
        array, axes = series.asarray(), series.axes
    keep = [i for i, n in enumerate(array.shape) if n > 1 or axes[i] in "YX"]
    return array.reshape([array.shape[i] for i in keep]), "".join(axes[i] for i in keep)


def _pick_axes(name: str, array: np.ndarray, axes: str, channel: int | None) -> Planes:
    """array with tifffile `axes` -> Planes: `channel` taken from the C (else S) axis (ignored
    when there is neither), one plane axis at most, colour last."""
    colour = "C" if "C" in axes else "S" if "S" in axes else ""
    if channel is not None and colour:  # a one-channel image is its own nuclear channel
        n = array.shape[axes.index(colour)]
        if not 0 <= channel < n:
            raise UnsupportedImageError(
                f"{name}: --channel={channel}, but it has channels 0..{n - 1}"
            )
        array = np.take(array, channel, axis=axes.index(colour))
        axes = axes.replace(colour, "")
        colour = "S" if "S" in axes else ""
    elif colour == "C":
        n = array.shape[axes.index("C")]
        raise UnsupportedImageError(
            f"{name}: {n} channels (axes {axes}); choose the nuclear one with --channel=0..{n - 1}"
        )
    planes = [a for a in axes if a not in "YX" + colour]
    if len(planes) > 1:
        raise UnsupportedImageError(
            f"{name}: a {array.ndim}-D array of axes {axes}, shape {array.shape}: predict takes "
            "one image or one stack (z-slices or time points), segmented plane by plane"
        )
    order = [*planes, "Y", "X", *colour]
    pixels = np.transpose(array, [axes.index(a) for a in order])
    return Planes(pixels if planes else pixels[None], "".join(planes))


def read_planes(path: str, channel: int | None = None) -> Planes:
    """One image file -> its Planes: one image, or a TIFF stack (z-stack, time series, pages).

    TIFF through tifffile, read by its axes (so a 3-page grey stack is 3 planes, never RGB),
    everything else through pillow. channel: take this channel (0-based) of a multi-channel
    image (the nuclear stain; a grey image is read as it is); a TIFF with several channels
    (axis C) needs one. Raises
    UnsupportedImageError naming the file for anything that is not images of at least
    MIN_SIDE x MIN_SIDE finite pixels, or is larger than MAX_PIXELS pixels (Pillow) or
    4 * MAX_PIXELS values (TIFF, from its header).
    """
    name = os.path.basename(path)
    try:
        if path.lower().endswith((".tif", ".tiff")):
            array, axes = _tiff_array(path)
        else:
            array = _pil_array(path)
            axes = "YXS"[: array.ndim]
    except UnsupportedImageError:
        raise
    except Exception as e:  # every decoder's own error type: all mean "not readable"
        raise UnsupportedImageError(f"{name}: not a readable image ({e})") from e
    if "Y" not in axes or "X" not in axes or array.ndim != len(axes):
        raise UnsupportedImageError(f"{name}: no 2-D image in it (axes {axes!r})")
    pixels, axis = _pick_axes(name, array, axes, channel)
    return Planes(_check_pixels(pixels, name), axis)


def _check_pixels(pixels: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) planes -> themselves, or UnsupportedImageError naming `name`
    unless C is 1..4 and the pixels are numbers, finite, at least MIN_SIDE x MIN_SIDE."""
    if pixels.ndim == 4 and not 1 <= pixels.shape[-1] <= 4:
        raise UnsupportedImageError(
            f"{name}: {pixels.shape[-1]} colour samples; 1 to 4 (grey to RGBA)"
        )
    if pixels.dtype.kind not in "biuf":
        raise UnsupportedImageError(f"{name}: pixels of type {pixels.dtype} are not supported")
    h, w = pixels.shape[1:3]
    if min(h, w) < MIN_SIDE:
        raise UnsupportedImageError(f"{name}: {h}x{w} pixels; need at least {MIN_SIDE}x{MIN_SIDE}")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise UnsupportedImageError(f"{name}: holds NaN or infinite values")
    return pixels


def check_image(array: np.ndarray, name: str) -> np.ndarray:
    """An in-memory image (nucjax.api) -> (H, W) grey or (H, W, C) colour, C in 1..4, or
    UnsupportedImageError naming `name`: read_planes's rules for one plane. Leading axes of
    length 1 are dropped and a channels-first (C, H, W) array is moved to channels-last."""
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[-1] > 4 and array.shape[0] <= 4:
        array = np.moveaxis(array, 0, -1)
    if array.ndim not in (2, 3):
        raise UnsupportedImageError(
            f"{name}: a {array.ndim}-D array of shape {array.shape}, not one image; segment "
            "takes (H, W) grey or (H, W, 1..4) colour (a stack: one plane at a time)"
        )
    return _check_pixels(array[None], name)[0]


def read_image(path: str, channel: int | None = None) -> np.ndarray:
    """One single-image file -> (H, W) or (H, W, C) array (read_planes); a stack is an
    UnsupportedImageError."""
    planes = read_planes(path, channel)
    if planes.axis:
        raise UnsupportedImageError(
            f"{os.path.basename(path)}: a stack of {len(planes.pixels)} planes (axis "
            f"{planes.axis}), not one image"
        )
    return planes.pixels[0]


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
    return whole_image.segment_image(model.spec, model.variables, image, model.config.eval)


def _segment_planes(model, pixels: np.ndarray) -> list[whole_image.ImagePrediction]:
    """pixels (N, H, W[, C]) -> one prediction per plane, each on its own."""
    return [segment(model, to_rgb(plane)) for plane in pixels]


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


def _segment_one(model, output_dir, stem, source, planes, wanted, image_outputs, rois) -> dict:
    """Segment one image or stack and write its files; returns its summary row (with its
    submission rows). Raises OSError when a file cannot be written, after removing those of
    its files that were."""
    predictions = _segment_planes(model, planes.pixels)
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
    for stem, source, load in items:
        bar.update()
        try:
            planes = _load_raw(stem, source, load, taken)
        except ValueError as e:  # UnsupportedImageError, or to_rgb refusing the array
            logging.warning("skipped %s: %s", source, e)
            skipped.append({"file": source, "reason": str(e)})
            continue
        taken[stem] = source
        write = image_outputs and primary
        try:
            row = _segment_one(model, output_dir, stem, source, planes, wanted, write, rois)
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


__all__ = [
    "Planes",
    "WRITE_FAILED_EXIT_CODE",
    "UnsupportedImageError",
    "check_image",
    "gather_inputs",
    "predict_folder",
    "predict_split",
    "read_image",
    "read_planes",
    "segment",
]

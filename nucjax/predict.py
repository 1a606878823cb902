"""Segment the nuclei of your own images (or of a data set split) with a trained workdir.

  python -m nucjax.main --mode=predict --workdir=runs/unet --input=images/,extra.tif --output=out/
  python -m nucjax.main --mode=predict --workdir=runs/unet \
      --input=split:test --output=out/test    # the 65 stage-1 test images: a Kaggle CSV

The workdir's saved config builds the network; nothing of the optimizer is read.

Reads PNG, JPEG, BMP (pillow) and TIFF (tifffile): grey, grey + alpha, RGB or RGBA, 8- or
16-bit or float, any size (tiled; resized only when config.eval.nucleus_area asks). Writes,
for every image with stem S:
  S_labels.tif   instance labels, uint16 (int32 past 65535 nuclei), 0 background: opens as a
                 label image in napari and Fiji
  S_prob.tif     float32 foreground probability
  S_overlay.png  the image with every nucleus outlined
  S_nuclei.csv   one row per nucleus: id, area, centroid, bounding box, mean intensity (of the
                 original image, its own units, averaged over colour channels), score
and, for the whole set, submission.csv (Kaggle DSB 2018: ImageId = stem, EncodedPixels =
run-length encoding, column-major, 1-indexed; an image without nuclei gets one empty row) and
summary.json (files processed, files skipped and why). Writers: nucjax.outputs (atomic: a
crash never leaves a half-written output).

A file that cannot be used (not an image, a stack rather than one image, smaller than
MIN_SIDE pixels, NaN values, a stem already taken) is skipped and listed in the summary; the
others are still written. No input images at all, or a checkpoint of another model, is an
error.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence

import jax
import numpy as np
import tifffile
from absl import logging
from PIL import Image

from nucjax import figures, outputs, reporting, whole_image
from nucjax import workdir as workdirs
from nucjax.data.images import network_input, to_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MIN_SIDE = 8  # pixels; smaller images hold no nucleus worth finding


class UnsupportedImageError(ValueError):
    """An input file that is not one usable 2-D image."""


# --------------------------------------------------------------------------------------------
# Inputs


def gather_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Files and folders -> (image files in order, files in those folders that were ignored).

    Folders contribute their files with an image suffix (not recursive), sorted; files given
    by name are always tried. Raises FileNotFoundError for a missing path, no inputs, or a
    folder holding no images.
    """
    if not inputs:
        raise FileNotFoundError("no inputs given: pass image files or folders")
    files, ignored = [], []
    for path in inputs:
        if os.path.isdir(path):
            found = []
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                if not os.path.isfile(full) or name.startswith("."):
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
        else:
            raise FileNotFoundError(f"input {path} does not exist")
    return files, ignored


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


def read_image(path: str) -> np.ndarray:
    """One image file -> (H, W) or (H, W, C) array, C in 1..4, in the file's own dtype.

    TIFF through tifffile (leading singleton axes dropped; channels-first (C, H, W) moved
    last), everything else through pillow. Raises UnsupportedImageError naming the file for
    anything that is not one 2-D image of at least MIN_SIDE x MIN_SIDE finite pixels.
    """
    name = os.path.basename(path)
    try:
        if path.lower().endswith((".tif", ".tiff")):
            array = np.asarray(tifffile.imread(path))
        else:
            array = _pil_array(path)
    except Exception as e:  # every decoder's own error type: all mean "not readable"
        raise UnsupportedImageError(f"{name}: not a readable image ({e})") from e
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[-1] > 4 and array.shape[0] <= 4:
        array = np.moveaxis(array, 0, -1)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] > 4):
        raise UnsupportedImageError(
            f"{name}: a {array.ndim}-D array of shape {array.shape}, not one image; predict "
            "takes (H, W) grey or (H, W, 1..4) colour, not stacks or time series"
        )
    if array.dtype.kind not in "biuf":
        raise UnsupportedImageError(f"{name}: pixels of type {array.dtype} are not supported")
    if min(array.shape[:2]) < MIN_SIDE:
        raise UnsupportedImageError(
            f"{name}: {array.shape[0]}x{array.shape[1]} pixels; need at least {MIN_SIDE}x{MIN_SIDE}"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise UnsupportedImageError(f"{name}: holds NaN or infinite values")
    return array


# --------------------------------------------------------------------------------------------
# The loop


def _load_raw(stem: str, source: str, load, taken: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(raw array, rgb uint8) of one input, or UnsupportedImageError / ValueError to skip it."""
    if stem in taken:
        raise UnsupportedImageError(
            f"{os.path.basename(source)}: its outputs would overwrite those of "
            f"{taken[stem]} (same name {stem!r})"
        )
    raw = load()
    return raw, to_rgb(raw)


def _segment_one(model, output_dir, stem, source, raw, rgb, wanted, image_outputs) -> dict:
    """Segment one image and write its files; returns its summary row (with its nuclei)."""
    image = network_input(rgb, model.config.data.input_view)
    p = whole_image.segment_image(model.spec, model.variables, image, model.config.eval)
    files = {}
    if image_outputs:
        files = outputs.write_image_outputs(output_dir, stem, raw, rgb, p.instances, p.foreground)
    if {stem, os.path.basename(source)} & wanted:
        files["figure"] = figures.save_confidence_figure(
            os.path.join(output_dir, f"{stem}_figure.png"),
            rgb,
            p.foreground,
            p.instances,
            title=f"{stem}: foreground probability, per-nucleus confidence",
        )
    return {
        "file": source,
        "image_id": stem,
        "height": int(rgb.shape[0]),
        "width": int(rgb.shape[1]),
        "nuclei": int(p.instances.label.max()),
        "predict_s": p.predict_s,
        "postprocess_s": p.postprocess_s,
        "scale": p.scale,  # the nucleus_area rescale (1.0: none)
        "outputs": files,
        "submission": outputs.submission_rows(stem, p.instances.label),
    }


def _run(
    model, items: Iterator, total: int, output_dir, *, figure_images, image_outputs=True, extra=None
) -> dict:
    """Predict every (stem, source, load) of `items`; load() -> raw array or raises."""
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    wanted = {str(n) for n in figure_images}
    primary = jax.process_index() == 0
    images, skipped, taken = [], [], {}
    bar = reporting.progress(total, "predict", "img")
    t0 = time.perf_counter()
    for stem, source, load in items:
        bar.update()
        try:
            raw, rgb = _load_raw(stem, source, load, taken)
        except ValueError as e:  # UnsupportedImageError, or to_rgb refusing the array
            logging.warning("skipped %s: %s", source, e)
            skipped.append({"file": source, "reason": str(e)})
            continue
        taken[stem] = source
        write = image_outputs and primary
        images.append(_segment_one(model, output_dir, stem, source, raw, rgb, wanted, write))
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
) -> dict:
    """Segment image files and folders of them with a trained model (nucjax.workdir.load).

    inputs: files and/or folders; figure_images: stems or file names to draw the confidence
    figure (nucjax.figures) for. Returns the summary also written to output_dir/summary.json.
    """
    files, ignored = gather_inputs(inputs)
    items = (
        (os.path.splitext(os.path.basename(f))[0], f, lambda f=f: read_image(f)) for f in files
    )
    extra = {"inputs": list(inputs), "ignored_files": ignored}
    return _run(model, items, len(files), output_dir, figure_images=figure_images, extra=extra)


def predict_split(
    model: workdirs.TrainedModel,
    split: str,
    output_dir: str,
    *,
    figure_images: Sequence[str] = (),
    image_outputs: bool = True,
) -> dict:
    """predict_folder for a split of the model's config.data (e.g. the 65 DSB stage-1 `test`
    images). ImageIds are the data set's ids, so submission.csv is what Kaggle scores."""
    from nucjax import data

    data_config = model.config.data

    def items():
        for example in data.examples(data_config, split):
            image_id = example["id"]
            yield image_id, f"{split}:{image_id}", lambda im=example["image"]: np.asarray(im)

    return _run(
        model,
        items(),
        data.num_examples(data_config, split),
        output_dir,
        figure_images=figure_images,
        image_outputs=image_outputs,
        extra={"inputs": [f"split:{split}"], "data_source": data_config.source},
    )


__all__ = [
    "UnsupportedImageError",
    "gather_inputs",
    "predict_folder",
    "predict_split",
    "read_image",
]

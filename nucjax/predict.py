"""Segment the nuclei of your own images (or of a data set split) with a trained workdir.

  python -m nucjax.main --mode=predict --config=configs/unet.py --workdir=runs/unet \
      --input=images/,extra.tif --output=out/
  python -m nucjax.main --mode=predict --config=configs/unet.py --workdir=runs/unet \
      --input=split:test --output=out/test    # the 65 stage-1 test images: a Kaggle CSV

Reads PNG, JPEG, BMP (pillow) and TIFF (tifffile): grey, grey + alpha, RGB or RGBA, 8- or
16-bit or float, any size (tiled, never resized). Writes, for every image with stem S:
  S_labels.tif   instance labels, uint16 (int32 past 65535 nuclei), 0 background: opens as a
                 label image in napari and Fiji
  S_prob.tif     float32 foreground probability
  S_overlay.png  the image with every nucleus outlined
  S_nuclei.csv   one row per nucleus: id, area, centroid, bounding box, mean intensity (of the
                 original image, its own units, averaged over colour channels), score
and, for the whole set, submission.csv (Kaggle DSB 2018: ImageId = stem, EncodedPixels =
run-length encoding, column-major, 1-indexed; an image without nuclei gets one empty row) and
summary.json (files processed, files skipped and why). Every file is written under a
temporary name and renamed when complete, so a crash never leaves a half-written output.

A file that cannot be used (not an image, a stack rather than one image, smaller than
MIN_SIDE pixels, NaN values, a stem already taken) is skipped and listed in the summary; the
others are still written. No input images at all, or a checkpoint of another model, is an
error.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tifffile
from absl import logging
from PIL import Image
from skimage.measure import regionprops_table
from skimage.segmentation import find_boundaries

from nucjax import figures, inference
from nucjax.data import rle
from nucjax.data.images import input_view, to_rgb
from nucjax.data.pipeline import normalize_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Files this module writes: never read back as inputs when the output folder is an input.
OUTPUT_SUFFIXES = ("_labels.tif", "_prob.tif", "_overlay.png", "_figure.png")
MIN_SIDE = 8  # pixels; smaller images hold no nucleus worth finding
OUTLINE = (255, 255, 0)
NUCLEI_COLUMNS = (
    "id area centroid_y centroid_x bbox_min_row bbox_min_col bbox_max_row bbox_max_col "
    "mean_intensity score"
).split()


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
                ours = name.endswith(OUTPUT_SUFFIXES)
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


def intensity_image(raw: np.ndarray) -> np.ndarray:
    """(H, W) float64 intensity in the file's own units: colour channels averaged, alpha dropped."""
    raw = np.asarray(raw, np.float64)
    if raw.ndim == 2:
        return raw
    channels = raw.shape[-1]
    return raw[..., : 3 if channels >= 3 else 1].mean(axis=-1)


# --------------------------------------------------------------------------------------------
# Outputs


def write_label_tiff(path: str, label: np.ndarray) -> str:
    """label (H, W) ids -> uint16 TIFF (int32 when ids pass 65535), zlib-compressed."""
    dtype = np.uint16 if label.size == 0 or label.max() <= np.iinfo(np.uint16).max else np.int32
    data = np.ascontiguousarray(label, dtype)
    return inference.write_atomically(
        path, lambda tmp: tifffile.imwrite(tmp, data, photometric="minisblack", compression="zlib")
    )


def write_float_tiff(path: str, values: np.ndarray) -> str:
    data = np.ascontiguousarray(values, np.float32)
    return inference.write_atomically(
        path, lambda tmp: tifffile.imwrite(tmp, data, photometric="minisblack", compression="zlib")
    )


def overlay(image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """image (H, W, 3) uint8 with the inner boundary of every nucleus painted OUTLINE."""
    out = np.array(image, np.uint8)
    out[find_boundaries(label, mode="inner")] = OUTLINE
    return out


def write_png(path: str, image: np.ndarray) -> str:
    return inference.write_atomically(
        path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG")
    )


def nuclei_table(label: np.ndarray, scores: np.ndarray, intensity: np.ndarray) -> list[list]:
    """One row per nucleus (NUCLEI_COLUMNS): bounding boxes half-open, [min, max)."""
    props = regionprops_table(
        label,
        intensity_image=intensity,
        properties=("label", "area", "centroid", "bbox", "intensity_mean"),
    )
    keys = ["label", "area", "centroid-0", "centroid-1", "bbox-0", "bbox-1", "bbox-2", "bbox-3"]
    rows = []
    for i in range(len(props["label"])):
        n = int(props["label"][i])
        row = [round(float(props[k][i]), 3) if "centroid" in k else int(props[k][i]) for k in keys]
        row += [round(float(props["intensity_mean"][i]), 4), round(float(scores[n - 1]), 4)]
        rows.append(row)
    return rows


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return inference.write_text(path, buffer.getvalue())


def submission_rows(image_id: str, label: np.ndarray) -> list[tuple[str, str]]:
    """Kaggle rows of one image: one per nucleus, or a single empty row when there is none."""
    rles = [r for r in rle.label_to_rles(label) if r]
    return [(image_id, r) for r in rles] or [(image_id, "")]


def write_image_outputs(
    output_dir: str, stem: str, raw: np.ndarray, rgb: np.ndarray, p: inference.ImagePrediction
) -> dict[str, str]:
    """The four per-image files of one prediction (see the module docstring). Returns paths."""
    base = os.path.join(output_dir, stem)
    label, scores = p.instances.label, p.instances.scores
    return {
        "labels": write_label_tiff(base + "_labels.tif", label),
        "prob": write_float_tiff(base + "_prob.tif", p.foreground),
        "overlay": write_png(base + "_overlay.png", overlay(rgb, label)),
        "nuclei": write_csv(
            base + "_nuclei.csv", NUCLEI_COLUMNS, nuclei_table(label, scores, intensity_image(raw))
        ),
    }


# --------------------------------------------------------------------------------------------
# The loop


def _run(
    config,
    workdir,
    items: Iterator,
    total: int,
    output_dir,
    *,
    step,
    figure_images,
    model,
    image_outputs=True,
    extra=None,
) -> dict:
    """Predict every (stem, source, load) of `items`; load() -> raw array or raises."""
    spec, variables, step = model or inference.load_model(config, workdir, step)
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    ev = config.eval
    wanted = {str(n) for n in figure_images}
    found_figures: set[str] = set()
    images, skipped, rows, taken = [], [], [], {}
    progress = inference.ImageProgress(total, "predict")
    t0 = time.perf_counter()
    for done, (stem, source, load) in enumerate(items, 1):
        try:
            if stem in taken:
                raise UnsupportedImageError(
                    f"{os.path.basename(source)}: its outputs would overwrite those of "
                    f"{taken[stem]} (same name {stem!r})"
                )
            raw = load()
            rgb = to_rgb(raw)
        except ValueError as e:  # UnsupportedImageError, or to_rgb refusing the array
            logging.warning("skipped %s: %s", source, e)
            skipped.append({"file": source, "reason": str(e)})
            progress.update(done, f"{stem} (skipped)")
            continue
        taken[stem] = source
        p = inference.segment_image(
            spec,
            variables,
            normalize_image(input_view(rgb, config.data.input_view)),
            tile_size=ev.tile_size,
            overlap=ev.tile_overlap,
        )
        outputs = write_image_outputs(output_dir, stem, raw, rgb, p) if image_outputs else {}
        names = {stem, os.path.basename(source)}
        if names & wanted:
            found_figures |= names & wanted
            outputs["figure"] = figures.save_confidence_figure(
                os.path.join(output_dir, f"{stem}_figure.png"),
                rgb,
                p.foreground,
                p.instances,
                title=f"{stem}: foreground probability, per-nucleus confidence",
            )
        rows += submission_rows(stem, p.instances.label)
        images.append(
            {
                "file": source,
                "image_id": stem,
                "height": int(rgb.shape[0]),
                "width": int(rgb.shape[1]),
                "nuclei": int(p.instances.label.max()),
                "predict_s": p.predict_s,
                "postprocess_s": p.postprocess_s,
                "outputs": outputs,
            }
        )
        progress.update(done, stem)
    summary = {
        "model": config.model.name,
        "workdir": os.path.abspath(workdir),
        "step": step,
        "output_dir": output_dir,
        **(extra or {}),
        "processed": len(images),
        "skipped": len(skipped),
        "skipped_files": skipped,
        "figures_not_found": sorted(wanted - found_figures),
        "seconds": time.perf_counter() - t0,
        "images": images,
        "submission": os.path.join(output_dir, "submission.csv"),
        "summary": os.path.join(output_dir, "summary.json"),
    }
    write_csv(summary["submission"], ("ImageId", "EncodedPixels"), rows)
    inference.write_text(summary["summary"], json.dumps(summary, indent=2) + "\n")
    return summary


def predict_folder(
    config,
    workdir: str,
    inputs: Sequence[str],
    output_dir: str,
    *,
    step: int | None = None,
    figure_images: Sequence[str] = (),
    model=None,
) -> dict:
    """Segment image files and folders of them with workdir's checkpoint `step` (latest).

    inputs: files and/or folders; figure_images: stems or file names to draw the confidence
    figure (nucjax.figures) for; model: (spec, variables, step) to reuse a loaded model.
    Returns the summary also written to output_dir/summary.json.
    """
    files, ignored = gather_inputs(inputs)
    items = (
        (os.path.splitext(os.path.basename(f))[0], f, lambda f=f: read_image(f)) for f in files
    )
    return _run(
        config,
        workdir,
        items,
        len(files),
        output_dir,
        step=step,
        figure_images=figure_images,
        model=model,
        extra={"inputs": list(inputs), "ignored_files": ignored},
    )


def predict_split(
    config,
    workdir: str,
    split: str,
    output_dir: str,
    *,
    step: int | None = None,
    figure_images: Sequence[str] = (),
    model=None,
    image_outputs: bool = True,
) -> dict:
    """predict_folder for a split of config.data (e.g. the 65 DSB stage-1 `test` images).

    ImageIds are the data set's ids, so submission.csv is what Kaggle scored.
    """
    from nucjax import data

    def items():
        for example in data.raw_dataset(config.data, split).as_numpy_iterator():
            image_id = example["id"]
            image_id = image_id.decode() if isinstance(image_id, bytes) else str(image_id)
            yield image_id, f"{split}:{image_id}", lambda im=example["image"]: np.asarray(im)

    return _run(
        config,
        workdir,
        items(),
        data.num_examples(config.data, split),
        output_dir,
        step=step,
        figure_images=figure_images,
        model=model,
        image_outputs=image_outputs,
        extra={"inputs": [f"split:{split}"], "data_source": config.data.source},
    )


__all__ = [
    "UnsupportedImageError",
    "gather_inputs",
    "predict_folder",
    "predict_split",
    "read_image",
    "submission_rows",
]

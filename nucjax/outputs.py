"""Every file nucjax writes for people and other tools, each written atomically.

A writer puts its bytes under a temporary name in the target folder and renames it when
complete (write_atomically), so a crash or a signal never leaves a half-written output: the
path is absent, the old file, or complete. Used by predict, evaluation reports and figures.

Per-image outputs (stem S): S_labels.tif (instance ids, uint16, or int32 past 65535 nuclei),
S_prob.tif (float32 foreground probability), S_overlay.png (outlines on the image),
S_nuclei.csv (NUCLEI_COLUMNS, one row per nucleus); and Kaggle submission rows.
"""

from __future__ import annotations

import csv
import io
import os
import socket
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tifffile
from PIL import Image
from skimage.measure import regionprops_table
from skimage.segmentation import find_boundaries

from nucjax.data import rle
from nucjax.models.spec import Instances

OUTLINE = (255, 255, 0)
NUCLEI_COLUMNS = (
    "id area centroid_y centroid_x bbox_min_row bbox_min_col bbox_max_row bbox_max_col "
    "mean_intensity score"
).split()
# Suffixes of the per-image files: never read back as inputs when the output folder is one.
OUTPUT_SUFFIXES = ("_labels.tif", "_prob.tif", "_overlay.png", "_figure.png")
IMAGE_OUTPUT_SUFFIXES = (*OUTPUT_SUFFIXES, "_nuclei.csv")  # every file of one image


def write_atomically(path: str, write: Callable[[str], None]) -> str:
    """Call write(tmp) for a temporary name in path's folder, then rename it to `path`.

    The rename is atomic, so `path` is either absent, the old file, or complete. Returns path.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Host and pid: processes of a multi-host job may share the folder.
    tmp = os.path.join(folder, f".{name}.{socket.gethostname()}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text(path: str, text: str) -> str:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return write_atomically(path, write)


def write_label_tiff(path: str, label: np.ndarray) -> str:
    """label (H, W) ids -> uint16 TIFF (int32 when ids pass 65535), zlib-compressed."""
    dtype = np.uint16 if label.size == 0 or label.max() <= np.iinfo(np.uint16).max else np.int32
    data = np.ascontiguousarray(label, dtype)
    return write_atomically(
        path, lambda tmp: tifffile.imwrite(tmp, data, photometric="minisblack", compression="zlib")
    )


def write_float_tiff(path: str, values: np.ndarray) -> str:
    data = np.ascontiguousarray(values, np.float32)
    return write_atomically(
        path, lambda tmp: tifffile.imwrite(tmp, data, photometric="minisblack", compression="zlib")
    )


def overlay(image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """image (H, W, 3) uint8 with the inner boundary of every nucleus painted OUTLINE."""
    out = np.array(image, np.uint8)
    out[find_boundaries(label, mode="inner")] = OUTLINE
    return out


def write_png(path: str, image: np.ndarray) -> str:
    return write_atomically(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def intensity_image(raw: np.ndarray) -> np.ndarray:
    """(H, W) float64 intensity in the file's own units: colour channels averaged, alpha dropped."""
    raw = np.asarray(raw, np.float64)
    if raw.ndim == 2:
        return raw
    channels = raw.shape[-1]
    return raw[..., : 3 if channels >= 3 else 1].mean(axis=-1)


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
    return write_text(path, buffer.getvalue())


def submission_rows(image_id: str, label: np.ndarray) -> list[tuple[str, str]]:
    """Kaggle rows of one image: one per nucleus, or a single empty row when there is none."""
    rles = [r for r in rle.label_to_rles(label) if r]
    return [(image_id, r) for r in rles] or [(image_id, "")]


def remove_image_outputs(output_dir: str, stem: str) -> list[str]:
    """Deletes the per-image files of `stem` that exist (after a failed write: no image is
    left with some of its files). Returns the paths removed."""
    removed = []
    for suffix in IMAGE_OUTPUT_SUFFIXES:
        path = os.path.join(output_dir, stem + suffix)
        if os.path.lexists(path):
            os.remove(path)
            removed.append(path)
    return removed


def write_image_outputs(
    output_dir: str,
    stem: str,
    raw: np.ndarray,
    rgb: np.ndarray,
    instances: Instances,
    foreground: np.ndarray,
) -> dict[str, str]:
    """The four per-image files of one prediction (module docstring). Returns their paths.

    raw: the file's own pixels (intensities in its units); rgb: (H, W, 3) uint8 of it;
    foreground: (H, W) float32 probability.
    """
    base = os.path.join(output_dir, stem)
    label, scores = instances.label, instances.scores
    return {
        "labels": write_label_tiff(base + "_labels.tif", label),
        "prob": write_float_tiff(base + "_prob.tif", foreground),
        "overlay": write_png(base + "_overlay.png", overlay(rgb, label)),
        "nuclei": write_csv(
            base + "_nuclei.csv", NUCLEI_COLUMNS, nuclei_table(label, scores, intensity_image(raw))
        ),
    }

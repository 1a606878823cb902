"""Every file nucjax writes for people and other tools, each written atomically.

A writer puts its bytes under a temporary name in the target folder and renames it when
complete (write_atomically), so a crash or a signal never leaves a half-written output: the
path is absent, the old file, or complete. Used by predict, evaluation reports and figures.

Per-image outputs (stem S): S_labels.tif (instance ids, uint16, or int32 past 65535 nuclei),
S_prob.tif (float32 foreground probability), S_overlay.png (outlines on the image,
contrast-stretched for people by display_rgb), S_nuclei.csv (NUCLEI_COLUMNS, one row per
nucleus), on request S_rois.zip (Fiji/ImageJ ROI Manager: one polygon per nucleus); and Kaggle
submission rows. A stack (z-slices, time points) gets the same files with one plane per
slice: (N, H, W) TIFFs, S_overlay.tif (N, H, W, 3), a `plane` column in the table, ROIs on
their slices; nucleus ids run on across planes, so each is unique in the stack.
"""

from __future__ import annotations

import csv
import io
import os
import socket
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import roifile
import tifffile
from PIL import Image
from skimage.measure import approximate_polygon, find_contours, regionprops, regionprops_table
from skimage.segmentation import find_boundaries

from nucjax.data import rle
from nucjax.models.spec import Instances

OUTLINE = (255, 255, 0)
# Shape measures are skimage.measure.regionprops' (pixels): perimeter runs through the centres
# of the boundary pixels (a 4 x 10 rectangle: 24); the axis lengths and eccentricity are those
# of the ellipse with the same second moments; solidity is area / convex hull area.
SHAPE_COLUMNS = ("perimeter", "eccentricity", "solidity", "axis_major_length", "axis_minor_length")
NUCLEI_COLUMNS = (
    "id area centroid_y centroid_x bbox_min_row bbox_min_col bbox_max_row bbox_max_col".split()
    + list(SHAPE_COLUMNS)
    + ["mean_intensity", "score"]
)
# Suffixes of the per-image files: never read back as inputs when the output folder is one.
OUTPUT_SUFFIXES = (
    "_labels.tif",
    "_prob.tif",
    "_overlay.png",
    "_overlay.tif",
    "_figure.png",
    "_rois.zip",
)
IMAGE_OUTPUT_SUFFIXES = (*OUTPUT_SUFFIXES, "_nuclei.csv")  # every file of one image
# Display range of an image for people: these percentiles of its intensities go to 0 and 255.
DISPLAY_PERCENTILES = (1.0, 99.8)


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


def display_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1..4) image of any type -> (H, W, 3) uint8 for people to look at.

    Grey is repeated, alpha dropped, and intensities stretched linearly so that the
    DISPLAY_PERCENTILES of all channels together go to 0 and 255 (colour balance kept): the
    same rule for 8-bit, 16-bit and float, so a dim 8-bit image is as visible as a 16-bit one.
    """
    x = np.asarray(image, np.float64)
    x = x[..., None] if x.ndim == 2 else x
    x = x[..., :3] if x.shape[-1] >= 3 else np.repeat(x[..., :1], 3, axis=-1)
    low, high = np.percentile(x, DISPLAY_PERCENTILES)
    if high <= low:  # more than 98.8 % of the pixels alike: the full range instead
        low, high = x.min(), x.max()
    scaled = (x - low) * (255.0 / (high - low)) if high > low else np.zeros_like(x)
    return np.round(np.clip(scaled, 0, 255)).astype(np.uint8)


def overlay(image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """image (H, W, 3) uint8 with the inner boundary of every nucleus painted OUTLINE."""
    out = np.array(image, np.uint8)
    out[find_boundaries(label, mode="inner")] = OUTLINE
    return out


def write_png(path: str, image: np.ndarray) -> str:
    return write_atomically(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def write_rgb_tiff(path: str, images: np.ndarray) -> str:
    """images (N, H, W, 3) uint8 -> an RGB stack TIFF (Fiji opens it as N slices)."""
    data = np.ascontiguousarray(images, np.uint8)
    return write_atomically(
        path, lambda tmp: tifffile.imwrite(tmp, data, photometric="rgb", compression="zlib")
    )


def intensity_image(raw: np.ndarray) -> np.ndarray:
    """(H, W) float64 intensity in the file's own units: colour channels averaged, alpha dropped."""
    raw = np.asarray(raw, np.float64)
    if raw.ndim == 2:
        return raw
    channels = raw.shape[-1]
    return raw[..., : 3 if channels >= 3 else 1].mean(axis=-1)


def nuclei_table(label: np.ndarray, scores: np.ndarray, intensity: np.ndarray) -> list[list]:
    """One row per nucleus (NUCLEI_COLUMNS): bounding boxes half-open, [min, max).

    label: (H, W) ids 1..N; scores: (N,); intensity: (H, W) in the image's own units.
    """
    props = regionprops_table(
        label,
        intensity_image=intensity,
        properties=("label", "area", "centroid", "bbox", *SHAPE_COLUMNS, "intensity_mean"),
    )
    ints = ["label", "area"], ["bbox-0", "bbox-1", "bbox-2", "bbox-3"]
    rows = []
    for i in range(len(props["label"])):
        n = int(props["label"][i])
        row = [int(props[k][i]) for k in ints[0]]
        row += [round(float(props[k][i]), 3) for k in ("centroid-0", "centroid-1")]
        row += [int(props[k][i]) for k in ints[1]]
        row += [round(float(props[k][i]), 4) for k in SHAPE_COLUMNS]
        row += [round(float(props["intensity_mean"][i]), 4), round(float(scores[n - 1]), 4)]
        rows.append(row)
    return rows


def nucleus_outlines(label: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """label (H, W) ids -> [(id, (K, 2) float x, y)]: each nucleus's outer outline, in ImageJ
    coordinates (pixel row r, column c covers x in [c, c+1], y in [r, r+1]).

    The outline runs midway between the nucleus's boundary pixels and their outside neighbours
    (the 0.5 contour of its mask, diagonal neighbours joined), so a polygon filler that takes
    a pixel when its centre is inside, as ImageJ's does, gives the nucleus back exactly; only
    holes and any second piece of a nucleus are lost (the longest outline is kept).
    """
    outlines = []
    for region in regionprops(label):
        mask = np.pad(region.image, 1).astype(np.uint8)
        contours = find_contours(mask, 0.5, fully_connected="high")
        rc = approximate_polygon(max(contours, key=len), tolerance=0.01)[:-1]  # closed: drop
        top, left = region.bbox[:2]
        xy = np.stack([rc[:, 1] + left - 0.5, rc[:, 0] + top - 0.5], axis=-1)
        outlines.append((int(region.label), xy))
    return outlines


def write_roi_zip(path: str, label: np.ndarray) -> str:
    """label (H, W) or (Z, H, W) ids -> a Fiji/ImageJ ROI zip (open with the ROI Manager): one
    polygon ROI per nucleus named by its id, on its slice (position z + 1) for a stack."""
    stack = label.ndim == 3
    rois = []
    for z, plane in enumerate(label if stack else [label]):
        for n, xy in nucleus_outlines(plane):
            roi = roifile.ImagejRoi.frompoints(
                xy,
                name=f"{n:05d}",
                position=z if stack else None,  # frompoints adds 1
            )
            roi.roitype = roifile.ROI_TYPE.POLYGON  # frompoints makes freehand ones
            rois.append(roi)
    return write_atomically(path, lambda tmp: roifile.roiwrite(tmp, rois, mode="w"))


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
    instances: Instances,
    foreground: np.ndarray,
    *,
    rois: bool = False,
) -> dict[str, str]:
    """The per-image files of one prediction (module docstring). Returns their paths.

    One image: raw (H, W) or (H, W, C), the file's own pixels (intensities in its units);
    instances.label and foreground (H, W). A stack: raw (N, H, W[, C]), label and foreground
    (N, H, W), ids unique over the stack; instances.scores holds every id's score either way.
    rois: also write S_rois.zip.
    """
    base = os.path.join(output_dir, stem)
    label, scores = instances.label, instances.scores
    stack = label.ndim == 3
    planes = zip(raw if stack else [raw], label if stack else [label], strict=True)
    tables, overlays = [], []
    for z, (image, plane_label) in enumerate(planes):
        rows = nuclei_table(plane_label, scores, intensity_image(image))
        tables += [[z, *row] for row in rows] if stack else rows
        overlays.append(overlay(display_rgb(image), plane_label))
    files = {
        "labels": write_label_tiff(base + "_labels.tif", label),
        "prob": write_float_tiff(base + "_prob.tif", foreground),
        "overlay": write_rgb_tiff(base + "_overlay.tif", np.stack(overlays))
        if stack
        else write_png(base + "_overlay.png", overlays[0]),
        "nuclei": write_csv(
            base + "_nuclei.csv", ["plane", *NUCLEI_COLUMNS] if stack else NUCLEI_COLUMNS, tables
        ),
    }
    if rois:
        files["rois"] = write_roi_zip(base + "_rois.zip", label)
    return files

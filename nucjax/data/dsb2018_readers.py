"""Readers for the DSB 2018 (BBBC038v1) files: the image zips and the RLE label CSVs.

A zip holds `<id>/images/<id>.png` and, for training, `<id>/masks/*.png` (one binary mask per
nucleus); a CSV holds rows `ImageId, EncodedPixels, ...`, one nucleus a row. Instance i of an
image is its i-th mask file in sorted file-name order, which is the order of its CSV rows, so
labels from the masks (read_train_zip) and from the CSV (read_train_csv, much faster) agree.

Bad input raises `Dsb2018Error` naming the file and what is wrong; nothing is skipped, because
a dropped training image would silently change the split. An image without nuclei (empty masks
folder, no CSV rows) is such an error too: in this set every training image has nuclei.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
from PIL import Image

from nucjax.data import rle
from nucjax.data.images import to_rgb


class Dsb2018Error(ValueError):
    """Bad DSB 2018 input: the message names the file and what is wrong."""


# -------------------------------------------------------------------------------- zip files


# What zipfile raises for damaged archives besides BadZipFile: a bad deflate stream (zlib),
# a short member (EOFError), flag bits it cannot handle (NotImplementedError), a member marked
# encrypted (RuntimeError), impossible offsets (ValueError, OSError).
_DAMAGED_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)
_DAMAGED_ZIP += (ValueError, OSError)


def open_zip(path: str | os.PathLike) -> zipfile.ZipFile:
    """The zip at `path`, open for reading; Dsb2018Error if it is missing or not a zip."""
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise Dsb2018Error(f"{path}: file not found") from None
    except _DAMAGED_ZIP as err:
        raise Dsb2018Error(f"{path}: not a readable zip (truncated or corrupt?): {err}") from None


def _read_member(zf: zipfile.ZipFile, member: str) -> bytes:
    try:
        return zf.read(member)
    except _DAMAGED_ZIP as err:
        raise Dsb2018Error(f"{zf.filename}: member {member} is corrupt: {err}") from None


def index_zip(zf: zipfile.ZipFile) -> dict[str, tuple[str, list[str]]]:
    """id -> (image member, sorted mask members) for the `<id>/images|masks/*.png` layout."""
    images, masks = {}, defaultdict(list)
    for member in zf.namelist():
        parts = member.split("/")
        if len(parts) != 3 or not parts[2].lower().endswith(".png"):
            continue
        image_id, kind, _ = parts
        if kind == "images":
            if image_id in images:
                raise Dsb2018Error(f"{zf.filename}: {image_id} has more than one image")
            images[image_id] = member
        elif kind == "masks":
            masks[image_id].append(member)
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise Dsb2018Error(f"{zf.filename}: masks without an image for ids {orphans[:5]}")
    return {i: (images[i], sorted(masks.get(i, []))) for i in sorted(images)}


def decode_png(data: bytes, name: str) -> np.ndarray:
    """PNG bytes -> (H, W) or (H, W, C) uint8 array as stored; raises naming `name`."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = im.mode
            if mode in ("1", "P", "PA", "LA"):
                im = im.convert("RGBA" if "A" in mode or "transparency" in im.info else "RGB")
            array = np.asarray(im)
    except Exception as err:  # PIL raises many types for damaged files
        raise Dsb2018Error(f"{name}: not a readable PNG: {err}") from None
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise Dsb2018Error(f"{name}: unsupported pixel format {mode} (need 8-bit grey/RGB/RGBA)")
    return array


def _label_from_masks(zf: zipfile.ZipFile, image_id: str, masks: list[str], shape) -> np.ndarray:
    if not masks:
        raise Dsb2018Error(f"{zf.filename}: {image_id}/masks/ is empty or missing")
    label = np.zeros(shape, np.int32)
    for instance, member in enumerate(masks, start=1):
        mask = decode_png(_read_member(zf, member), f"{zf.filename}:{member}")
        mask = mask if mask.ndim == 2 else mask[..., :3].max(axis=2)  # alpha is not ink
        if mask.shape != tuple(shape):
            raise Dsb2018Error(
                f"{zf.filename}:{member}: mask is {mask.shape[0]}x{mask.shape[1]}, "
                f"its image {shape[0]}x{shape[1]}"
            )
        on = mask > 0
        if label[on].any():
            raise Dsb2018Error(f"{zf.filename}:{member}: mask overlaps an earlier mask")
        label[on] = instance
    return label


def stored_images(zf: zipfile.ZipFile, index, ids=None) -> Iterator[tuple[str, bytes, np.ndarray]]:
    """(id, PNG bytes, pixels as stored: (H, W) or (H, W, 3|4)) for `ids` (None: all)."""
    for image_id, (member, _) in index.items():
        if ids is None or image_id in ids:
            data = _read_member(zf, member)
            yield image_id, data, decode_png(data, f"{zf.filename}:{member}")


def read_image_zip(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (id, image (H, W, 3) uint8) for every `<id>/images/<id>.png`, ids sorted."""
    with open_zip(path) as zf:
        for image_id, _, stored in stored_images(zf, index_zip(zf)):
            yield image_id, to_rgb(stored)


def read_train_zip(
    path: str | os.PathLike,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yields (id, image (H, W, 3) uint8, label (H, W) int32) from the mask PNGs, ids sorted.

    Instance i is the i-th mask file in sorted file-name order, the order of the RLE CSV rows.
    """
    with open_zip(path) as zf:
        for image_id, (member, masks) in index_zip(zf).items():
            image = to_rgb(decode_png(_read_member(zf, member), f"{path}:{member}"))
            yield image_id, image, _label_from_masks(zf, image_id, masks, image.shape[:2])


# ---------------------------------------------------------------------------------- RLE CSVs


def read_rle_csv(path: str | os.PathLike) -> dict[str, list[str]]:
    """An RLE CSV (ImageId, EncodedPixels, ...) -> id -> its rows' RLE strings, in file order."""
    rows = defaultdict(list)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"ImageId", "EncodedPixels"} - set(reader.fieldnames or ())
            if missing:
                raise Dsb2018Error(f"{path}: no column(s) {sorted(missing)} in the header")
            for row in reader:
                if row["ImageId"] is None or row["EncodedPixels"] is None:
                    raise Dsb2018Error(f"{path}: line {reader.line_num} is missing columns")
                rows[row["ImageId"]].append(row["EncodedPixels"])
    except (csv.Error, UnicodeDecodeError) as err:
        raise Dsb2018Error(f"{path}: not a readable CSV: {err}") from None
    return dict(rows)


def label_from_csv_rows(rows: list[str], shape, *, image_id: str, csv_path) -> np.ndarray:
    """RLE rows of one image -> label (H, W) int32, ids 1..N in row order; empty rows (no
    pixels) are skipped. Errors name the CSV file and the image."""
    try:
        return rle.labels_from_rle([r for r in rows if r.strip()], shape)
    except rle.RleError as err:
        raise Dsb2018Error(f"{csv_path}: image {image_id}: {err}") from None


def read_train_csv(
    zip_path: str | os.PathLike, csv_path: str | os.PathLike
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Like read_train_zip, with labels from the RLE CSV instead of the mask PNGs."""
    rows = read_rle_csv(csv_path)
    with open_zip(zip_path) as zf:
        index = index_zip(zf)
        check_csv_ids(zf, index, rows, csv_path)
        for image_id, _, stored in stored_images(zf, index):
            label = label_from_csv_rows(
                rows[image_id], stored.shape[:2], image_id=image_id, csv_path=csv_path
            )
            yield image_id, to_rgb(stored), label


def check_csv_ids(zf: zipfile.ZipFile, index, rows, csv_path) -> None:
    """The CSV and the zip must describe the same images with the same number of nuclei."""
    only_csv = sorted(set(rows) - set(index))
    if only_csv:
        raise Dsb2018Error(
            f"{csv_path}: {len(only_csv)} image id(s) not in {zf.filename}, e.g. {only_csv[0]}"
        )
    for image_id, (_, masks) in index.items():
        if image_id not in rows:
            raise Dsb2018Error(f"{csv_path}: no rows for image {image_id} of {zf.filename}")
        if len(masks) != len(rows[image_id]):
            raise Dsb2018Error(
                f"{csv_path}: image {image_id} has {len(rows[image_id])} rows but "
                f"{len(masks)} mask files in {zf.filename}"
            )


def solution_rows(solution_csv: str | os.PathLike, test_index) -> dict[str, list[str]]:
    """stage1_solution.csv rows, which must cover exactly the stage1_test images."""
    rows = read_rle_csv(solution_csv)
    if missing := sorted(set(test_index) - set(rows)):
        raise Dsb2018Error(f"{solution_csv}: no rows for test image {missing[0]}")
    if extra := sorted(set(rows) - set(test_index)):
        raise Dsb2018Error(f"{solution_csv}: rows for {extra[0]}, not in stage1_test.zip")
    return rows


# --------------------------------------------------------------------------------- splitting


def split_ids(ids, validation_fraction: float, split_seed: int) -> tuple[list[str], list[str]]:
    """Sorted ids, permuted by default_rng(split_seed): the first round(n * f) -> validation.

    Returns (train ids, validation ids), each sorted.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    ids = np.array(sorted(ids))
    order = np.random.default_rng(split_seed).permutation(len(ids))
    num_validation = int(round(len(ids) * validation_fraction))
    validation = sorted(ids[order[:num_validation]].tolist())
    train = sorted(ids[order[num_validation:]].tolist())
    return train, validation


def config_name(validation_fraction: float, split_seed: int) -> str:
    """(0.1, 0) -> 'val10_seed0'; (0.125, 3) -> 'val12p5_seed3'."""
    percent = f"{validation_fraction * 100:.6g}".replace(".", "p")
    return f"val{percent}_seed{split_seed}"

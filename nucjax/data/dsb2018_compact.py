"""A compact, TensorFlow-free prepared copy of the DSB 2018 splits: one .npz file per split.

  folder = prepare(data_dir="", source="")          # fetch if needed, build missing splits
  for example in examples("validation"): ...        # {image, label, id, modality}, fixed order

Hosts without TensorFlow (the borrowed GPU hosts) cannot build or read the TFDS copy
(nucjax.data.dsb2018); this copy is built from the same BBBC038 files by the same readers
(nucjax.data.dsb2018_readers) and the same split definition (split_ids: sorted ids permuted
by split_seed), so a split holds the same images, in the same order, with the same pixels,
labels and modality as the TFDS split, and scores are comparable.

Layout: <data_dir>/dsb2018_compact/<config_name>/<split>.npz (config_name: 'val10_seed0' for
validation_fraction 0.1, split_seed 0), each holding
  ids (N,) str, modality (N,) uint8 (index into images.MODALITIES),
  height, width (N,) int64, labelled (N,) bool,
  png (bytes,) uint8 and png_offset (N + 1,) int64: image i is the PNG png[png_offset[i]:
      png_offset[i + 1]] of what to_rgb gives, one channel (mode L) for grey images (R = G =
      B), RGB otherwise. PNG's row filters halve the pixels where plain deflate does not:
      39 MB against 52 MB for the training split, so train + validation travel in the 64 MiB
      a borrowed GPU host takes with a command,
  labels (sum of H * W,) uint16: instance ids (0 background) row-major, image after image, 0
      where not labelled.
Unlabelled images (the test split without stage1_solution.csv) read back as label -1. The
file is written compressed (np.savez_compressed) through a temporary name and renamed, so an
interrupted build never leaves a file that looks complete.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
from collections.abc import Iterator, Mapping

import numpy as np
from absl import logging
from PIL import Image

from nucjax import outputs
from nucjax.data.dsb2018_fetch import fetch, resolve_data_dir
from nucjax.data.dsb2018_readers import (
    Dsb2018Error,
    check_csv_ids,
    config_name,
    decode_png,
    index_zip,
    label_from_csv_rows,
    open_zip,
    read_rle_csv,
    solution_rows,
    split_ids,
    stored_images,
)
from nucjax.data.images import MODALITIES, modality_of, to_rgb

SPLITS = ("train", "validation", "test")
FOLDER = "dsb2018_compact"
_MAX_LABEL = np.iinfo(np.uint16).max


@dataclasses.dataclass(frozen=True)
class CompactSplit:
    """One split read back: the arrays of the module docstring."""

    ids: np.ndarray
    modality: np.ndarray
    height: np.ndarray
    width: np.ndarray
    labelled: np.ndarray
    png: np.ndarray
    png_offset: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def example(self, i: int) -> dict:
        """Image i: {image (H, W, 3) uint8, label (H, W) int32, id str, modality int}."""
        h, w = int(self.height[i]), int(self.width[i])
        data = self.png[self.png_offset[i] : self.png_offset[i + 1]].tobytes()
        image = decode_png(data, f"{FOLDER} image {self.ids[i]}")
        if image.shape[:2] != (h, w):
            raise Dsb2018Error(f"{FOLDER} image {self.ids[i]}: PNG is not {h}x{w}")
        start = int(np.sum(self.height[:i] * self.width[:i]))
        label = self.labels[start : start + h * w].reshape(h, w).astype(np.int32)
        return {
            "image": to_rgb(image),
            "label": label if self.labelled[i] else np.full((h, w), -1, np.int32),
            "id": str(self.ids[i]),
            "modality": int(self.modality[i]),
        }


def _png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes, one channel when R = G = B."""
    grey = bool((rgb[..., :1] == rgb).all())
    buffer = io.BytesIO()
    Image.fromarray(rgb[..., 0] if grey else rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def split_path(split: str, data_dir="", validation_fraction=0.1, split_seed=0) -> pathlib.Path:
    """Where a split's .npz lives (module docstring)."""
    name = config_name(validation_fraction, split_seed)
    return resolve_data_dir(data_dir) / FOLDER / name / f"{_check_split(split)}.npz"


def _pack(items) -> dict[str, np.ndarray]:
    """(id, rgb (H, W, 3) uint8, label (H, W) int32 or None, modality index) -> the arrays."""
    ids, modality, shapes, labelled, pngs, labels = [], [], [], [], [], []
    for image_id, rgb, label, mod in items:
        ids.append(image_id)
        modality.append(mod)
        shapes.append(rgb.shape[:2])
        pngs.append(np.frombuffer(_png(rgb), np.uint8))
        labelled.append(label is not None)
        label = np.zeros(rgb.shape[:2], np.int32) if label is None else label
        if label.max(initial=0) > _MAX_LABEL:
            raise Dsb2018Error(f"image {image_id}: {label.max()} nuclei do not fit in uint16")
        labels.append(label.ravel().astype(np.uint16))
    shapes = np.array(shapes, np.int64).reshape(-1, 2)
    sizes = [len(p) for p in pngs]
    return {
        "ids": np.array(ids, dtype=str),
        "modality": np.array(modality, np.uint8),
        "height": shapes[:, 0],
        "width": shapes[:, 1],
        "labelled": np.array(labelled, bool),
        "png": np.concatenate(pngs) if pngs else np.zeros([0], np.uint8),
        "png_offset": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "labels": np.concatenate(labels) if labels else np.zeros([0], np.uint16),
    }


def _read(zf, index, ids, rows, csv_path) -> Iterator[tuple]:
    """(id, rgb, label or None, modality index) for `ids` (None: all) of an image zip."""
    for image_id, _, stored in stored_images(zf, index, None if ids is None else set(ids)):
        label = None
        if rows is not None:
            label = label_from_csv_rows(
                rows[image_id], stored.shape[:2], image_id=image_id, csv_path=csv_path
            )
        yield image_id, to_rgb(stored), label, MODALITIES.index(modality_of(stored))


def _write(path: pathlib.Path, arrays: Mapping[str, np.ndarray]) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(f, **arrays)

    outputs.write_atomically(os.fspath(path), write)
    logging.info("dsb2018: wrote %s (%d images)", path, len(arrays["ids"]))


def build(
    folder, out_folder, validation_fraction: float = 0.1, split_seed: int = 0, splits=SPLITS
) -> None:
    """Writes <out_folder>/<split>.npz for each of `splits` not yet there, from the fetched
    files in `folder` (stage1_train.zip, stage1_train_labels.csv, stage1_test.zip, optionally
    stage1_solution.csv). validation is skipped when validation_fraction is 0."""
    folder, out_folder = pathlib.Path(folder), pathlib.Path(out_folder)
    train_zip, test_zip = (
        open_zip(folder / "stage1_train.zip"),
        open_zip(folder / "stage1_test.zip"),
    )
    with train_zip, test_zip:
        train_index, test_index = index_zip(train_zip), index_zip(test_zip)
        labels_csv = folder / "stage1_train_labels.csv"
        rows = read_rle_csv(labels_csv)
        check_csv_ids(train_zip, train_index, rows, labels_csv)
        train, validation = split_ids(train_index, validation_fraction, split_seed)
        solution = folder / "stage1_solution.csv"
        test_rows = solution_rows(solution, test_index) if solution.is_file() else None
        plan = {
            "train": (train_zip, train_index, train, rows, labels_csv),
            "validation": (train_zip, train_index, validation, rows, labels_csv),
            "test": (test_zip, test_index, None, test_rows, solution),
        }
        for split, args in plan.items():
            if split not in splits or (split == "validation" and not validation):
                continue
            if (out_folder / f"{split}.npz").exists():
                continue
            _write(out_folder / f"{split}.npz", _pack(_read(*args)))


def prepare(
    *,
    data_dir="",
    source: str = "",
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    checksums: Mapping[str, str | None] | None = None,
    splits=SPLITS,
) -> pathlib.Path:
    """The folder of the compact splits; fetches and builds those of `splits` that are
    missing (idempotent: when they are all there the source is not touched). Evaluation
    needs only its split, so it does not wait for the training split's 42 MB to be built."""
    out = split_path("train", data_dir, validation_fraction, split_seed).parent
    wanted = [s for s in splits if s != "validation" or validation_fraction > 0]
    if all((out / f"{s}.npz").is_file() for s in wanted):
        return out
    folder = fetch(data_dir=data_dir, source=source, checksums=checksums)
    build(folder, out, validation_fraction, split_seed, wanted)
    return out


def load(split: str, **prepare_kwargs) -> CompactSplit:
    """A split's arrays (prepare's keyword arguments); the file is prepared first if needed."""
    path = prepare(splits=(_check_split(split),), **prepare_kwargs) / f"{split}.npz"
    if not path.is_file():
        fraction = prepare_kwargs.get("validation_fraction", 0.1)
        raise ValueError(f"no {split} split: validation_fraction is {fraction}")
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        return CompactSplit(**arrays)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise Dsb2018Error(f"{path}: not a readable compact split ({err}); delete it") from None


def examples(split: str, **prepare_kwargs) -> Iterator[dict]:
    """Elements {image (H, W, 3) uint8, label (H, W) int32, id str, modality int}, in the
    split's fixed order (sorted ids), like dsb2018.as_dataset."""
    store = load(split, **prepare_kwargs)
    for i in range(len(store)):
        yield store.example(i)


def num_examples(split: str, **prepare_kwargs) -> int:
    """Images in a split (0 for validation when validation_fraction is 0)."""
    if split == "validation" and prepare_kwargs.get("validation_fraction", 0.1) == 0:
        return 0
    folder = prepare(splits=(_check_split(split),), **prepare_kwargs)
    with np.load(folder / f"{split}.npz") as f:
        return len(f["ids"])


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    return split

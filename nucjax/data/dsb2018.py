"""DSB 2018 nuclei (BBBC038v1): fetch, read, and a tensorflow-datasets builder.

  builder = prepare(data_dir="", source="")      # fetch if needed, build if not built
  ds = as_dataset("train")                       # {image, label, id, modality}, fixed order

prepare() fetches the files with nucjax.data.dsb2018_fetch (see there for `source`, `data_dir`
and the checksums), then builds the dataset from them with the readers of
nucjax.data.dsb2018_readers. Bad input raises dsb2018_readers.Dsb2018Error.

Building. Images are read straight from the zips; training labels come from the RLE CSV
(fast; tests check that it equals the mask PNGs on all 670 images). Splits: `train` and
`validation` divide the 670 stage1_train ids (sorted, permuted by numpy default_rng(split_seed),
the first round(670 * validation_fraction) go to validation); `test` holds the 65 stage1_test
images, labelled from stage1_solution.csv when present, else label -1 ("not labelled"). Each
example's `modality` is images.modality_of(image), an index into images.MODALITIES.
TFDS builds into an `incomplete.*` folder and renames it when done, so an interrupted build
never looks complete; prepare() deletes such leftovers before it builds.

A built dataset damaged later (a flipped byte, a truncated or missing record file) is found
by prepare() before anything reads it: check_build reads every record file once per process
(TFRecord CRCs and record counts; under a second for the real set) and raises
DamagedBuildError naming the file and the command that removes the build, after which the same
call rebuilds it from the fetched files.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
from collections import Counter
from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from nucjax.data.dsb2018_fetch import PINNED_SHA256, fetch, resolve_data_dir
from nucjax.data.dsb2018_readers import (
    Dsb2018Error,
    check_csv_ids,
    config_name,
    index_zip,
    label_from_csv_rows,
    open_zip,
    read_rle_csv,
    solution_rows,
    split_ids,
    stored_images,
)
from nucjax.data.images import MODALITIES, modality_of, to_rgb
from nucjax.runtime import import_tensorflow

tf = import_tensorflow()

SPLITS = ("train", "validation", "test")
LOG_EVERY = 100


class DamagedBuildError(Dsb2018Error):
    """A record file of a built dataset is damaged or missing; the message says how to rebuild."""


# (path, size, mtime in ns) of record files already read whole by check_build in this process.
_CHECKED: set[tuple[str, int, int]] = set()


def _file_key(path: str) -> tuple[str, int, int]:
    """(path, size, mtime in nanoseconds): os.stat for local files, because tf.io.gfile's
    mtime_nsec is whole seconds there, so a file damaged within the second it was checked in
    would pass as checked; gfile's stat for other filesystems (gs://, ...)."""
    try:
        st = os.stat(path)
    except OSError:
        stat = tf.io.gfile.stat(path)
        return path, stat.length, stat.mtime_nsec
    return path, st.st_size, st.st_mtime_ns


# ------------------------------------------------------------------------------ TFDS builder


class Dsb2018Config(tfds.core.BuilderConfig):
    """A train/validation split of the 670 stage1_train images."""

    def __init__(self, *, validation_fraction: float = 0.1, split_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.validation_fraction = validation_fraction
        self.split_seed = split_seed


def builder_config(validation_fraction: float = 0.1, split_seed: int = 0) -> Dsb2018Config:
    """The config for a split; the predefined object when one matches (TFDS requires it)."""
    name = config_name(validation_fraction, split_seed)
    for config in Dsb2018.BUILDER_CONFIGS:
        if config.name == name:
            return config
    split_ids([], validation_fraction, split_seed)  # validates the fraction
    return Dsb2018Config(
        name=name,
        description=f"{validation_fraction:g} of stage1_train to validation, seed {split_seed}",
        validation_fraction=validation_fraction,
        split_seed=split_seed,
    )


def _feature_png(data: bytes, stored: np.ndarray) -> bytes:
    """PNG bytes that TFDS decodes (channels=3) to to_rgb(stored): the original file when it
    is plain 8-bit grey/RGB/RGBA (decoding repeats grey and drops alpha, as to_rgb does),
    else the pixels re-encoded."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("L", "RGB", "RGBA") and "transparency" not in im.info:
            return data
    buffer = io.BytesIO()
    Image.fromarray(to_rgb(stored)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class Dsb2018(tfds.core.GeneratorBasedBuilder):
    """DSB 2018 stage 1 nuclei (BBBC038v1), instance labels as int32 images."""

    name = "dsb2018"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        Dsb2018Config(
            name=config_name(0.1, 0),
            description="0.1 of stage1_train to validation, seed 0",
            validation_fraction=0.1,
            split_seed=0,
        )
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put stage1_train.zip, stage1_test.zip, stage1_train_labels.csv (and optionally "
        "stage1_solution.csv) in the manual dir, or call nucjax.data.dsb2018.prepare()."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
                    "label": tfds.features.Tensor(
                        shape=(None, None), dtype=np.int32, encoding="zlib"
                    ),
                    "id": tfds.features.Text(),
                    "modality": tfds.features.ClassLabel(names=MODALITIES),
                }
            ),
            homepage="https://bbbc.broadinstitute.org/BBBC038",
            citation="Caicedo et al., Nature Methods 16, 1247-1253 (2019). Image set BBBC038v1.",
            disable_shuffling=True,  # keep the generation order: sorted ids
        )

    def _split_generators(self, dl_manager):
        folder = pathlib.Path(dl_manager.manual_dir)
        for name in PINNED_SHA256:
            if not (folder / name).is_file():
                raise Dsb2018Error(
                    f"{name}: missing from {folder}; run dsb2018_fetch.fetch() first"
                )
        # Each zip is opened (its 30k-entry directory parsed) once; the generators hold it
        # open while they run, and it closes when they are garbage-collected.
        train_zip = open_zip(folder / "stage1_train.zip")
        test_zip = open_zip(folder / "stage1_test.zip")
        train_index, test_index = index_zip(train_zip), index_zip(test_zip)
        labels_csv = folder / "stage1_train_labels.csv"
        rows = read_rle_csv(labels_csv)
        check_csv_ids(train_zip, train_index, rows, labels_csv)
        config = self.builder_config
        train, validation = split_ids(train_index, config.validation_fraction, config.split_seed)
        solution_csv = folder / "stage1_solution.csv"
        test_rows = solution_rows(solution_csv, test_index) if solution_csv.is_file() else None
        splits = {
            "train": self._generate_examples(train_zip, train_index, train, rows, labels_csv),
            "validation": self._generate_examples(
                train_zip, train_index, validation, rows, labels_csv
            ),
            "test": self._generate_examples(test_zip, test_index, None, test_rows, solution_csv),
        }
        if not validation:  # validation_fraction 0: TFDS cannot write an empty split
            del splits["validation"]
        return splits

    def _generate_examples(self, zf, index, ids, rows, csv_path):
        """ids: those to write (None: all); rows: id -> RLE rows, or None for unlabelled."""
        counts, nuclei = Counter(), 0
        name = pathlib.Path(zf.filename).name
        for image_id, data, stored in stored_images(zf, index, None if ids is None else set(ids)):
            if rows is None:
                label = np.full(stored.shape[:2], -1, np.int32)
            else:
                label = label_from_csv_rows(
                    rows[image_id], stored.shape[:2], image_id=image_id, csv_path=csv_path
                )
                nuclei += int(label.max(initial=0))
            modality = modality_of(stored)
            counts[modality] += 1
            if counts.total() % LOG_EVERY == 0:
                logging.info("dsb2018: %s, %d images", name, counts.total())
            png = _feature_png(data, stored)
            yield image_id, {"image": png, "label": label, "id": image_id, "modality": modality}
        logging.info(
            "dsb2018: %s done: %d images (%s), %s",
            name,
            counts.total(),
            ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            "unlabelled" if rows is None else f"{nuclei} nuclei",
        )


# ---------------------------------------------------------------------------- build check


def _one_line(error: Exception) -> str:
    """A TensorFlow error's message without its op names: 'corrupted record at 4733620'."""
    text = getattr(error, "message", str(error))
    text = text.split("}}")[-1].split(" [Op:")[0]
    return " ".join(text.split())


def check_build(builder: Dsb2018) -> None:
    """Reads every record file of a prepared builder, checking each record's CRC and each
    file's record count against dataset_info.json; DamagedBuildError naming the first bad
    file and the `rm -r` that lets prepare() rebuild it. A file is read once per process
    (again only if its size or modification time change)."""
    data_dir = builder.data_dir
    for split in builder.info.splits.values():
        for name, expected in zip(split.filenames, split.shard_lengths, strict=True):
            path = os.path.join(data_dir, name)

            def damaged(what: str, path=path):
                return DamagedBuildError(
                    f"{path}: damaged dsb2018 build ({what}); rebuild it: `rm -r {data_dir}`, "
                    "then run again (the build is redone from the fetched files)"
                )

            if not tf.io.gfile.exists(path):
                raise damaged("file missing")
            key = _file_key(path)
            if key in _CHECKED:
                continue
            records = tf.data.TFRecordDataset(path, buffer_size=1 << 22)
            try:
                count = int(records.reduce(np.int64(0), lambda n, _: n + 1))
            except tf.errors.OpError as err:  # DataLossError: a bad CRC or a truncated record
                raise damaged(_one_line(err)) from None
            if count != expected:
                raise damaged(f"{count} records, dataset_info.json says {expected}")
            _CHECKED.add(key)


# -------------------------------------------------------------------------------- public API


def remove_incomplete_builds(version_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Delete the `incomplete.*` folders beside `version_dir` (TFDS builds into one and renames
    it when done, so these are builds a kill interrupted); log and return them. prepare()
    calls it only when the dataset is not built yet, just before building it."""
    stale = sorted(pathlib.Path(version_dir).parent.glob("incomplete.*"))
    for path in stale:
        logging.warning("removing %s: the folder of a dataset build that never finished", path)
        shutil.rmtree(path, ignore_errors=True)
    return stale


def prepare(
    *,
    data_dir: str | os.PathLike = "",
    source: str = "",
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    checksums: Mapping[str, str | None] | None = None,
) -> Dsb2018:
    """Fetches the files if needed and builds the dataset if not built; returns the builder.

    Idempotent: a built dataset is reused without touching the source, after check_build
    (DamagedBuildError when one of its files is damaged).
    """
    root = resolve_data_dir(data_dir)
    builder = Dsb2018(
        config=builder_config(validation_fraction, split_seed), data_dir=os.fspath(root)
    )
    if builder.is_prepared():
        check_build(builder)
        return builder
    remove_incomplete_builds(builder.data_dir)
    folder = fetch(data_dir=root, source=source, checksums=checksums)
    builder.download_and_prepare(
        download_dir=os.fspath(root / "downloads"),
        download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(folder), try_download_gcs=False
        ),
    )
    return builder


def as_dataset(split: str, **prepare_kwargs) -> tf.data.Dataset:
    """Elements {image (H, W, 3) uint8, label (H, W) int32, id string, modality int64},
    in a fixed order (sorted ids). Prepares the dataset first if needed (prepare's keyword
    arguments: data_dir, source, validation_fraction, split_seed, checksums)."""
    builder = prepare(**prepare_kwargs)
    if _check_split(split) not in builder.info.splits:
        fraction = prepare_kwargs.get("validation_fraction", 0.1)
        raise ValueError(f"no {split} split: validation_fraction is {fraction}")
    return builder.as_dataset(split=split, shuffle_files=False)


def num_examples(split: str, **prepare_kwargs) -> int:
    """Images in a split (0 for validation when validation_fraction is 0); as_dataset's
    keyword arguments."""
    splits = prepare(**prepare_kwargs).info.splits
    return splits[split].num_examples if _check_split(split) in splits else 0


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    return split

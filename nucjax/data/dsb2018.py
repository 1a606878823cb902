"""DSB 2018 nuclei (BBBC038v1): fetch, read, and a tensorflow-datasets builder.

  builder = prepare(data_dir="", source="")      # fetch if needed, build if not built
  ds = as_dataset("train")                       # {image, label, id, modality}, fixed order

Fetching. `source` is an http(s) or file:// URL prefix or a local folder holding
stage1_train.zip, stage1_test.zip, stage1_train_labels.csv and, optionally,
stage1_solution.csv ("" = $NUCJAX_DSB2018_SOURCE, else the collection's own addresses).
Files land in <data_dir>/downloads/dsb2018/ through a `.part` file, checked against pinned
SHA-256 sums, then renamed; files already there with the right sum are not fetched again.

Building. Images are read straight from the zips; training labels come from the RLE CSV
(fast; tests check that it equals the mask PNGs on all 670 images). Splits: `train` and
`validation` divide the 670 stage1_train ids (sorted, permuted by numpy default_rng(split_seed),
the first round(670 * validation_fraction) go to validation); `test` holds the 65 stage1_test
images, labelled from stage1_solution.csv when present, else label -1 ("not labelled").
TFDS builds into an `incomplete.*` folder and renames it when done, so an interrupted build
never looks complete.

Bad input raises `Dsb2018Error` naming the file and what is wrong; nothing is skipped, because
a dropped training image would silently change the split. An image without nuclei (empty masks
folder, no CSV rows) is such an error too: in this set every training image has nuclei.
"""

from __future__ import annotations

import colorsys
import csv
import hashlib
import io
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from nucjax.data import rle

try:  # Hide GPUs from TensorFlow, or it reserves memory that JAX needs.
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):
    pass

OFFICIAL_SOURCE = "https://data.broadinstitute.org/bbbc/BBBC038/"
PINNED_SHA256 = {
    "stage1_train.zip": "eaa2f0f8d1ee2978aeb581604b93e4facce6aeca79ead3a581112bcd2e7b00ac",
    "stage1_test.zip": "41bfddf9679a2bb22ebce89c2cdb847830df4934141d581edaa81244372e4da1",
    "stage1_train_labels.csv": "e55eab0e29e3b3a155bb15e1dc6beb8f81f86effa9d4769bd7c1a00e83d4aa0c",
}
OPTIONAL_FILES = ("stage1_solution.csv",)  # stage-1 test labels; no pinned sum
MODALITIES = ("fluorescence", "brightfield", "histology")
SPLITS = ("train", "validation", "test")
LOG_EVERY = 100


class Dsb2018Error(ValueError):
    """Bad DSB 2018 input: the message names the file and what is wrong."""


# ---------------------------------------------------------------------------------- fetching


def resolve_source(source: str = "") -> str:
    return source or os.environ.get("NUCJAX_DSB2018_SOURCE") or OFFICIAL_SOURCE


def resolve_data_dir(data_dir: str | os.PathLike = "") -> pathlib.Path:
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return pathlib.Path(root).expanduser()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _open_source_file(source: str, name: str):
    """A readable binary stream of `name` in `source`; FileNotFoundError if it is absent."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("http", "https"):
        url = source.rstrip("/") + "/" + name
        try:
            return urllib.request.urlopen(url, timeout=60)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise FileNotFoundError(f"{name}: not found at {url} (HTTP 404)") from None
            raise OSError(f"{name}: download from {url} failed: {err}") from None
        except urllib.error.URLError as err:
            raise OSError(f"{name}: cannot reach {url}: {err.reason}") from None
    folder = urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else source
    path = pathlib.Path(folder).expanduser() / name
    if not path.is_file():
        raise FileNotFoundError(f"{name}: not found in the source folder {path.parent}")
    return open(path, "rb")


def _fetch_one(source: str, name: str, dest: pathlib.Path, expected: str | None) -> None:
    target = dest / name
    if target.is_file():
        actual = sha256_file(target)
        if expected in (None, actual):
            logging.info("dsb2018: %s already present, sha256 %s", name, actual)
            return
        logging.warning("dsb2018: %s present but its sha256 is %s; fetching again", name, actual)
    part = dest / (name + ".part")
    digest = hashlib.sha256()
    with _open_source_file(source, name) as src, open(part, "wb") as out:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    actual = digest.hexdigest()
    if expected is not None and actual != expected:
        part.unlink()
        raise Dsb2018Error(f"{name}: checksum mismatch, expected sha256 {expected}, got {actual}")
    os.replace(part, target)
    logging.info("dsb2018: fetched %s from %s, sha256 %s", name, source, actual)


def fetch(
    *,
    data_dir: str | os.PathLike = "",
    source: str = "",
    checksums: Mapping[str, str | None] | None = None,
) -> pathlib.Path:
    """Copies or downloads the files into <data_dir>/downloads/dsb2018 and returns that folder.

    checksums: file name -> expected sha256 (None: any sum, logged). Every file named is
    required; the default is PINNED_SHA256. OPTIONAL_FILES not named are fetched when the
    source has them.
    """
    source = resolve_source(source)
    dest = resolve_data_dir(data_dir) / "downloads" / "dsb2018"
    dest.mkdir(parents=True, exist_ok=True)
    checksums = PINNED_SHA256 if checksums is None else checksums
    for name, expected in checksums.items():
        _fetch_one(source, name, dest, expected)
    for name in OPTIONAL_FILES:
        if name in checksums:
            continue
        try:
            _fetch_one(source, name, dest, None)
        except OSError as err:  # FileNotFoundError included: optional files may be absent
            logging.info("dsb2018: optional %s not fetched: %s", name, err)
    return dest


# ----------------------------------------------------------------------------------- reading


def _open_zip(path: str | os.PathLike) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise Dsb2018Error(f"{path}: not a readable zip (truncated or corrupt?): {err}") from None
    except FileNotFoundError:
        raise Dsb2018Error(f"{path}: file not found") from None


def _read_member(zf: zipfile.ZipFile, member: str) -> bytes:
    try:
        return zf.read(member)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise Dsb2018Error(f"{zf.filename}: member {member} is corrupt: {err}") from None


def _index_zip(zf: zipfile.ZipFile) -> dict[str, tuple[str, list[str]]]:
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


def to_rgb(array: np.ndarray) -> np.ndarray:
    """(H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA uint8 -> (H, W, 3); alpha is dropped."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


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


def _stored_images(zf: zipfile.ZipFile, index, ids=None) -> Iterator[tuple[str, bytes, np.ndarray]]:
    """(id, PNG bytes, pixels as stored: (H, W) or (H, W, 3|4)) for `ids` (None: all)."""
    for image_id, (member, _) in index.items():
        if ids is None or image_id in ids:
            data = _read_member(zf, member)
            yield image_id, data, decode_png(data, f"{zf.filename}:{member}")


def read_image_zip(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (id, image (H, W, 3) uint8) for every `<id>/images/<id>.png`, ids sorted."""
    with _open_zip(path) as zf:
        for image_id, _, stored in _stored_images(zf, _index_zip(zf)):
            yield image_id, to_rgb(stored)


def read_train_zip(
    path: str | os.PathLike,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yields (id, image (H, W, 3) uint8, label (H, W) int32) from the mask PNGs, ids sorted.

    Instance i is the i-th mask file in sorted file-name order, the order of the RLE CSV rows.
    """
    with _open_zip(path) as zf:
        for image_id, (member, masks) in _index_zip(zf).items():
            image = to_rgb(decode_png(_read_member(zf, member), f"{path}:{member}"))
            yield image_id, image, _label_from_masks(zf, image_id, masks, image.shape[:2])


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
    except ValueError as err:
        raise Dsb2018Error(f"{csv_path}: image {image_id}: {err}") from None


def read_train_csv(
    zip_path: str | os.PathLike, csv_path: str | os.PathLike
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Like read_train_zip, with labels from the RLE CSV instead of the mask PNGs."""
    rows = read_rle_csv(csv_path)
    with _open_zip(zip_path) as zf:
        index = _index_zip(zf)
        _check_csv_ids(zf, index, rows, csv_path)
        for image_id, _, stored in _stored_images(zf, index):
            label = label_from_csv_rows(
                rows[image_id], stored.shape[:2], image_id=image_id, csv_path=csv_path
            )
            yield image_id, to_rgb(stored), label


def _check_csv_ids(zf: zipfile.ZipFile, index, rows, csv_path) -> None:
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


# ---------------------------------------------------------------------------------- modality


def _hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """rgb: (N, 3) float in [0, 1] with max > min -> hue (N,) in [0, 360)."""
    r, g, b = rgb.T
    top = np.maximum(np.maximum(r, g), b)
    spread = top - np.minimum(np.minimum(r, g), b)
    hue = np.where(
        top == r,
        ((g - b) / spread) % 6,
        np.where(top == g, (b - r) / spread + 2, (r - g) / spread + 4),
    )
    return hue * 60.0


def modality_of(image: np.ndarray) -> str:
    """image (H, W, 3) uint8 (or (H, W) grey, or RGBA) -> 'fluorescence' | 'brightfield' |
    'histology'.

    1. Dark background (median of max(R, G, B) below 128): fluorescence, grey or not.
    2. Bright and unstained (R = G = B, or under 1% of pixels with saturation > 0.15):
       brightfield.
    3. Bright and stained: histology (H&E) when at least 80% of the stained pixels are pink to
       purple (hue >= 240 or < 20 degrees) and the background (pixels at least as bright as
       the median) is not tinted yellow (hue 30-90 degrees with saturation >= 0.04);
       otherwise colour brightfield. On DSB 2018 the H&E images score >= 0.89 pink-purple
       over a white, bluish or pink background; the colour brightfield ones (stage-1 test,
       purple nuclei on a yellow background) score <= 0.71.
    """
    sub = image[::2, ::2]  # every 4th pixel is plenty for statistics
    if sub.ndim == 2:
        return "fluorescence" if np.median(sub) < 128 else "brightfield"
    sub = sub[..., :3]
    brightness = np.maximum(np.maximum(sub[..., 0], sub[..., 1]), sub[..., 2]).ravel()
    if np.median(brightness) < 128:
        return "fluorescence"
    rgb = sub.reshape(-1, 3).astype(np.float32) / 255.0
    value, median_value = brightness / 255.0, float(np.median(brightness)) / 255.0
    spread = value - np.minimum(np.minimum(rgb[:, 0], rgb[:, 1]), rgb[:, 2])
    stained = spread > 0.15 * np.maximum(value, 1e-6)
    if stained.mean() < 0.01:
        return "brightfield"
    hue = _hue_degrees(rgb[stained])
    pink_purple = float(np.mean((hue >= 240) | (hue < 20)))
    bg_hue, bg_sat, _ = colorsys.rgb_to_hsv(*rgb[value >= median_value].mean(axis=0))
    yellow_background = 30 <= bg_hue * 360 <= 90 and bg_sat >= 0.04
    return "histology" if pink_purple >= 0.8 and not yellow_background else "brightfield"


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


# ------------------------------------------------------------------------------ TFDS builder


class Dsb2018Config(tfds.core.BuilderConfig):
    """A train/validation split of the 670 stage1_train images."""

    def __init__(self, *, validation_fraction: float = 0.1, split_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.validation_fraction = validation_fraction
        self.split_seed = split_seed


def config_name(validation_fraction: float, split_seed: int) -> str:
    """(0.1, 0) -> 'val10_seed0'; (0.125, 3) -> 'val12p5_seed3'."""
    percent = f"{validation_fraction * 100:.6g}".replace(".", "p")
    return f"val{percent}_seed{split_seed}"


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


def _solution_rows(solution_csv: pathlib.Path, test_index) -> dict[str, list[str]]:
    """stage1_solution.csv rows, which must cover exactly the stage1_test images."""
    rows = read_rle_csv(solution_csv)
    if missing := sorted(set(test_index) - set(rows)):
        raise Dsb2018Error(f"{solution_csv}: no rows for test image {missing[0]}")
    if extra := sorted(set(rows) - set(test_index)):
        raise Dsb2018Error(f"{solution_csv}: rows for {extra[0]}, not in stage1_test.zip")
    return rows


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
                raise Dsb2018Error(f"{name}: missing from {folder}; run dsb2018.fetch() first")
        # Each zip is opened (its 30k-entry directory parsed) once; the generators hold it
        # open while they run, and it closes when they are garbage-collected.
        train_zip = _open_zip(folder / "stage1_train.zip")
        test_zip = _open_zip(folder / "stage1_test.zip")
        train_index, test_index = _index_zip(train_zip), _index_zip(test_zip)
        labels_csv = folder / "stage1_train_labels.csv"
        rows = read_rle_csv(labels_csv)
        _check_csv_ids(train_zip, train_index, rows, labels_csv)
        config = self.builder_config
        train, validation = split_ids(train_index, config.validation_fraction, config.split_seed)
        solution_csv = folder / "stage1_solution.csv"
        test_rows = _solution_rows(solution_csv, test_index) if solution_csv.is_file() else None
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
        for image_id, data, stored in _stored_images(zf, index, None if ids is None else set(ids)):
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


# -------------------------------------------------------------------------------- public API


def prepare(
    *,
    data_dir: str | os.PathLike = "",
    source: str = "",
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    checksums: Mapping[str, str | None] | None = None,
) -> Dsb2018:
    """Fetches the files if needed and builds the dataset if not built; returns the builder.

    Idempotent: a built dataset is reused without touching the source.
    """
    root = resolve_data_dir(data_dir)
    builder = Dsb2018(
        config=builder_config(validation_fraction, split_seed), data_dir=os.fspath(root)
    )
    if builder.is_prepared():
        return builder
    folder = fetch(data_dir=root, source=source, checksums=checksums)
    builder.download_and_prepare(
        download_dir=os.fspath(root / "downloads"),
        download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(folder), try_download_gcs=False
        ),
    )
    return builder


def as_dataset(
    split: str,
    *,
    data_dir: str | os.PathLike = "",
    source: str = "",
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    checksums: Mapping[str, str | None] | None = None,
) -> tf.data.Dataset:
    """Elements {image (H, W, 3) uint8, label (H, W) int32, id string, modality int64},
    in a fixed order (sorted ids). Prepares the dataset first if needed."""
    builder = prepare(
        data_dir=data_dir,
        source=source,
        validation_fraction=validation_fraction,
        split_seed=split_seed,
        checksums=checksums,
    )
    if _check_split(split) not in builder.info.splits:
        raise ValueError(f"no {split} split: validation_fraction is {validation_fraction}")
    return builder.as_dataset(split=split, shuffle_files=False)


def num_examples(
    split: str,
    *,
    data_dir: str | os.PathLike = "",
    source: str = "",
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    checksums: Mapping[str, str | None] | None = None,
) -> int:
    """Images in a split (0 for validation when validation_fraction is 0)."""
    builder = prepare(
        data_dir=data_dir,
        source=source,
        validation_fraction=validation_fraction,
        split_seed=split_seed,
        checksums=checksums,
    )
    splits = builder.info.splits
    return splits[split].num_examples if _check_split(split) in splits else 0


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    return split

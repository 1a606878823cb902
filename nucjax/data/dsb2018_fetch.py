"""Fetching the DSB 2018 (BBBC038v1) files into the local data folder, checked by SHA-256.

  folder = fetch(data_dir="", source="")   # <data_dir>/downloads/dsb2018, files verified

`source` is an http(s) or file:// URL prefix or a local folder holding stage1_train.zip,
stage1_test.zip, stage1_train_labels.csv and, optionally, stage1_solution.csv ("" =
$NUCJAX_DSB2018_SOURCE, else the collection's own addresses). Files land in
<data_dir>/downloads/dsb2018/ through a `.part` file, checked against pinned SHA-256 sums, then
renamed; files already there with the right sum are not fetched again. `data_dir` "" means
$TFDS_DATA_DIR, else ~/tensorflow_datasets.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

from absl import logging

from nucjax.data.dsb2018_readers import Dsb2018Error

OFFICIAL_SOURCE = "https://data.broadinstitute.org/bbbc/BBBC038/"
PINNED_SHA256 = {
    "stage1_train.zip": "eaa2f0f8d1ee2978aeb581604b93e4facce6aeca79ead3a581112bcd2e7b00ac",
    "stage1_test.zip": "41bfddf9679a2bb22ebce89c2cdb847830df4934141d581edaa81244372e4da1",
    "stage1_train_labels.csv": "e55eab0e29e3b3a155bb15e1dc6beb8f81f86effa9d4769bd7c1a00e83d4aa0c",
}
OPTIONAL_FILES = ("stage1_solution.csv",)  # stage-1 test labels; no pinned sum


def resolve_source(source: str = "") -> str:
    """The source to fetch from: `source`, else $NUCJAX_DSB2018_SOURCE, else OFFICIAL_SOURCE."""
    return source or os.environ.get("NUCJAX_DSB2018_SOURCE") or OFFICIAL_SOURCE


def resolve_data_dir(data_dir: str | os.PathLike = "") -> pathlib.Path:
    """The TFDS data folder: `data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return pathlib.Path(root).expanduser()


def sha256_file(path: str | os.PathLike) -> str:
    """The file's SHA-256 as 64 hex digits, read in 1 MiB chunks."""
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

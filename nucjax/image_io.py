"""Reading users' image files: which files of a folder are inputs, and each file's pixels.

  planes = read_planes("stack.tif", channel=1)   # Planes: (N, H, W[, C]) and the plane axis
  image = read_image("cells.png")                # one (H, W) or (H, W, C) image

Reads PNG, JPEG, BMP (pillow) and TIFF (tifffile): grey, grey + alpha, RGB or RGBA, 8- or
16-bit or float, any size up to MAX_PIXELS. A TIFF is read by its axes (tifffile series): a
z-stack, time series or plain multi-page TIFF is a stack of planes; a multi-channel image
(axis C) needs `channel`, the nuclear stain. Anything else is an UnsupportedImageError (a
ValueError) whose message names the file and what is wrong. nucjax.predict (the folder loop)
and nucjax.api (arrays and files) read through here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tifffile
from PIL import Image

from nucjax import outputs

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MIN_SIDE = 8  # pixels; smaller images hold no nucleus worth finding
# Pillow's own limit (it refuses images over twice Image.MAX_IMAGE_PIXELS, ~179 million pixels,
# about 13000 x 13000), applied to TIFFs too: a damaged header can declare gigabytes that
# tifffile would allocate and fill before finding the data missing. Larger images: tile first.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS


class UnsupportedImageError(ValueError):
    """An input file that is not one usable 2-D image."""


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


__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "Planes",
    "UnsupportedImageError",
    "check_image",
    "gather_inputs",
    "read_image",
    "read_planes",
]

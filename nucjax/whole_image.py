"""Whole images of any size through a model: tiling, stitching, foreground and nuclei.

  prediction = segment_image(spec, variables, network_input(rgb, view), tile_size=512, overlap=64)

The one tiling definition that evaluation (trainer and --mode=evaluate alike) and predict use.
Images are never resized or cropped. An image is zero-padded at the bottom and right to a
multiple of the model's stride (zero is the mean after per-image normalisation, and how
training pads small images). When it is larger than the tile, it is cut into overlapping
tiles whose corners lie on the stride grid, and every output pixel is taken from the one tile
that holds it farthest from a tile edge ("keep the centre"): the overlap is split halfway.
So for a network whose receptive field reaches at most overlap / 2 pixels, tiling reproduces
the single-pass prediction exactly; for larger fields it removes the seams tile edges cause.

Per-pixel (semantic) models are tileable. A spec with `tileable=False` (a detector such as
Mask R-CNN, whose outputs are not per-pixel maps) is run once on the whole stride-padded image;
its foreground map and nuclei are then cropped back to the image.
"""

from __future__ import annotations

import functools
import itertools
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from nucjax.models.spec import Instances, ModelSpec
from nucjax.postprocess import relabel_sequential


@functools.partial(jax.jit, static_argnames="module")
def _apply(module, variables, images):
    return module.apply(variables, images, train=False)


def round_to_stride(size: int, stride: int) -> int:
    return -(-int(size) // stride) * stride


def tile_layout(extent: int, tile: int, overlap: int, stride: int) -> list[tuple[int, int, int]]:
    """Tiles along one axis of a stride-padded extent: [(start, own_from, own_to)], absolute.

    Tile i reads [start, start + tile) and owns [own_from, own_to) of the output; owned ranges
    partition [0, extent). Starts are multiples of `stride` (tile and extent are too); the
    boundary between neighbours lies halfway through their overlap.
    """
    if extent <= tile:
        return [(0, 0, extent)]
    step = (tile - overlap) // stride * stride
    if step < stride:
        raise ValueError(f"tile overlap {overlap} leaves no step in a tile of {tile} pixels")
    starts = list(range(0, extent - tile, step)) + [extent - tile]
    bounds = [0] + [(a + tile + b) // 2 for a, b in itertools.pairwise(starts)] + [extent]
    return [(s, lo, hi) for s, lo, hi in zip(starts, bounds[:-1], bounds[1:], strict=True)]


def tile_grid(height: int, width: int, stride: int, tile_size: int, overlap: int):
    """The tiles of an image: (rows, cols) tile_layouts of its stride-padded extents, and the
    tile shape (th, tw). tile_size is rounded down to a multiple of the stride."""
    tile = int(tile_size) // stride * stride
    if tile < stride:
        raise ValueError(f"tile_size={tile_size} is smaller than the model's stride {stride}")
    hp, wp = round_to_stride(height, stride), round_to_stride(width, stride)
    rows = tile_layout(hp, tile, overlap, stride)
    cols = tile_layout(wp, tile, overlap, stride)
    return rows, cols, (min(tile, hp), min(tile, wp))


def _run_tiles(spec: ModelSpec, variables, tiles: np.ndarray, batch_size: int) -> np.ndarray:
    """tiles (n, h, w, 3) -> outputs (n, h, w, C), in batches of a fixed size (one compile)."""
    batch = max(1, min(batch_size, len(tiles)))
    pad = -len(tiles) % batch
    if pad:
        tiles = np.concatenate([tiles, np.zeros((pad, *tiles.shape[1:]), tiles.dtype)])
    outs = [
        np.asarray(_apply(spec.module, variables, tiles[i : i + batch]))
        for i in range(0, len(tiles), batch)
    ]
    return np.concatenate(outs)[: len(tiles) - pad]


def predict_image(
    spec: ModelSpec,
    variables,
    image: np.ndarray,
    *,
    tile_size: int,
    overlap: int,
    batch_size: int = 4,
) -> Any:
    """Model outputs of one whole normalised image.

    image: (H, W, 3) float32 (nucjax.data.images.network_input), any H, W >= 1.
    Tileable specs: returns (H, W, C) float32 numpy (logits for semantic models), from tiles of
    at most tile_size (rounded down to the stride) overlapping by `overlap` pixels, run
    batch_size at a time; the jitted apply compiles once per (batch, tile shape).
    Other specs: the outputs pytree of the stride-padded image, batch axis removed.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a normalised (H, W, 3) image, got shape {image.shape}")
    h, w = image.shape[:2]
    stride = spec.stride
    hp, wp = round_to_stride(h, stride), round_to_stride(w, stride)
    padded = np.pad(image, ((0, hp - h), (0, wp - w), (0, 0)))
    if not spec.tileable:
        outputs = _apply(spec.module, variables, padded[None])
        return jax.tree.map(lambda x: np.asarray(x[0]), outputs)
    rows, cols, (th, tw) = tile_grid(h, w, stride, tile_size, overlap)
    tiles = np.stack([padded[y : y + th, x : x + tw] for y, _, _ in rows for x, _, _ in cols])
    outs = _run_tiles(spec, variables, tiles, batch_size)
    result = np.empty((hp, wp, outs.shape[-1]), np.float32)
    k = 0
    for y, y0, y1 in rows:
        for x, x0, x1 in cols:
            result[y0:y1, x0:x1] = outs[k, y0 - y : y1 - y, x0 - x : x1 - x]
            k += 1
    return result[:h, :w]


class ImagePrediction(NamedTuple):
    """Everything predicted for one image.

    outputs: model outputs (H, W, C) for tileable specs, else the padded image's pytree;
    foreground: (H, W) float32 probability of nucleus; instances: Instances of (H, W);
    predict_s, postprocess_s: wall-clock seconds of the two stages.
    """

    outputs: Any
    foreground: np.ndarray
    instances: Instances
    predict_s: float
    postprocess_s: float


def _crop_instances(instances: Instances, h: int, w: int) -> Instances:
    """Instances of a padded image cut back to (h, w); nuclei left with no pixel are dropped."""
    label = instances.label[:h, :w]
    kept = np.unique(label[label > 0])
    return Instances(relabel_sequential(label), np.asarray(instances.scores)[kept - 1])


def segment_image(
    spec: ModelSpec, variables, image: np.ndarray, *, tile_size: int, overlap: int
) -> ImagePrediction:
    """predict_image, the foreground map and spec.postprocess of one normalised (H, W, 3) image."""
    h, w = image.shape[:2]
    t0 = time.perf_counter()
    outputs = predict_image(spec, variables, image, tile_size=tile_size, overlap=overlap)
    batched = jax.tree.map(lambda x: x[None], outputs)
    foreground = np.asarray(spec.foreground(batched), np.float32)[0, :h, :w]
    t1 = time.perf_counter()
    instances = spec.postprocess(outputs)
    if not spec.tileable:
        instances = _crop_instances(instances, h, w)
    label = np.asarray(instances.label, np.int32)
    if label.shape != (h, w):
        raise ValueError(f"post-processing gave a label of shape {label.shape}, not {(h, w)}")
    instances = Instances(label, np.asarray(instances.scores, np.float32))
    return ImagePrediction(outputs, foreground, instances, t1 - t0, time.perf_counter() - t1)


__all__ = [
    "ImagePrediction",
    "predict_image",
    "round_to_stride",
    "segment_image",
    "tile_grid",
    "tile_layout",
]

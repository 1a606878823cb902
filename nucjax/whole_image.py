"""Whole images of any size through a model: tiling, stitching, foreground and nuclei.

  prediction = segment_image(spec, variables, network_input(rgb, view), config.eval)

The one tiling definition that evaluation (trainer and --mode=evaluate alike) and predict use.
Images are never cropped (nor resized, unless `nucleus_area` below asks). An image is
zero-padded at the bottom and right to a multiple of the model's stride, and a side that one
tile holds to that tile's length (below; zero is the mean after per-image normalisation, and
how training pads small images: the extra zeros change a deep network's outputs a little
near the bottom and right edges, as any padding does). When it is larger than
the tile, it is cut into overlapping tiles whose corners lie on the stride grid, and every
output pixel is taken from the one tile that holds it farthest from a tile edge ("keep the
centre"): the overlap is split halfway.
So for a network whose receptive field reaches at most overlap / 2 pixels, tiling reproduces
the single-pass prediction exactly; for larger fields it removes the seams tile edges cause.

How tile outputs are joined depends on the spec's `tiling` (nucjax.models.spec.TILINGS):
- "pixels" (per-pixel networks): the outputs are maps, stitched pixel by pixel as above.
- "detections" (a detector such as Mask R-CNN): a detection is kept from the one tile whose
  owned region holds its box centre (StarDist's "the block responsible for an object" rule,
  applied to box centres), its box shifted into image pixels; the foreground map is stitched
  as a per-pixel map. A nucleus at most overlap / 2 pixels across is then seen whole by the
  tile that keeps it, and the partial detections of the tiles that cut it are all dropped:
  their box centres lie within overlap / 2 of a tile edge, outside that tile's region.
  Post-processing then pastes the kept masks into one label image (higher scores first).
Tile shapes come from a fixed set, so new image sizes do not recompile (tile_side): each
tile side is a multiple of tile_size / 8 (rounded up to the stride) up to tile_size, the one
that puts the fewest pixels through the network: a side one tile holds is zero-padded to that
tile, a longer side is cut into tiles of the length that covers it with the least overlap
(a 1024 px side: one 1024 tile; 2048 px: three of 768, not three of 1024 or five of 512).
Tiles run up to 4 at a time, fewer when the call would hold more than BATCH_PIXELS pixels
(predict_image), and the remainder one at a time: no padding tiles, two batch shapes per tile
shape.
Whatever the tiling, every call's memory is that of one batch of tiles, whatever the image size.

Two inference-time options of config.eval, for "pixels" tilings only (others ignore them):
- `flip_tta`: each tile is also predicted flipped left-right, up-down and both; the outputs
  (logits) are flipped back and the four averaged. Flips keep the tile shape, so one
  compilation serves all four, run as one batch. With `transpose_tta` as well, the transposed
  tile's four flips join them: all eight symmetries of the square (the rot90s among them).
- `nucleus_area` (pixels, 0 = off): after a first pass, the image is rescaled by
  sqrt(nucleus_area / median predicted nucleus area), clipped to [min_scale, max_scale],
  predicted again, and the outputs resized back, so nuclei reach the network at the size it
  was trained on (Cellpose's idea); post-processing runs at the original resolution.
  DSB training split (val10_seed0, 603 images, stage1_train_labels.csv run lengths): median
  nucleus 309 px over its 25,949 masks, 263 px median of the per-image medians (quartiles
  141 and 677: images at native scale vary ~2x in nucleus diameter).
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import skimage.transform

from nucjax.models.spec import Instances, ModelSpec

# A rescale closer to 1 than this is not worth a second pass.
_SCALE_TOLERANCE = 0.1
# At most this many pixels (tiles x their flips) go through the network in one call: four
# 512 x 512 tiles, about 1.1 GB peak for a U-Net on a CPU (BUILD_NOTES, "Measured figures").
BATCH_PIXELS = 4 * 512 * 512


@functools.partial(jax.jit, static_argnames="module")
def _apply(module, variables, images):
    return module.apply(variables, images, train=False)


def _mean_of_flips(module, variables, images):
    """images (B, H, W, 3) -> the mean of the outputs of the four flips, each flipped back."""
    flips = ((), (2,), (1,), (1, 2))  # as is, left-right, up-down, both
    views = jnp.concatenate([jnp.flip(images, axis) for axis in flips])
    outs = jnp.split(module.apply(variables, views, train=False), len(flips))
    return sum(jnp.flip(o, axis) for o, axis in zip(outs, flips, strict=True)) / len(flips)


@functools.partial(jax.jit, static_argnames=("module", "transpose"))
def _apply_tta(module, variables, images, transpose: bool):
    """images (B, H, W, 3) -> outputs averaged over the four flips; with transpose also over
    the four flips of the transposed images (the eight symmetries of the square, so the four
    rot90s among them), each mapped back. A non-square tile's transpose is a second shape in
    the same compiled program."""
    out = _mean_of_flips(module, variables, images)
    if transpose:
        swapped = _mean_of_flips(module, variables, jnp.swapaxes(images, 1, 2))
        out = (out + jnp.swapaxes(swapped, 1, 2)) / 2
    return out


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


def tile_side(extent: int, stride: int, tile: int, overlap: int) -> int:
    """The tile length along an image side of `extent` pixels.

    tile: the largest tile, a multiple of stride. Candidates are the multiples of tile / 8
    (rounded up to the stride) up to tile, and tile itself; the one chosen runs the fewest
    pixels through the network along this side: one tile padded to its length when it holds
    the stride-padded side, else len(tile_layout) tiles of it. Ties go to the longer tile
    (fewer seams). So an image has at most 8 x 8 tile shapes, whatever its size.
    """
    padded = round_to_stride(extent, stride)
    step = round_to_stride(max(1, tile // 8), stride)
    best_side, best_cost = tile, None  # none fits: tile_layout names the bad overlap
    for side in sorted({*range(step, tile, step), tile}, reverse=True):
        if padded <= side:
            cost = side
        elif (side - overlap) // stride * stride >= stride:
            cost = side * len(tile_layout(padded, side, overlap, stride))
        else:
            continue
        if best_cost is None or cost < best_cost:
            best_side, best_cost = side, cost
    return best_side


def tile_grid(height: int, width: int, stride: int, tile_size: int, overlap: int):
    """The tiles of an image: (rows, cols) tile_layouts of its padded extents (the padded
    image is (rows[-1][2], cols[-1][2])), and the tile shape (th, tw) (tile_side). tile_size
    is rounded down to a multiple of the stride. A side that one tile holds is zero-padded to
    that tile's length; a longer one is padded to the stride and cut into tiles."""
    tile = int(tile_size) // stride * stride
    if tile < stride:
        raise ValueError(f"tile_size={tile_size} is smaller than the model's stride {stride}")
    sides = [tile_side(n, stride, tile, overlap) for n in (height, width)]
    rows, cols = (
        tile_layout(max(side, round_to_stride(n, stride)), side, overlap, stride)
        for n, side in zip((height, width), sides, strict=True)
    )
    return rows, cols, tuple(sides)


def batch_sizes(num_tiles: int, tiles_per_batch: int) -> list[int]:
    """How many tiles each network call runs: full batches of tiles_per_batch, the rest one at
    a time (no padding tiles computed for nothing; two batch shapes per tile shape)."""
    full, rest = divmod(num_tiles, max(1, tiles_per_batch))
    return [tiles_per_batch] * full + [1] * rest


def _run_tiles(
    spec: ModelSpec, variables, tiles: np.ndarray, batch: int, flip: bool, transpose: bool
):
    """tiles (n, h, w, 3) -> outputs (n, ...) as numpy, in calls of batch_sizes(n, batch).
    flip: each output averaged over the tile's four flips; transpose: and over its
    transpose's. Each call's outputs are read back before the next call, so that no two
    calls' buffers are alive at once (memory: one batch)."""
    apply = functools.partial(_apply_tta, transpose=transpose) if flip else _apply
    starts = np.cumsum([0, *batch_sizes(len(tiles), batch)])
    outs = [
        jax.device_get(apply(spec.module, variables, tiles[a:b]))
        for a, b in itertools.pairwise(starts)
    ]
    return jax.tree.map(lambda *x: np.concatenate(x), *outs)


def _tiles(rows, cols):
    """((y, y0, y1), (x, x0, x1)) of every tile, row by row: the order tiles are cut in."""
    return itertools.product(rows, cols)


def _stitch(maps: np.ndarray, rows, cols) -> np.ndarray:
    """maps (n, th, tw, ...) of the tiles -> (H, W, ...) of the padded image, every pixel
    from the tile that owns it."""
    result = np.empty((rows[-1][2], cols[-1][2], *maps.shape[3:]), maps.dtype)
    for k, ((y, y0, y1), (x, x0, x1)) in enumerate(_tiles(rows, cols)):
        result[y0:y1, x0:x1] = maps[k, y0 - y : y1 - y, x0 - x : x1 - x]
    return result


def merge_detections(outputs: dict, rows, cols, h: int, w: int) -> dict:
    """Detector outputs of the tiles -> the outputs of one (h, w) image.

    outputs: the tiles' outputs, each (n, ...): boxes (n, D, 4) y0 x0 y1 x1 in tile pixels,
    valid (n, D) bool, foreground (n, th, tw), and per-detection arrays (n, D, ...) under any
    other key (scores, masks). Returns boxes (K, 4) in image pixels, valid (K,) all True and
    the other per-detection arrays (K, ...) of the K detections whose box centre lies in the
    region their tile owns, in descending score order when there are scores (stable), and
    foreground (h, w), stitched.
    """
    per_detection = [k for k in outputs if k not in ("boxes", "valid", "foreground")]
    kept: dict[str, list] = {k: [] for k in ("boxes", *per_detection)}
    for k, ((y, y0, y1), (x, x0, x1)) in enumerate(_tiles(rows, cols)):
        boxes = outputs["boxes"][k] + np.asarray([y, x, y, x], np.float32)
        cy, cx = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        own = outputs["valid"][k] & (y0 <= cy) & (cy < y1) & (x0 <= cx) & (cx < x1)
        kept["boxes"].append(boxes[own])
        for key in per_detection:
            kept[key].append(outputs[key][k][own])
    merged = {key: np.concatenate(parts) for key, parts in kept.items()}
    if "scores" in merged:
        order = np.argsort(-merged["scores"], kind="stable")
        merged = {key: value[order] for key, value in merged.items()}
    merged["valid"] = np.ones(len(merged["boxes"]), bool)
    merged["foreground"] = _stitch(outputs["foreground"], rows, cols)[:h, :w]
    return merged


def predict_image(
    spec: ModelSpec,
    variables,
    image: np.ndarray,
    eval_config,
    *,
    batch_size: int = 4,
    batch_pixels: int = BATCH_PIXELS,
) -> Any:
    """Model outputs of one whole normalised image, from overlapping tiles (module docstring).

    image: (H, W, 3) float32 (nucjax.data.images.network_input), any H, W >= 1.
    eval_config: config.eval; reads tile_size, tile_overlap, flip_tta and transpose_tta.
    Tiles are at most tile_size (rounded down to the stride; tile_grid) and overlap by
    tile_overlap pixels; they run up to batch_size at a time, fewer when that would put more
    than batch_pixels pixels through the network in one call (counting the four flips of
    flip_tta, eight with transpose_tta too, which are averaged); see batch_sizes.
    spec.tiling "pixels": returns (H, W, C) float32 numpy (logits for semantic models).
    "detections": returns merge_detections' dict: the kept detections (K, ...) in image
    pixels and the (H, W) foreground map (flip_tta is ignored: detections are no per-pixel
    maps to flip back).
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a normalised (H, W, 3) image, got shape {image.shape}")
    h, w = image.shape[:2]
    ev, detections = eval_config, spec.tiling == "detections"
    rows, cols, (th, tw) = tile_grid(h, w, spec.stride, ev.tile_size, ev.tile_overlap)
    padded = np.pad(image, ((0, rows[-1][2] - h), (0, cols[-1][2] - w), (0, 0)))
    tiles = np.stack(
        [padded[y : y + th, x : x + tw] for (y, _, _), (x, _, _) in _tiles(rows, cols)]
    )
    tta, transpose = bool(ev.flip_tta) and not detections, bool(ev.transpose_tta)
    views = (8 if transpose else 4) if tta else 1
    batch = min(batch_size, max(1, batch_pixels // (th * tw * views)))
    outs = _run_tiles(spec, variables, tiles, batch, tta, transpose)
    if detections:
        return merge_detections(outs, rows, cols, h, w)
    return _stitch(outs, rows, cols)[:h, :w]


def rescale_factor(spec: ModelSpec, label: np.ndarray, eval_config) -> float:
    """The factor to resize an image by so that its nuclei have eval.nucleus_area pixels.

    label: (H, W) int, the first pass's nuclei. sqrt(nucleus_area / their median area),
    clipped to [eval.min_scale, eval.max_scale]; 1.0 when nucleus_area is 0, the spec's tiling
    is not "pixels", there are no nuclei, or the factor is within 0.1 of 1.
    """
    target = float(eval_config.nucleus_area)
    areas = np.bincount(np.asarray(label).ravel())[1:]
    areas = areas[areas > 0]
    if target <= 0 or spec.tiling != "pixels" or len(areas) == 0:
        return 1.0
    lo, hi = eval_config.min_scale, eval_config.max_scale
    scale = float(np.clip(np.sqrt(target / np.median(areas)), lo, hi))
    return scale if abs(scale - 1.0) > _SCALE_TOLERANCE else 1.0


def predict_rescaled(
    spec: ModelSpec, variables, image: np.ndarray, scale: float, eval_config
) -> np.ndarray:
    """predict_image of `image` (H, W, 3) resized by `scale`, outputs resized back to (H, W, C).

    Bilinear both ways; the image is anti-aliased when shrunk. "pixels" tilings only.
    """
    h, w = image.shape[:2]
    size = (max(1, round(h * scale)), max(1, round(w * scale)), image.shape[2])
    resized = skimage.transform.resize(
        image, size, order=1, anti_aliasing=scale < 1, preserve_range=True
    ).astype(np.float32)
    outputs = predict_image(spec, variables, resized, eval_config)
    back = (h, w, outputs.shape[-1])
    return skimage.transform.resize(
        outputs, back, order=1, anti_aliasing=False, preserve_range=True
    ).astype(np.float32)


class ImagePrediction(NamedTuple):
    """Everything predicted for one image.

    outputs: predict_image's (a (H, W, C) map, or the detections of a detector);
    foreground: (H, W) float32 probability of nucleus; instances: Instances of (H, W);
    predict_s, postprocess_s: wall-clock seconds of the two stages (both passes);
    scale: the factor the image was resized by for its final prediction (1.0: not resized).
    """

    outputs: Any
    foreground: np.ndarray
    instances: Instances
    predict_s: float
    postprocess_s: float
    scale: float = 1.0


def instances(spec: ModelSpec, outputs, h: int, w: int) -> Instances:
    """spec.postprocess of one image's outputs, as Instances of (h, w) int32 / float32."""
    instances = spec.postprocess(outputs)
    label = np.asarray(instances.label, np.int32)
    if label.shape != (h, w):
        raise ValueError(f"post-processing gave a label of shape {label.shape}, not {(h, w)}")
    return Instances(label, np.asarray(instances.scores, np.float32))


def foreground(spec: ModelSpec, outputs, h: int, w: int) -> np.ndarray:
    """(h, w) float32 nucleus probability from one image's outputs (predict_image's)."""
    batched = jax.tree.map(lambda x: x[None], outputs)
    return np.asarray(spec.foreground(batched), np.float32)[0, :h, :w]


def _first_pass(spec: ModelSpec, variables, image: np.ndarray, eval_config) -> tuple[Any, float]:
    """(predict_image's outputs, its wall-clock seconds)."""
    t0 = time.perf_counter()
    outputs = predict_image(spec, variables, image, eval_config)
    return outputs, time.perf_counter() - t0


def _decode(
    spec: ModelSpec, variables, image: np.ndarray, eval_config, outputs, predict_s: float
) -> ImagePrediction:
    """segment_image after its first network pass: post-processing, the nucleus_area second
    pass when asked, the foreground map."""
    h, w = image.shape[:2]
    t1 = time.perf_counter()
    nuclei = instances(spec, outputs, h, w)
    postprocess_s = time.perf_counter() - t1
    scale = rescale_factor(spec, nuclei.label, eval_config)
    if scale != 1.0:
        t0 = time.perf_counter()
        outputs = predict_rescaled(spec, variables, image, scale, eval_config)
        t1 = time.perf_counter()
        nuclei = instances(spec, outputs, h, w)
        predict_s, postprocess_s = predict_s + t1 - t0, postprocess_s + time.perf_counter() - t1
    t0 = time.perf_counter()
    fg = foreground(spec, outputs, h, w)
    predict_s += time.perf_counter() - t0
    return ImagePrediction(outputs, fg, nuclei, predict_s, postprocess_s, scale)


def segment_image(spec: ModelSpec, variables, image: np.ndarray, eval_config) -> ImagePrediction:
    """predict_image, the foreground map and spec.postprocess of one normalised (H, W, 3) image.

    eval_config: config.eval (tiling, flip_tta, nucleus_area, min_scale, max_scale; the
    post-processing reads the config.eval the spec was built from). With nucleus_area > 0 and
    a "pixels" tiling, a second pass at rescale_factor runs when the first finds nuclei (see the
    module docstring); outputs, foreground and instances are then the second pass's, at (H, W).
    """
    first = _first_pass(spec, variables, image, eval_config)
    return _decode(spec, variables, image, eval_config, *first)


def segment_images(
    spec: ModelSpec, variables, images: Iterable[np.ndarray], eval_config
) -> Iterator[ImagePrediction]:
    """segment_image of every (H, W, 3) image of `images`, in order, pipelined: image i is
    post-processed on a worker thread while the network runs on image i + 1 (XLA computes
    outside the GIL; JAX dispatch is thread-safe), so a run of images costs about their network
    time plus one post-processing. `images` is read one ahead of what has been yielded. Each
    prediction's timings are its own stages' wall-clock seconds, which may overlap another's.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="postprocess") as pool:
        pending = None
        for image in images:
            first = _first_pass(spec, variables, image, eval_config)
            done = pending
            pending = pool.submit(_decode, spec, variables, image, eval_config, *first)
            if done is not None:
                yield done.result()
        if pending is not None:
            yield pending.result()


__all__ = [
    "ImagePrediction",
    "batch_sizes",
    "foreground",
    "instances",
    "merge_detections",
    "predict_image",
    "predict_rescaled",
    "rescale_factor",
    "round_to_stride",
    "segment_image",
    "segment_images",
    "tile_grid",
    "tile_layout",
    "tile_side",
]

"""Whole images of any size through a model: tiles in batches, foreground and nuclei.

  prediction = segment_image(spec, variables, network_input(rgb, view), config.eval)

What evaluation (trainer and --mode=evaluate alike) and predict use. Images are never
cropped (nor resized, unless `nucleus_area` below asks): nucjax.tiling, the one tiling
definition, pads them to the stride grid and cuts them into overlapping tiles of a few fixed
shapes (new image sizes do not recompile), and joins the tiles' outputs, each output pixel or
detection from the one tile that holds it farthest from a tile edge.
Tiles run through the network up to 4 at a time, fewer when the call would hold more than
BATCH_PIXELS pixels (predict_image), and the remainder one at a time: no padding tiles, two
batch shapes per tile shape, and every call's memory that of one batch of tiles, whatever the
image size.

Two inference-time options of config.eval:
- `flip_tta`: each tile is also predicted flipped left-right, up-down and both; the outputs
  (logits) are flipped back and the four averaged. Flips keep the tile shape, so one
  compilation serves all four, run as one batch. With `transpose_tta` as well, the transposed
  tile's four flips join them: all eight symmetries of the square (the rot90s among them).
  A detector's outputs are no maps to average: it segments the whole image and its three
  flips (with `transpose_tta`, the transposed image's four flips too), maps each view's
  nuclei back and keeps those a majority of the views find (3 of 4, 5 of 8;
  postprocess.fuse_views); its foreground map is the views' mean.
- `nucleus_area` (pixels, 0 = off; "pixels" tilings only): after a first pass, the image is
  rescaled by sqrt(nucleus_area / median predicted nucleus area), clipped to [min_scale,
  max_scale], predicted again, and the outputs resized back, so nuclei reach the network at
  the size it was trained on (Cellpose's idea); post-processing runs at the original
  resolution.
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

from nucjax import postprocess, tiling
from nucjax.data.images import convert_view
from nucjax.models.spec import Instances, ModelSpec

# A rescale closer to 1 than this is not worth a second pass.
_SCALE_TOLERANCE = 0.1
# At most this many pixels (tiles x their flips) go through the network in one call: four
# 512 x 512 tiles, about 1.1 GB peak for a U-Net on a CPU (BUILD_NOTES, "Measured figures").
BATCH_PIXELS = 4 * 512 * 512
# A detector's flip_tta: the image as is, left-right, up-down and both ((H, W, 3) axes);
# with transpose_tta the transposed image's four flips too.
FLIPS = ((), (1,), (0,), (0, 1))


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
    Tiles are at most tile_size (rounded down to the stride; tiling.tile_grid) and overlap by
    tile_overlap pixels; they run up to batch_size at a time, fewer when that would put more
    than batch_pixels pixels through the network in one call (counting the four flips of
    flip_tta, eight with transpose_tta too, which are averaged); see batch_sizes.
    spec.tiling "pixels": returns (H, W, C) float32 numpy (logits for semantic models).
    "detections": returns tiling.merge_detections' dict: the kept detections (K, ...) in image
    pixels and the (H, W) foreground map (flip_tta is ignored here: detections are no
    per-pixel maps to average; segment_image fuses a detector's flipped views instead).
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a normalised (H, W, 3) image, got shape {image.shape}")
    h, w = image.shape[:2]
    ev, detections = eval_config, spec.tiling == "detections"
    rows, cols, (th, tw) = tiling.tile_grid(h, w, spec.stride, ev.tile_size, ev.tile_overlap)
    tiles = tiling.cut(image, rows, cols, (th, tw))
    tta, transpose = bool(ev.flip_tta) and not detections, bool(ev.transpose_tta)
    views = (8 if transpose else 4) if tta else 1
    batch = min(batch_size, max(1, batch_pixels // (th * tw * views)))
    outs = _run_tiles(spec, variables, tiles, batch, tta, transpose)
    if detections:
        return tiling.merge_detections(outs, rows, cols, h, w)
    return tiling.stitch(outs, rows, cols)[:h, :w]


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


def instances(spec: ModelSpec, outputs, h: int, w: int, seeds=None) -> Instances:
    """spec.postprocess of one image's outputs (with `seeds`, a seed model's Instances of the
    image (seed_nuclei), when given), as Instances of (h, w) int32 / float32."""
    instances = spec.postprocess(outputs) if seeds is None else spec.postprocess(outputs, seeds)
    label = np.asarray(instances.label, np.int32)
    if label.shape != (h, w):
        raise ValueError(f"post-processing gave a label of shape {label.shape}, not {(h, w)}")
    return Instances(label, np.asarray(instances.scores, np.float32))


def foreground(spec: ModelSpec, outputs, h: int, w: int) -> np.ndarray:
    """(h, w) float32 nucleus probability from one image's outputs (predict_image's)."""
    batched = jax.tree.map(lambda x: x[None], outputs)
    return np.asarray(spec.foreground(batched), np.float32)[0, :h, :w]


class _Views(NamedTuple):
    """A detector's outputs of symmetric views of the image (flip_tta), each in its own
    frame; views: (transposed, flipped axes) of each."""

    views: tuple
    outputs: list


def _symmetries(spec: ModelSpec, eval_config) -> tuple:
    """The (transposed, flipped axes) views a detector's flip_tta fuses; () for no TTA."""
    if not eval_config.flip_tta or spec.tiling != "detections":
        return ()
    transposes = (False, True) if eval_config.transpose_tta else (False,)
    return tuple((t, axes) for t in transposes for axes in FLIPS)


def _seen(x: np.ndarray, transposed: bool, axes: tuple) -> np.ndarray:
    """(H, W, ...) -> the view (H and W swapped when transposed, then flipped on axes)."""
    return np.ascontiguousarray(np.flip(np.swapaxes(x, 0, 1) if transposed else x, axes))


def _unseen(y: np.ndarray, transposed: bool, axes: tuple) -> np.ndarray:
    """A view's (h', w') map back in the image's frame: _seen undone."""
    y = np.flip(y, axes)
    return np.ascontiguousarray(y.T if transposed else y)


def _predict_views(spec: ModelSpec, variables, image: np.ndarray, eval_config):
    """predict_image's outputs, or a detector's _Views under flip_tta."""
    views = _symmetries(spec, eval_config)
    if not views:
        return predict_image(spec, variables, image, eval_config)
    return _Views(
        views, [predict_image(spec, variables, _seen(image, *v), eval_config) for v in views]
    )


def _fused(spec: ModelSpec, views: _Views, h: int, w: int) -> tuple[Instances, np.ndarray]:
    """The nuclei a majority of the views find (postprocess.fuse_views) and the views' mean
    foreground, each view's mapped back: Instances of (h, w) and (h, w) float32."""
    nuclei, fg = [], np.zeros((h, w), np.float32)
    for (transposed, axes), outputs in zip(views.views, views.outputs, strict=True):
        vh, vw = (w, h) if transposed else (h, w)
        found = instances(spec, outputs, vh, vw)
        nuclei.append(Instances(_unseen(found.label, transposed, axes), found.scores))
        fg += _unseen(foreground(spec, outputs, vh, vw), transposed, axes) / len(views.views)
    return postprocess.fuse_views(nuclei, len(nuclei) // 2 + 1), fg


def _first_pass(
    spec: ModelSpec, variables, image: np.ndarray, eval_config, seeds=None
) -> tuple[Any, float, Instances | None]:
    """(predict_image's outputs (_Views for a detector's flip_tta), wall-clock seconds,
    the seed model's Instances or None)."""
    t0 = time.perf_counter()
    outputs = _predict_views(spec, variables, image, eval_config)
    seed_instances = None if seeds is None else seed_nuclei(seeds, image)
    return outputs, time.perf_counter() - t0, seed_instances


def seed_nuclei(seeds, image: np.ndarray) -> Instances:
    """The nuclei (Instances: (H, W) int32 label, (N,) scores) that the seed model `seeds`
    (workdir.TrainedModel) finds in the normalised (H, W, 3) image of the seeded model, after
    images.convert_view from that model's view (seeds.handed_view) to its own."""
    view = seeds.config.data.input_view
    own = convert_view(image, seeds.handed_view or view, view)
    return segment_image(seeds.spec, seeds.variables, own, seeds.config.eval).instances


def _decode(
    spec: ModelSpec,
    variables,
    image: np.ndarray,
    eval_config,
    outputs,
    predict_s: float,
    seed_instances: Instances | None,
) -> ImagePrediction:
    """segment_image after its first network pass: post-processing (seeded by seed_instances
    when given), the nucleus_area second pass when asked, the foreground map."""
    h, w = image.shape[:2]
    t1 = time.perf_counter()
    if isinstance(outputs, _Views):
        nuclei, fg = _fused(spec, outputs, h, w)
        return ImagePrediction(outputs.outputs[0], fg, nuclei, predict_s, time.perf_counter() - t1)
    nuclei = instances(spec, outputs, h, w, seed_instances)
    postprocess_s = time.perf_counter() - t1
    scale = 1.0 if seed_instances is not None else rescale_factor(spec, nuclei.label, eval_config)
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


def segment_image(
    spec: ModelSpec, variables, image: np.ndarray, eval_config, seeds=None
) -> ImagePrediction:
    """predict_image, the foreground map and spec.postprocess of one normalised (H, W, 3) image.

    seeds: None, or a trained model (workdir.TrainedModel, config.eval.seeds_from; its input
    made from `image` by images.convert_view) whose nuclei seed spec.postprocess
    (spec.seedable); its whole segmentation (network and post-processing, in the network's
    turn of segment_images) counts in predict_s, and no nucleus_area second pass runs.

    eval_config: config.eval (tiling, flip_tta, nucleus_area, min_scale, max_scale; the
    post-processing reads the config.eval the spec was built from). With nucleus_area > 0 and
    a "pixels" tiling, a second pass at rescale_factor runs when the first finds nuclei (see the
    module docstring); outputs, foreground and instances are then the second pass's, at (H, W).
    """
    first = _first_pass(spec, variables, image, eval_config, seeds)
    return _decode(spec, variables, image, eval_config, *first)


def segment_images(
    spec: ModelSpec, variables, images: Iterable[np.ndarray], eval_config, seeds=None
) -> Iterator[ImagePrediction]:
    """segment_image of every (H, W, 3) image of `images`, in order, pipelined: image i is
    post-processed on a worker thread while the network runs on image i + 1 (XLA computes
    outside the GIL; JAX dispatch is thread-safe), so a run of images costs about their network
    time plus one post-processing. `images` is read one ahead of what has been yielded. Each
    prediction's timings are its own stages' wall-clock seconds, which may overlap another's.
    seeds: as in segment_image.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="postprocess") as pool:
        pending = None
        for image in images:
            first = _first_pass(spec, variables, image, eval_config, seeds)
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
    "predict_image",
    "predict_rescaled",
    "rescale_factor",
    "seed_nuclei",
    "segment_image",
    "segment_images",
]

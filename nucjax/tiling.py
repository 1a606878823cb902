"""The one tiling definition: where the tiles of a whole image lie and how their outputs join.

Pure numpy geometry; nucjax.whole_image runs the tiles through a model. Images are never
cropped. An image is zero-padded at the bottom and right to a multiple of the model's
stride, and a side that one tile holds to that tile's length (zero is the mean after
per-image normalisation, and how training pads small images: the extra zeros change a deep
network's outputs a little near the bottom and right edges, as any padding does). When it
is larger than the tile, it is cut into overlapping tiles whose corners lie on the stride
grid, and every output pixel is taken from the one tile that holds it farthest from a tile
edge ("keep the centre"): the overlap is split halfway.
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
"""

from __future__ import annotations

import itertools

import numpy as np


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


def _tiles(rows, cols):
    """((y, y0, y1), (x, x0, x1)) of every tile, row by row: the order tiles are cut in."""
    return itertools.product(rows, cols)


def cut(image: np.ndarray, rows, cols, shape: tuple[int, int]) -> np.ndarray:
    """image (H, W, C) -> its tiles (n, th, tw, C), row by row, from the image zero-padded at
    the bottom and right to (rows[-1][2], cols[-1][2]). rows, cols, shape: tile_grid's."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, rows[-1][2] - h), (0, cols[-1][2] - w), (0, 0)))
    th, tw = shape
    return np.stack([padded[y : y + th, x : x + tw] for (y, _, _), (x, _, _) in _tiles(rows, cols)])


def stitch(maps: np.ndarray, rows, cols) -> np.ndarray:
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
    merged["foreground"] = stitch(outputs["foreground"], rows, cols)[:h, :w]
    return merged


__all__ = [
    "cut",
    "merge_detections",
    "round_to_stride",
    "stitch",
    "tile_grid",
    "tile_layout",
    "tile_side",
]

"""Instance decoding: semantic network outputs of one image -> non-overlapping nuclei.

Two decoders, both marker-controlled watersheds confined to the predicted foreground:
  three-class (background, interior, border): seeds are the confident interiors;
  binary (foreground probability): seeds are peaks of the distance to the background.
Both finish with clean_instances. Every threshold is an argument; they come from config.eval
(foreground_threshold, seed_threshold, seed_depth, min_size, fill_holes).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import morphology
from skimage.segmentation import watershed

from nucjax.models.spec import Instances

_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity
_SQUARE = ndimage.generate_binary_structure(2, 2)  # 8-connectivity
# Holes up to this area (px) are filled; DSB nuclei have a median area of ~300 px.
MAX_HOLE_SIZE = 100
# Above this many pixels the watershed floods one mask component at a time (on its bounding
# box; watershed_in_mask): a whole-image flood of a 2048 x 2048 image spends 0.75 s of CPU
# against 0.27 s by component, while at 1024 x 1024 the whole image takes 0.03 s against
# 0.08 s (Python's cost per component). BUILD_NOTES, "Prediction speed".
WATERSHED_BY_COMPONENT_PIXELS = 1 << 21


def _component_boxes(components: np.ndarray):
    """(H, W) ids 0..n -> (slices, (h, w) bool mask of the component) per id 1..n, each box
    grown by one pixel where the image allows (so it holds background around the component)."""
    h, w = components.shape
    for i, (ys, xs) in enumerate(ndimage.find_objects(components), 1):
        box = (
            slice(max(ys.start - 1, 0), min(ys.stop + 1, h)),
            slice(max(xs.start - 1, 0), min(xs.stop + 1, w)),
        )
        yield box, components[box] == i


def h_maxima_by_component(distance: np.ndarray, components: np.ndarray, h: float) -> np.ndarray:
    """skimage.morphology.h_maxima(distance, h) & (components > 0), computed per component.

    distance: (H, W) float >= 0, 0 on background; components: (H, W) ids of the 8-connected
    components of distance > 0. A reconstruction by dilation never crosses background (its
    value is the image minimum, 0), so each component is its own problem; each box is padded
    with one pixel of background so that it holds the image minimum as the whole image does.
    Small sorts instead of one of every pixel: 2-4x faster at 1024-2048 px. Returns bool.
    """
    peaks = np.zeros(distance.shape, bool)
    for box, inside in _component_boxes(components):
        local = np.pad(np.where(inside, distance[box], 0.0), 1)
        found = morphology.h_maxima(local, h)[1:-1, 1:-1].astype(bool)
        peaks[box] |= found & inside
    return peaks


def watershed_in_mask(image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """skimage watershed(image, markers, mask=mask) (4-connected flooding); images over
    WATERSHED_BY_COMPONENT_PIXELS are flooded one 4-connected mask component at a time (a
    flood never leaves its component). That gives the same labels except where seeds tie:
    skimage queues all seeds at age 0, so between seeds of equal value the heap's layout,
    which holds the whole image's seeds or one component's, decides which floods a tied
    pixel first (in the 2048 x 2048 binary benchmark, 296 of 4.2 M pixels; no pixel of the
    three-class one, whose values rarely tie). Returns (H, W) int32."""
    if mask.size <= WATERSHED_BY_COMPONENT_PIXELS:
        return watershed(image, markers, mask=mask).astype(np.int32)
    components, _ = ndimage.label(mask, _CROSS)
    label = np.zeros(mask.shape, np.int32)
    for box, inside in _component_boxes(components):
        seeds = np.where(inside, markers[box], 0)
        if seeds.any():
            flooded = watershed(image[box], seeds, mask=inside)
            label[box] = np.where(inside, flooded, label[box])
    return label


def relabel_sequential(label: np.ndarray) -> np.ndarray:
    """Ids >= 0 (any shape) -> int32 ids 1..N in the order of the old ids, 0 kept as background.

    The one relabelling of nucjax (post-processing, cropping, metrics). A lookup table when the
    largest id is modest (linear time, no sort); a sort for huge sparse ids.
    """
    label = np.asarray(label)
    if label.size == 0 or label.max() <= 0:
        return np.zeros(label.shape, np.int32)
    if label.min() < 0:
        raise ValueError("instance ids must be >= 0")
    top = int(label.max())
    if top > max(4 * label.size, 1 << 16):
        ids, inverse = np.unique(label, return_inverse=True)
        return (inverse.reshape(label.shape) + (0 if ids[0] == 0 else 1)).astype(np.int32)
    present = np.bincount(label.ravel(), minlength=top + 1) > 0
    present[0] = False
    lut = np.zeros(top + 1, np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1)
    return lut[label]


def fill_small_holes(mask: np.ndarray, max_hole_size: int) -> np.ndarray:
    """(H, W) bool -> bool with every enclosed background region of <= max_hole_size px filled.

    Background touching the image's edge is never a hole.
    """
    holes, n = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask, _CROSS)
    small = np.bincount(holes.ravel(), minlength=n + 1) <= max_hole_size
    small[0] = False
    return mask | small[holes]


def fill_instance_holes(label: np.ndarray, max_hole_size: int = MAX_HOLE_SIZE) -> np.ndarray:
    """Fill each background hole of at most max_hole_size pixels enclosed by a single nucleus.

    A hole bordered by two or more nuclei (a gap between touching nuclei) stays background, so
    filling never merges nuclei or paints over a neighbour; a larger enclosed region (a ring of
    predicted nuclei around background, common in crowded tissue) is background, not a hole.
    """
    foreground = label > 0
    holes, n_holes = ndimage.label(ndimage.binary_fill_holes(foreground) & ~foreground, _CROSS)
    if n_holes == 0:
        return label
    too_big = np.bincount(holes.ravel(), minlength=n_holes + 1) > max_hole_size
    too_big[0] = True
    holes = np.where(too_big[holes], 0, holes)
    # (hole id, neighbouring nucleus id) pairs over the 4-neighbours of every hole pixel.
    pairs = []
    padded = np.pad(label, 1)
    h, w = label.shape
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        edge = (holes > 0) & (neighbour > 0)
        pairs.append(np.stack([holes[edge], neighbour[edge]]))
    hole_id, nucleus = np.unique(np.concatenate(pairs, axis=1), axis=1)
    n_neighbours = np.bincount(hole_id, minlength=n_holes + 1)
    owner = np.zeros(n_holes + 1, label.dtype)
    single = n_neighbours[hole_id] == 1
    owner[hole_id[single]] = nucleus[single]
    return np.where(holes > 0, owner[holes], label)


def clean_instances(
    label: np.ndarray, min_size: int, fill_holes: bool, max_hole_size: int = MAX_HOLE_SIZE
) -> np.ndarray:
    """Fill small holes (optional), drop nuclei of fewer than min_size pixels, relabel 1..N.

    label: (H, W) int ids >= 0, non-overlapping by construction. Returns (H, W) int32.
    """
    label = np.asarray(label, np.int32)
    if fill_holes:
        label = fill_instance_holes(label, max_hole_size)
    area = np.bincount(label.ravel(), minlength=1)
    small = area < min_size
    small[0] = False
    label = np.where(small[label], 0, label)
    return relabel_sequential(label)


def _instances(label: np.ndarray, foreground_prob: np.ndarray) -> Instances:
    """Instances with score = mean foreground probability over each nucleus."""
    n = int(label.max()) if label.size else 0
    area = np.bincount(label.ravel(), minlength=n + 1)[1:]
    total = np.bincount(label.ravel(), foreground_prob.ravel(), minlength=n + 1)[1:]
    scores = (total / np.maximum(area, 1)).astype(np.float32)
    return Instances(label=label.astype(np.int32), scores=scores)


def _seedless_components(label: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give foreground components the watershed could not reach (no seed) labels of their own."""
    orphans, n = ndimage.label(mask & (label == 0), _SQUARE)
    if n == 0:
        return label
    return np.where(orphans > 0, orphans + label.max(), label)


def instances_from_three_class(
    probs: np.ndarray,
    *,
    seed_threshold: float,
    foreground_threshold: float,
    min_size: int,
    fill_holes: bool,
    max_hole_size: int = MAX_HOLE_SIZE,
) -> Instances:
    """Nuclei from (H, W, 3) probabilities of [background, interior, border].

    Seeds: 4-connected components of interior > seed_threshold where interior beats border.
    Foreground: 1 - background (= interior + border for softmax outputs, and within [0, 1]
    for independent sigmoids too) > foreground_threshold. A watershed of border - interior
    from the seeds, within the foreground, splits touching nuclei along their predicted
    border; foreground components without a seed become nuclei of their own.
    Then clean_instances(min_size, fill_holes). Scores: mean foreground probability.
    """
    probs = np.asarray(probs, np.float32)
    interior, border = probs[..., 1], probs[..., 2]
    foreground_prob = 1.0 - probs[..., 0]
    mask = foreground_prob > foreground_threshold
    seeds = (interior > seed_threshold) & (interior > border) & mask
    markers, _ = ndimage.label(seeds, _CROSS)
    label = watershed_in_mask(border - interior, markers, mask)
    label = _seedless_components(label, mask)
    return _instances(clean_instances(label, min_size, fill_holes, max_hole_size), foreground_prob)


def shrunk_nuclei(label: np.ndarray, erosion: int) -> np.ndarray:
    """(H, W) ids -> the same ids on the pixels whose (2 erosion + 1)^2 window holds no other
    id and no background (each nucleus shrunk by `erosion` px, touching ones kept apart)."""
    if erosion <= 0:
        return np.asarray(label, np.int32)
    size = 2 * erosion + 1
    label = np.asarray(label, np.int32)
    alone = (ndimage.maximum_filter(label, size) == label) & (
        ndimage.minimum_filter(label, size) == label
    )
    return np.where(alone, label, 0)


def confident(instances: Instances, min_score: float) -> np.ndarray:
    """(H, W) int32 label of `instances` without the nuclei scored below min_score (their
    pixels become background; the other ids are kept)."""
    keep = np.concatenate([[False], np.asarray(instances.scores) >= min_score])
    return np.where(keep[instances.label], instances.label, 0).astype(np.int32)


def _masks(nuclei: Instances):
    """(score, bounding-box slices, (h', w') bool mask) of each nucleus."""
    for i, box in enumerate(ndimage.find_objects(np.asarray(nuclei.label, np.int32))):
        if box is not None:
            yield float(nuclei.scores[i]), box, nuclei.label[box] == i + 1


def _iou(a, b) -> float:
    """IoU of two (slices, mask) nuclei of one image."""
    (box_a, mask_a), (box_b, mask_b) = a, b
    lo = [max(p.start, q.start) for p, q in zip(box_a, box_b, strict=True)]
    hi = [min(p.stop, q.stop) for p, q in zip(box_a, box_b, strict=True)]
    if any(x >= y for x, y in zip(lo, hi, strict=True)):
        return 0.0

    def window(box):
        return tuple(slice(x - s.start, y - s.start) for x, y, s in zip(lo, hi, box, strict=True))

    inter = int(np.count_nonzero(mask_a[window(box_a)] & mask_b[window(box_b)]))
    return inter / (int(mask_a.sum()) + int(mask_b.sum()) - inter)


def fuse_views(views: list[Instances], min_votes: int, iou_threshold: float = 0.5) -> Instances:
    """The nuclei several views of one image agree on: e.g. a detector's on the image's four
    flips, each mapped back (config.eval.flip_tta for instance models).

    views: K Instances of one (H, W) image. Every view's nuclei, best score first, join the
    cluster whose first nucleus they overlap most (IoU > iou_threshold; one nucleus per view
    and cluster) or start a new one. A cluster holding nuclei of at least min_votes views is
    one nucleus: the pixels at least half of its members cover, scored the sum of their
    scores / K (a view that missed it counts 0). Nuclei are painted best score first onto
    pixels no better one holds. Returns Instances of (H, W) int32 and (N,) float32 scores.
    """
    shape = views[0].label.shape
    found = sorted(
        ((score, k, box, mask) for k, v in enumerate(views) for score, box, mask in _masks(v)),
        key=lambda t: -t[0],
    )
    owner = np.full(shape, -1, np.int32)  # which cluster's first nucleus holds each pixel
    clusters: list[dict] = []
    for score, k, box, mask in found:
        near = np.unique(owner[box][mask])
        best, best_iou = -1, iou_threshold
        for c in near[near >= 0]:
            iou = _iou((box, mask), clusters[c]["first"])
            if k not in clusters[c]["views"] and iou > best_iou:
                best, best_iou = int(c), iou
        if best < 0:
            clusters.append({"first": (box, mask), "views": set(), "score": 0.0, "members": []})
            best = len(clusters) - 1
            window = owner[box]
            window[mask & (window < 0)] = best
        cluster = clusters[best]
        cluster["views"].add(k)
        cluster["score"] += score
        cluster["members"].append((box, mask))
    label, scores = np.zeros(shape, np.int32), []
    for cluster in sorted(clusters, key=lambda c: -c["score"]):
        if len(cluster["views"]) < min_votes:
            continue
        votes = np.zeros(shape, np.int32)
        for box, mask in cluster["members"]:
            votes[box] += mask
        pixels = (2 * votes >= len(cluster["members"])) & (label == 0)
        if pixels.any():
            scores.append(cluster["score"] / len(views))
            label[pixels] = len(scores)
    return Instances(label, np.asarray(scores, np.float32))


def instances_from_three_class_seeded(
    probs: np.ndarray,
    seeds: np.ndarray,
    *,
    seed_erosion: int,
    foreground_threshold: float,
    min_size: int,
    fill_holes: bool,
    max_hole_size: int = MAX_HOLE_SIZE,
    seed_foreground_threshold: float | None = None,
) -> Instances:
    """Nuclei from (H, W, 3) [background, interior, border] probabilities, seeded by another
    model's nuclei `seeds` ((H, W) int ids, 0 background; e.g. a Mask R-CNN's).

    Each seed nucleus shrunk by seed_erosion px (shrunk_nuclei), within the foreground
    (1 - background > foreground_threshold), is one marker; the watershed of border - interior
    floods the foreground from them. Foreground that no marker reaches is dropped: the seed
    model decides how many nuclei there are and where, this model where their edges run.
    seed_foreground_threshold (below foreground_threshold; None = the same): within the seed
    nuclei, 1 - background above it is foreground too, so a nucleus this model sees only
    faintly (or, at 0, not at all) keeps the seed model's outline.
    Then clean_instances(min_size, fill_holes). Scores: mean foreground probability.
    """
    probs = np.asarray(probs, np.float32)
    if seeds.shape != probs.shape[:2]:
        raise ValueError(f"seeds of shape {seeds.shape} for probabilities of {probs.shape[:2]}")
    interior, border = probs[..., 1], probs[..., 2]
    foreground_prob = 1.0 - probs[..., 0]
    mask = foreground_prob > foreground_threshold
    if seed_foreground_threshold is not None:
        mask |= (seeds > 0) & (foreground_prob > seed_foreground_threshold)
    markers = np.where(mask, shrunk_nuclei(seeds, seed_erosion), 0)
    label = watershed_in_mask(border - interior, markers, mask)
    return _instances(clean_instances(label, min_size, fill_holes, max_hole_size), foreground_prob)


def instances_from_binary(
    fg_prob: np.ndarray,
    *,
    foreground_threshold: float,
    seed_depth: float,
    min_size: int,
    fill_holes: bool,
    max_hole_size: int = MAX_HOLE_SIZE,
) -> Instances:
    """Nuclei from an (H, W) foreground probability map.

    Foreground: fg_prob > foreground_threshold. Seeds: the regional maxima of its Euclidean
    distance transform that stand at least seed_depth pixels above the saddle to any higher
    neighbour (h-maxima), at least one per connected component; a watershed of -distance from
    the seeds within the foreground splits touching nuclei at their neck. A ridge or plateau
    (an elongated or flat-sided nucleus) is one maximum, so it is one seed: isolated local
    peaks a few pixels apart along a ridge would cut such a nucleus into stripes. With
    fill_holes the foreground's holes of at most max_hole_size px are filled first, so that a
    hollow nucleus has one central maximum rather than a ring of them. Then clean_instances.
    """
    fg_prob = np.asarray(fg_prob, np.float32)
    mask = fg_prob > foreground_threshold
    if fill_holes:
        mask = fill_small_holes(mask, max_hole_size)
    components, n = ndimage.label(mask, _SQUARE)
    if n == 0:
        return _instances(np.zeros(mask.shape, np.int32), fg_prob)
    distance = ndimage.distance_transform_edt(mask)
    peak_mask = h_maxima_by_component(distance, components, seed_depth)
    # Every component gets a seed: those shallower than seed_depth use their deepest pixel.
    seeded = np.zeros(n + 1, bool)
    seeded[components[peak_mask]] = True
    missing = np.flatnonzero(~seeded[1:]) + 1
    if missing.size:
        spots = ndimage.maximum_position(distance, components, missing)
        peak_mask[tuple(np.array(spots).T)] = True
    markers, _ = ndimage.label(peak_mask, _SQUARE)
    label = watershed_in_mask(-distance, markers, mask)
    return _instances(clean_instances(label, min_size, fill_holes, max_hole_size), fg_prob)

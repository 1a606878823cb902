"""Synthetic nuclei images with exact instance labels, for tests and offline runs.

Each image is a set of ellipses ("nuclei") of one typical size per image, some placed at random
and some pushed against an existing nucleus so that they touch or overlap, rendered with what
makes DSB 2018 hard: uneven brightness between nuclei, a smooth background gradient, texture,
blur and noise, a dark-on-bright brightfield look next to the usual bright-on-dark fluorescence,
and a few colour variants (grey, blue, purple; brightfield grey, H&E-like purple on pink).

Overlaps: a nucleus placed later lies on top and takes the pixels it covers (later wins). A
placement that would take more than `max_overlap` of an earlier nucleus's area, or cut it into
two pieces, is redrawn. So the label is a partition with ids 1..N, every nucleus is one
8-connected piece of at least `min_area` pixels, and N equals `num_nuclei` unless the image is
so crowded that no placement fits (then it is smaller; never larger). The image is rendered
from the final label, so every pixel's appearance matches its label.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Indices into nucjax.data.images.MODALITIES, the `modality` feature of nucjax.data.dsb2018.
FLUORESCENCE, BRIGHTFIELD, HISTOLOGY = 0, 1, 2

# Per-channel gain of the stain (fluorescence) or absorption (brightfield), and background tint.
# Drawn with these probabilities when not given; most DSB fluorescence images are grey.
FLUORESCENCE_COLOURS = {  # name: (gain per channel, probability)
    "grey": ((1.0, 1.0, 1.0), 0.6),
    "blue": ((0.25, 0.35, 1.0), 0.2),
    "purple": ((0.8, 0.35, 1.0), 0.2),
}
BRIGHTFIELD_COLOURS = {  # name: ((absorption per channel, background tint), probability)
    "grey": (((0.7, 0.7, 0.7), (1.0, 1.0, 1.0)), 0.5),
    "he": (((0.45, 0.8, 0.3), (0.97, 0.82, 0.9)), 0.5),
}


def _place_nuclei(rng, h, w, num_nuclei, radius, touch_fraction, max_overlap, min_area):
    """Paint ellipses one by one (later wins); returns label (H, W) int32 and radial (H, W).

    radial is each nucleus pixel's normalised elliptic radius in [0, 1] (1 outside nuclei), for
    shading the nucleus brighter at its centre.
    """
    label = np.zeros((h, w), np.int32)
    radial = np.ones((h, w), np.float32)
    centres, radii, areas, boxes = [], [], [0], [None]  # per id; id 0 is background
    for _ in range(30 * num_nuclei):
        if len(centres) == num_nuclei:
            break
        r = radius * rng.uniform(0.75, 1.3)
        elongation = rng.uniform(0.6, 1.0)
        a, b, theta = r / np.sqrt(elongation), r * np.sqrt(elongation), rng.uniform(0, np.pi)
        if centres and rng.random() < touch_fraction:
            j = rng.integers(len(centres))
            phi = rng.uniform(0, 2 * np.pi)
            distance = (r + radii[j]) * rng.uniform(0.7, 1.0)
            cy, cx = centres[j] + distance * np.array([np.sin(phi), np.cos(phi)])
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1 = max(int(cy - a - 1), 0), min(int(cy + a + 2), h)
        x0, x1 = max(int(cx - a - 1), 0), min(int(cx + a + 2), w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        u = (yy - cy) * np.cos(theta) + (xx - cx) * np.sin(theta)
        v = -(yy - cy) * np.sin(theta) + (xx - cx) * np.cos(theta)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        inside = rho <= 1.0
        if inside.sum() < min_area:
            continue
        window = label[y0:y1, x0:x1]
        taken_ids, taken = np.unique(window[inside & (window > 0)], return_counts=True)
        if np.any(taken > max_overlap * np.asarray(areas)[taken_ids]):
            continue
        before = window[inside]
        window[inside] = len(centres) + 1
        if any(_pieces(label, i, boxes[i]) != 1 for i in taken_ids):
            window[inside] = before  # would cut an earlier nucleus in two: redraw
            continue
        radial[y0:y1, x0:x1][inside] = rho[inside]
        boxes.append((y0, y1, x0, x1))
        for i, n in zip(taken_ids, taken, strict=True):
            areas[i] -= n
        areas.append(int(inside.sum()))
        centres.append(np.array([cy, cx]))
        radii.append(r)
    return label, radial


def _pieces(label, i, box):
    """How many 8-connected pieces nucleus i has; box (y0, y1, x0, x1) holds all of it."""
    y0, y1, x0, x1 = box
    return ndimage.label(label[y0:y1, x0:x1] == i, structure=np.ones((3, 3)))[1]


def _smooth_noise(rng, shape, sigma):
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-6)


def _blobs(rng, shape, cells=4):
    """Unit-variance noise varying over about 1/cells of the image: a coarse grid, upsampled
    (a wide Gaussian filter would cost ten times more)."""
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    field = ndimage.zoom(coarse, (shape[0] / (cells + 1), shape[1] / (cells + 1)), order=3)
    field = field[: shape[0], : shape[1]]
    return (field - field.mean()) / (field.std() + 1e-6)


def _render(rng, label, radial, brightfield, colour):
    """The RGB image in [0, 1] for a label: shading, texture, background, blur, noise."""
    h, w = label.shape
    brightness = np.concatenate([[0.0], rng.uniform(0.35, 1.0, label.max())]).astype(np.float32)
    texture = _smooth_noise(rng, (h, w), rng.uniform(0.8, 2.5))
    stain = brightness[label] * (1.0 - 0.35 * radial**2) * (1.0 + rng.uniform(0.05, 0.25) * texture)
    stain = np.clip(stain, 0.0, None)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = rng.uniform(-1, 1) * (yy / h - 0.5) + rng.uniform(-1, 1) * (xx / w - 0.5)
    background = ramp + 0.3 * _blobs(rng, (h, w))
    if brightfield:
        absorption, tint = BRIGHTFIELD_COLOURS[colour][0]
        level = rng.uniform(0.7, 0.92) * (1.0 + 0.12 * background)
        strength = rng.uniform(0.5, 0.9)
        image = level[..., None] * np.asarray(tint) * (1 - strength * stain[..., None] * absorption)
    else:
        level = rng.uniform(0.0, 0.12) * (1.0 + 0.5 * background)
        gain = np.asarray(FLUORESCENCE_COLOURS[colour][0])
        image = (level + rng.uniform(0.5, 1.0) * stain)[..., None] * gain
    sigma = rng.uniform(0.4, 1.5)
    image = ndimage.gaussian_filter(image, (sigma, sigma, 0))
    # Grey images stay exactly grey (R = G = B), as the grey DSB images are.
    noise_shape = (h, w, 1) if colour == "grey" else image.shape
    image = image + rng.normal(0.0, rng.uniform(0.003, 0.03), noise_shape)
    return np.clip(image, 0.0, 1.0)


def draw_colour(rng: np.random.Generator, brightfield: bool) -> str:
    """A colour variant name, drawn with the probabilities in the colour tables."""
    choices = BRIGHTFIELD_COLOURS if brightfield else FLUORESCENCE_COLOURS
    names = list(choices)
    return names[rng.choice(len(names), p=[choices[n][1] for n in names])]


def modality(brightfield: bool, colour: str) -> int:
    """The dsb2018 modality of a synthetic image: H&E-coloured brightfield counts as histology."""
    if not brightfield:
        return FLUORESCENCE
    return HISTOLOGY if colour == "he" else BRIGHTFIELD


def synthetic_example(
    rng: np.random.Generator,
    size: int | tuple[int, int] = (256, 256),
    brightfield: bool = False,
    *,
    num_nuclei: int | None = None,
    radius: float | None = None,
    colour: str | None = None,
    touch_fraction: float = 0.4,
    max_overlap: float = 0.3,
    min_area: int = 12,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its exact instance label.

    size: (H, W) or an int for a square. radius: typical nucleus radius in pixels (default
    drawn per image, 4 to 12, smaller for images under 128 pixels but at least 3). num_nuclei:
    default from a drawn coverage of 8 to 30 % of the image. colour: a key of
    FLUORESCENCE_COLOURS or BRIGHTFIELD_COLOURS (default drawn). touch_fraction: share of
    nuclei pushed against an existing one. Returns image (H, W, 3) uint8 and label (H, W) int32,
    0 background and 1..N nuclei (see the module docstring for how overlaps are resolved).
    """
    h, w = (size, size) if isinstance(size, int) else size
    if radius is None:
        radius = max(3.0, rng.uniform(4.0, 12.0) * min(1.0, min(h, w) / 128))
    if num_nuclei is None:
        num_nuclei = max(1, int(rng.uniform(0.08, 0.3) * h * w / (np.pi * radius**2)))
    if colour is None:
        colour = draw_colour(rng, brightfield)
    label, radial = _place_nuclei(
        rng, h, w, num_nuclei, radius, touch_fraction, max_overlap, min_area
    )
    image = _render(rng, label, radial, brightfield, colour)
    return np.round(image * 255).astype(np.uint8), label


def synthetic_examples(num_images: int, size, seed: int, brightfield_fraction: float = 0.25):
    """Yields {image (H, W, 3) uint8, label (H, W) int32, id "synthetic-00012", modality int
    (FLUORESCENCE, BRIGHTFIELD or HISTOLOGY)}, the element structure of nucjax.data.examples.

    size: int or (H, W). Image i depends only on (seed, i), so a data set's first images do not
    change with its size. Use different seeds for different splits (nucjax.data.examples does).
    """
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        brightfield = bool(rng.random() < brightfield_fraction)
        colour = draw_colour(rng, brightfield)
        image, label = synthetic_example(rng, size, brightfield, colour=colour)
        yield {
            "image": image,
            "label": label,
            "id": f"synthetic-{i:05d}",
            "modality": modality(brightfield, colour),
        }

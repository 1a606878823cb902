"""Figures: the paper's Figure 2 (a foreground-probability map with each nucleus's confidence
on it) and the outline comparison the trainer sends to TensorBoard.

Drawn with pillow alone (no matplotlib): the input image and, beside it, the probability map
in the viridis colour map with every predicted nucleus outlined and its score (mean
foreground probability, Instances.scores) written at its centre, and a colour bar.

  python -m nucjax.main --mode=predict --config=... --workdir=... --input=DIR --output=OUT \
      --figure_image=NAME      # writes OUT/NAME_figure.png
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage.segmentation import find_boundaries

from nucjax import outputs
from nucjax.models.spec import Instances

# matplotlib's viridis at 0, 0.1, ..., 1.0; interpolated linearly in between.
_VIRIDIS = "440154 482475 414487 355f8d 2a788e 21918c 22a884 44bf70 7ad151 bddf26 fde725".split()


def viridis(values: np.ndarray) -> np.ndarray:
    """values in [0, 1] (any shape) -> RGB uint8 (..., 3) in the viridis colour map."""
    anchors = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _VIRIDIS], float)
    x = np.clip(np.nan_to_num(np.asarray(values, np.float64)), 0.0, 1.0) * (len(anchors) - 1)
    lo = np.minimum(np.floor(x).astype(int), len(anchors) - 2)
    frac = (x - lo)[..., None]
    return np.round(anchors[lo] * (1 - frac) + anchors[lo + 1] * frac).astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def outline_comparison(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The true nuclei outlined on the image (left) beside the predicted ones (right).

    image: (H, W, 3) uint8; truth: (H, W) int, -1 (not labelled) drawn as background;
    predicted: (H, W) int. Returns (H, 2 W + 4, 3) uint8: outputs.overlay of each, a white
    4-pixel gap between them.
    """
    left = outputs.overlay(image, np.maximum(np.asarray(truth), 0))
    gap = np.full((left.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([left, gap, outputs.overlay(image, predicted)], axis=1)


def confidence_figure(
    image: np.ndarray,
    foreground: np.ndarray,
    instances: Instances,
    *,
    title: str = "",
    scale: int | None = None,
) -> Image.Image:
    """The figure as a PIL image.

    image: (H, W, 3) uint8 input; foreground: (H, W) probability; instances: the nuclei.
    scale: integer upscaling of both panels (default: about 768 px on the long side, 1 to 4),
    so that scores stay legible on small images.
    """
    h, w = foreground.shape
    scale = scale or int(np.clip(round(768 / max(h, w)), 1, 4))
    label = np.asarray(instances.label)
    prob = viridis(foreground)
    prob[find_boundaries(label, mode="inner")] = (255, 64, 64)  # red: apart from viridis
    left, right = _upscale(np.asarray(image, np.uint8), scale), _upscale(prob, scale)
    gap, bar_w, top, margin = 8, 16, 28, 40
    canvas = Image.new("RGB", (2 * w * scale + 2 * gap + bar_w + margin, h * scale + top), "white")
    canvas.paste(Image.fromarray(left), (0, top))
    canvas.paste(Image.fromarray(right), (w * scale + gap, top))
    bar = viridis(np.linspace(1, 0, h * scale))[:, None].repeat(bar_w, axis=1)
    bar_x = 2 * w * scale + 2 * gap
    canvas.paste(Image.fromarray(bar), (bar_x, top))
    draw = ImageDraw.Draw(canvas)
    small, big = _font(11), _font(14)
    for value, y in ((1.0, top), (0.5, top + h * scale // 2), (0.0, top + h * scale - 11)):
        draw.text((bar_x + bar_w + 3, y), f"{value:.1f}", fill="black", font=small)
    heading = title or "foreground probability; numbers: per-nucleus confidence"
    draw.text((4, 6), heading, fill="black", font=big)
    n = int(label.max()) if label.size else 0
    centres = ndimage.center_of_mass(np.ones_like(label), label, np.arange(1, n + 1)) if n else []
    # Centred white text with a black outline; the bitmap fallback font can do neither.
    style = {"anchor": "mm", "stroke_width": 1, "stroke_fill": "black"}
    style = style if isinstance(small, ImageFont.FreeTypeFont) else {}
    for (cy, cx), score in zip(centres, np.asarray(instances.scores), strict=True):
        x, y = w * scale + gap + (cx + 0.5) * scale, top + (cy + 0.5) * scale
        draw.text((x, y), f"{score:.2f}", fill="white", font=small, **style)
    return canvas


def save_confidence_figure(path: str, image, foreground, instances, **kwargs) -> str:
    """confidence_figure written as a PNG at `path` (atomically). Returns path."""
    figure = confidence_figure(image, foreground, instances, **kwargs)
    return outputs.write_atomically(path, lambda tmp: figure.save(tmp, format="PNG"))


__all__ = ["confidence_figure", "save_confidence_figure", "viridis"]

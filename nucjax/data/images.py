"""Image helpers shared by the DSB 2018 reader, the input pipeline and predict (numpy only).

to_rgb brings any stored image (grey, grey + alpha, RGB, RGBA; 8-bit, 16-bit, float or bool)
to the (H, W, 3) uint8 that the rest of nucjax takes. modality_of sorts an image into one of
MODALITIES by a colour rule, the `modality` feature of the DSB 2018 builder.
"""

from __future__ import annotations

import colorsys

import numpy as np

MODALITIES = ("fluorescence", "brightfield", "histology")
# What the network sees of an (H, W, 3) uint8 image (config.data.input_view):
#   rgb            the colours as stored;
#   grey_inverted  the mean of R, G, B, inverted when its median is above 127, repeated to 3
#                  channels: every modality becomes bright nuclei on a dark background, as in
#                  fluorescence (546 of the 670 training images).
#   inverted       the colours kept, all three inverted by the same rule (the mean's median
#                  above 127): grey images exactly as grey_inverted, while H&E keeps the hue
#                  that tells a pale nucleus from eosin-stained cytoplasm (so a grey_inverted
#                  network can be fine-tuned on it: train.init_from).
INPUT_VIEWS = ("rgb", "grey_inverted", "inverted")
MIN_STD = 1.0  # grey levels; the normalisation's floor on the standard deviation


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Grey (H, W), (H, W, 1), grey + alpha (H, W, 2), RGB or RGBA -> (H, W, 3) uint8.

    Alpha is dropped. uint8 passes through; bool becomes 0/255; any other type (16-bit,
    float) is rescaled to 0..255 by the image's own range, since only relative intensity
    matters after normalize_image.
    """
    x = np.asarray(image)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"expected a (H, W), (H, W, 1|2|3|4) image, got shape {x.shape}")
    x = x[..., :3] if x.shape[-1] >= 3 else np.repeat(x[..., :1], 3, axis=-1)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype == bool:
        return x.astype(np.uint8) * 255
    x = x.astype(np.float64)
    low, high = x.min(), x.max()
    scaled = (x - low) * (255.0 / (high - low)) if high > low else np.zeros_like(x)
    return np.round(scaled).astype(np.uint8)


def input_view(rgb: np.ndarray, view: str) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 as the network sees it (INPUT_VIEWS)."""
    if view == "rgb":
        return rgb
    if view not in INPUT_VIEWS:
        raise ValueError(f"config.data.input_view={view!r}; choose one of {INPUT_VIEWS}")
    grey = np.round(np.asarray(rgb, np.float32).mean(axis=-1)).astype(np.uint8)
    bright = np.median(grey) > 127
    if view == "inverted":
        return 255 - rgb if bright else rgb
    return np.repeat((255 - grey if bright else grey)[..., None], 3, axis=-1)


def normalize_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 (or any real) -> (H, W, 3) float32: (x - mean) / max(std, MIN_STD)."""
    x = np.asarray(image, np.float64)
    return ((x - x.mean()) / max(x.std(), MIN_STD)).astype(np.float32)


def network_input(rgb: np.ndarray, view: str) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) float32 as every network takes it: input_view, then
    normalize_image. The training pipeline does the same per crop (nucjax.data.pipeline)."""
    return normalize_image(input_view(rgb, view))


def convertible(view: str, to: str) -> bool:
    """Whether convert_view turns a normalised input of `view` into one of view `to`."""
    return view == to or (view, to) == ("inverted", "grey_inverted")


def convert_view(x: np.ndarray, view: str, to: str) -> np.ndarray:
    """A normalised (H, W, 3) float32 network input of `view` -> the same image's input of view
    `to`, where that can be told from it: the same view, or inverted -> grey_inverted (the
    channel mean, normalised again; grey_inverted rounds the mean to a grey level first, so
    the two differ by at most 0.5 grey level over the image's standard deviation). Lets a
    model of one view seed another's decoding (config.eval.seeds_from).

    Raises ValueError naming both views for any other pair."""
    if not convertible(view, to):
        raise ValueError(f"an input of view {view!r} cannot be turned into view {to!r}")
    if view == to:
        return x
    grey = np.asarray(x, np.float32).mean(axis=-1, keepdims=True)
    grey = (grey - grey.mean()) / max(float(grey.std()), 1e-6)
    return np.repeat(grey, 3, axis=-1).astype(np.float32)


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

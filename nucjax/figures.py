"""Figures: the paper's Figure 2 (a foreground-probability map with each nucleus's confidence
on it) and the outline comparison the trainer sends to TensorBoard.

Figure 2 is drawn with matplotlib's object API and Agg canvas (no pyplot state, no display
needed; imported inside the drawing functions, so the train / evaluate path, which uses only
the outline comparison, runs without matplotlib, as on the borrowed GPU hosts):
the input image and, beside it, the probability map in viridis with every predicted nucleus
outlined and its score (mean foreground probability, Instances.scores) written at its centre,
and a colour bar. On a crowded image the scores are thinned so that no two overlap: larger
nuclei first, a score is left out when its text would touch one already placed; the title says
how many are shown, and every score is in NAME_nuclei.csv.

  python -m nucjax.main --mode=predict --config=... --workdir=... --input=DIR --output=OUT \
      --figure_image=NAME      # writes OUT/NAME_figure.png
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from skimage.measure import regionprops
from skimage.segmentation import find_boundaries

from nucjax import outputs
from nucjax.models.spec import Instances

if TYPE_CHECKING:
    import matplotlib.figure

OUTLINE = (1.0, 0.25, 0.25)  # red: apart from viridis
PANEL_INCHES = 6.0  # the long side of each panel
DPI = 100
SCORE_POINTS = 7


def place_scores(ax, instances: Instances, renderer) -> list[int]:
    """Write each nucleus's score at its centre on `ax`, larger nuclei first, leaving out any
    whose text box would overlap one already written. Returns the ids written, in order."""
    from matplotlib import patheffects

    label = np.asarray(instances.label)
    regions = sorted(regionprops(label), key=lambda r: -r.area)
    halo = [patheffects.withStroke(linewidth=1.5, foreground="black")]
    placed, shown = [], []
    for region in regions:
        cy, cx = region.centroid
        text = ax.text(
            cx,
            cy,
            f"{instances.scores[region.label - 1]:.2f}",
            color="white",
            fontsize=SCORE_POINTS,
            ha="center",
            va="center",
            path_effects=halo,
        )
        box = text.get_window_extent(renderer)
        if placed and box.count_overlaps(placed):
            text.remove()
            continue
        placed.append(box)
        shown.append(int(region.label))
    return shown


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
    image: np.ndarray, foreground: np.ndarray, instances: Instances, *, title: str = ""
) -> tuple[matplotlib.figure.Figure, list[int]]:
    """(the figure, the ids whose score it shows).

    image: (H, W, 3) uint8 for display (outputs.display_rgb); foreground: (H, W) probability;
    instances: the nuclei.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    h, w = foreground.shape
    panel = PANEL_INCHES / max(h, w)
    figure = Figure(figsize=(2 * w * panel + 1.2, h * panel + 0.7), dpi=DPI, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    left.imshow(image, interpolation="nearest")
    cmap = matplotlib.colormaps["viridis"]
    prob = cmap(np.clip(np.nan_to_num(foreground), 0, 1))[..., :3]
    prob[find_boundaries(np.asarray(instances.label), mode="inner")] = OUTLINE
    right.imshow(prob, interpolation="nearest")
    for ax in (left, right):
        ax.set_axis_off()
    bar = figure.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=right, fraction=0.05)
    bar.set_label("foreground probability")
    shown = place_scores(right, instances, canvas.get_renderer())
    n = len(instances.scores)
    heading = title or "foreground probability; numbers: per-nucleus confidence"
    note = "" if len(shown) == n else f" ({len(shown)} of {n} scores shown; all in the CSV)"
    figure.suptitle(heading + note, fontsize=10)
    return figure, shown


def save_confidence_figure(path: str, image, foreground, instances, **kwargs) -> str:
    """confidence_figure written as a PNG at `path` (atomically). Returns path."""
    figure, _ = confidence_figure(image, foreground, instances, **kwargs)
    return outputs.write_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))


__all__ = ["confidence_figure", "place_scores", "save_confidence_figure"]

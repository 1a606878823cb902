"""Figure 2: every score on a sparse image, no two overlapping on a crowded one."""

import itertools

import numpy as np
from PIL import Image
from skimage.draw import disk

from nucjax import figures, outputs
from nucjax.models.spec import Instances


def _figure(label):
    n = int(label.max())
    scores = np.linspace(0.5, 0.99, n).astype(np.float32)
    foreground = (label > 0).astype(np.float32) * 0.9
    image = outputs.display_rgb(foreground)
    return figures.confidence_figure(image, foreground, Instances(label, scores)), scores


def _text_boxes(figure):
    renderer = figure.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in figure.axes[1].texts]


def test_sparse_nuclei_all_get_their_score():
    label = np.zeros((64, 64), np.int32)
    for n, (y, x) in enumerate([(12, 12), (12, 50), (50, 12), (50, 50)], start=1):
        rr, cc = disk((y, x), 6)
        label[rr, cc] = n
    (figure, shown), scores = _figure(label)
    assert sorted(shown) == [1, 2, 3, 4]
    texts = {t.get_text(): t.get_position() for t in figure.axes[1].texts}
    assert texts[f"{scores[1]:.2f}"] == (50, 12)  # nucleus 2's score at its centre (x, y)


def test_crowded_scores_are_thinned_never_overlapping(tmp_path):
    label = np.zeros((60, 80), np.int32)
    for n, (y, x) in enumerate(itertools.product(range(2, 58, 4), range(2, 78, 4)), start=1):
        label[y - 1 : y + 2, x - 1 : x + 2] = n  # 266 nuclei of 3x3 pixels
    (figure, shown), _ = _figure(label)
    boxes = _text_boxes(figure)
    assert len(boxes) == len(shown) and 10 < len(shown) < int(label.max())
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    assert f"{len(shown)} of {label.max()} scores shown" in figure.get_suptitle()
    path = figures.save_confidence_figure(
        str(tmp_path / "f.png"),
        outputs.display_rgb(label),
        label > 0,
        Instances(label, np.ones(label.max())),
    )
    assert Image.open(path).format == "PNG"

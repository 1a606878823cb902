"""The classical baseline finds well-separated nuclei on dark and on bright backgrounds."""

import numpy as np

from nucjax import classical, metrics


def _discs(shape=(96, 128), centres=((24, 30), (70, 40), (50, 100)), radius=9):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    label = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(centres, 1):
        label[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = i
    return label


def test_dark_and_bright_backgrounds_give_the_same_nuclei():
    label = _discs()
    fluorescence = np.where(label[..., None] > 0, 200, 20).astype(np.uint8).repeat(3, -1)
    stained = np.where(label[..., None] > 0, (120, 60, 150), (235, 230, 240)).astype(np.uint8)
    for image in (fluorescence, stained):
        instances, mask = classical.otsu_watershed(image)
        assert int(instances.label.max()) == 3 and instances.scores.shape == (3,)
        assert metrics.dsb_image_score(label, instances.label) > 0.9
        np.testing.assert_array_equal(mask > 0, instances.label > 0)


def test_flat_image_has_no_nuclei():
    instances, _ = classical.otsu_watershed(np.full((32, 32, 3), 90, np.uint8))
    assert instances.label.max() == 0 and instances.scores.size == 0

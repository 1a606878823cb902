"""Output writers: atomic writes, the Fiji ROI zip (round trip to labels), shape measures."""

import os

import numpy as np
import pytest
import roifile
from skimage.draw import disk, polygon

from nucjax import outputs


def test_write_atomically_leaves_nothing_on_failure(tmp_path):
    path = str(tmp_path / "out.txt")
    outputs.write_text(path, "old")

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        outputs.write_atomically(path, crash)
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["out.txt"]


def _raster(rois, shape):
    """ImageJ's rule: a pixel is in a polygon when its centre (x + 0.5, y + 0.5) is."""
    label = np.zeros(shape, np.int32)
    for roi in rois:
        xy = roi.coordinates()
        rr, cc = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
        label[rr, cc] = int(roi.name)
    return label


def _hand_labels():
    label = np.zeros((30, 40), np.int32)
    label[2:6, 3:13] = 1  # rectangle
    rr, cc = disk((18, 18), 8, shape=label.shape)
    label[rr, cc] = 2
    label[0:3, 30:40] = 3  # on the image's edges
    label[[10, 11, 12], [30, 31, 30]] = 4  # joined by corners only
    label[20:29, 32:38] = 5
    label[12:16, 4:6] = 6  # an L touching the disc
    label[15, 4:9] = 6
    return label


def test_roi_zip_rasterises_back_to_the_labels(tmp_path):
    label = _hand_labels()
    path = outputs.write_roi_zip(str(tmp_path / "a_rois.zip"), label)
    rois = roifile.roiread(path)
    assert [r.name for r in rois] == [f"{n:05d}" for n in range(1, 7)]
    assert all(r.roitype == roifile.ROI_TYPE.POLYGON for r in rois)
    np.testing.assert_array_equal(_raster(rois, label.shape), label)  # exact, every pixel


def test_roi_zip_of_a_stack_puts_each_nucleus_on_its_slice(tmp_path):
    flipped = np.flipud(_hand_labels())
    stack = np.stack(
        [_hand_labels(), np.zeros_like(flipped), np.where(flipped > 0, flipped + 6, 0)]
    )
    rois = roifile.roiread(outputs.write_roi_zip(str(tmp_path / "s_rois.zip"), stack))
    for z in range(3):
        on_z = [r for r in rois if r.position == z + 1]
        np.testing.assert_array_equal(_raster(on_z, stack[z].shape), stack[z])


def test_roi_of_a_nucleus_with_a_hole_is_filled(tmp_path):
    label = np.zeros((12, 12), np.int32)
    label[2:10, 2:10] = 1
    label[5:7, 5:7] = 0  # a 2x2 hole: the polygon ROI has none
    rois = roifile.roiread(outputs.write_roi_zip(str(tmp_path / "h_rois.zip"), label))
    back = _raster(rois, label.shape)
    assert np.count_nonzero(back != label) == 4 and (back[5:7, 5:7] == 1).all()


def test_shape_measures_of_a_rectangle_and_a_disc():
    label = np.zeros((40, 60), np.int32)
    label[5:9, 10:20] = 1  # 4 x 10
    rr, cc = disk((25, 30), 10, shape=label.shape)
    label[rr, cc] = 2
    rows = outputs.nuclei_table(label, np.array([0.9, 0.8]), np.ones(label.shape))
    table = [dict(zip(outputs.NUCLEI_COLUMNS, r, strict=True)) for r in rows]
    rect, disc = table
    # An h x w rectangle: the outline through boundary pixel centres is 2(h-1) + 2(w-1); its
    # rows have variance (h^2 - 1) / 12, the ellipse's axis is 4 standard deviations.
    assert rect["perimeter"] == 2 * 3 + 2 * 9
    major, minor = 4 * np.sqrt((10**2 - 1) / 12), 4 * np.sqrt((4**2 - 1) / 12)
    assert rect["axis_major_length"] == pytest.approx(major, abs=1e-4)
    assert rect["axis_minor_length"] == pytest.approx(minor, abs=1e-4)
    assert rect["eccentricity"] == pytest.approx(np.sqrt(1 - (minor / major) ** 2), abs=1e-4)
    assert rect["solidity"] == 1.0 and rect["area"] == 40 and rect["score"] == 0.9
    # The disc is symmetric: equal axes of 4 standard deviations of its rows, eccentricity 0.
    rows_of_disc = np.nonzero(label == 2)[0]
    assert disc["axis_major_length"] == pytest.approx(4 * rows_of_disc.std(), abs=1e-4)
    assert disc["axis_minor_length"] == pytest.approx(disc["axis_major_length"], abs=1e-4)
    assert disc["eccentricity"] == pytest.approx(0.0, abs=1e-3)
    assert 0.95 < disc["solidity"] <= 1.0
    assert disc["perimeter"] == pytest.approx(2 * np.pi * 10, rel=0.05)


def test_overlay_of_dim_8_bit_equals_that_of_the_same_image_in_16_bit():
    rng = np.random.default_rng(0)
    dim = rng.integers(0, 12, (40, 50)).astype(np.uint8)  # dark background
    dim[10:20, 10:25] = rng.integers(30, 41, (10, 15))  # a dim nucleus, at most 40 of 255
    label = np.zeros(dim.shape, np.int32)
    label[10:20, 10:25] = 1
    shown = outputs.display_rgb(dim)
    np.testing.assert_array_equal(shown, outputs.display_rgb(dim.astype(np.uint16) * 257))
    np.testing.assert_array_equal(shown, outputs.display_rgb(dim / 255.0))
    low, high = np.percentile(dim, outputs.DISPLAY_PERCENTILES)  # the stretch, by hand
    want = np.round(np.clip((dim - low) * 255 / (high - low), 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(shown[..., 1], want)
    assert shown.max() == 255 and shown[15, 15, 0] > 150  # the nucleus is bright now
    over = outputs.overlay(shown, label)
    assert (over[10, 10:25] == outputs.OUTLINE).all() and (over[15, 15] != outputs.OUTLINE).any()

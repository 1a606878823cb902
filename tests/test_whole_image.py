"""Whole images through a model: tiling on the stride grid, stitching, padding, untileable specs,
flip test-time augmentation and rescaling to a nucleus area."""

import dataclasses
import functools

import numpy as np
import pytest

from configs import simple_cnn, unet
from nucjax import whole_image
from nucjax.data.images import normalize_image
from nucjax.models.spec import Instances
from tests.trained import random_model, synthetic_image, threshold_config, threshold_params

FLIPS = ((), (1,), (0,), (0, 1))  # as is, left-right, up-down, both; axes of (H, W, C)


def settings(tile_size, overlap, **fields):
    """config.eval with these tiling settings and fields, the other fields at their defaults."""
    ev = threshold_config().eval
    ev.tile_size, ev.tile_overlap = tile_size, overlap
    ev.update(fields)
    return ev


def threshold_model(symmetric_kernel=False):
    """(spec, variables) of the hand-set threshold model (finds bright blobs). With
    symmetric_kernel its 3x3 output window is a symmetric blur, so the network is
    flip-equivariant by construction but not a per-pixel map."""
    spec, variables = random_model(threshold_config())
    params = threshold_params(variables["params"])
    if symmetric_kernel:
        params["output"]["kernel"][:, :, 0, 0] = 20.0 * np.outer([1, 2, 1], [1, 2, 1]) / 16
    return spec, {**variables, "params": params}


@pytest.mark.parametrize("extent", [1, 5, 64, 65, 97, 150, 300])
def test_tile_layout_partitions_on_the_stride_grid(extent):
    stride, tile, overlap = 4, 64, 16
    padded = whole_image.round_to_stride(extent, stride)
    layout = whole_image.tile_layout(padded, tile, overlap, stride)
    owned = np.zeros(padded, int)
    for start, lo, hi in layout:
        assert start % stride == 0 and 0 <= start and start + min(tile, padded) <= padded
        owned[lo:hi] += 1
        # Every owned pixel is at least overlap / 2 from an edge inside the image.
        assert lo == 0 or lo - start >= overlap // 2
        assert hi == padded or start + tile - hi >= overlap // 2
    assert (owned == 1).all()


def test_tiled_prediction_equals_single_pass_for_a_small_receptive_field():
    """Simple CNN sees 3x3 pixels: tiles overlapping by 8 must reproduce one pass exactly."""
    config = simple_cnn.get_config("tiny")
    spec, variables = random_model(config)
    image, _ = synthetic_image((150, 97))
    whole = whole_image.predict_image(spec, variables, image, settings(256, 0))
    tiled = whole_image.predict_image(spec, variables, image, settings(32, 8))
    assert whole.shape == tiled.shape == (150, 97, 3)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)
    # Without overlap the tile edges differ: the test can tell tiling apart from one pass.
    seams = whole_image.predict_image(spec, variables, image, settings(32, 0))
    assert np.abs(seams - whole).max() > 1e-3


def test_unet_whole_image_of_any_size():
    """150 x 97 is no multiple of the U-Net's stride and larger than its 64 px tile."""
    config = unet.get_config("tiny")
    spec, variables = random_model(config, seed=1)
    assert spec.stride == 4
    image, _ = synthetic_image((150, 97), seed=1)
    out = whole_image.predict_image(spec, variables, image, settings(64, 16))
    assert out.shape == (150, 97, 1) and out.dtype == np.float32 and np.isfinite(out).all()
    prediction = whole_image.segment_image(spec, variables, image, settings(66, 16))  # 66 -> 64
    np.testing.assert_array_equal(prediction.outputs, out)
    assert prediction.foreground.shape == prediction.instances.label.shape == (150, 97)


def test_untileable_spec_runs_whole_padded_image_and_is_cropped_back():
    spec, variables = threshold_model()
    # Whole-image inference, as a detector's spec asks for.
    whole = dataclasses.replace(spec, tileable=False, stride=8)
    image, _ = synthetic_image((150, 97), seed=2)
    padded = whole_image.predict_image(whole, variables, image, settings(32, 8))
    assert padded.shape == (152, 104, 1)  # padded to the stride, never tiled
    p = whole_image.segment_image(whole, variables, image, settings(32, 8))
    tiled = whole_image.segment_image(spec, variables, image, settings(32, 8))
    assert p.foreground.shape == p.instances.label.shape == (150, 97)
    np.testing.assert_allclose(p.foreground, tiled.foreground, atol=1e-5)
    n = int(p.instances.label.max())
    assert n > 0 and p.instances.scores.shape == (n,)
    assert set(np.unique(p.instances.label)) == set(range(n + 1))
    # Flips and rescaling are for per-pixel outputs: a detector's spec ignores both.
    extras = whole_image.segment_image(
        whole, variables, image, settings(32, 8, flip_tta=True, nucleus_area=1000.0)
    )
    assert extras.scale == 1.0
    np.testing.assert_array_equal(extras.outputs, p.outputs)
    np.testing.assert_array_equal(extras.instances.label, p.instances.label)


def test_flip_tta_of_a_flip_equivariant_network_changes_nothing():
    spec, variables = threshold_model(symmetric_kernel=True)
    image, _ = synthetic_image((150, 97), seed=4)
    plain = whole_image.predict_image(spec, variables, image, settings(32, 8))
    tta = whole_image.predict_image(spec, variables, image, settings(32, 8, flip_tta=True))
    np.testing.assert_allclose(tta, plain, rtol=0, atol=1e-4)
    # Not a per-pixel map: outputs left flipped (not flipped back) would differ.
    assert np.abs(plain[:, ::-1] - plain).max() > 1.0


def test_flip_tta_averages_the_four_flipped_passes():
    spec, variables = random_model(simple_cnn.get_config("tiny"))
    image, _ = synthetic_image((150, 97), seed=5)
    tta = whole_image.predict_image(spec, variables, image, settings(32, 8, flip_tta=True))
    passes = [
        np.flip(whole_image.predict_image(spec, variables, np.flip(image, a), settings(256, 0)), a)
        for a in FLIPS
    ]
    np.testing.assert_allclose(tta, np.mean(passes, axis=0), rtol=0, atol=1e-5)
    assert np.abs(tta - passes[0]).max() > 1e-3  # a random network is not flip-equivariant


def test_transpose_tta_averages_the_eight_symmetries_of_the_square():
    spec, variables = random_model(simple_cnn.get_config("tiny"))
    image, _ = synthetic_image((150, 97), seed=6)  # non-square tiles: the transpose is a new shape
    ev = settings(32, 8, flip_tta=True, transpose_tta=True)
    tta = whole_image.predict_image(spec, variables, image, ev)

    def mapped_back(view, undo):
        return undo(whole_image.predict_image(spec, variables, view, settings(256, 0)))

    passes = []
    for a in FLIPS:
        flip = functools.partial(np.flip, axis=a)
        passes.append(mapped_back(flip(image), flip))
        passes.append(
            mapped_back(flip(image.transpose(1, 0, 2)), lambda o, f=flip: f(o).transpose(1, 0, 2))
        )
    np.testing.assert_allclose(tta, np.mean(passes, axis=0), rtol=0, atol=1e-5)
    flips_only = whole_image.predict_image(spec, variables, image, settings(32, 8, flip_tta=True))
    assert np.abs(tta - flips_only).max() > 1e-3  # the transposed views were really used


def test_rescale_factor_from_the_median_nucleus_area():
    spec, _ = random_model(simple_cnn.get_config("tiny"))
    label = np.zeros((60, 60), np.int32)
    label[:10, :10], label[20:40, :20], label[:30, 30:60] = 1, 2, 3  # 100, 400, 900 px

    def factor(**fields):
        return whole_image.rescale_factor(spec, label, settings(64, 16, **fields))

    assert factor(nucleus_area=100.0) == 0.5  # sqrt(100 / 400)
    assert factor(nucleus_area=900.0) == 1.5
    assert factor(nucleus_area=10.0) == 0.5 and factor(nucleus_area=1e5) == 2.0  # clipped
    assert factor(nucleus_area=10.0, min_scale=0.1) == np.sqrt(10 / 400)
    assert factor(nucleus_area=440.0) == 1.0  # within 0.1 of 1: no second pass
    assert factor(nucleus_area=0.0) == 1.0
    assert whole_image.rescale_factor(spec, np.zeros_like(label), settings(64, 16)) == 1.0


def separated_nuclei(scale=1):
    """(normalised (96 s, 96 s, 3) image, label) of 9 bright discs of radius 4 to 8 px, one per
    cell of a 3x3 grid (never touching, so any scale gives 9), blurred edges, noise."""
    yy, xx = np.mgrid[:96, :96]
    label = np.zeros((96, 96), np.int32)
    for i, (cy, cx) in enumerate((y, x) for y in (16, 48, 80) for x in (16, 48, 80)):
        label[(yy - cy) ** 2 + (xx - cx) ** 2 <= (4 + i // 2) ** 2] = i + 1
    grey = np.where(label > 0, 180.0, 30.0) + np.random.default_rng(0).normal(0, 8, label.shape)
    grey = np.repeat(np.repeat(np.clip(grey, 0, 255), scale, 0), scale, 1)
    image = np.repeat(grey[..., None], 3, -1).astype(np.uint8)
    return normalize_image(image), np.repeat(np.repeat(label, scale, 0), scale, 1)


def test_nucleus_area_rescales_an_upsampled_image_back_to_the_small_ones_scale():
    spec, variables = threshold_model()
    small, label = separated_nuclei()
    p = whole_image.segment_image(spec, variables, small, settings(64, 16))
    assert p.scale == 1.0 and p.instances.label.max() == label.max() == 9
    area = float(np.median(np.bincount(p.instances.label.ravel())[1:]))
    big, _ = separated_nuclei(scale=2)
    ev = settings(64, 16, flip_tta=True, nucleus_area=area)
    q = whole_image.segment_image(spec, variables, big, ev)
    assert q.scale == pytest.approx(0.5, abs=0.03)
    assert q.instances.label.shape == q.foreground.shape == (192, 192)
    assert q.instances.label.max() == 9
    # The second pass ran at half size: its outputs, resized back, are not the first pass's.
    first = whole_image.predict_image(spec, variables, big, ev)
    assert np.abs(q.outputs - first).max() > 0.1
    np.testing.assert_allclose(
        q.outputs, whole_image.predict_rescaled(spec, variables, big, q.scale, ev), atol=1e-6
    )


def test_nucleus_area_zero_or_close_to_the_image_is_the_single_pass_bit_for_bit():
    spec, variables = threshold_model()
    image, _ = separated_nuclei()
    outputs = whole_image.predict_image(spec, variables, image, settings(64, 16))
    want = spec.postprocess(outputs)
    area = float(np.median(np.bincount(want.label.ravel())[1:]))
    for nucleus_area in (0.0, 1.1 * area):  # off; scale 1.05, within 0.1 of 1
        p = whole_image.segment_image(
            spec, variables, image, settings(64, 16, nucleus_area=nucleus_area)
        )
        assert p.scale == 1.0
        np.testing.assert_array_equal(p.outputs, outputs)
        np.testing.assert_array_equal(p.instances.label, want.label)
        np.testing.assert_array_equal(p.instances.scores, want.scores)
        assert isinstance(p.instances, Instances)

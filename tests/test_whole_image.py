"""Whole images through a model: tiling on the stride grid, stitching, padding, untileable specs."""

import dataclasses

import numpy as np
import pytest

from configs import simple_cnn, unet
from nucjax import whole_image
from tests.trained import random_model, synthetic_image, threshold_config, threshold_params


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
    whole = whole_image.predict_image(spec, variables, image, tile_size=256, overlap=0)
    tiled = whole_image.predict_image(spec, variables, image, tile_size=32, overlap=8)
    assert whole.shape == tiled.shape == (150, 97, 3)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)
    # Without overlap the tile edges differ: the test can tell tiling apart from one pass.
    seams = whole_image.predict_image(spec, variables, image, tile_size=32, overlap=0)
    assert np.abs(seams - whole).max() > 1e-3


def test_unet_whole_image_of_any_size():
    """150 x 97 is no multiple of the U-Net's stride and larger than its 64 px tile."""
    config = unet.get_config("tiny")
    spec, variables = random_model(config, seed=1)
    assert spec.stride == 4
    image, _ = synthetic_image((150, 97), seed=1)
    out = whole_image.predict_image(spec, variables, image, tile_size=64, overlap=16)
    assert out.shape == (150, 97, 1) and out.dtype == np.float32 and np.isfinite(out).all()
    prediction = whole_image.segment_image(
        spec,
        variables,
        image,
        tile_size=66,
        overlap=16,  # 66 rounds down to 64
    )
    np.testing.assert_array_equal(prediction.outputs, out)
    assert prediction.foreground.shape == prediction.instances.label.shape == (150, 97)


def test_untileable_spec_runs_whole_padded_image_and_is_cropped_back():
    config = threshold_config()
    spec, variables = random_model(config)
    variables = {**variables, "params": threshold_params(variables["params"])}
    # Whole-image inference, as a detector's spec asks for.
    whole = dataclasses.replace(spec, tileable=False, stride=8)
    image, _ = synthetic_image((150, 97), seed=2)
    padded = whole_image.predict_image(whole, variables, image, tile_size=32, overlap=8)
    assert padded.shape == (152, 104, 1)  # padded to the stride, never tiled
    p = whole_image.segment_image(whole, variables, image, tile_size=32, overlap=8)
    tiled = whole_image.segment_image(spec, variables, image, tile_size=32, overlap=8)
    assert p.foreground.shape == p.instances.label.shape == (150, 97)
    np.testing.assert_allclose(p.foreground, tiled.foreground, atol=1e-5)
    n = int(p.instances.label.max())
    assert n > 0 and p.instances.scores.shape == (n,)
    assert set(np.unique(p.instances.label)) == set(range(n + 1))

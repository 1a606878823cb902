"""Whole images through a model: tiled predictions against single passes, detections merged
across tiles, flip test-time augmentation and rescaling to a nucleus area."""

import dataclasses
import functools
import itertools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mask_rcnn as mask_rcnn_config
from configs import simple_cnn, unet
from nucjax import tiling, whole_image
from nucjax.data.images import normalize_image
from nucjax.models import mask_rcnn
from nucjax.models.spec import Instances, ModelSpec
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


def test_tiled_prediction_equals_single_pass_for_a_small_receptive_field():
    """Simple CNN sees 3x3 pixels: tiles overlapping by 8 must reproduce one pass exactly."""
    config = simple_cnn.get_config("tiny")
    spec, variables = random_model(config)
    image, _ = synthetic_image((150, 97))
    whole = whole_image.predict_image(spec, variables, image, settings(256, 0))
    tiled = whole_image.predict_image(spec, variables, image, settings(32, 8))
    assert whole.shape == tiled.shape == (150, 97, 3)
    # The last row and column see past the image, where the two differ: the single pass pads
    # the image to its tile (160 x 128), the 32 px tiles cover it with none. Padding changes
    # what a network with biases sees there (the module docstring); tiling changes nothing.
    np.testing.assert_allclose(tiled[:-1, :-1], whole[:-1, :-1], rtol=0, atol=1e-5)
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


DISC_RADIUS = 5  # the stub detector's nuclei: 11 px across, <= overlap / 2 of its tests


class BlobDetector(nn.Module):
    """A deterministic stand-in for a detector's eval outputs (Mask R-CNN's dict): a detection
    at every local maximum of the bright pixels blurred (sigma 2), a disc of DISC_RADIUS in a
    box centred there and clipped to the tile, scored by the blurred value over a whole disc's.
    A disc cut by the tile edge gives a partial detection (peak moved inwards, box clipped,
    lower score), as a real detector does."""

    max_detections: int = 16

    @nn.compact
    def __call__(self, image, label=None, *, train=False):
        bright = (image[..., 0] > 0).astype(jnp.float32)  # (B, H, W)
        g = np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)
        kernel = np.outer(g, g).astype(np.float32)
        yy, xx = np.mgrid[-8:9, -8:9]
        whole = float(((yy**2 + xx**2 <= DISC_RADIUS**2)[4:13, 4:13] * kernel).sum())
        blurred = jax.vmap(lambda b: jax.scipy.signal.convolve2d(b, kernel, mode="same"))(bright)
        local_max = jax.lax.reduce_window(
            blurred, -jnp.inf, jax.lax.max, (1, 3, 3), (1, 1, 1), "SAME"
        )
        score = jnp.where(blurred == local_max, blurred / whole, 0.0)
        b, h, w = score.shape
        scores, index = jax.lax.top_k(score.reshape(b, -1), self.max_detections)
        cy, cx, r = index // w + 0.5, index % w + 0.5, DISC_RADIUS + 0.5
        boxes = jnp.stack([cy - r, cx - r, cy + r, cx + r], -1)
        boxes = jnp.clip(boxes, 0.0, jnp.asarray([h, w, h, w], jnp.float32))
        cells = (np.arange(28) + 0.5) / 28 - 0.5
        disc = (cells[:, None] ** 2 + cells[None] ** 2 <= 0.25).astype(np.float32)
        masks = jnp.broadcast_to(disc, (b, self.max_detections, 28, 28))
        valid = scores > 0.5
        return {
            "boxes": boxes,
            "scores": scores,
            "valid": valid,
            "masks": masks,
            "foreground": bright,
        }


def blob_spec(max_detections=16):
    config = mask_rcnn_config.get_config("tiny")
    ev = config.eval
    ev.min_size, ev.fill_holes, ev.mask_threshold = 0, False, 0.5
    return ModelSpec(
        module=BlobDetector(max_detections),
        loss=None,
        foreground=lambda outputs: outputs["foreground"],
        postprocess=functools.partial(mask_rcnn.postprocess, eval_config=ev),
        stride=32,
        tiling="detections",
    )


def disc_image(centres):
    """(64, 64, 3) image: +1 inside discs of DISC_RADIUS at `centres`, -1 elsewhere."""
    yy, xx = np.mgrid[:64, :64]
    inside = np.zeros((64, 64), bool)
    for cy, cx in centres:
        inside |= (yy - cy) ** 2 + (xx - cx) ** 2 <= DISC_RADIUS**2
    return np.repeat(np.where(inside, 1.0, -1.0)[..., None], 3, -1).astype(np.float32)


def same_nuclei(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images hold the same nuclei (pixel for pixel), whatever their ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b)) and (pairs[:, 0] == 0).all()


@pytest.mark.parametrize(
    ("tiles", "batch", "want"),
    [(9, 4, [4, 4, 1]), (8, 4, [4, 4]), (3, 4, [1, 1, 1]), (1, 4, [1]), (5, 1, [1] * 5)],
)
def test_batch_sizes_never_pad_with_empty_tiles(tiles, batch, want):
    assert whole_image.batch_sizes(tiles, batch) == want


def test_pixel_models_compile_once_per_tile_shape_not_per_image_size():
    """Five image sizes that one 64 x 64 tile holds (stride 4, tile_size 64 -> sides in
    multiples of 8) run through at most their few tile shapes; a second image of a size seen
    before compiles nothing."""
    spec, variables = threshold_model()
    ev = settings(64, 16)
    sizes = [(40, 50), (37, 47), (33, 45), (39, 41), (34, 48)]
    shapes = {tiling.tile_grid(h, w, spec.stride, 64, 16)[2] for h, w in sizes}
    assert shapes == {(40, 48), (40, 56)}  # 37..40 -> 40; 41..48 -> 48, 49..56 -> 56
    before = whole_image._apply._cache_size()
    for size in sizes:
        whole_image.predict_image(spec, variables, synthetic_image(size)[0], ev)
    assert whole_image._apply._cache_size() - before == len(shapes)


def test_larger_tiles_come_closer_to_the_single_pass():
    """A U-Net sees far beyond overlap / 2, so tiles are not exact: on a 150 x 97 image the
    tiny U-Net (random weights: far more sensitive than a trained one) differs from its single
    pass less and less as tiles grow (fewer seams, more context)."""
    spec, variables = random_model(unet.get_config("tiny"), seed=1)
    image, _ = synthetic_image((150, 97), seed=1)
    whole = whole_image.predict_image(spec, variables, image, settings(256, 16))
    errors = [
        np.abs(whole_image.predict_image(spec, variables, image, settings(tile, 16)) - whole)
        for tile in (32, 64, 128)
    ]
    means = [float(e.mean() / whole.std()) for e in errors]  # measured: 0.31, 0.10, 0.03
    assert means[0] > means[1] > means[2] and means[2] < 0.05
    assert np.median(errors[2]) == 0  # most pixels exactly as in the single pass


def test_detector_finds_the_same_nuclei_in_every_copy_of_a_mosaic():
    """8 discs, some by the copy's edges (so on the mosaic's tile seams) and some cut by tile
    edges: the 2 x 3 mosaic of the image gives the image's nuclei in every copy, exactly, in
    15 tiles of 64 overlapping by 32 (discs of 11 px <= overlap / 2)."""
    spec, ev = blob_spec(), settings(64, 32)
    centres = [(8, 8), (8, 56), (30, 20), (33, 44), (48, 30), (56, 8), (56, 56), (20, 40)]
    image = disc_image(centres)
    alone = whole_image.segment_image(spec, {}, image, ev)
    assert alone.instances.label.max() == len(centres)
    mosaic = np.tile(image, (2, 3, 1))
    rows, cols, _ = tiling.tile_grid(128, 192, 32, 64, 32)
    assert (len(rows), len(cols)) == (3, 5)
    found = whole_image.segment_image(spec, {}, mosaic, ev)
    label = found.instances.label
    assert label.max() == 6 * len(centres)
    for i, j in itertools.product(range(2), range(3)):
        assert same_nuclei(
            label[64 * i : 64 * (i + 1), 64 * j : 64 * (j + 1)], alone.instances.label
        )
    np.testing.assert_array_equal(found.foreground, np.tile(alone.foreground, (2, 3)))
    np.testing.assert_allclose(
        np.sort(found.instances.scores), np.repeat(np.sort(alone.instances.scores), 6)
    )
    # The 15 tiles detect far more than 48 discs (each seen by up to 4 tiles, partial ones
    # at tile edges): the ownership rule is what leaves one detection per disc.
    tiles = [
        mosaic[y : y + 64, x : x + 64] for (y, _, _), (x, _, _) in itertools.product(rows, cols)
    ]
    per_tile = spec.module.apply({}, np.stack(tiles))
    assert int(per_tile["valid"].sum()) > 2 * 48
    assert len(whole_image.predict_image(spec, {}, mosaic, ev)["boxes"]) == 48


def test_detections_of_a_whole_mosaic_in_one_pass_hit_the_detection_cap():
    """Why tiles: in one pass the per-image cap (16 here) keeps 16 of the 48 nuclei."""
    spec = blob_spec()
    image = disc_image([(8, 8), (8, 56), (30, 20), (33, 44), (48, 30), (56, 8), (56, 56), (20, 40)])
    mosaic = np.tile(image, (2, 3, 1))
    ev = settings(256, 0)
    whole = whole_image.segment_image(spec, {}, mosaic, ev)
    assert whole.instances.label.max() == 16
    tiled = whole_image.segment_image(spec, {}, mosaic, settings(64, 32))
    assert tiled.instances.label.max() == 48


def test_a_detectors_flip_tta_fuses_its_four_views_mapped_back():
    """The blob detector finds the same discs in every flip: with flip_tta the fused nuclei
    and scores are the single pass's (views not flipped back would agree on none of these
    off-centre discs, and fewer than 3 views would keep nothing)."""
    spec = blob_spec()
    image = disc_image([(8, 10), (30, 20), (33, 47), (50, 30)])
    plain = whole_image.segment_image(spec, {}, image, settings(64, 0))
    tta = whole_image.segment_image(spec, {}, image, settings(64, 0, flip_tta=True))
    assert plain.instances.label.max() == 4
    assert same_nuclei(tta.instances.label, plain.instances.label)
    np.testing.assert_allclose(np.sort(tta.instances.scores), np.sort(plain.instances.scores))
    np.testing.assert_allclose(tta.foreground, plain.foreground)
    assert set(tta.outputs) == set(plain.outputs)  # the unflipped view's detections
    pipelined = next(whole_image.segment_images(spec, {}, [image], settings(64, 0, flip_tta=True)))
    np.testing.assert_array_equal(pipelined.instances.label, tta.instances.label)


def test_a_detectors_transpose_tta_maps_the_transposed_views_back_too():
    """A 64 x 96 image (transposed views are 96 x 64): the eight views agree on every disc."""
    wide = np.concatenate([disc_image([(8, 10), (30, 20), (50, 30)]), disc_image([(33, 17)])], 1)
    image = wide[:, :96]
    spec, ev = blob_spec(), settings(128, 0, flip_tta=True, transpose_tta=True)
    plain = whole_image.segment_image(spec, {}, image, settings(128, 0))
    tta = whole_image.segment_image(spec, {}, image, ev)
    assert plain.instances.label.max() == 4
    assert same_nuclei(tta.instances.label, plain.instances.label)
    np.testing.assert_allclose(np.sort(tta.instances.scores), np.sort(plain.instances.scores))
    np.testing.assert_allclose(tta.foreground, plain.foreground)


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
    # Sides that are multiples of 32 (the single pass's tile_side step): no pass pads, so the
    # image edges agree too (padding and then flipping would move it to the other side).
    image, _ = synthetic_image((160, 96), seed=5)
    tta = whole_image.predict_image(spec, variables, image, settings(32, 8, flip_tta=True))
    passes = [
        np.flip(whole_image.predict_image(spec, variables, np.flip(image, a), settings(256, 0)), a)
        for a in FLIPS
    ]
    np.testing.assert_allclose(tta, np.mean(passes, axis=0), rtol=0, atol=1e-5)
    assert np.abs(tta - passes[0]).max() > 1e-3  # a random network is not flip-equivariant


def test_transpose_tta_averages_the_eight_symmetries_of_the_square():
    spec, variables = random_model(simple_cnn.get_config("tiny"))
    image, _ = synthetic_image((160, 64), seed=6)  # no padding (above); 32 x 28 tiles
    assert tiling.tile_grid(160, 64, spec.stride, 32, 8)[2] == (32, 28)  # transposed: new
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


def test_segment_images_post_processes_one_image_while_the_network_runs_on_the_next(
    monkeypatch,
):
    """The same predictions as segment_image, in order; and image 2's network starts before
    image 1's (slowed) post-processing ends, which a one-after-the-other loop cannot do."""
    spec, variables = threshold_model()
    ev = settings(64, 16)
    images = [synthetic_image((48, 40), seed=seed)[0] for seed in range(3)]
    want = [whole_image.segment_image(spec, variables, x, ev) for x in images]
    events = []
    network = whole_image.predict_image

    def logged_network(*args, **kwargs):
        events.append("network")
        return network(*args, **kwargs)

    def slow_postprocess(outputs):
        events.append("post start")
        time.sleep(0.3)
        events.append("post end")
        return spec.postprocess(outputs)

    monkeypatch.setattr(whole_image, "predict_image", logged_network)
    slow = dataclasses.replace(spec, postprocess=slow_postprocess)
    got = list(whole_image.segment_images(slow, variables, iter(images), ev))
    assert len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.instances.label, w.instances.label)
        np.testing.assert_array_equal(g.foreground, w.foreground)
    assert events.count("network") == 3
    assert events.index("network", 1) < events.index("post end")

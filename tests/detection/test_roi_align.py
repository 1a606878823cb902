"""ROI Align: ramp images against the analytic mean, borders against a numpy detectron2
reference, level assignment, jit/vmap and gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from nucjax.detection import roi_align as ra

# Jitted once per shape: eager dispatch of the many small ops costs far more in tests.
roi_align = jax.jit(ra.roi_align, static_argnums=(2, 3))
multilevel_roi_align = jax.jit(ra.multilevel_roi_align, static_argnums=(2, 3))
roi_align_masks = jax.jit(ra.roi_align_masks, static_argnums=3)


def numpy_bilinear(feature, y, x):
    """detectron2's bilinear_interpolate (ROIAlign CPU kernel), one point, all channels."""
    height, width = feature.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[2])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (
        hy * hx * feature[y_low, x_low]
        + hy * lx * feature[y_low, x_high]
        + ly * hx * feature[y_high, x_low]
        + ly * lx * feature[y_high, x_high]
    )


def sample_points(box, stride, out, ratio):
    """Per output bin, the (ratio x ratio) sample points in feature index units."""
    y0, x0 = box[0] / stride - 0.5, box[1] / stride - 0.5
    bin_h = (box[2] / stride - 0.5 - y0) / out
    bin_w = (box[3] / stride - 0.5 - x0) / out
    ys = [[y0 + (p + (k + 0.5) / ratio) * bin_h for k in range(ratio)] for p in range(out)]
    xs = [[x0 + (p + (k + 0.5) / ratio) * bin_w for k in range(ratio)] for p in range(out)]
    return ys, xs


def numpy_roi_align(feature, boxes, out, stride, ratio=2):
    feature = np.asarray(feature, np.float64)
    result = np.zeros((len(boxes), out, out, feature.shape[2]))
    for r, box in enumerate(np.asarray(boxes, np.float64)):
        ys, xs = sample_points(box, stride, out, ratio)
        for p in range(out):
            for q in range(out):
                values = [numpy_bilinear(feature, y, x) for y in ys[p] for x in xs[q]]
                result[r, p, q] = np.mean(values, axis=0)
    return result


def ramp(height, width, coefficients):
    """(H, W, C) with channel c = a_c * i + b_c * j + c_c at index (i, j)."""
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([a * i + b * j + c for a, b, c in coefficients], -1).astype(np.float32)


COEFFICIENTS = [(1.0, 0.0, 0.0), (0.5, -2.0, 3.0)]


def test_single_level_ramp_equals_analytic_mean_of_samples():
    feature = ramp(32, 40, COEFFICIENTS)
    boxes = np.array([[20.3, 16.7, 90.1, 100.9], [8.0, 8.0, 24.0, 24.0], [40, 60, 41, 61]])
    stride, out = 4, 7
    got = roi_align(feature, boxes, out, stride)
    for r, box in enumerate(boxes):
        ys, xs = sample_points(box, stride, out, 2)
        for c, (a, b, offset) in enumerate(COEFFICIENTS):
            want = [
                [a * np.mean(ys[p]) + b * np.mean(xs[q]) + offset for q in range(out)]
                for p in range(out)
            ]  # the mean of a ramp is the ramp at the mean point
            np.testing.assert_allclose(got[r, :, :, c], want, rtol=1e-5, atol=1e-4)


def test_borders_match_numpy_reference():
    rng = np.random.default_rng(0)
    feature = rng.normal(size=(10, 12, 3)).astype(np.float32)
    boxes = np.array(
        [
            [-3.0, -2.0, 5.0, 6.0],  # past the top-left corner
            [7.0, 8.0, 14.0, 15.0],  # past the bottom-right corner
            [20.0, 20.0, 30.0, 30.0],  # outside: zeros
            [-20.0, -20.0, 40.0, 40.0],  # much larger than the map
            [3.0, 3.0, 3.0, 3.0],  # degenerate
            [0.0, 0.0, 10.0, 12.0],  # the whole map
        ],
        np.float32,
    )
    for stride in (1, 2):
        got = roi_align(feature, boxes, 5, stride)
        np.testing.assert_allclose(got, numpy_roi_align(feature, boxes, 5, stride), atol=1e-5)
    got = roi_align(feature, boxes, 5, 1)
    np.testing.assert_array_equal(got[2], 0.0)


def expected_level(box, levels=(2, 3, 4, 5)):
    size = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
    level = math.floor(ra.CANONICAL_LEVEL + math.log2(size / ra.CANONICAL_SIZE + 1e-8))
    return min(max(level, levels[0]), levels[-1]) - levels[0]


def test_multilevel_ramp_in_image_coordinates_and_level_choice():
    # Level l holds a*y + b*x + 1000*l at its cell centres (image coordinates), so an interior
    # box reads the image-space ramp at its sample points, plus a level marker.
    size, strides, out = 256, (4, 8, 16, 32), 7
    a, b = 0.75, -0.25
    features = []
    for index, s in enumerate(strides):
        centres = (np.arange(size // s) + 0.5) * s
        y, x = np.meshgrid(centres, centres, indexing="ij")
        features.append((a * y + b * x + 1000.0 * index)[..., None].astype(np.float32))
    boxes = np.array(
        [[100, 100, 120, 121], [50.5, 60, 110, 118], [60, 70, 190, 200], [10, 12, 240, 241]],
        np.float32,
    )
    levels = [expected_level(box) for box in boxes]
    assert levels == [0, 1, 2, 3]
    np.testing.assert_array_equal(ra.assign_levels(boxes, (2, 3, 4, 5)), levels)
    got = jax.jit(lambda f, bx: ra.multilevel_roi_align(f, bx, out, strides))(features, boxes)
    for r, box in enumerate(boxes):
        ys, xs = sample_points(box, 1, out, 2)  # stride 1: image coordinates - 0.5
        want = [
            [
                a * (np.mean(ys[p]) + 0.5) + b * (np.mean(xs[q]) + 0.5) + 1000.0 * levels[r]
                for q in range(out)
            ]
            for p in range(out)
        ]
        np.testing.assert_allclose(got[r, :, :, 0], want, rtol=1e-5, atol=1e-3)


def test_multilevel_matches_single_level_reference_at_borders():
    rng = np.random.default_rng(1)
    strides = (4, 8, 16)
    features = [rng.normal(size=(64 // s, 48 // s, 2)).astype(np.float32) for s in strides]
    boxes = np.array([[-4, -4, 10, 12], [30, 20, 70, 52], [0, 0, 64, 48], [60, 40, 61, 41]])
    got = multilevel_roi_align(features, boxes.astype(np.float32), 4, strides)
    for r, box in enumerate(boxes):
        level = expected_level(box, (2, 3, 4))
        want = numpy_roi_align(features[level], box[None], 4, strides[level])[0]
        np.testing.assert_allclose(got[r], want, atol=1e-5)


def test_vmap_over_batch_and_gradients_reach_features_only():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
    boxes = np.array([[[8, 8, 40, 40], [4, 4, 20, 30]], [[10, 0, 30, 20], [0, 0, 64, 64]]])
    boxes = boxes.astype(np.float32)
    batched = jax.jit(jax.vmap(lambda f, bx: ra.roi_align(f, bx, 3, 4)))(features, boxes)
    for i in range(2):
        np.testing.assert_allclose(
            batched[i], numpy_roi_align(features[i], boxes[i], 3, 4), atol=1e-5
        )

    def total(f, bx):
        return jnp.sum(ra.roi_align(f, bx, 3, 4))

    grad_f, grad_b = jax.jit(jax.grad(total, argnums=(0, 1)))(features[0], boxes[0])
    # Every bin's weights sum to 1 for boxes inside the map: 2 boxes * 9 bins per channel.
    np.testing.assert_allclose(np.sum(grad_f, axis=(0, 1)), [18.0] * 3, rtol=1e-5)
    np.testing.assert_array_equal(grad_b, 0.0)


def test_roi_align_masks_equals_roi_align_of_the_binary_mask():
    rng = np.random.default_rng(3)
    label = rng.integers(0, 4, (20, 24)).astype(np.int32)
    boxes = np.array([[2, 3, 15, 20], [-2, -2, 8, 8], [5, 5, 25, 30]], np.float32)
    ids = np.array([1, 3, 2], np.int32)
    got = roi_align_masks(label, boxes, ids, 6)
    for r in range(3):
        mask = (label == ids[r]).astype(np.float32)[..., None]
        np.testing.assert_allclose(
            got[r], numpy_roi_align(mask, boxes[r : r + 1], 6, 1)[0, ..., 0], atol=1e-5
        )

"""The device-resident input path: geometry against numpy/TensorFlow references, exact resume,
1 vs 4 devices, uniform crops with aligned labels."""

import jax
import numpy as np
import pytest

from nucjax import parallel
from nucjax.data import images, pipeline, pipeline_device
from tests.data.test_pipeline import _config as synthetic_data_config


def _config(**overrides):
    """test_pipeline's tiny synthetic set, on the device path."""
    return synthetic_data_config(**{"pipeline": "device", **overrides})


def _take(iterator, n):
    return [jax.device_get(next(iterator)) for _ in range(n)]


@pytest.mark.parametrize("turns", range(4))
@pytest.mark.parametrize("flip_lr", [False, True])
@pytest.mark.parametrize("flip_ud", [False, True])
def test_unrotate_matches_numpy(turns, flip_lr, flip_ud):
    a = np.arange(25).reshape(5, 5)
    want = np.fliplr(a) if flip_lr else a
    want = np.rot90(np.flipud(want) if flip_ud else want, turns)
    rows, cols = pipeline_device.unrotate(5, turns, flip_lr, flip_ud)
    np.testing.assert_array_equal(a[np.asarray(rows), np.asarray(cols)], want)


def _coordinate_store(height, width):
    """One image whose pixel (y, x) reads R = y, G = x and is labelled y * width + x + 1;
    mean 0 and scale 1, so the normalised image shows the coordinates themselves."""
    y, x = np.mgrid[:height, :width]
    pixels = np.stack([y, x, np.zeros_like(y)], -1).reshape(-1, 3).astype(np.uint8)
    return {
        "pixels": pixels,
        "labels": (y * width + x + 1).ravel().astype(np.int32),
        "offset": np.zeros(1, np.int64),
        "height": np.array([height]),
        "width": np.array([width]),
        "mean": np.zeros(1, np.float32),
        "scale": np.ones(1, np.float32),
        "log_weight": np.zeros(1, np.float32),
    }


def _many(store, config, n):
    mesh = parallel.make_mesh(jax.devices()[:1])
    batcher = pipeline_device.make_batcher(config, mesh)
    uniforms = pipeline_device.step_draws(0, 0, 0, n)
    return jax.device_get(
        batcher(pipeline_device.device_store(store), np.zeros(n, np.int32), uniforms)
    )


def test_crops_cover_the_image_uniformly_and_labels_stay_aligned():
    """2000 crops of 8x8 from a 20x12 image, flips and rotations on: every output pixel's
    label names the image pixel its value came from, and the top-left corners of the windows
    are uniform over the 13 x 5 positions (chi-square, p = 0.001 bound)."""
    height, width, size, n = 20, 12, 8, 2000
    config = _config(crop_size=size, flips=True, rot90=True)
    batch = _many(_coordinate_store(height, width), config, n)
    label, image = batch["label"], batch["image"]
    assert (label > 0).all()
    source = label - 1
    np.testing.assert_array_equal(image[..., 0], source // width)
    np.testing.assert_array_equal(image[..., 1], source % width)
    # Each crop is a whole 8x8 window of the image: its coordinates span exactly 8 rows/cols.
    rows, cols = source // width, source % width
    assert (rows.max((1, 2)) - rows.min((1, 2)) == size - 1).all()
    assert (cols.max((1, 2)) - cols.min((1, 2)) == size - 1).all()
    corners = rows.min((1, 2)) * (width - size + 1) + cols.min((1, 2))
    counts = np.bincount(corners, minlength=(height - size + 1) * (width - size + 1))
    expected = n / counts.size
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 102.2, chi2  # chi-square, 64 degrees of freedom, p = 0.001
    # flips and rotations happen: the top-left output pixel is each window corner about 1/4
    corner_kind = (rows[:, 0, 0] == rows.min((1, 2))) * 2 + (cols[:, 0, 0] == cols.min((1, 2)))
    assert (np.abs(np.bincount(corner_kind, minlength=4) / n - 0.25) < 0.05).all()


def test_small_images_are_placed_uniformly_inside_the_window():
    """A 5x3 image in an 8x8 window: padded with image 0 and label -1, and placed at each of
    the 4 x 6 offsets equally often."""
    height, width, size, n = 5, 3, 8, 1200
    config = _config(crop_size=size, flips=False, rot90=False)
    batch = _many(_coordinate_store(height, width), config, n)
    label, image = batch["label"], batch["image"]
    assert ((label > 0).sum((1, 2)) == height * width).all()
    np.testing.assert_array_equal(image[label < 0], 0.0)
    first = np.argmax((label == 1).reshape(n, -1), axis=1)  # where pixel (0, 0) landed
    y, x = first // size, first % size
    np.testing.assert_array_equal(label[np.arange(n), y, x], 1)
    counts = np.bincount(y * (size - width + 1) + x, minlength=24)
    assert counts.min() > 0 and ((counts - n / 24) ** 2 / (n / 24)).sum() < 49.7  # df 23


def test_zoom_window_equals_tensorflow_resize():
    """With scale jitter the window is resized as tf.image.resize does it (bilinear image,
    nearest label), padding and intensity jitter included."""
    tf = pytest.importorskip("tensorflow")
    store = _coordinate_store(20, 12)
    store["pixels"] = (np.random.default_rng(0).integers(0, 256, (240, 3))).astype(np.uint8)
    store["mean"], store["scale"] = np.array([100.0], np.float32), np.array([40.0], np.float32)
    whole = (store["pixels"].reshape(20, 12, 3) - 100.0) / 40.0
    device = pipeline_device.device_store(store)
    render = jax.jit(pipeline_device.render, static_argnums=(3, 4))
    for window, top, left in ((13, 3, -2), (6, 10, 4), (24, -2, -5)):
        draws = {
            "window": np.int32(window),
            "top": np.int32(top),
            "left": np.int32(left),
            "gain": np.float32(1.1),
            "offset": np.float32(-0.05),
            "flip_lr": False,
            "flip_ud": False,
            "turns": 0,
        }
        image, label = render(device, 0, draws, 9, True)
        padded = np.zeros((60, 60, 3), np.float32)
        padded_label = np.full((60, 60), -1, np.int32)
        padded[20:40, 20:32] = whole * 1.1 - 0.05
        padded_label[20:40, 20:32] = store["labels"].reshape(20, 12)
        crop = np.s_[20 + top : 20 + top + window, 20 + left : 20 + left + window]
        want = tf.image.resize(padded[crop], [9, 9], "bilinear").numpy()
        want_label = tf.image.resize(padded_label[crop][..., None], [9, 9], "nearest")
        np.testing.assert_allclose(np.asarray(image), want, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(label), want_label.numpy()[..., 0])


def test_whole_image_crop_equals_network_input():
    """Crop = image size, no augmentation: each example is the whole image as evaluation and
    predict give it to the network, and each epoch shows every image once."""
    config = _config(synthetic_num_images=4, crop_size=40, flips=False, rot90=False)
    config.input_view = "grey_inverted"
    wholes = [
        images.network_input(e["image"], "grey_inverted")
        for e in pipeline.data.examples(config, "train")
    ]
    shown = np.concatenate(
        [b["image"] for b in _take(pipeline.train_batches(config, batch_size=4, seed=1), 3)]
    )
    order = [next(i for i, w in enumerate(wholes) if np.allclose(x, w, atol=1e-5)) for x in shown]
    assert [sorted(order[e * 4 : e * 4 + 4]) for e in range(3)] == [[0, 1, 2, 3]] * 3


def test_image_order_epochs_and_modality_balance():
    """Each epoch of 5 images shows every image once (batches of 3 straddle epochs); with
    modality_balance 1, modalities 0, 0, 0, 1 are drawn half and half (3-sigma bound)."""
    log_weight = np.log(pipeline.sampling_weights([0, 0, 0, 1, 1], 0.0))
    shown = np.concatenate(
        [pipeline_device.image_indices(4, 0, step, 3, log_weight, 0.0) for step in range(5)]
    )
    assert [sorted(shown[e * 5 : e * 5 + 5]) for e in range(3)] == [[0, 1, 2, 3, 4]] * 3
    assert len({tuple(shown[e * 5 : e * 5 + 5]) for e in range(3)}) > 1  # reshuffled
    modality = np.array([0, 0, 0, 1])
    log_weight = np.log(pipeline.sampling_weights(modality, 1.0))
    drawn = np.concatenate(
        [pipeline_device.image_indices(4, 0, step, 8, log_weight, 1.0) for step in range(250)]
    )
    share = (modality[drawn] == 1).mean()
    assert abs(share - 0.5) < 3 * np.sqrt(0.25 / drawn.size), share
    again = pipeline_device.image_indices(4, 0, 17, 8, log_weight, 1.0)
    np.testing.assert_array_equal(again, drawn[17 * 8 : 18 * 8])


def test_resume_is_exact_and_seeded():
    config = _config(scale_jitter=0.25, intensity_jitter=0.2)
    from_start = _take(pipeline.train_batches(config, batch_size=4, seed=5), 6)
    resumed = _take(pipeline.train_batches(config, batch_size=4, seed=5, start_step=4), 2)
    for want, got in zip(from_start[4:], resumed, strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    other = _take(pipeline.train_batches(config, batch_size=4, seed=6, start_step=4), 1)[0]
    assert not np.array_equal(other["image"], from_start[4]["image"])


def test_one_and_four_devices_give_the_same_global_batch():
    config = _config(scale_jitter=0.25, intensity_jitter=0.2)
    four = parallel.make_mesh()
    assert four.devices.size == 4
    one = parallel.make_mesh(jax.devices()[:1])
    a = next(pipeline.train_batches(config, batch_size=8, seed=2, start_step=3, mesh=four))
    b = next(pipeline.train_batches(config, batch_size=8, seed=2, start_step=3, mesh=one))
    assert a["image"].sharding.is_equivalent_to(parallel.batch_sharded(four), 4)
    assert len(a["image"].addressable_shards) == 4
    np.testing.assert_array_equal(np.asarray(a["label"]), np.asarray(b["label"]))
    np.testing.assert_allclose(np.asarray(a["image"]), np.asarray(b["image"]), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(a["valid"]), np.ones(8, np.float32))

"""The tf.data input pipeline on tiny synthetic sets (and a check on the real one)."""

import numpy as np
import pytest

from configs.common import get_config
from nucjax import data
from nucjax.data import pipeline


def _config(**overrides):
    config = get_config().data
    config.source = "synthetic"
    config.synthetic_num_images = 3
    config.synthetic_size = 40
    config.crop_size = 32
    config.eval_tile_size = 16
    config.update(overrides)
    return config


def _raw(config, split):
    return list(data.raw_dataset(config, split).as_numpy_iterator())


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


# ----------------------------------------------------------------------------- images


def test_normalize_numpy_matches_tensorflow():
    rng = np.random.default_rng(0)
    for image in (
        rng.integers(0, 256, (17, 23, 3), dtype=np.uint8),
        np.full((5, 6, 3), 7, np.uint8),  # flat: the floor on std keeps it finite
        (rng.random((9, 8, 3)) < 0.01).astype(np.uint8) * 200,
    ):
        want = pipeline.normalize_image(image)
        np.testing.assert_allclose(pipeline.normalize_image_tf(image).numpy(), want, atol=1e-5)
        assert want.dtype == np.float32 and np.isfinite(want).all()
    image = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    got = pipeline.normalize_image(image)
    assert abs(got.mean()) < 1e-5 and abs(got.std() - 1) < 1e-5
    np.testing.assert_array_equal(pipeline.normalize_image(np.full((2, 2, 3), 9)), 0.0)


def test_tile_image_covers_every_pixel_once():
    label = np.arange(5 * 7, dtype=np.int32).reshape(5, 7)
    image = np.ones((5, 7, 3), np.float32)
    tiles, labels = pipeline.tile_image(image, label, 4)
    assert tiles.shape == (4, 4, 4, 3) and labels.shape == (4, 4, 4)
    np.testing.assert_array_equal(np.sort(labels[labels >= 0]), np.arange(35))
    np.testing.assert_array_equal(labels[1, :, :3], label[:4, 4:])  # row by row
    assert tiles.sum() == 35 * 3  # padding is 0


# ----------------------------------------------------------------------------- training


def test_train_batch_shapes_and_dtypes():
    config = _config(scale_jitter=0.2, intensity_jitter=0.1)
    batch = next(pipeline.train_batches(config, batch_size=4, seed=0))
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4, 32, 32) and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["valid"], np.ones(4, np.float32))
    assert batch["label"].max() > 0 and np.isfinite(batch["image"]).all()


def test_resume_is_exact():
    config = _config(scale_jitter=0.25, intensity_jitter=0.2)
    from_start = _take(pipeline.train_batches(config, batch_size=2, seed=5), 9)
    resumed = _take(pipeline.train_batches(config, batch_size=2, seed=5, start_step=5), 4)
    for want, got in zip(from_start[5:], resumed, strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    other_seed = next(pipeline.train_batches(config, batch_size=2, seed=6, start_step=5))
    assert not np.array_equal(other_seed["image"], from_start[5]["image"])
    # A far start costs nothing extra: the stream is a function of the element index.
    far = next(pipeline.train_batches(config, batch_size=2, seed=5, start_step=10**12))
    assert far["image"].shape == (2, 32, 32, 3)


def test_each_epoch_shows_every_image_once():
    # Crop = image size and no augmentation: each example is one whole normalised image.
    config = _config(synthetic_num_images=4, crop_size=40, flips=False, rot90=False)
    images = [pipeline.normalize_image(e["image"]) for e in _raw(config, "train")]
    batches = _take(pipeline.train_batches(config, batch_size=2, seed=1), 6)
    shown = np.concatenate([b["image"] for b in batches])

    def which(x):
        (match,) = [i for i, image in enumerate(images) if np.allclose(x, image, atol=1e-5)]
        return match

    order = [which(x) for x in shown]
    assert [sorted(order[e * 4 : e * 4 + 4]) for e in range(3)] == [[0, 1, 2, 3]] * 3
    assert order[:4] != order[4:8] or order[4:8] != order[8:]  # reshuffled per epoch


def test_small_images_are_padded_with_unlabelled():
    config = _config(synthetic_num_images=1, crop_size=48, flips=False, rot90=False)
    (raw,) = _raw(config, "train")
    whole = pipeline.normalize_image(raw["image"])
    for batch in _take(pipeline.train_batches(config, batch_size=2, seed=0), 2):
        for image, label in zip(batch["image"], batch["label"], strict=True):
            assert (label >= 0).sum() == 40 * 40
            np.testing.assert_array_equal(image[label < 0], 0.0)
            rows, cols = np.nonzero(label >= 0)
            y, x = rows.min(), cols.min()
            np.testing.assert_array_equal(label[y : y + 40, x : x + 40], raw["label"])
            np.testing.assert_allclose(image[y : y + 40, x : x + 40], whole, atol=1e-5)


def test_processes_split_the_batch_and_the_images():
    config = _config(synthetic_num_images=4, crop_size=40, flips=False, rot90=False)
    shards = [
        np.concatenate(
            [
                b["label"]
                for b in _take(
                    pipeline.train_batches(
                        config, batch_size=4, seed=0, process_index=p, process_count=2
                    ),
                    2,
                )
            ]
        )
        for p in (0, 1)
    ]
    raw = [e["label"] for e in _raw(config, "train")]
    for p, labels in enumerate(shards):
        assert labels.shape == (4, 40, 40)
        # process p sees images p and p + 2 only, each twice over two epochs
        owners = [next(i for i, r in enumerate(raw) if np.array_equal(r, x)) for x in labels]
        assert sorted(owners) == sorted([p, p, p + 2, p + 2])
    with pytest.raises(ValueError, match="divisible"):
        pipeline.train_batches(config, batch_size=3, seed=0, process_count=2)


# ----------------------------------------------------------------------------- evaluation


def test_eval_tiles_count_every_labelled_pixel_once():
    config = _config()  # 3 images of 40 x 40, tiles of 16: 3 x 3 tiles each, 27 in all
    batches = list(pipeline.eval_batches(config, "validation", batch_size=4))
    assert len(batches) == 7
    for batch in batches:
        assert batch["image"].shape == (4, 16, 16, 3) and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batches[-1]["valid"], [1, 1, 1, 0])
    np.testing.assert_array_equal(batches[-1]["label"][3], -1)
    np.testing.assert_array_equal(batches[-1]["image"][3], 0.0)
    labels = np.concatenate([b["label"] for b in batches])
    assert (labels >= 0).sum() == 3 * 40 * 40
    raw = _raw(config, "validation")
    counts = np.bincount(np.concatenate([e["label"].ravel() for e in raw]))
    np.testing.assert_array_equal(np.bincount(labels[labels >= 0]), counts)
    first = pipeline.normalize_image(raw[0]["image"])  # normalised whole, then tiled
    np.testing.assert_allclose(batches[0]["image"][1], first[:16, 16:32], atol=1e-5)


def test_eval_processes_yield_equally_many_batches():
    config = _config()
    per_process = [
        list(pipeline.eval_batches(config, "test", batch_size=4, process_index=p, process_count=2))
        for p in (0, 1)
    ]
    # process 0 has images 0 and 2 (18 tiles, 9 batches of 2), process 1 image 1 (9 tiles)
    assert [len(b) for b in per_process] == [9, 9]
    assert [sum(b["valid"].sum() for b in batches) for batches in per_process] == [18, 9]
    labelled = sum((b["label"] >= 0).sum() for batches in per_process for b in batches)
    assert labelled == 3 * 40 * 40
    first_two = list(pipeline.eval_batches(config, "test", batch_size=4, max_images=2))
    assert len(first_two) == 5 and sum(b["valid"].sum() for b in first_two) == 18


# ----------------------------------------------------------------------------- real data


@pytest.mark.real_data
def test_real_train_batches(dsb_data_dir, dsb_source):
    config = get_config().data
    config.data_dir = str(dsb_data_dir)
    config.download_source = str(dsb_source)
    config.scale_jitter = 0.1
    config.intensity_jitter = 0.1
    batches = _take(pipeline.train_batches(config, batch_size=4, seed=0, start_step=3), 2)
    for batch in batches:
        assert batch["image"].shape == (4, 256, 256, 3) and batch["label"].shape == (4, 256, 256)
        assert np.isfinite(batch["image"]).all() and batch["label"].min() >= -1
        assert (batch["label"] > 0).mean() > 0.01  # DSB crops hold nuclei
        assert abs(batch["image"].mean()) < 3
    again = next(pipeline.train_batches(config, batch_size=4, seed=0, start_step=4))
    np.testing.assert_array_equal(again["image"], batches[1]["image"])

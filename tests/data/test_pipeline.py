"""The tf.data input path on tiny synthetic sets (and a check on the real one)."""

import numpy as np
import pytest

from configs.common import get_config
from nucjax import data
from nucjax.data import images, pipeline


def _config(**overrides):
    config = get_config().data
    config.source = "synthetic"
    config.synthetic_num_images = 3
    config.synthetic_size = 40
    config.crop_size = 32
    config.pipeline = "tfdata"
    config.update(overrides)
    return config


def _raw(config, split):
    return list(data.examples(config, split))


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


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


@pytest.mark.parametrize("view", ["rgb", "grey_inverted", "inverted"])
def test_each_epoch_shows_every_image_once(view):
    """Crop = image size and no augmentation: each example is one whole image exactly as
    evaluation and predict give it to the network (images.network_input)."""
    config = _config(
        synthetic_num_images=4, crop_size=40, flips=False, rot90=False, input_view=view
    )
    wholes = [images.network_input(e["image"], view) for e in _raw(config, "train")]
    batches = _take(pipeline.train_batches(config, batch_size=2, seed=1), 6)
    shown = np.concatenate([b["image"] for b in batches])

    def which(x):
        (match,) = [i for i, image in enumerate(wholes) if np.allclose(x, image, atol=1e-5)]
        return match

    order = [which(x) for x in shown]
    assert [sorted(order[e * 4 : e * 4 + 4]) for e in range(3)] == [[0, 1, 2, 3]] * 3
    assert order[:4] != order[4:8] or order[4:8] != order[8:]  # reshuffled per epoch


def test_small_images_are_padded_with_unlabelled():
    config = _config(synthetic_num_images=1, crop_size=48, flips=False, rot90=False)
    (raw,) = _raw(config, "train")
    whole = images.network_input(raw["image"], "rgb")
    for batch in _take(pipeline.train_batches(config, batch_size=2, seed=0), 2):
        for image, label in zip(batch["image"], batch["label"], strict=True):
            assert (label >= 0).sum() == 40 * 40
            np.testing.assert_array_equal(image[label < 0], 0.0)
            rows, cols = np.nonzero(label >= 0)
            y, x = rows.min(), cols.min()
            np.testing.assert_array_equal(label[y : y + 40, x : x + 40], raw["label"])
            np.testing.assert_allclose(image[y : y + 40, x : x + 40], whole, atol=1e-5)


@pytest.mark.parametrize("balance", [0.0, 0.5])
def test_processes_split_each_global_batch(balance):
    """Process p of 2 yields rows 2p, 2p+1 of the one-process global batch, from any start
    step: the run does not depend on the process count."""
    config = _config(synthetic_num_images=4, crop_size=40, modality_balance=balance)
    whole = list(_take(pipeline.train_batches(config, batch_size=4, seed=0), 3))
    for start in (0, 1):
        parts = [
            list(
                _take(
                    pipeline.train_batches(
                        config,
                        batch_size=4,
                        seed=0,
                        start_step=start,
                        process_index=p,
                        process_count=2,
                    ),
                    3 - start,
                )
            )
            for p in (0, 1)
        ]
        for k, (first, second) in enumerate(zip(*parts, strict=True)):
            for key in ("image", "label", "valid"):
                assert first[key].shape[0] == 2
                joined = np.concatenate([first[key], second[key]])
                np.testing.assert_array_equal(joined, whole[start + k][key])
    with pytest.raises(ValueError, match="divisible"):
        pipeline.train_batches(config, batch_size=3, seed=0, process_count=2)


# ----------------------------------------------------------------------------- evaluation


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


def test_modality_balance_draws_modalities_by_weight_and_resumes_exactly():
    config = _config(
        synthetic_num_images=8, crop_size=40, flips=False, rot90=False, modality_balance=1.0
    )
    raw = _raw(config, "train")
    modality = np.array([int(e["modality"]) for e in raw])
    assert len(set(modality)) > 1 and np.bincount(modality).max() > 2  # an unbalanced mix
    wholes = [images.network_input(e["image"], "rgb") for e in raw]
    batches = _take(pipeline.train_batches(config, batch_size=8, seed=3), 40)
    shown = [
        next(i for i, w in enumerate(wholes) if np.allclose(x, w, atol=1e-5))
        for b in batches
        for x in b["image"]
    ]
    drawn = np.bincount(modality[shown], minlength=modality.max() + 1)
    present = np.bincount(modality) > 0
    # Balance 1: each present modality ~1/k of 320 draws, whatever its number of images.
    expected = 320 / present.sum()
    assert np.all(np.abs(drawn[present] - expected) < 0.25 * expected), drawn
    weights = pipeline.sampling_weights(modality, 1.0)
    np.testing.assert_allclose(
        [weights[modality == m].sum() for m in np.flatnonzero(present)],
        1 / present.sum(),
        rtol=1e-6,
    )
    resumed = next(pipeline.train_batches(config, batch_size=8, seed=3, start_step=7))
    np.testing.assert_array_equal(resumed["image"], batches[7]["image"])

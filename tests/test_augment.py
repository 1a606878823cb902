"""Photometric augmentation on the device (nucjax.augment): blur against scipy, noise strength,
and the same augmented batch on 1 and 4 devices."""

import jax
import numpy as np
import pytest
from scipy import ndimage

from nucjax import augment, models, optim, parallel, train
from tests.test_devices import deterministic_config
from tests.test_learning import synthetic_set


@pytest.mark.parametrize("sigma", [0.7, 1.3, 2.0])
def test_blur_equals_scipy_gaussian_filter(sigma):
    image = np.random.default_rng(0).normal(size=(37, 29, 3)).astype(np.float32)
    radius = augment.kernel_radius(2.0)
    got = np.asarray(augment.blur(image, np.float32(sigma), radius))
    want = np.stack(
        [
            ndimage.gaussian_filter(image[..., c], sigma, mode="reflect", truncate=radius / sigma)
            for c in range(3)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


def test_blur_of_sigma_zero_is_the_identity():
    image = np.random.default_rng(1).normal(size=(16, 16, 3)).astype(np.float32)
    got = augment.blur(image, np.float32(0.0), augment.kernel_radius(1.5))
    np.testing.assert_allclose(got, image, rtol=0, atol=1e-6)


def test_off_by_default_and_noise_strength_drawn_per_example():
    assert augment.photometric(deterministic_config("simple_cnn").data) is None
    data = deterministic_config("simple_cnn").data
    data.noise = 0.3
    fn = augment.photometric(data)
    images = np.zeros((64, 32, 32, 3), np.float32)
    noise = np.asarray(fn(jax.random.PRNGKey(0), images, 0))
    stds = noise.reshape(64, -1).std(axis=1)
    assert stds.max() < 0.3 * 1.1 and stds.min() < 0.1  # s ~ U(0, 0.3), one s per example
    np.testing.assert_allclose(stds.mean(), 0.15, atol=0.03)


def test_an_example_is_augmented_the_same_wherever_it_sits_in_the_batch():
    """The property that makes 1 and N devices agree: draws depend on the global index."""
    data = deterministic_config("simple_cnn").data
    data.blur, data.noise = 1.5, 0.2
    fn = augment.photometric(data)
    images = np.random.default_rng(2).normal(size=(4, 24, 24, 3)).astype(np.float32)
    key = jax.random.PRNGKey(3)
    whole = np.asarray(fn(key, images, 0))
    second_half = np.asarray(fn(key, images[2:], 2))
    np.testing.assert_allclose(second_half, whole[2:], rtol=0, atol=1e-6)
    assert np.abs(whole[0] - images[0]).max() > 1e-2  # it did change the images


def _one_step(config, num_devices, batch):
    spec = models.build(config)
    mesh = parallel.make_mesh(jax.devices()[:num_devices])
    tx = optim.make_optimizer(config.optim, 10)
    state = train.init_state(spec, tx, config, mesh)
    step = train.make_train_step(spec, tx, mesh, augment.photometric(config.data))
    state, sums = step(state, parallel.shard_batch(batch, mesh))
    return jax.device_get((sums["loss"], state.params))


def test_augmented_train_step_on_four_devices_equals_one():
    config = deterministic_config("unet")
    images, labels = synthetic_set(4, seed=3)
    batch = {"image": images, "label": labels, "valid": np.ones(4, np.float32)}
    plain = _one_step(config, 1, batch)
    config.data.blur, config.data.noise = 1.0, 0.5
    one, four = _one_step(config, 1, batch), _one_step(config, 4, batch)
    np.testing.assert_allclose(one[0][0], four[0][0], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), *[one[1], four[1]]
    )
    changed = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), plain[1], one[1])
    assert max(jax.tree.leaves(changed)) > 1e-3  # the augmentation reached the gradients

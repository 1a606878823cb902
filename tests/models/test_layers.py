"""Layers shared by the networks (nucjax.models.layers)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nucjax.models import layers


def test_upconv2x2_equals_conv_transpose_with_the_flipped_kernel():
    x = jax.random.normal(jax.random.key(0), (2, 5, 7, 3))
    up = layers.UpConv2x2(4)
    variables = up.init(jax.random.key(1), x)
    kernel = variables["params"]["kernel"]  # (Cin, 2, 2, features)
    bias = jax.random.normal(jax.random.key(2), (4,))
    variables = {"params": {"kernel": kernel, "bias": bias}}
    # ConvTranspose's kernel is (2, 2, Cin, features), applied spatially flipped.
    flipped = jnp.transpose(kernel, (1, 2, 0, 3))[::-1, ::-1]
    reference = nn.ConvTranspose(4, (2, 2), strides=(2, 2))
    want = reference.apply({"params": {"kernel": flipped, "bias": bias}}, x)
    got = up.apply(variables, x)
    assert got.shape == want.shape == (2, 10, 14, 4)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_upsample2_is_nearest_neighbour():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    expected = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(np.asarray(layers.upsample2(jnp.asarray(x))), expected)


def test_caffe_adapter_maps_normalised_rgb_to_bgr_pixels_minus_imagenet_mean():
    image = np.zeros((1, 1, 2, 3), np.float32)
    image[0, 0, 1] = [1.0, -10.0, 0.5]  # red one std above, green far below, blue half a std
    out = np.asarray(layers.caffe_adapter(jnp.asarray(image)))
    mean_bgr = np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(out[0, 0, 0], 128.0 - mean_bgr, rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, 1], [160.0, 0.0, 192.0] - mean_bgr, rtol=1e-6)

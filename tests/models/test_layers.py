"""Layers shared by the networks (nucjax.models.layers)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_fusion_wall_is_the_identity_forward_and_backward_whichever_way_its_loop_goes():
    # The loop runs once when the first element is > 0 and not at all otherwise: both identity.
    for first in (2.0, -2.0, 0.0, np.nan):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4, 5)), jnp.float32)
        x = x.at[0, 0, 0, 0].set(first)
        np.testing.assert_array_equal(jax.jit(layers.fusion_wall)(x), x)
        weight = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape)

        def loss(x, weight=weight):
            return jnp.sum(weight * jnp.sin(layers.fusion_wall(x)))

        grad = jax.jit(jax.grad(loss))(x)
        np.testing.assert_allclose(grad, weight * jnp.cos(x), rtol=1e-6)


def _largest_fusion(walls: bool, blocks: int) -> int:
    """Most operands of any fused computation in the compiled gradient of a residual chain."""
    from experiments.nucjax_steps import fusion_counts

    def chain(x, weights):
        for k, gamma in weights:
            y = jax.lax.conv_general_dilated(
                x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            y = (y - jnp.mean(y, axis=(0, 1, 2))) * gamma
            x = jax.nn.relu(y + x)
            x = layers.fusion_wall(x) if walls else x
        return jnp.sum(x * x)

    x = jnp.ones((2, 8, 8, 4))
    weights = [(jnp.ones((3, 3, 4, 4)) / 36, jnp.full((4,), 1.0 + i)) for i in range(blocks)]
    compiled = jax.jit(jax.grad(chain, argnums=(0, 1))).lower(x, weights).compile()
    return fusion_counts(compiled.as_text())[1]


def test_fusion_walls_stop_xla_fusing_a_residual_stream_across_blocks():
    # Without walls XLA:CPU re-computes the whole stream inside the backward fusions, so the
    # largest fusion grows with the depth; with them it stays the size of one block's.
    if jax.default_backend() != "cpu":
        pytest.skip("what the wall works around is XLA:CPU's fusion")
    plain = [_largest_fusion(False, n) for n in (4, 12)]
    walled = [_largest_fusion(True, n) for n in (4, 12)]
    assert plain[1] > plain[0] + 8, plain  # the effect exists (else this test proves nothing)
    assert walled[1] == walled[0], walled
    assert walled[1] < plain[1]


def test_use_fusion_walls_reads_auto_true_false_and_rejects_the_rest():
    assert layers.use_fusion_walls("auto") == (jax.default_backend() == "cpu")
    assert layers.use_fusion_walls("on") and not layers.use_fusion_walls("off")
    for bad in ("yes", True):
        with pytest.raises(ValueError, match="config.model.fusion_walls="):
            layers.use_fusion_walls(bad)

"""Photometric training augmentation on the device, inside the jitted train step: blur, noise.

These change pixel values only, never the labels, so they need nothing from the input
pipeline: tf.data and device-resident input get them alike. Each example's draws come from
fold_in(key, its index in the global batch), so the augmented batch is the same on 1 or N
devices, and the step's key comes from (state.rng, step), so a resumed run replays it.

  data.blur   each example is blurred by a Gaussian of sigma ~ U(0, blur) pixels
  data.noise  each example gets N(0, s^2) noise with s ~ U(0, noise), in units of the
              normalised image (whose standard deviation is about 1)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def kernel_radius(max_sigma: float) -> int:
    """Half-width of the blur kernels for sigmas up to max_sigma: scipy's truncate=4 rule."""
    return max(1, int(4.0 * max_sigma + 0.5))


def gaussian_kernel(sigma: jax.Array, radius: int) -> jax.Array:
    """() sigma in pixels -> (2 radius + 1,) normalised weights; sigma -> 0 gives a delta."""
    x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    logits = -0.5 * (x / jnp.maximum(sigma, 1e-3)) ** 2
    weights = jnp.exp(logits - logits.max())
    return weights / weights.sum()


def blur(image: jax.Array, sigma: jax.Array, radius: int) -> jax.Array:
    """(H, W, C) -> (H, W, C): separable Gaussian blur, edges mirrored (scipy's "reflect")."""
    kernel = gaussian_kernel(sigma, radius)
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = jnp.pad(image, pad, mode="symmetric")
        n = image.shape[axis]
        image = sum(
            kernel[k] * jax.lax.slice_in_dim(padded, k, k + n, axis=axis)
            for k in range(2 * radius + 1)
        )
    return image


def augment_example(key: jax.Array, image: jax.Array, max_blur: float, max_noise: float):
    """(H, W, C) -> (H, W, C): blur then noise, each of a strength drawn from `key`."""
    blur_key, noise_key, pixel_key = jax.random.split(key, 3)
    if max_blur > 0:
        sigma = jax.random.uniform(blur_key, (), maxval=max_blur)
        image = blur(image, sigma, kernel_radius(max_blur))
    if max_noise > 0:
        std = jax.random.uniform(noise_key, (), maxval=max_noise)
        image = image + std * jax.random.normal(pixel_key, image.shape, image.dtype)
    return image


def photometric(data_config) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None:
    """config.data -> augment(key, images (b, H, W, C), first_index) -> images, or None when
    blur and noise are both off. first_index is the global batch index of images[0]."""
    max_blur, max_noise = float(data_config.blur), float(data_config.noise)
    if max_blur <= 0 and max_noise <= 0:
        return None

    def augment(key, images, first_index):
        def one(args):
            index, image = args
            return augment_example(jax.random.fold_in(key, index), image, max_blur, max_noise)

        # lax.map, not vmap: under the rbg PRNG (nucjax.runtime) vmapped draws depend on the
        # batch size, which would make 1 and N devices draw differently.
        indices = first_index + jnp.arange(images.shape[0])
        return jax.lax.map(one, (indices, images))

    return augment


__all__ = ["augment_example", "blur", "gaussian_kernel", "kernel_radius", "photometric"]

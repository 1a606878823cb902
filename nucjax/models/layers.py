"""Layers shared by the networks: activations, batch norm, 2x upsampling, input checks.

Every network builds these pieces from here, so that a question such as "how does batch norm
synchronise over devices" or "which image sizes does a network take" has one answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {"sigmoid": nn.sigmoid, "relu": nn.relu, "elu": nn.elu}
# caffe preprocessing (keras.applications.resnet.preprocess_input): BGR means on 0..255 pixels
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
INPUT_ADAPTERS = ("none", "caffe")
# The paper's Keras Simple CNN and U-Net kept Keras' batch-norm momentum; they keep it here.
KERAS_BN_MOMENTUM = 0.99


def activation(name: str):
    """The hidden activation called `name` (config.model.hidden_activation)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def batch_norm(
    train: bool,
    axis_name: str | None,
    name: str | None = None,
    *,
    momentum: float = 0.9,
    epsilon: float = 1e-5,
) -> nn.BatchNorm:
    """Batch norm over (B, H, W, C) inputs whose statistics are synchronised over `axis_name`.

    axis_name is given to flax only while training: batch statistics are computed only then,
    inside the trainer's shard_map, and evaluation must run outside it where the axis is
    unbound. momentum 0.9 (Keras and flax default to 0.99): the DSB set is small, so running
    statistics must settle within a few hundred steps.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        axis_name=axis_name if train else None,
        momentum=momentum,
        epsilon=epsilon,
        name=name,
    )


def _loop_identity(x: jax.Array) -> jax.Array:
    """x, returned through a while loop of 0 or 1 iterations (x's first element > 0 decides),
    a trip count the compiler cannot know, so it can neither remove the loop nor fuse across it."""
    n = (x.reshape(-1)[0] > 0).astype(jnp.int32)
    return jax.lax.fori_loop(0, n, lambda i, v: v * (i + 1).astype(v.dtype), x)


@jax.custom_vjp
def fusion_wall(x: jax.Array) -> jax.Array:
    """The identity, with a boundary XLA's fusion cannot cross, in the forward and backward pass.

    XLA:CPU counts elementwise ops as cheap and duplicates them into every consumer fusion, so
    in a ResNet stage (each block's output an elementwise function of the previous block's)
    the backward pass of block k recomputes the residual stream from the stage's first block:
    work that grows with the square of the depth (ResNet-152's stage 4 has 36 blocks). XLA:CPU
    removes jax.lax.optimization_barrier before fusion and the algebraic simplifier folds
    identities such as sqrt(x * x); a loop with a data-dependent trip count is neither.
    Costs one pass over x when x's first element is > 0 (BUILD_NOTES, "Where nucjax's CPU time
    goes"; experiments/repro_residual_depth.py).
    """
    return _loop_identity(x)


fusion_wall.defvjp(lambda x: (_loop_identity(x), None), lambda _, g: (_loop_identity(g),))


def use_fusion_walls(setting: str) -> bool:
    """config.model.fusion_walls: "auto" (on for the CPU backend only), "on" or "off"."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"config.model.fusion_walls={setting!r}; use 'auto', 'on' or 'off'")
    return jax.default_backend() == "cpu" if setting == "auto" else setting == "on"


class UpConv2x2(nn.Module):
    """A 2x2 stride-2 transposed convolution, (B, H, W, Cin) -> (B, 2H, 2W, features).

    Written as one einsum and a reshape: each input pixel writes its own 2x2 output block, so
    the result equals nn.ConvTranspose((2, 2), strides 2) with a spatially flipped kernel, but
    its backward pass is ~20x faster on CPU (../shared/STACK_NOTES.md).
    kernel: (Cin, 2, 2, features), bias: (features,).
    """

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (c, 2, 2, self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        y = jnp.einsum("bhwc,cijf->bhiwjf", x, kernel.astype(x.dtype))
        return y.reshape(b, 2 * h, 2 * w, self.features) + bias


def upsample2(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, 2H, 2W, C), nearest neighbour (a broadcast, no gather)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


def check_image_shape(shape: Sequence[int], stride: int, network: str) -> None:
    """ValueError unless `shape` is (B, H, W, C) with H and W multiples of `stride`."""
    if len(shape) != 4 or shape[1] % stride or shape[2] % stride:
        raise ValueError(
            f"{network} takes images (B, H, W, 3) with H and W multiples of {stride}; "
            f"got {tuple(shape)}"
        )


def caffe_adapter(image: jax.Array) -> jax.Array:
    """Per-image normalised RGB (B, H, W, 3) -> what Keras ImageNet ResNets were trained on.

    Pretrained weights expect caffe preprocessing: BGR pixels in 0..255 minus the ImageNet BGR
    mean. Normalisation threw away each image's own brightness and contrast, so we map it to a
    plausible photograph instead: mean grey 128 and a standard deviation of 64 (about that of
    ImageNet images), clipped to 0..255.
    """
    pixels = jnp.clip(image * 64.0 + 128.0, 0.0, 255.0)
    return pixels[..., ::-1] - jnp.asarray(CAFFE_BGR_MEAN, image.dtype)


def adapt_input(image: jax.Array, adapter: str) -> jax.Array:
    """image (B, H, W, 3) -> the backbone's input under config.model.input_adapter."""
    if adapter not in INPUT_ADAPTERS:
        raise ValueError(f"config.model.input_adapter={adapter!r}; choose one of {INPUT_ADAPTERS}")
    return caffe_adapter(image) if adapter == "caffe" else image


__all__ = [
    "ACTIVATIONS",
    "KERAS_BN_MOMENTUM",
    "UpConv2x2",
    "activation",
    "adapt_input",
    "batch_norm",
    "caffe_adapter",
    "check_image_shape",
    "upsample2",
]

"""ResNet v1 backbones (Keras-applications layout) and the ResNet segmentation network.

The backbone reproduces `keras.applications.ResNet50/101/152` layer for layer (explicit zero
padding before the 7x7/2 stem convolution and the 3x3/2 max pool, stride 2 in the first 1x1
convolution of a stage's first bottleneck, biased convolutions, batch-norm epsilon 1.001e-5),
so that Keras ImageNet weights (nucjax.models.keras_import) give the same features. Module
names follow Keras layer names: the Keras layer `conv4_block7_2_bn` is the flax module
`conv4_block7/2_bn`, and `conv1_conv` is `conv1_conv`.

Depths 18 and 34 (basic blocks) have no Keras counterpart; they exist to make small, fast
configurations and carry no pretrained weights.

Config fields (config.model): depth (18, 34, 50, 101, 152), width (64 = the standard network;
stage widths are width * [1, 2, 4, 8]), decoder_width (channels of the decoder at stride 16,
halved at each finer stride), input_adapter ("none" | "caffe"), target, output_activation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nucjax.models import pretrained, semantic
from nucjax.models.layers import (
    adapt_input,
    batch_norm,
    check_image_shape,
    fusion_wall,
    upsample2,
    use_fusion_walls,
)
from nucjax.models.spec import ModelSpec

# depth -> (block kind, blocks per stage conv2..conv5)
STAGES: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STRIDE = 32
BN_EPSILON = 1.001e-5  # Keras applications' value; must match for pretrained parity


def stage_blocks(depth: int) -> tuple[str, tuple[int, ...]]:
    """(block kind, blocks per stage) for `depth`; a clear error for an unknown depth."""
    if depth not in STAGES:
        raise ValueError(f"ResNet depth {depth} is not supported; choose one of {sorted(STAGES)}")
    return STAGES[depth]


class Bottleneck(nn.Module):
    """Keras ResNet v1 bottleneck: 1x1 (stride) -> 3x3 -> 1x1 (x4 channels), plus shortcut."""

    filters: int
    stride: int = 1
    projection: bool = False
    axis_name: str | None = None
    wall: bool = False  # fusion_wall on the output (see layers.fusion_wall)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        bn = lambda name: batch_norm(train, self.axis_name, name, epsilon=BN_EPSILON)
        s = (self.stride, self.stride)
        shortcut = x
        if self.projection:
            shortcut = nn.Conv(4 * self.filters, (1, 1), s, padding="VALID", name="0_conv")(x)
            shortcut = bn("0_bn")(shortcut)
        y = nn.Conv(self.filters, (1, 1), s, padding="VALID", name="1_conv")(x)
        y = nn.relu(bn("1_bn")(y))
        y = nn.Conv(self.filters, (3, 3), padding="SAME", name="2_conv")(y)
        y = nn.relu(bn("2_bn")(y))
        y = nn.Conv(4 * self.filters, (1, 1), padding="VALID", name="3_conv")(y)
        y = bn("3_bn")(y)
        y = nn.relu(shortcut + y)
        return fusion_wall(y) if self.wall else y


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (stride in the first), plus shortcut; for depths 18 and 34."""

    filters: int
    stride: int = 1
    projection: bool = False
    axis_name: str | None = None
    wall: bool = False  # fusion_wall on the output (see layers.fusion_wall)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        bn = lambda name: batch_norm(train, self.axis_name, name, epsilon=BN_EPSILON)
        s = (self.stride, self.stride)
        shortcut = x
        if self.projection:
            shortcut = nn.Conv(self.filters, (1, 1), s, padding="VALID", name="0_conv")(x)
            shortcut = bn("0_bn")(shortcut)
        y = nn.Conv(self.filters, (3, 3), s, padding="SAME", name="1_conv")(x)
        y = nn.relu(bn("1_bn")(y))
        y = nn.Conv(self.filters, (3, 3), padding="SAME", name="2_conv")(y)
        y = bn("2_bn")(y)
        y = nn.relu(shortcut + y)
        return fusion_wall(y) if self.wall else y


class ResNetBackbone(nn.Module):
    """ResNet v1 feature extractor, without input preprocessing.

    __call__(x (B, H, W, 3) float32, train) -> dict of features
      "stem": (B, H/2, W/2, width)  conv1 after ReLU, before the max pool
      "C2".."C5": strides 4, 8, 16, 32; channels width * [1, 2, 4, 8] (x4 for bottlenecks)
    x goes to the first convolution as it is: for Keras ImageNet weights it must already be
    caffe-preprocessed (layers.caffe_adapter, or keras.applications.resnet.preprocess_input).
    H and W must be multiples of 32 for the decoder; the backbone itself accepts any size.
    """

    depth: int = 50
    width: int = 64
    axis_name: str | None = None
    fusion_walls: bool = False  # a layers.fusion_wall after every block

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        kind, blocks = stage_blocks(self.depth)
        block_cls = Bottleneck if kind == "bottleneck" else BasicBlock
        x = nn.Conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="conv1_conv")(x)
        x = nn.relu(batch_norm(train, self.axis_name, "conv1_bn", epsilon=BN_EPSILON)(x))
        features = {"stem": x}
        # Keras pads with zeros, not -inf; after the ReLU both give the same maximum.
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        x = nn.max_pool(x, (3, 3), (2, 2), padding="VALID")
        for stage, num_blocks in enumerate(blocks):
            filters = self.width * 2**stage
            for b in range(num_blocks):
                x = block_cls(
                    filters,
                    stride=2 if (b == 0 and stage > 0) else 1,
                    projection=b == 0 and (stage > 0 or kind == "bottleneck"),
                    axis_name=self.axis_name,
                    wall=self.fusion_walls,
                    name=f"conv{stage + 2}_block{b + 1}",
                )(x, train=train)
            features[f"C{stage + 2}"] = x
        return features


class ResNetSeg(nn.Module):
    """ResNet backbone + U-Net-like decoder: image (B, H, W, 3) -> logits (B, H, W, C).

    The decoder projects C5 with a 1x1 convolution, then five times: upsample x2, concatenate
    the skip features of the same stride (C4, C3, C2, stem; none at full resolution), 3x3
    convolution + batch norm + ReLU. A final 1x1 convolution gives `num_classes` logits.
    H and W must be multiples of 32.
    """

    num_classes: int
    depth: int = 152
    width: int = 64
    decoder_width: int = 256
    input_adapter: str = "none"
    axis_name: str | None = None
    fusion_walls: bool = False

    @nn.compact
    def __call__(self, image: jax.Array, label=None, *, train: bool) -> jax.Array:
        del label  # per-pixel targets are computed by the loss, not sampled by the network
        check_image_shape(image.shape, STRIDE, "ResNetSeg")
        x = adapt_input(image, self.input_adapter)
        features = ResNetBackbone(
            self.depth, self.width, self.axis_name, self.fusion_walls, name="backbone"
        )(x, train=train)
        skips: Sequence[jax.Array | None] = (
            features["C4"],
            features["C3"],
            features["C2"],
            features["stem"],
            None,
        )
        y = nn.Conv(self.decoder_width, (1, 1), name="lateral5")(features["C5"])
        for level, skip in enumerate(skips):
            y = upsample2(y)
            if skip is not None:
                y = jnp.concatenate([y, skip], axis=-1)
            channels = max(self.decoder_width // 2**level, 8)
            y = nn.Conv(channels, (3, 3), use_bias=False, name=f"decoder{level}_conv")(y)
            y = nn.relu(
                batch_norm(train, self.axis_name, f"decoder{level}_bn", epsilon=BN_EPSILON)(y)
            )
        return nn.Conv(self.num_classes, (1, 1), name="logits")(y)


def segmentation_module(config, axis_name: str | None) -> ResNetSeg:
    """The ResNetSeg that `config.model` describes."""
    m = config.model
    stage_blocks(m.depth)
    return ResNetSeg(
        num_classes=semantic.num_classes(m),
        depth=m.depth,
        width=m.get("width", 64),
        decoder_width=m.get("decoder_width", 256),
        input_adapter=m.get("input_adapter", "none"),
        axis_name=axis_name,
        fusion_walls=use_fusion_walls(m.get("fusion_walls", "auto")),
    )


def build(config, *, axis_name: str | None) -> ModelSpec:
    """The ModelSpec of the ResNet segmentation network (registry entry `resnet`).

    Batch norm synchronises over `axis_name` in training. Its `prepare_variables` loads
    `config.model.pretrained` into the backbone (when set) and its `frozen` marks the
    backbone, for `config.model.freeze_backbone_steps`.
    """
    module = segmentation_module(config, axis_name)
    spec = semantic.build_spec(module, config, stride=STRIDE, axis_name=axis_name)
    return dataclasses.replace(
        spec,
        prepare_variables=functools.partial(pretrained.maybe_load_pretrained, config),
        frozen=pretrained.backbone_mask,
    )


__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNetBackbone",
    "ResNetSeg",
    "STAGES",
    "build",
    "segmentation_module",
    "stage_blocks",
]

"""Feature pyramids for Mask R-CNN: a backbone (ResNet or the paper's light stack) + FPN.

A pyramid is a list of (B, H / s, W / s, C) maps, finest first, at strides s = 4, 8, 16, ...
(levels P2, P3, ...). The FPN (Lin et al. 2017, detectron2's layout) projects the backbone's
stage outputs C2..C5 with 1x1 lateral convolutions to a common width, adds each coarser level
upsampled x2 (nearest) into the next finer one, and smooths every sum with a 3x3 convolution.
Levels beyond P5 (P6 for the RPN's largest anchors) are P5 max-pooled with stride 2 (detectron2's
LastLevelMaxPool). H and W must be multiples of 32 so that each level is exactly twice the next.

Backbones, chosen by config.model.backbone:
  "resnet": nucjax.models.resnet.ResNetBackbone (depth 18..152, configurable width); its batch
      norm layers are trained (not frozen) and synchronised over the device axis, since we train
      from scratch by default (config.model.pretrained loads ImageNet weights into it).
  "light": the paper's "backbone of six conv + batch-norm + ReLU layers": 3x3 convolutions with
      strides 2, 1, 2, 2, 2, 2, the last four giving C2..C5 (strides 4..32).
The FPN and the heads use no normalisation (detectron2's default).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nucjax.models import resnet
from nucjax.models.layers import batch_norm, upsample2, use_fusion_walls

STRIDE = 32  # input H and W must be multiples of this
FIRST_LEVEL = 2  # P2, stride 4


def level_strides(num_levels: int) -> tuple[int, ...]:
    """Strides of pyramid levels P2, P3, ...: (4, 8, ..., 4 * 2**(num_levels - 1))."""
    return tuple(2 ** (FIRST_LEVEL + i) for i in range(num_levels))


class LightBackbone(nn.Module):
    """Six 3x3 conv + batch norm + ReLU layers, strides 2, 1, 2, 2, 2, 2.

    x (B, H, W, 3) -> {"C2".."C5"}: strides 4..32, channels width * (2, 4, 8, 8).
    """

    width: int = 32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        layers = ((self.width, 2), (self.width, 1)) + tuple(
            (self.width * m, 2) for m in (2, 4, 8, 8)
        )
        features = {}
        for i, (channels, stride) in enumerate(layers):
            x = nn.Conv(channels, (3, 3), (stride, stride), use_bias=False, name=f"conv{i}")(x)
            x = nn.relu(batch_norm(train, self.axis_name, f"bn{i}")(x))
            if i >= 2:
                features[f"C{i}"] = x
        return features


class FPN(nn.Module):
    """Stage outputs {"C2".."C5"} -> [P2, ..., P(num_levels + 1)], each (B, H_l, W_l, width)."""

    width: int = 256
    num_levels: int = 5

    @nn.compact
    def __call__(self, stages: dict[str, jax.Array]) -> list[jax.Array]:
        names = [f"C{i}" for i in range(FIRST_LEVEL, 6)]
        if self.num_levels < 1:
            raise ValueError(f"an FPN needs at least one level, got {self.num_levels}")
        top = None
        pyramid: list[jax.Array] = []
        for name in reversed(names):
            level = int(name[1:])
            lateral = nn.Conv(self.width, (1, 1), name=f"lateral{level}")(stages[name])
            top = lateral if top is None else lateral + upsample2(top)
            pyramid.insert(0, nn.Conv(self.width, (3, 3), name=f"output{level}")(top))
        while len(pyramid) < self.num_levels:
            pyramid.append(nn.max_pool(pyramid[-1], (1, 1), strides=(2, 2), padding="SAME"))
        return pyramid[: self.num_levels]


def backbone_module(
    kind: str,
    depth: int,
    width: int,
    axis_name: str | None,
    name: str = "backbone",
    fusion_walls: str = "auto",
) -> nn.Module:
    """The backbone of config.model.backbone: image (B, H, W, 3) -> {"C2".."C5"} (+ more).

    Named `backbone` so that nucjax.models.pretrained finds a ResNet's subtree for
    pretrained weights and freezing.
    """
    if kind == "resnet":
        walls = use_fusion_walls(fusion_walls)
        return resnet.ResNetBackbone(depth, width, axis_name, walls, name=name)
    if kind == "light":
        return LightBackbone(width, axis_name, name=name)
    raise ValueError(f"config.model.backbone={kind!r}; choose 'resnet' or 'light'")


def flatten_levels(per_level: list[jax.Array], last: int) -> jax.Array:
    """[(B, H_l, W_l, K * last)] -> (B, sum_l H_l * W_l * K, last): the anchors' order."""
    b = per_level[0].shape[0]
    return jnp.concatenate([x.reshape(b, -1, last) for x in per_level], axis=1)


__all__ = [
    "FPN",
    "STRIDE",
    "backbone_module",
    "LightBackbone",
    "flatten_levels",
    "level_strides",
]

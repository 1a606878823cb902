"""The paper's U-Net: 19 convolutions and 4 transposed-convolution upsamplings.

The layout of the Keras U-Net that DSB 2018 competitors started from: five encoder levels of
two 3x3 convolutions (10), four decoder levels of a 2x2 stride-2 transposed convolution, a skip
concatenation and two 3x3 convolutions (8), and a 1x1 output convolution (1). ELU inside,
sigmoid out (through the loss), optional dropout per level.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nucjax.models import semantic
from nucjax.models.layers import KERAS_BN_MOMENTUM, UpConv2x2, activation, batch_norm


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with the activation, optional batch norm and dropout between."""

    features: int
    act: str = "elu"
    dropout: float = 0.0
    batch_norm: bool = False
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = activation(self.act)
        for i in range(2):
            x = nn.Conv(self.features, (3, 3), use_bias=not self.batch_norm)(x)
            if self.batch_norm:
                x = batch_norm(train, self.axis_name, momentum=KERAS_BN_MOMENTUM)(x)
            x = act(x)
            if i == 0 and self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class UNet(nn.Module):
    """image (B, H, W, 3), H and W multiples of 16 -> logits (B, H, W, num_classes)."""

    num_classes: int = 1
    base_features: int = 16
    depth: int = 5
    act: str = "elu"
    dropout: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2, 0.3)
    batch_norm: bool = False
    axis_name: str | None = None

    @nn.compact
    def __call__(self, image: jax.Array, label: jax.Array | None = None, *, train: bool):
        del label

        def block(level: int, x, name: str):
            return ConvBlock(
                self.base_features * 2**level,
                self.act,
                self.dropout[level] if self.dropout else 0.0,
                self.batch_norm,
                self.axis_name,
                name=name,
            )(x, train)

        skips, x = [], image
        for level in range(self.depth):
            x = block(level, x, f"down_{level}")
            skips.append(x)
            if level < self.depth - 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        for level in reversed(range(self.depth - 1)):
            x = UpConv2x2(self.base_features * 2**level, name=f"upsample_{level}")(x)
            x = block(level, jnp.concatenate([x, skips[level]], axis=-1), f"up_{level}")
        return nn.Conv(self.num_classes, (1, 1), name="output")(x)


def build(config, *, axis_name: str | None):
    """The ModelSpec of the U-Net; batch norm (optional) synchronises over `axis_name`."""
    m = config.model
    module = UNet(
        num_classes=semantic.num_classes(m),
        base_features=m.base_features,
        depth=m.depth,
        act=m.hidden_activation,
        dropout=tuple(m.dropout),
        batch_norm=m.batch_norm,
        axis_name=axis_name,
    )
    return semantic.build_spec(module, config, stride=2 ** (m.depth - 1), axis_name=axis_name)

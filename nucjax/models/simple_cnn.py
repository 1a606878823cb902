"""The paper's Simple CNN: batch norm, six per-pixel dense layers, a 3x3 convolutional output.

Every hidden layer is a 1x1 convolution (a dense layer applied to each pixel on its own), so
the only spatial context the network sees is the final 3x3 window: the weakest row of the
paper's Table 1, kept as its baseline.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from nucjax.models import semantic
from nucjax.models.layers import KERAS_BN_MOMENTUM, activation, batch_norm


class SimpleCNN(nn.Module):
    """image (B, H, W, 3) float32 -> logits (B, H, W, num_classes)."""

    num_classes: int = 3
    width: int = 64
    num_dense: int = 6
    hidden_activation: str = "sigmoid"
    axis_name: str | None = None

    @nn.compact
    def __call__(self, image: jax.Array, label: jax.Array | None = None, *, train: bool):
        del label
        act = activation(self.hidden_activation)
        x = batch_norm(train, self.axis_name, momentum=KERAS_BN_MOMENTUM)(image)
        for i in range(self.num_dense):
            x = act(nn.Conv(self.width, (1, 1), name=f"dense_{i}")(x))
        return nn.Conv(self.num_classes, (3, 3), name="output")(x)


def build(config, *, axis_name: str | None):
    """The ModelSpec of the Simple CNN; batch norm synchronises over `axis_name` in training."""
    m = config.model
    module = SimpleCNN(
        num_classes=semantic.num_classes(m),
        width=m.width,
        num_dense=m.num_dense,
        hidden_activation=m.hidden_activation,
        axis_name=axis_name,
    )
    return semantic.build_spec(module, config, stride=1, axis_name=axis_name)

"""Keras/TF twins of nucjax's paper networks, their loss and optimizer: the other side of
experiments/bench_vs_keras.py.

Each twin has the same layers, shapes and parameter count as the nucjax network its config
builds (the benchmark checks the count; tests/test_keras_nets.py too), so a step-time ratio
compares frameworks, not networks. Initial weights differ (Keras and flax initialisers);
that changes the numbers computed, not the work.
- U-Net (nucjax.models.unet): 3x3 convolutions with the config's hidden activation, dropout
  after the first convolution of a level, 2x2 max pools, 2x2 stride-2 transposed convolutions
  (nucjax writes the same layer as an einsum), skip concatenation, 1x1 output convolution.
- ResNet segmentation (nucjax.models.resnet): keras.applications.ResNet{50,101,152}, which
  nucjax's backbone reproduces layer for layer, plus ResNetSeg's decoder.
The loss is nucjax's semantic loss (sigmoid cross-entropy per channel, mean over channels,
weighted sum over pixels / labelled pixels), on targets computed by nucjax.targets.

TensorFlow and Keras are imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import numpy as np

from nucjax import targets
from nucjax.models import resnet as nucjax_resnet
from nucjax.models import semantic

KERAS_RESNET_DEPTHS = (50, 101, 152)  # keras.applications has these; nucjax's 18/34 have none


def unet(model_config, size: int):
    """The Keras twin of nucjax.models.unet.UNet for `config.model`: (B, size, size, 3) ->
    logits (B, size, size, C)."""
    import keras

    m, layers = model_config, keras.layers
    dropout = tuple(m.dropout) if m.dropout else (0.0,) * m.depth

    def block(x, level: int):
        for i in range(2):
            x = layers.Conv2D(
                m.base_features * 2**level, 3, padding="same", use_bias=not m.batch_norm
            )(x)
            if m.batch_norm:  # nucjax's U-Net keeps Keras' momentum, with flax's epsilon
                x = layers.BatchNormalization(momentum=0.99, epsilon=1e-5)(x)
            x = layers.Activation(m.hidden_activation)(x)
            if i == 0 and dropout[level] > 0:
                x = layers.Dropout(dropout[level])(x)
        return x

    image = keras.Input((size, size, 3))
    skips, x = [], image
    for level in range(m.depth):
        x = block(x, level)
        skips.append(x)
        if level < m.depth - 1:
            x = layers.MaxPooling2D(2)(x)
    for level in reversed(range(m.depth - 1)):
        x = layers.Conv2DTranspose(m.base_features * 2**level, 2, strides=2)(x)
        x = block(layers.Concatenate()([x, skips[level]]), level)
    logits = layers.Conv2D(semantic.num_classes(m), 1)(x)
    return keras.Model(image, logits)


def resnet(model_config, size: int):
    """The Keras twin of nucjax.models.resnet.ResNetSeg: keras.applications' ResNet backbone
    plus the same decoder. Only the standard width and Keras' depths exist in Keras."""
    import keras

    m, layers = model_config, keras.layers
    if m.depth not in KERAS_RESNET_DEPTHS or m.width != 64 or m.input_adapter != "none":
        raise ValueError(
            f"config.model: Keras has ResNet depths {KERAS_RESNET_DEPTHS} at width 64 and no "
            f"input adapter; got depth={m.depth}, width={m.width}, "
            f"input_adapter={m.input_adapter!r}"
        )
    backbone = getattr(keras.applications, f"ResNet{m.depth}")(
        weights=None, include_top=False, input_shape=(size, size, 3)
    )
    _, blocks = nucjax_resnet.stage_blocks(m.depth)
    skips = [f"conv{s + 2}_block{blocks[s]}_out" for s in (2, 1, 0)] + ["conv1_relu", None]
    y = layers.Conv2D(m.decoder_width, 1)(backbone.output)
    for level, skip in enumerate(skips):
        y = layers.UpSampling2D(2, interpolation="nearest")(y)
        if skip is not None:
            y = layers.Concatenate()([y, backbone.get_layer(skip).output])
        channels = max(m.decoder_width // 2**level, 8)
        y = layers.Conv2D(channels, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization(epsilon=nucjax_resnet.BN_EPSILON, momentum=0.9)(y)
        y = layers.ReLU()(y)
    logits = layers.Conv2D(semantic.num_classes(m), 1)(y)
    return keras.Model(backbone.input, logits)


NETWORKS = {"unet": unet, "resnet": resnet}


def network(config, size: int):
    """The Keras twin of the network `config.model.name` names."""
    if config.model.name not in NETWORKS:
        raise ValueError(
            f"config.model.name={config.model.name!r} has no Keras twin; one of {sorted(NETWORKS)}"
        )
    return NETWORKS[config.model.name](config.model, size)


def loss_inputs(model_config, label: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """What the Keras loss needs from a host batch, computed as nucjax's loss computes it.

    label: (B, H, W) int instance ids (-1 unlabelled); valid: (B,) float. Returns float32
    target (B, H, W, C) in [0, 1], weight (B, H, W) and count () (labelled pixels of valid
    images: the normaliser).
    """
    m = model_config
    if m.output_activation != "sigmoid":
        raise ValueError(
            f"config.model.output_activation={m.output_activation!r}: the Keras twin trains "
            "the paper's sigmoid outputs only"
        )
    valid = np.asarray(valid, np.float32)[:, None, None]
    count = np.sum(np.asarray(targets.pixel_weights(label)) * valid)
    if m.target == "three_class":
        classes = np.asarray(targets.three_class_targets(label))
        target = np.eye(3, dtype=np.float32)[classes]
        weight = np.asarray(targets.pixel_weights(label)) * valid
    else:
        foreground, weight = targets.binary_targets(label, m.border_weight)
        target = np.asarray(foreground)[..., None]
        weight = np.asarray(weight) * valid
    return {
        "target": target.astype(np.float32),
        "weight": weight.astype(np.float32),
        "count": np.float32(max(count, 1.0)),
    }


def loss(logits, target, weight, count):
    """nucjax's sigmoid pixel loss in TF: sum(weight * mean_C BCE(logits, target)) / count.

    logits, target: (B, H, W, C); weight: (B, H, W); count: (). Returns a scalar tensor.
    """
    import tensorflow as tf

    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
    return tf.reduce_sum(weight * tf.reduce_mean(bce, axis=-1)) / count


def optimizer(optim_config):
    """Keras's optimizer for `config.optim` (Table 2: Adam for the U-Net, Adadelta for ResNet)."""
    import keras

    c = optim_config
    if c.name == "adam":
        return keras.optimizers.Adam(learning_rate=c.learning_rate, epsilon=c.eps)
    if c.name == "adadelta":
        return keras.optimizers.Adadelta(learning_rate=c.learning_rate, rho=c.rho, epsilon=c.eps)
    raise ValueError(f"config.optim.name={c.name!r}: the Keras twin has adam and adadelta")


def train_step(model, keras_optimizer, jit_compile: bool = False):
    """A tf.function GradientTape step: (image, target, weight, count) -> loss, updating the
    model's weights (and batch-norm statistics) in place. jit_compile: through TF's XLA."""
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile)
    def step(image, target, weight, count):
        with tf.GradientTape() as tape:
            value = loss(model(image, training=True), target, weight, count)
        variables = model.trainable_variables
        grads = tape.gradient(value, variables)
        keras_optimizer.apply_gradients(zip(grads, variables, strict=True))
        return value

    return step

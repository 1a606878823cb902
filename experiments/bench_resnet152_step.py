"""ResNet-152 segmentation train step: nucjax (JAX) next to the same network in Keras/TF.

  python experiments/bench_resnet152_step.py                      # paper: batch 10, 256x256
  python experiments/bench_resnet152_step.py --depth=50 --size=64 --batch=2 --steps=2  # check

One process times, one after the other: nucjax's own data-parallel train step (Adadelta,
three-class sigmoid loss, on every device JAX sees); then keras.applications.ResNet{depth}
with the same decoder (the same parameter count is printed as a check), trained by a
tf.function GradientTape step with Keras's Adadelta, with XLA (jit_compile) off and on.
The first step (compilation, tracing) is reported apart; the median of the others is the
figure to record. Expensive at the paper's size: about 20-30 s a step on a 2-core CPU.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()  # rbg PRNG and CPU flags, as in training

flags.DEFINE_integer("depth", 152, "ResNet depth (Keras has 50, 101, 152)")
flags.DEFINE_integer("size", 256, "square input size, a multiple of 32")
flags.DEFINE_integer("batch", 10, "global batch (the paper's Table 2: 10)")
flags.DEFINE_integer("steps", 5, "timed steps after the compiling one")
flags.DEFINE_list("run", ["jax", "tf", "tf_xla"], "which steps to time")
flags.DEFINE_string("out", "", "also write the results as JSON to this file")
FLAGS = flags.FLAGS


def synthetic_batch(batch: int, size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
        "label": rng.integers(0, 5, (batch, size, size)).astype(np.int32),
        "valid": np.ones(batch, np.float32),
    }


def time_steps(step, steps: int) -> dict:
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {
        "first_s": times[0],
        "median_s": statistics.median(times[1:]),
        "min_s": min(times[1:]),
        "max_s": max(times[1:]),
    }


def jax_step(config, host) -> tuple[dict, int]:
    """nucjax's train step (nucjax.train.make_train_step): the one real training runs."""
    import jax

    from nucjax import models, optim, parallel, train

    spec = models.build(config)
    mesh = parallel.make_mesh()
    tx = optim.make_optimizer(config.optim, 1000)
    state = train.init_state(spec, tx, config, mesh)
    n = sum(x.size for x in jax.tree.leaves((state.params, state.batch_stats)))
    step = train.make_train_step(spec, tx, mesh)
    batch = parallel.shard_batch(host, mesh)
    holder = {"state": state}

    def run():
        holder["state"], sums = step(holder["state"], batch)
        jax.block_until_ready(sums)

    return time_steps(run, FLAGS.steps), n


def keras_network(config, size: int):
    """keras.applications ResNet + the decoder of nucjax.models.resnet.ResNetSeg, same layers."""
    import keras

    from nucjax.models import resnet

    m = config.model
    backbone = getattr(keras.applications, f"ResNet{m.depth}")(
        weights=None, include_top=False, input_shape=(size, size, 3)
    )
    _, blocks = resnet.stage_blocks(m.depth)
    skips = [f"conv{s + 2}_block{blocks[s]}_out" for s in (2, 1, 0)] + ["conv1_relu", None]
    y = keras.layers.Conv2D(m.decoder_width, 1)(backbone.output)
    for level, skip in enumerate(skips):
        y = keras.layers.UpSampling2D(2, interpolation="nearest")(y)
        if skip is not None:
            y = keras.layers.Concatenate()([y, backbone.get_layer(skip).output])
        channels = max(m.decoder_width // 2**level, 8)
        y = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(y)
        y = keras.layers.BatchNormalization(epsilon=1.001e-5, momentum=0.9)(y)
        y = keras.layers.ReLU()(y)
    logits = keras.layers.Conv2D(3, 1)(y)
    return keras.Model(backbone.input, logits)


def tf_step(config, host, jit_compile: bool) -> tuple[dict, int]:
    """A tf.function GradientTape step: per-pixel sigmoid cross-entropy on 3 one-hot classes."""
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # a CPU comparison; leave GPUs to JAX
    model = keras_network(config, host["image"].shape[1])
    optimizer = keras.optimizers.Adadelta(
        learning_rate=config.optim.learning_rate, rho=config.optim.rho, epsilon=config.optim.eps
    )
    image = tf.constant(host["image"])
    # The three-class target (background, interior, border) only shapes the loss; a random
    # one-hot stands in for nucjax.targets here.
    classes = np.random.default_rng(1).integers(0, 3, host["label"].shape)
    target = tf.one_hot(classes, 3)

    @tf.function(jit_compile=jit_compile)
    def step(image, target):
        with tf.GradientTape() as tape:
            logits = model(image, training=True)
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return time_steps(lambda: step(image, target).numpy(), FLAGS.steps), model.count_params()


def main(argv):
    del argv
    import jax

    from configs import resnet as resnet_config

    config = resnet_config.get_config("paper")
    config.model.depth = FLAGS.depth
    config.data.crop_size = FLAGS.size
    config.train.batch_size = FLAGS.batch
    host = synthetic_batch(FLAGS.batch, FLAGS.size)
    runs = {
        "jax": ("nucjax (JAX, jit)", lambda: jax_step(config, host)),
        "tf": ("Keras/TF tf.function", lambda: tf_step(config, host, jit_compile=False)),
        "tf_xla": ("Keras/TF tf.function + XLA", lambda: tf_step(config, host, jit_compile=True)),
    }
    results = {}
    for key in FLAGS.run:
        label, run = runs[key]
        print(f"timing {label} ...", flush=True)
        timing, params = run()
        results[key] = dict(label=label, params=params, **timing)
    print(
        f"\nResNet-{FLAGS.depth} segmentation train step, batch {FLAGS.batch}, "
        f"{FLAGS.size}x{FLAGS.size}, {FLAGS.steps} timed steps, {os.cpu_count()} CPUs, "
        f"JAX devices: {jax.device_count()} x {jax.devices()[0].platform}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    print(
        f"{'step':<30}{'params+stats':>14}{'first s':>10}{'median s':>10}{'min s':>8}{'img/s':>8}"
    )
    for r in results.values():
        print(
            f"{r['label']:<30}{r['params']:>14,}{r['first_s']:>10.2f}{r['median_s']:>10.3f}"
            f"{r['min_s']:>8.3f}{FLAGS.batch / r['median_s']:>8.2f}"
        )
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(dict(depth=FLAGS.depth, size=FLAGS.size, batch=FLAGS.batch, **results), f)


if __name__ == "__main__":
    app.run(main)

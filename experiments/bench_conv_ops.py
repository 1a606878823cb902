"""Single layers forward + backward, JAX (XLA:CPU) against TensorFlow, interleaved.

  python experiments/bench_conv_ops.py                       # batch 4, 128x128 (phase 2)
  python experiments/bench_conv_ops.py --size=256 --batch=16 --steps=10

A minimal reproduction for what experiments/profile_train_step.py shows in nucjax's train
step: each op below at the shapes where the paper U-Net (16 channels at full resolution) and
ResNet-50 (256 channels at 1/4) use it, differentiated with respect to its input (and its
weights, where it has any) through the loss sum(y * y). JAX runs jitted, TensorFlow as a
tf.function with its default (oneDNN) kernels; one call of each in turn, so load from other
jobs hits both alike. Prints one JSON line per op: each side's median and JAX's time over
TF's (the median of the per-round ratios). --jax_options adds JAX compiled with other XLA
options, in the same rounds.
conv1x1_as_dot_resnet and conv3x3_im2col_resnet are the ResNet convolutions written as a
matmul (einsum over channels; conv_general_dilated_patches then one matmul) against the same
TF convolution, to see whether XLA:CPU's matmul does better than its convolution.
maxpool2x2_unet is flax's nn.max_pool (a reduce-window), as nucjax's U-Net uses it;
maxpool2x2_reshape_unet the same values as a reshape + max (ties aside, the same gradient).
XLA_FLAGS from the environment reach the JAX side, e.g.
--xla_cpu_experimental_ynn_fusion_type=individual_convolution sends the convolutions to
YNNPACK (runtime.configure then adds none of its own).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"  # TF's default kernels (runtime.configure: off)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

import nucjax.runtime  # noqa: E402

nucjax.runtime.configure()

from experiments.nucjax_steps import parse_options  # noqa: E402

flags.DEFINE_integer("size", 128, "input size of the U-Net shapes (ResNet's are size / 4)")
flags.DEFINE_integer("batch", 4, "batch")
flags.DEFINE_integer("steps", 10, "timed calls after the compiling one")
flags.DEFINE_list("ops", [], "ops to time (default all)")
flags.DEFINE_multi_string(
    "jax_options",
    [],
    "also time JAX compiled with these XLA options, 'name=value[ name=value]' (as in "
    "bench_vs_keras.py); repeat the flag for several variants",
)
FLAGS = flags.FLAGS


def ops(size: int) -> dict:
    """name -> (input shape without batch, JAX fn(x, w), TF fn(x, w), weight shape or None)."""
    import jax
    import jax.numpy as jnp
    import tensorflow as tf
    from flax import linen as nn

    def jax_conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)

    def tf_conv(x, w):  # every convolution op's TF side: the same stride-1 SAME convolution
        return tf.nn.conv2d(x, w, 1, "SAME")

    def jax_conv_as_dot(x, w):  # a 1x1 convolution as a matmul over the channel axis
        return jnp.einsum("bhwc,cf->bhwf", x, w[0, 0])

    def jax_conv_im2col(x, w):  # 3x3 patches (ordered C, kh, kw), then one matmul
        p = jax.lax.conv_general_dilated_patches(
            x, w.shape[:2], (1, 1), "SAME", dimension_numbers=NHWC
        )
        return jnp.einsum("bhwk,kf->bhwf", p, w.transpose(2, 0, 1, 3).reshape(-1, w.shape[-1]))

    def jax_bn(x, w):  # training-mode batch norm over B, H, W; w: (2, C) scale and offset
        mean, var = jnp.mean(x, (0, 1, 2)), jnp.var(x, (0, 1, 2))
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * w[0] + w[1]

    def tf_bn(x, w):
        mean, var = tf.nn.moments(x, [0, 1, 2])
        return tf.nn.batch_normalization(x, mean, var, w[1], w[0], 1e-5)

    def jax_max_pool_reshape(x, w):  # 2x2 blocks by a reshape; the gradient is a mask
        b, h, wd, c = x.shape
        return jnp.max(x.reshape(b, h // 2, 2, wd // 2, 2, c), axis=(2, 4))

    def jax_upconv(x, w):  # nucjax.models.layers.UpConv2x2; w: (Cin, 2, 2, F)
        b, h, wd, _ = x.shape
        return jnp.einsum("bhwc,cijf->bhiwjf", x, w).reshape(b, 2 * h, 2 * wd, w.shape[-1])

    def tf_upconv(x, w):  # Keras's Conv2DTranspose; w: (2, 2, F, Cin)
        b, h, wd, _ = x.shape
        return tf.nn.conv2d_transpose(x, w, (b, 2 * h, 2 * wd, w.shape[2]), 2)

    s, r = size, size // 4
    return {
        "conv3x3_unet": (
            (s, s, 16),
            jax_conv,
            tf_conv,
            (3, 3, 16, 16),
        ),
        "conv3x3_resnet": (
            (r, r, 64),
            jax_conv,
            tf_conv,
            (3, 3, 64, 64),
        ),
        "conv1x1_resnet": (
            (r, r, 256),
            jax_conv,
            tf_conv,
            (1, 1, 256, 64),
        ),
        "conv1x1_as_dot_resnet": (
            (r, r, 256),
            jax_conv_as_dot,
            tf_conv,
            (1, 1, 256, 64),
        ),
        "conv3x3_im2col_resnet": (
            (r, r, 64),
            jax_conv_im2col,
            tf_conv,
            (3, 3, 64, 64),
        ),
        "maxpool2x2_unet": (
            (s, s, 16),
            lambda x, w: nn.max_pool(x, (2, 2), strides=(2, 2)),
            lambda x, w: tf.nn.max_pool2d(x, 2, 2, "VALID"),
            None,
        ),
        "maxpool2x2_reshape_unet": (
            (s, s, 16),
            jax_max_pool_reshape,
            lambda x, w: tf.nn.max_pool2d(x, 2, 2, "VALID"),
            None,
        ),
        "elu_unet": ((s, s, 16), lambda x, w: jax.nn.elu(x), lambda x, w: tf.nn.elu(x), None),
        "concat_unet": (
            (s, s, 16),
            lambda x, w: jnp.concatenate([x, x * 2.0], -1),
            lambda x, w: tf.concat([x, x * 2.0], -1),
            None,
        ),
        "upconv2x2_unet": ((s // 2, s // 2, 32), jax_upconv, tf_upconv, (2, 2, 16, 32)),
        "batchnorm_resnet": ((r, r, 256), jax_bn, tf_bn, (2, 256)),
    }


NHWC = ("NHWC", "HWIO", "NHWC")


def jax_runner(fn, x, w, compiler_options=None):
    import jax
    import jax.numpy as jnp

    if fn.__name__ == "jax_upconv":  # its kernel is (Cin, 2, 2, F); TF's (2, 2, F, Cin)
        w = jnp.transpose(w, (3, 0, 1, 2))
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(fn(x, w) ** 2), argnums=(0, 1)))
    compiled = grad.lower(x, w).compile(compiler_options=compiler_options)
    return lambda: jax.block_until_ready(compiled(x, w))


def tf_runner(fn, x, w):
    import tensorflow as tf

    x, w = tf.constant(x), tf.constant(w)

    @tf.function(autograph=False)
    def grad(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            loss = tf.reduce_sum(tf.square(fn(x, w)))
        return tape.gradient(loss, [x, w])

    return lambda: [g.numpy() for g in grad(x, w) if g is not None]


def time_op(name: str, spec) -> dict:
    import numpy as np

    shape, jax_fn, tf_fn, w_shape = spec
    rng = np.random.default_rng(0)
    x = rng.normal(size=(FLAGS.batch, *shape)).astype(np.float32)
    w = rng.normal(size=w_shape or (1,)).astype(np.float32) * 0.1
    runs = {"jax": jax_runner(jax_fn, x, w), "tf": tf_runner(tf_fn, x, w)}
    for text in FLAGS.jax_options:
        runs[f"jax[{text}]"] = jax_runner(jax_fn, x, w, parse_options(text))
    times = {k: [] for k in runs}
    for _ in range(FLAGS.steps + 1):
        for k, run in runs.items():
            t = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t)
    median = {k: statistics.median(v[1:]) for k, v in times.items()}
    record = {"op": name, "input": [FLAGS.batch, *shape]}
    for k in runs:
        record[f"{k}_median_s"] = float(f"{median[k]:.4g}")
        if k != "tf":  # the median of the rounds' own ratios: load changes between rounds
            paired = statistics.median(
                a / b for a, b in zip(times[k][1:], times["tf"][1:], strict=True)
            )
            record[f"{k}_over_tf"] = float(f"{paired:.4g}")
    return record


def main(argv):
    del argv
    table = ops(FLAGS.size)
    for name in FLAGS.ops or table:
        if name not in table:
            raise ValueError(f"--ops: unknown op {name!r}; choose from {', '.join(table)}")
    for text in FLAGS.jax_options:
        parse_options(text)
    for name in FLAGS.ops or table:
        print(json.dumps(time_op(name, table[name])), flush=True)


if __name__ == "__main__":
    app.run(main)
